-- Keep the batches a worker holds: refresh their idle time so no other worker claims them.
-- Called periodically for every entry held (waiting its turn, waiting for tokens, or sending).
-- KEYS[1]  a lane stream
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name (the owner we expect)
-- ARGV[3..] entry ids
-- Returns the ids that are no longer ours (claimed by another consumer, or settled).
local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #pending == 0 or pending[1][2] ~= ARGV[2] then
    table.insert(lost, ARGV[i])
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return lost

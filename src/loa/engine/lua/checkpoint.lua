-- Record how far a batch got, and keep it ours: refreshes its idle time so nobody claims it.
-- KEYS[1]  the lane stream holding the entry
-- KEYS[2]  the shard's progress hash
-- ARGV[1]  consumer group
-- ARGV[2]  consumer name (the owner we expect)
-- ARGV[3]  entry id
-- ARGV[4]  progress (msgpack)
-- Returns 1 while we own the entry, 0 when another consumer claimed it or it was settled.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 1

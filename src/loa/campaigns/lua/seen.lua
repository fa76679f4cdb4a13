-- Deduplicate recipients of one campaign, replay-safe: a recipient belongs to the first audience
-- line that named them. Planning the same line again after a crash is not a duplicate.
-- KEYS[1]  the campaign's seen hash (recipient -> line)
-- ARGV     pairs: recipient, line
-- Returns one flag per pair: 1 to plan it, 0 for a duplicate of an earlier line.
local flags = {}
for i = 1, #ARGV, 2 do
  local added = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  if added == 1 then
    flags[#flags + 1] = 1
  elseif redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    flags[#flags + 1] = 1
  else
    flags[#flags + 1] = 0
  end
end
return flags

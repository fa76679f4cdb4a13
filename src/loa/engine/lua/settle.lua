-- Settle a batch in one step: count its outcomes, queue what goes again, dead-letter what gave
-- up, forget its progress, acknowledge and delete the entry. Only the entry's owner settles it:
-- a batch that was settled already, or claimed by another consumer, returns 0 and changes nothing.
-- KEYS[1]  the lane stream holding the entry
-- KEYS[2]  the lane retry set
-- KEYS[3]  the shard's dead-letter stream
-- KEYS[4]  the shard's counters hash
-- KEYS[5]  the shard's progress hash
-- KEYS[6]  the shard's per-campaign counters hash
-- ARGV[1]  consumer group
-- ARGV[2]  entry id
-- ARGV[3]  consumer name (the owner we expect)
-- ARGV[4]  n: number of counter pairs that follow (field, increment) * n, for KEYS[4]
-- then     c: number of campaign counter pairs that follow (field, increment) * c, for KEYS[6]
-- then     m: number of re-queued batches that follow (due ms or 0 for now, envelope) * m
-- then     the dead letters, one envelope each, to the end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 or pending[1][2] ~= ARGV[3] then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[5], ARGV[2])
local i = 4
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do
  redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local c = tonumber(ARGV[i])
i = i + 1
for _ = 1, c do
  redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  if ARGV[i] == '0' then
    redis.call('XADD', KEYS[1], '*', 'b', ARGV[i + 1])
  else
    redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
while i <= #ARGV do
  redis.call('XADD', KEYS[3], '*', 'm', ARGV[i])
  i = i + 1
end
return 1

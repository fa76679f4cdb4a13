-- Drop a campaign's batches that wait in one lane of one shard, and count their messages.
-- A batch a worker has taken meanwhile (pending) stays: its worker settles and counts it.
-- KEYS[1]  the lane stream
-- KEYS[2]  the lane retry set
-- KEYS[3]  the shard's counters hash
-- KEYS[4]  the shard's per-campaign counters hash
-- ARGV[1]  consumer group
-- ARGV[2]  the counter to add the dropped messages to in KEYS[3] (`lane:outcome`)
-- ARGV[3]  the counter to add them to in KEYS[4] (`campaign:outcome`)
-- ARGV[4]  n: stream entries that follow, as (entry id, messages) * n
-- then     retry-set members, as (envelope, messages), to the end
-- Returns the number of messages dropped.
local dropped = 0
local n = tonumber(ARGV[4])
local i = 5
for _ = 1, n do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #pending == 0 and redis.call('XDEL', KEYS[1], id) == 1 then
    dropped = dropped + tonumber(ARGV[i + 1])
  end
  i = i + 2
end
while i < #ARGV do
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    dropped = dropped + tonumber(ARGV[i + 1])
  end
  i = i + 2
end
if dropped > 0 then
  redis.call('HINCRBY', KEYS[3], ARGV[2], dropped)
  redis.call('HINCRBY', KEYS[4], ARGV[3], dropped)
end
return dropped

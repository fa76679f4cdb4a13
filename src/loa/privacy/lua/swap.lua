-- Replace one queued batch by the same batch without an erased person's messages, atomically.
-- KEYS[1]  the lane stream
-- KEYS[2]  the lane retry set
-- KEYS[3]  the shard's counters hash
-- KEYS[4]  the shard's per-campaign counters hash
-- ARGV[1]  'stream' (ARGV[3] is a stream entry id) or 'later' (ARGV[3] is a retry-set member)
-- ARGV[2]  consumer group
-- ARGV[3]  the entry id or member to replace
-- ARGV[4]  the new envelope ('' when no message is left: the batch goes)
-- ARGV[5]  how many messages were taken out
-- ARGV[6]  the counter to add them to in KEYS[3] (`lane:suppressed`)
-- ARGV[7]  the counter to add them to in KEYS[4] (`campaign:suppressed`, '' for none)
-- A batch a worker holds (pending) is left to it: the person is opted out, so it skips them.
-- Returns the number of messages taken out, or -1 for a batch held by a worker.
local removed = tonumber(ARGV[5])
if ARGV[1] == 'stream' then
  local pending = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[3], ARGV[3], 1)
  if #pending > 0 then
    return -1
  end
  if redis.call('XDEL', KEYS[1], ARGV[3]) == 0 then
    return 0
  end
  if ARGV[4] ~= '' then
    redis.call('XADD', KEYS[1], '*', 'b', ARGV[4])
  end
else
  local score = redis.call('ZSCORE', KEYS[2], ARGV[3])
  if not score then
    return 0
  end
  redis.call('ZREM', KEYS[2], ARGV[3])
  if ARGV[4] ~= '' then
    redis.call('ZADD', KEYS[2], score, ARGV[4])
  end
end
redis.call('HINCRBY', KEYS[3], ARGV[6], removed)
if ARGV[7] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[7], removed)
end
return removed

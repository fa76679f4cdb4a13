-- Queue a batch exactly once, whatever the number of attempts: a planner that restarts from an
-- older checkpoint rebuilds the same batches under the same ids, and they are not queued again.
-- KEYS[1]  the lane stream (batches due now)
-- KEYS[2]  the lane retry set (batches due later: per-recipient send times)
-- KEYS[3]  the shard's hash of batch ids already queued
-- ARGV[1]  batch id
-- ARGV[2]  envelope
-- ARGV[3]  due time in ms (0: now)
-- Returns 1 when queued, 0 when it had been queued before.
if redis.call('HSETNX', KEYS[3], ARGV[1], '1') == 0 then
  return 0
end
if ARGV[3] == '0' then
  redis.call('XADD', KEYS[1], '*', 'b', ARGV[2])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
end
return 1

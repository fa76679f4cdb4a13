-- The highest lane with work on one or more shards of a route: batches waiting or being sent
-- (a settled entry is deleted from its stream, so a stream's length is its work), or retries
-- due. On a cluster each call holds one shard's keys; on one server, every shard's at once.
-- KEYS        six per shard: the streams of the lanes above bulk (emergency, high, normal),
--             then their retry sets (sorted by due time, ms), same order
-- ARGV[1]     now, ms
-- Returns the lane index (0 = emergency), or 3 (bulk) when no lane above bulk has work.
local top = 3
for base = 0, #KEYS - 6, 6 do
  for i = 1, top do
    if redis.call('XLEN', KEYS[base + i]) > 0
        or redis.call('ZCOUNT', KEYS[base + 3 + i], '-inf', ARGV[1]) > 0 then
      top = i - 1
      break
    end
  end
  if top == 0 then
    return 0
  end
end
return top

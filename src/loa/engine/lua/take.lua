-- Take the next batch of one (route, shard), highest lane first, after moving due retries back.
-- KEYS[1..4]  the lane streams, emergency, high, normal, bulk
-- KEYS[5..8]  the lane retry sets (sorted by due time, ms), same order
-- ARGV[1]     consumer group
-- ARGV[2]     consumer name
-- ARGV[3]     how many entries to take at most
-- ARGV[4]     now, ms (due retries have score <= now)
-- ARGV[5]     how many due retries to move per lane at most
-- ARGV[6]     how many lanes to read, from the top (4: all; 1: emergency only)
-- Returns nil, {-1} when lower lanes are held back, or
-- {lane index (0 = emergency), {{entry id, {field, value, ...}}, ...}}.
-- A lane is served only while no higher lane of the shard has batches waiting or being sent:
-- an emergency alert's last chunks are not slowed by bulk taken in the meantime.
for i = 1, 4 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[4 + i], '-inf', ARGV[4], 'LIMIT', 0, ARGV[5])
  for _, envelope in ipairs(due) do
    redis.call('XADD', KEYS[i], '*', 'b', envelope)
    redis.call('ZREM', KEYS[4 + i], envelope)
  end
end
for i = 1, tonumber(ARGV[6]) do
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[i], '>')
  if got and got[1] and #got[1][2] > 0 then
    return {i - 1, got[1][2]}
  end
  if i < 4 and redis.call('XPENDING', KEYS[i], ARGV[1])[1] > 0 then
    return {-1} -- this lane is being sent: nothing lower until it is done
  end
end
return nil

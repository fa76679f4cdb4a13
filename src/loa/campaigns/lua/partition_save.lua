-- Save one partition's planning checkpoint and make the campaign's counters the sums of every
-- partition's, in one step: two partitions saving at once never leave a stale sum behind.
-- KEYS[1]  the campaign hash
-- ARGV[1]  the partition, "k/P"; ARGV[2] P; ARGV[3] its checkpoint (JSON)
-- ARGV[4..] the names of the counters to add up
-- Returns how many partitions have finished; the campaign is `planned` when all have.
local key, label, count = KEYS[1], ARGV[1], tonumber(ARGV[2])
redis.call('HSET', key, 'checkpoint:' .. label, ARGV[3])
local sums, done = {}, 0
for k = 0, count - 1 do
  local raw = redis.call('HGET', key, 'checkpoint:' .. k .. '/' .. count)
  if raw then
    local point = cjson.decode(raw)
    for i = 4, #ARGV do
      sums[i] = (sums[i] or 0) + (tonumber(point.report[ARGV[i]]) or 0)
    end
    if point.finished then
      done = done + 1
      redis.call('HSET', key, 'planned:' .. k .. '/' .. count, '1')
    end
  end
end
for i = 4, #ARGV do
  redis.call('HSET', key, ARGV[i], sums[i] or 0)
end
if done == count then
  redis.call('HSET', key, 'planned', '1')
end
return done

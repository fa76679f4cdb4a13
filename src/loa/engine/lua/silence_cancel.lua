-- A delivered receipt came: its message's timer, if still waiting and not due, is cancelled.
-- KEYS[1]  the route's timers waiting, by due time (ms)
-- KEYS[2]  the route's hash member -> payload
-- KEYS[3]  shard 0's per-campaign counters (`campaign:timers`: timers not yet closed)
-- ARGV[1]  now (ms); ARGV[2..] members (campaign|message)
-- A timer that is due (or being fired) stays: the receipt came too late to stop the fallback.
-- Returns how many were cancelled.
local cancelled = 0
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if due and tonumber(due) > now then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HINCRBY', KEYS[3], string.match(ARGV[i], '^(.*)|[^|]*$') .. ':timers', -1)
    cancelled = cancelled + 1
  end
end
return cancelled

-- Close claimed timers once their fallback is queued, counting each once.
-- KEYS[1]  the route's timers being fired (by lease end)
-- KEYS[2]  the route's hash member -> payload
-- KEYS[3]  shard 0's counters (fields lane:outcome)
-- KEYS[4]  shard 0's per-campaign counters (fields campaign:outcome)
-- KEYS[5]  the route's timers fired lately, by when (ms): a copy of the message sent again
--          after a crash arms no second timer; forgotten after ARGV[3] ms
-- ARGV[1]  the outcome counted (fallback_timeout)   ARGV[2] now (ms)   ARGV[3] remembered (ms)
-- ARGV     then member, lane, campaign, counted (1, or 0 for a timer with nothing to send)
-- A timer another sweep closed already is skipped: counted once however often it was fired.
-- Returns how many were counted.
local counted = 0
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
for i = 4, #ARGV, 4 do
  local member = ARGV[i]
  if redis.call('ZREM', KEYS[1], member) == 1 then
    redis.call('HDEL', KEYS[2], member)
    redis.call('ZADD', KEYS[5], ARGV[2], member)
    redis.call('HINCRBY', KEYS[4], string.match(member, '^(.*)|[^|]*$') .. ':timers', -1)
    if ARGV[i + 3] == '1' then
      redis.call('HINCRBY', KEYS[3], ARGV[i + 1] .. ':' .. ARGV[1], 1)
      if ARGV[i + 2] ~= '' then
        redis.call('HINCRBY', KEYS[4], ARGV[i + 2] .. ':' .. ARGV[1], 1)
      end
      counted = counted + 1
    end
  end
end
return counted

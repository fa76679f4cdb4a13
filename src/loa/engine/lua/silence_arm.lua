-- Arm the silence timers of messages a provider accepted: each goes on to its next channel
-- when no delivered receipt cancels its timer before it is due.
-- KEYS[1]  the route's timers waiting, a sorted set by due time (ms); member campaign|message
-- KEYS[2]  the route's timers being fired, a sorted set by the end of their lease (ms)
-- KEYS[3]  the route's hash member -> what the timer fires (the message, packed)
-- KEYS[4]  the route's timers fired lately, by when (ms)
-- KEYS[5]  shard 0's per-campaign counters: `campaign:timers` counts those not yet closed
-- ARGV     member, due ms, payload, ... (one triple per message)
-- A message sent again (after a crash) keeps its first timer, and one being fired or fired
-- already is left alone: a person is waited for once. Returns how many timers were armed.
local armed = 0
for i = 1, #ARGV, 3 do
  local member = ARGV[i]
  if not redis.call('ZSCORE', KEYS[2], member) and not redis.call('ZSCORE', KEYS[4], member) then
    if redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], member) == 1 then
      redis.call('HSET', KEYS[3], member, ARGV[i + 2])
      redis.call('HINCRBY', KEYS[5], string.match(member, '^(.*)|[^|]*$') .. ':timers', 1)
      armed = armed + 1
    end
  end
end
return armed

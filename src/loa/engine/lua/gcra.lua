-- A route's shared rate limit: GCRA over a lease of many tokens, with an adaptive factor that
-- halves when the provider throttles us and recovers linearly over time.
-- KEYS[1]  the route's limiter hash: tat (us), factor, updated (us), cut (us)
-- ARGV[1]  configured rate, tokens per second (> 0)
-- ARGV[2]  burst, in seconds of rate
-- ARGV[3]  tokens wanted (0 to only report a throttle or read the state; negative: tokens
--          granted earlier and never spent, given back)
-- ARGV[4]  1 when the provider just throttled us, else 0
-- ARGV[5]  lowest factor (0 < floor <= 1)
-- ARGV[6]  factor regained per second
-- ARGV[7]  microseconds between two cuts: a window of throttled answers is one signal
-- Returns {tokens granted, microseconds to wait before asking again, factor * 1e6}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'updated', 'cut')
local tat = tonumber(state[1]) or now
local factor = tonumber(state[2]) or 1
local updated = tonumber(state[3]) or now
local cut = tonumber(state[4]) or 0
factor = math.min(1, factor + tonumber(ARGV[6]) * (now - updated) / 1000000)
if ARGV[4] == '1' and now - cut >= tonumber(ARGV[7]) then
  factor = math.max(tonumber(ARGV[5]), factor / 2)
  cut = now
end
local interval = 1000000 / (rate * factor)
-- at least one token always fits, however slow the route
local tolerance = math.max(burst * 1000000, interval)
-- work with how far the theoretical arrival time is ahead of now: a small exact number,
-- where now + tolerance (about 1.7e15 us) would lose the fraction that decides a token
local ahead = math.max(0, tat - now)
local granted = 0
local wait = 0
if want < 0 then
  -- unspent tokens go back: as if they had never been granted (never below now)
  ahead = math.max(0, ahead + want * interval)
elseif want > 0 then
  local room = math.floor((tolerance - ahead) / interval)
  granted = math.max(0, math.min(want, room))
  ahead = ahead + granted * interval
  if granted < want then
    -- wait until the rest fits (as much of it as the burst allows), not one token: asking
    -- again for every token would cost a round trip each and fall far below the rate
    local need = math.max(1, math.min(want - granted, math.floor(tolerance / interval)))
    wait = math.max(1, ahead + need * interval - tolerance)
  end
end
tat = now + math.ceil(ahead)
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat), 'factor', tostring(factor),
           'updated', string.format('%.0f', now), 'cut', string.format('%.0f', cut))
redis.call('PEXPIRE', KEYS[1], 3600000)
return {granted, math.ceil(wait), math.floor(factor * 1000000)}

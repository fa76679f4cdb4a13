-- A route's shared rate limit: GCRA over a lease of many tokens, with an adaptive factor that
-- follows what the provider really takes when it throttles us.
-- KEYS[1]  the route's limiter hash: tat (us), factor, updated (us), cut (us), ceiling
--          (tokens/s the provider took when it last throttled us; 0: unknown), wacc, wref,
--          wstart (tokens taken and refused in the current window, and when it began, us)
-- ARGV[1]  configured rate, tokens per second (> 0)
-- ARGV[2]  burst, in seconds of rate
-- ARGV[3]  tokens wanted (0 to only report outcomes or read the state; negative: tokens
--          granted earlier and never spent, given back)
-- ARGV[4]  1 when the provider just throttled us, else 0
-- ARGV[5]  lowest factor (0 < floor <= 1)
-- ARGV[6]  factor regained per second, below the provider's last known cap
-- ARGV[7]  microseconds between two cuts: a window of throttled answers is one signal
-- ARGV[8]  tokens the provider took since this caller last asked
-- ARGV[9]  tokens the provider refused as throttled since this caller last asked
-- ARGV[10] microseconds of one measuring window
-- ARGV[11] share of the known cap probed per second above it, at first
-- ARGV[12] share of the measured cap to run at after a cut (a margin below it)
-- ARGV[13] share of that to start from, right after the cut (recovering to it at ARGV[6])
-- Returns {tokens granted, microseconds to wait before asking again, factor * 1e6}.
--
-- A throttle cuts the rate to what the provider took per second while refusing the rest,
-- less a margin (by half at most), and remembers that as its cap: the first cut halves (or
-- goes back to the cap it knows), the next one, a quarter of a second later, measures the cap,
-- instead of halving below it again and creeping back. Below the cap the rate recovers at ARGV[6]; above it, it probes
-- slowly at first and twice as fast every 1.5 seconds nothing is refused, so a cap that was
-- raised is found again within seconds, while the known one is crossed gently.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local floor = tonumber(ARGV[5])
local recovery = tonumber(ARGV[6])
local took = tonumber(ARGV[8]) or 0
local refused = tonumber(ARGV[9]) or 0
local window = tonumber(ARGV[10]) or 1000000
local state = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'updated', 'cut', 'ceiling', 'wacc',
                         'wref', 'wstart')
local tat = tonumber(state[1]) or now
local factor = tonumber(state[2]) or 1
local updated = tonumber(state[3]) or now
local cut = tonumber(state[4]) or 0
local ceiling = tonumber(state[5]) or 0
local wacc = tonumber(state[6]) or 0
local wref = tonumber(state[7]) or 0
local wstart = tonumber(state[8]) or now
-- recover with the time passed
local target = 1
if ceiling > 0 then
  target = math.min(1, tonumber(ARGV[12]) * ceiling / rate)
end
local dt = (now - updated) / 1000000
if factor + 1e-9 < target then -- (the factor is stored as text: compare with a little slack)
  factor = math.min(target, factor + recovery * dt)
elseif factor < 1 then
  local probe = tonumber(ARGV[11]) * math.max(ceiling, 1) / rate
  local speed = math.min(recovery, probe * 2 ^ ((now - cut) / 1500000))
  factor = math.min(1, factor + speed * dt)
end
-- measure: what the provider took and refused lately, over at most one window
if now - wstart >= window then
  wacc, wref, wstart = 0, 0, now
end
wacc = wacc + took
wref = wref + refused
if (ARGV[4] == '1' or refused > 0) and now - cut >= tonumber(ARGV[7]) then
  -- Where to cut to: what the provider took per second since the overload began (its cap),
  -- when refusals came before this one in the window; at the onset, the cap it showed last
  -- time; never known, or never more than, half the rate. Less the margin, and a cut cuts.
  local margin = tonumber(ARGV[12])
  local span = now - wstart
  local estimate = 0
  if wref > refused and span >= 100000 then
    estimate = margin * (wacc * 1000000 / span) / rate
  elseif ceiling > 0 then
    estimate = margin * ceiling / rate
  end
  factor = math.max(floor, math.min(factor * margin, math.max(factor / 2, estimate)))
  ceiling = rate * factor / margin
  -- run a little further below it at first: the provider's own window is empty after an
  -- overload, and needs a moment of room before it takes our bursts again
  factor = math.max(floor, factor * tonumber(ARGV[13]))
  cut = now
  wacc, wref, wstart = 0, 0, now -- measure the overload, if it goes on, from here
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
           'updated', string.format('%.0f', now), 'cut', string.format('%.0f', cut),
           'ceiling', tostring(ceiling), 'wacc', tostring(wacc), 'wref', tostring(wref),
           'wstart', string.format('%.0f', wstart))
redis.call('PEXPIRE', KEYS[1], 3600000)
return {granted, math.ceil(wait), math.floor(factor * 1000000)}

-- Place people, in the order given, each in the earliest session with room they may take.
-- KEYS[1]  the drive's key prefix `{ns}:{appt:DRIVE}` (see common.lua for the keys under it)
-- ARGV[1]  the horizon's first score (minutes), ARGV[2] its last ('+inf': none)
-- ARGV[3]  this run's number
-- ARGV[4..] per person: phone, order, kind (s: a site, p: a province), preference
-- Someone already known keeps what they have (a place, or a cancellation); someone waiting
-- is tried again with the order and preference they were first registered with.
-- Returns one word per person: P<session> (placed now), K<session> (kept), C (cancelled),
-- W<reason> (waiting: no_session, no_site in the province, unknown_site).
local first, last, run = ARGV[1], ARGV[2], ARGV[3]
local SITES, PROVS = P .. ':site', P .. ':provs'

-- `was`: the state before (a retry that finds no place again is no change: no history entry)
local function place(phone, order, kind, preference, was)
  local free = P .. ':free:' .. kind .. ':' .. preference
  while true do
    local found = redis.call('ZRANGEBYSCORE', free, first, last, 'LIMIT', 0, 1)[1]
    if not found then
      break
    end
    if book(found) then
      redis.call('HSET', PEOPLE, phone, record('placed', found, run, order, kind, preference))
      count('placed', order, 1)
      history('placed', phone, found, '', run, 'allocate')
      return 'P' .. found
    end
  end
  local reason = 'no_session'
  if kind == 's' and redis.call('HEXISTS', SITES, preference) == 0 then
    reason = 'unknown_site'
  elseif kind == 'p' and redis.call('SISMEMBER', PROVS, preference) == 0 then
    reason = 'no_site'
  end
  local state = 'waiting:' .. reason
  redis.call('HSET', PEOPLE, phone, record(state, '', run, order, kind, preference))
  redis.call('ZADD', wait_set(kind, preference), 0, order .. '|' .. phone)
  redis.call('ZADD', WAITING, 0, order .. '|' .. phone)
  count('waiting', order, 1)
  if state ~= was then
    history(state, phone, '', '', run, 'allocate')
  end
  return 'W' .. reason
end

local results = {}
for i = 4, #ARGV, 4 do
  local phone, order, kind, preference = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local known = redis.call('HGET', PEOPLE, phone)
  local result
  if known then
    local was = split(known)
    if was[1] == 'placed' or was[1] == 'confirmed' then
      result = 'K' .. was[2]
    elseif was[1] == 'cancelled' then
      result = 'C'
    else -- waiting: out of the lists, then placed or back in them as first registered
      order, kind, preference = was[4], was[5], was[6]
      unwait(order, phone, kind, preference)
      count('waiting', order, -1)
      result = place(phone, order, kind, preference, was[1])
    end
  else
    result = place(phone, order, kind, preference, '')
  end
  results[#results + 1] = result
end
return results

-- Place people, in the order given, each in the earliest session with room they may take.
-- KEYS[1]  the drive's key prefix `{ns}:{appt:DRIVE}` (see common.lua for the keys under it)
-- ARGV[1]  the horizon's first score (minutes), ARGV[2] its last ('+inf': none)
-- ARGV[3]  this run's number
-- ARGV[4]  the people, one a line: `order<TAB>phone<TAB>kind<TAB>preference` (kind s: a site,
--          p: a province); one argument rather than four per person, which the client and
--          the server spent more time on than on the placing itself
-- Someone already known keeps what they have (a place, or a cancellation); someone waiting
-- is tried again with the order and preference they were first registered with.
-- Returns one word per person: P<session> (placed now), K<session> (kept), C (cancelled),
-- W<reason> (waiting: no_session, no_site in the province, unknown_site).
local first, last, run = ARGV[1], ARGV[2], ARGV[3]
local SITES, PROVS = P .. ':site', P .. ':provs'

-- the per-group counters move once per call, not once per person
local moves = {}
local function tally(what, order, by)
  local field = what .. ':' .. group_of(order)
  moves[field] = (moves[field] or 0) + by
end

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
      tally('placed', order, 1)
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
  tally('waiting', order, 1)
  if state ~= was then
    history(state, phone, '', '', run, 'allocate')
  end
  return 'W' .. reason
end

local results = {}
for line in string.gmatch(ARGV[4], '[^\n]+') do
  local order, phone, kind, preference = string.match(line, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
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
      tally('waiting', order, -1)
      result = place(phone, order, kind, preference, was[1])
    end
  else
    result = place(phone, order, kind, preference, '')
  end
  results[#results + 1] = result
end
for field, by in pairs(moves) do
  if by ~= 0 then
    redis.call('HINCRBY', COUNT, field, by)
  end
end
return results

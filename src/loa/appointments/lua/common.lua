-- (common.lua is put in front of every script of this folder; it is no script of its own.)
-- A drive's keys are its prefix KEYS[1] = `{ns}:{appt:DRIVE}` and a suffix, so all of them sit
-- in the drive's hash slot: the scripts run unchanged on Redis Cluster.
--   :site         hash  site id -> `province<TAB>name and address as JSON`
--   :provs        set   provinces that have a site
--   :session      hash  session id (`SITE|YYYY-MM-DD|HH:MM`) -> `score<TAB>province<TAB>end`
--   :cap, :booked hashes session id -> capacity, places taken
--   :free:s:SITE, :free:p:PROVINCE  sorted sets of the sessions with room (score: start time)
--   :people       hash  phone -> `state<TAB>session<TAB>run<TAB>order<TAB>kind<TAB>preference`
--                 (state: placed, confirmed, cancelled or waiting:REASON; kind s: a site,
--                 p: a province; order: group, registered_at and line, fixed width)
--   :fields       hash  phone -> the registrant's other columns, as a JSON object
--   :wait:s:SITE, :wait:p:PROVINCE, :waiting  who waits, as `order|phone` (score 0: by order)
--   :count        hash  `placed:G`, `confirmed:G`, `waiting:G`, `cancelled:G` per group G
--   :history      stream of every change: e (event), p (phone), s (session), f (from), r, by
--   :cursor       the last inbound stream id whose reply was applied
local P = KEYS[1]
local PEOPLE, CAP, BOOKED, INFO = P .. ':people', P .. ':cap', P .. ':booked', P .. ':session'
local COUNT, HISTORY, WAITING = P .. ':count', P .. ':history', P .. ':waiting'

local function split(text)
  local parts = {}
  for part in string.gmatch(text .. '\t', '([^\t]*)\t') do
    parts[#parts + 1] = part
  end
  return parts
end

local function site_of(session)
  return string.match(session, '^([^|]*)')
end

local function group_of(order)
  return tonumber(string.sub(order, 1, 3))
end

local function record(state, session, run, order, kind, preference)
  return table.concat({state, session, run, order, kind, preference}, '\t')
end

local function count(what, order, by)
  redis.call('HINCRBY', COUNT, what .. ':' .. group_of(order), by)
end

-- the sets a session is listed in while it has room
local function free_sets(session)
  local info = split(redis.call('HGET', INFO, session))
  return P .. ':free:s:' .. site_of(session), P .. ':free:p:' .. info[2], tonumber(info[1])
end

-- take a place in `session`; false (and nothing taken) if it is full after all
local function book(session)
  local taken = redis.call('HINCRBY', BOOKED, session, 1)
  local capacity = tonumber(redis.call('HGET', CAP, session))
  if taken >= capacity then
    local by_site, by_province = free_sets(session)
    redis.call('ZREM', by_site, session)
    redis.call('ZREM', by_province, session)
  end
  if taken > capacity then -- never kept: the ledger is never over capacity
    redis.call('HINCRBY', BOOKED, session, -1)
    return false
  end
  return true
end

-- give back a place in `session`; it is listed as having room again
local function unbook(session)
  local taken = redis.call('HINCRBY', BOOKED, session, -1)
  if taken < tonumber(redis.call('HGET', CAP, session)) then
    local by_site, by_province, score = free_sets(session)
    redis.call('ZADD', by_site, score, session)
    redis.call('ZADD', by_province, score, session)
  end
end

local function wait_set(kind, preference)
  return P .. ':wait:' .. kind .. ':' .. preference
end

local function unwait(order, phone, kind, preference)
  redis.call('ZREM', wait_set(kind, preference), order .. '|' .. phone)
  redis.call('ZREM', WAITING, order .. '|' .. phone)
end

local function history(event, phone, session, from, reference, by)
  redis.call('XADD', HISTORY, '*', 'e', event, 'p', phone, 's', session, 'f', from,
             'r', reference, 'by', by)
end

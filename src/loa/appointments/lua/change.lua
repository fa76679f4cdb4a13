-- One person's change to their appointment, from their reply or an operator, exactly once.
-- KEYS[1]  the drive's key prefix `{ns}:{appt:DRIVE}` (see common.lua for the keys under it)
-- ARGV[1]  confirm | release | move | none (none: only move the cursor)
-- ARGV[2]  the phone (E.164)
-- ARGV[3]  the inbound stream id of the reply, or '' for an operator's change
-- ARGV[4]  now as a score (minutes): a freed session that has started goes to nobody
-- ARGV[5]  who: `reply`, or the operator's person
-- A reply is applied once: a stream id at or before the drive's cursor is skipped, and the
-- cursor moves to each reply applied (replies are read in stream order).
-- A place given back goes at once to whoever waits first (in order) for its site or province.
-- Returns {outcome, session before, session after, phone placed from the wait, their session}
-- outcome: seen | unknown | confirmed | released | withdrawn | moved | no_other | not_placed
--          | cancelled (already) | none
local action, phone, reference, now, by = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]

-- stream ids `ms-seq` compared as numbers
local function after(id, than)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  local than_ms, than_seq = string.match(than, '^(%d+)-(%d+)$')
  ms, seq, than_ms, than_seq = tonumber(ms), tonumber(seq), tonumber(than_ms), tonumber(than_seq)
  return ms > than_ms or (ms == than_ms and seq > than_seq)
end

if reference ~= '' then
  local cursor = redis.call('GET', P .. ':cursor')
  if cursor and not after(reference, cursor) then
    return {'seen', '', '', '', ''}
  end
  redis.call('SET', P .. ':cursor', reference)
end
if action == 'none' then
  return {'none', '', '', '', ''}
end

-- the freed `session` to whoever waits first for its site or its province
local function refill(session)
  local by_site, by_province, score = free_sets(session)
  if score < now then
    return '', ''
  end
  local site = site_of(session)
  local province = split(redis.call('HGET', INFO, session))[2]
  local a = redis.call('ZRANGE', wait_set('s', site), 0, 0)[1]
  local b = redis.call('ZRANGE', wait_set('p', province), 0, 0)[1]
  local first = a
  if not a or (b and b < a) then
    first = b
  end
  if not first or not book(session) then
    return '', ''
  end
  local order, waiter = string.match(first, '^([^|]*)|(.*)$')
  local was = split(redis.call('HGET', PEOPLE, waiter))
  unwait(order, waiter, was[5], was[6])
  count('waiting', order, -1)
  count('placed', order, 1)
  redis.call('HSET', PEOPLE, waiter, record('placed', session, 'reply', order, was[5], was[6]))
  history('reallocated', waiter, session, '', reference, by)
  return waiter, session
end

local known = redis.call('HGET', PEOPLE, phone)
if not known then
  return {'unknown', '', '', '', ''}
end
local was = split(known)
local state, session, order = was[1], was[2], was[4]
local holding = state == 'placed' or state == 'confirmed'

if state == 'cancelled' then
  return {'cancelled', '', '', '', ''}
end
if action == 'confirm' then
  if not holding then
    return {'not_placed', '', '', '', ''}
  end
  if state == 'placed' then
    redis.call('HSET', PEOPLE, phone, record('confirmed', session, was[3], order, was[5], was[6]))
    count('confirmed', order, 1)
    history('confirmed', phone, session, '', reference, by)
  end
  return {'confirmed', session, session, '', ''}
end
if action == 'release' then
  redis.call('HSET', PEOPLE, phone, record('cancelled', '', was[3], order, was[5], was[6]))
  count('cancelled', order, 1)
  if not holding then
    unwait(order, phone, was[5], was[6])
    count('waiting', order, -1)
    history('withdrawn', phone, '', '', reference, by)
    return {'withdrawn', '', '', '', ''}
  end
  count('placed', order, -1)
  if state == 'confirmed' then
    count('confirmed', order, -1)
  end
  unbook(session)
  history('released', phone, '', session, reference, by)
  local waiter, given = refill(session)
  return {'released', session, '', waiter, given}
end
if action == 'move' then
  if not holding then
    return {'not_placed', '', '', '', ''}
  end
  local by_site, _, score = free_sets(session)
  local later = redis.call('ZRANGEBYSCORE', by_site, '(' .. score, '+inf')
  for _, next_session in ipairs(later) do
    if book(next_session) then
      redis.call('HSET', PEOPLE, phone, record('placed', next_session, was[3], order, was[5], was[6]))
      if state == 'confirmed' then
        count('confirmed', order, -1)
      end
      unbook(session)
      history('moved', phone, next_session, session, reference, by)
      local waiter, given = refill(session)
      return {'moved', session, next_session, waiter, given}
    end
  end
  return {'no_other', session, session, '', ''}
end
return redis.error_reply('change.lua: unknown action ' .. action)

-- Settle one person's reminder, exactly once: take them off the campaign's reminders to come and,
-- when it was sent, count it the first time.
-- KEYS[1]  the campaign's follow-up prefix `{ns}:{fu:CAMPAIGN}`; every key used is it and:
--   :remind     sorted set person -> when the reminder is due (the engine adds to it)
--   :reminded   set of the people reminded
--   :counts     hash: `reminded`, and `reminder_skipped` (answered, or the window closed)
-- ARGV[1]  the phone, ARGV[2] 'sent' (the reminder was queued) or 'skipped'
-- ARGV[3]  seconds the reminded set is kept at least (the question's window and a day)
-- Returns 1 when counted now, 0 when it was settled before (a tick after a crash).
local P = KEYS[1]
local phone, outcome = ARGV[1], ARGV[2]
local due = redis.call('ZREM', P .. ':remind', phone)
if outcome ~= 'sent' then
  if due == 0 or redis.call('SISMEMBER', P .. ':reminded', phone) == 1 then
    return 0
  end
  redis.call('HINCRBY', P .. ':counts', 'reminder_skipped', 1)
  return 1
end
if redis.call('SADD', P .. ':reminded', phone) == 0 then
  return 0
end
if redis.call('TTL', P .. ':reminded') < tonumber(ARGV[3]) then
  redis.call('EXPIRE', P .. ':reminded', ARGV[3])
end
redis.call('HINCRBY', P .. ':counts', 'reminded', 1)
return 1

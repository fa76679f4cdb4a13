-- Claim the timers that are due, and those whose claimer went silent, for one sweep.
-- KEYS[1]  the route's timers waiting, by due time (ms)
-- KEYS[2]  the route's timers being fired, by the end of their lease (ms)
-- KEYS[3]  the route's hash member -> payload
-- ARGV[1]  now (ms)   ARGV[2]  lease (ms)   ARGV[3]  at most this many
-- A claimed timer moves to KEYS[2] with a lease: a sweeper killed before it fired it leaves
-- it there, and the next sweep after the lease fires it again (the fallback is queued once
-- whatever the number of sweeps: its batch id is the timer's). A delivered receipt cancels
-- only timers still waiting and not due: once due, the fallback goes, and a late receipt is
-- counted with the others but changes nothing.
-- Returns member, payload, ... ('' for a payload that is missing).
local limit = tonumber(ARGV[3])
local claimed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, limit)
if #claimed < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit - #claimed)
  for _, member in ipairs(due) do
    redis.call('ZREM', KEYS[1], member)
    table.insert(claimed, member)
  end
end
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
local out = {}
for _, member in ipairs(claimed) do
  redis.call('ZADD', KEYS[2], lease, member)
  table.insert(out, member)
  table.insert(out, redis.call('HGET', KEYS[3], member) or '')
end
return out

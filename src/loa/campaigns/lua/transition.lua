-- Move a campaign from one of the allowed states to the next, atomically.
-- KEYS[1]  the campaign hash
-- ARGV[1]  the new state
-- ARGV[2]  now (ms), recorded as `<state>_ms`
-- ARGV[3..] the states it may be in
-- Returns {1, old state} on success, {0, current state} when not allowed, {-1} if unknown.
local current = redis.call('HGET', KEYS[1], 'state')
if not current then
  return {-1}
end
for i = 3, #ARGV do
  if ARGV[i] == current then
    redis.call('HSET', KEYS[1], 'state', ARGV[1], ARGV[1] .. '_ms', ARGV[2])
    return {1, current}
  end
end
return {0, current}

-- Move a campaign from one of the allowed states to the next, atomically, with the fields that
-- go with the move (who approved it and what they approved, say).
-- KEYS[1]  the campaign hash
-- ARGV[1]  the new state
-- ARGV[2]  now (ms), recorded as `<state>_ms`
-- ARGV[3]  n, the number of states it may be in
-- ARGV[4..3+n] the states it may be in
-- ARGV[4+n..] field, value pairs to set with the move
-- Returns {1, old state} on success, {0, current state} when not allowed, {-1} if unknown.
local current = redis.call('HGET', KEYS[1], 'state')
if not current then
  return {-1}
end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
  if ARGV[i] == current then
    redis.call('HSET', KEYS[1], 'state', ARGV[1], ARGV[1] .. '_ms', ARGV[2])
    if #ARGV > 3 + n then
      redis.call('HSET', KEYS[1], unpack(ARGV, 4 + n))
    end
    return {1, current}
  end
end
return {0, current}

-- Replace one element in its place, only if it still holds what the caller read: two erasures
-- at once never write back what the other took out.
-- KEYS[1]  a list or a hash
-- ARGV[1]  'list' (ARGV[2] is an index) or 'hash' (ARGV[2] is a field)
-- ARGV[2]  where the element is
-- ARGV[3]  what the caller read there
-- ARGV[4]  what it becomes
-- Returns 1 when replaced, 0 when the element had changed (read it again) or is gone.
local current
if ARGV[1] == 'list' then
  current = redis.call('LINDEX', KEYS[1], ARGV[2])
else
  current = redis.call('HGET', KEYS[1], ARGV[2])
end
if current ~= ARGV[3] then
  return 0
end
if ARGV[1] == 'list' then
  redis.call('LSET', KEYS[1], ARGV[2], ARGV[4])
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
end
return 1

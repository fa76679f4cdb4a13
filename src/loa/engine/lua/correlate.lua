-- Meet a sent message and its receipt, whichever arrives first.
-- KEYS[1]: the receipt key of one provider id on one route.
-- ARGV[1]: "sent" (the provider accepted it; ARGV[2] = campaign|message|part)
--       or "receipt" (ARGV[2] = 1 delivered / 0 not, then |state)
-- ARGV[3]: seconds to keep the half that arrived first.
-- Returns the other half when both are here (and forgets the key), else false.
local current = redis.call('GET', KEYS[1])
local mine = ARGV[1] == 'sent' and 's' or 'r'
if current then
  local kind = string.sub(current, 1, 1)
  if kind ~= mine then
    redis.call('DEL', KEYS[1])
    return string.sub(current, 3)
  end
  if mine == 'r' then
    return false -- a duplicate receipt: keep the first
  end
end
redis.call('SET', KEYS[1], mine .. ':' .. ARGV[2], 'EX', ARGV[3])
return false

-- Record sites and their sessions; what is already booked is never taken back.
-- KEYS[1]  the drive's key prefix `{ns}:{appt:DRIVE}` (see common.lua for the keys under it)
-- ARGV[1]  n, the number of sites that follow
-- ARGV[2 .. 1+3n]  per site: id, province, `name and address as JSON`
-- then per session: id, score (minutes of its start), end (HH:MM), capacity
-- Returns one word per site, then one per session, in order:
--   site: new | same | updated (name or address) | province:P (refused: it is in P already)
--   session: new | same | changed | unknown_site | below:N (refused: N are booked already)
local sites = tonumber(ARGV[1])
local results = {}
for i = 2, 1 + 3 * sites, 3 do
  local id, province, details = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local value = province .. '\t' .. details
  local known = redis.call('HGET', P .. ':site', id)
  if not known then
    redis.call('HSET', P .. ':site', id, value)
    redis.call('SADD', P .. ':provs', province)
    results[#results + 1] = 'new'
  elseif known == value then
    results[#results + 1] = 'same'
  elseif split(known)[1] ~= province then
    results[#results + 1] = 'province:' .. split(known)[1]
  else
    redis.call('HSET', P .. ':site', id, value)
    results[#results + 1] = 'updated'
  end
end
for i = 2 + 3 * sites, #ARGV, 4 do
  local id, score, finish, capacity = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local site = redis.call('HGET', P .. ':site', site_of(id))
  local old = redis.call('HGET', CAP, id)
  local taken = tonumber(redis.call('HGET', BOOKED, id) or '0')
  if not site then
    results[#results + 1] = 'unknown_site'
  elseif old and capacity < taken then
    results[#results + 1] = 'below:' .. taken
  else
    local province = split(site)[1]
    redis.call('HSET', INFO, id, score .. '\t' .. province .. '\t' .. finish)
    redis.call('HSET', CAP, id, capacity)
    redis.call('HSETNX', BOOKED, id, 0)
    local by_site, by_province = P .. ':free:s:' .. site_of(id), P .. ':free:p:' .. province
    if taken < capacity then
      redis.call('ZADD', by_site, score, id)
      redis.call('ZADD', by_province, score, id)
    else
      redis.call('ZREM', by_site, id)
      redis.call('ZREM', by_province, id)
    end
    if not old then
      results[#results + 1] = 'new'
    elseif tonumber(old) == capacity then
      results[#results + 1] = 'same'
    else
      results[#results + 1] = 'changed'
    end
  end
end
return results

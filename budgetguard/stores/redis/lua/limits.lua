-- limits.lua: the limits and plan assignments held in Redis (bg.set_limit, bg.set_plan).
--
-- KEYS[1] hash of stored limits: "<scope>|<key>|<window>" -> the limit as JSON
-- KEYS[2] hash of plan assignments: "<scope>|<key>" -> plan name
-- KEYS[3] version, a hash: n, incremented by every write, and e, the moment the hash was
--         made - so readers can tell their copy is current, even after the version was
--         lost (a failover, a deleted key) and counted up again to a number they know
-- ARGV[1] what to do:
--   read <known version>       -> {version} when unchanged, else {version, limits, plans}
--                                 (each a flat field, value list): one consistent snapshot
--   put <field> <json>         -> version
--   drop <field>               -> {removed 0|1, version}
--   plan <field> <name or "">  -> version ("" takes the subject off its plan)

local function version()
  local v = redis.call('HMGET', KEYS[3], 'e', 'n')
  if not v[1] then
    return '0'
  end
  return v[1] .. '.' .. v[2]
end

local function bump()
  if redis.call('HEXISTS', KEYS[3], 'e') == 0 then
    local t = redis.call('TIME')
    redis.call('HSET', KEYS[3], 'e', t[1] .. string.format('%06d', tonumber(t[2])), 'n', 0)
  end
  redis.call('HINCRBY', KEYS[3], 'n', 1)
  return version()
end

local op = ARGV[1]
if op == 'read' then
  local current = version()
  if current == ARGV[2] then
    return {current}
  end
  return {current, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
end
if op == 'put' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return bump()
end
if op == 'drop' then
  local removed = redis.call('HDEL', KEYS[1], ARGV[2])
  if removed == 0 then
    return {0, version()}
  end
  return {1, bump()}
end
if op == 'plan' then
  if ARGV[3] == '' then
    redis.call('HDEL', KEYS[2], ARGV[2])
  else
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  end
  return bump()
end
return redis.error_reply('limits.lua: unknown op ' .. tostring(op))

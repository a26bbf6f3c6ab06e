-- limits.lua: the limits and plan assignments held in Redis (bg.set_limit, bg.set_plan).
--
-- KEYS[1] hash of stored limits: "<scope>|<key>|<window>" -> the limit as JSON
-- KEYS[2] hash of plan assignments: "<scope>|<key>" -> plan name
-- KEYS[3] version: incremented by every write, so readers can tell their copy is current
-- ARGV[1] what to do:
--   read <known version>       -> {version} when unchanged, else {version, limits, plans}
--                                 (each a flat field, value list): one consistent snapshot
--   put <field> <json>         -> version
--   drop <field>               -> {removed 0|1, version}
--   plan <field> <name or "">  -> version ("" takes the subject off its plan)

local op = ARGV[1]
if op == 'read' then
  local version = redis.call('GET', KEYS[3]) or '0'
  if version == ARGV[2] then
    return {version}
  end
  return {version, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
end
if op == 'put' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return tostring(redis.call('INCR', KEYS[3]))
end
if op == 'drop' then
  local removed = redis.call('HDEL', KEYS[1], ARGV[2])
  if removed == 0 then
    return {0, redis.call('GET', KEYS[3]) or '0'}
  end
  return {1, tostring(redis.call('INCR', KEYS[3]))}
end
if op == 'plan' then
  if ARGV[3] == '' then
    redis.call('HDEL', KEYS[2], ARGV[2])
  else
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  end
  return tostring(redis.call('INCR', KEYS[3]))
end
return redis.error_reply('limits.lua: unknown op ' .. tostring(op))

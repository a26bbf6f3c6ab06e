-- renew.lua: extend a live hold's lease (a call or stream still in flight).
--
-- KEYS[1]   lease record (see reserve.lua)      KEYS[2] lease index of the tag
-- KEYS[3..] the bucket hashes the reservation pinned, same {tag}
-- ARGV[1..3] tag prefix, tombstone ms, grace ms (see prelude.lua)
-- ARGV[4]   reservation id        ARGV[5] lease ms, from now
-- ARGV[6..] two per bucket: bucket end s (-1: none), expiry mode c|r|t
--
-- Returns {1, expires_ms, now_ms} when the hold is still live and now lasts
-- until expires_ms; {0, now_ms} when it is gone (settled, released, or its
-- lease ran out before this renewal: others may have spent its budget).

local now = now_ms()
sweep(ARGV[1], KEYS[2], now, ARGV[2])

if redis.call('HGET', KEYS[1], 's') ~= 'held' then
  return {0, now}
end
local expires = now + tonumber(ARGV[5])
local grace = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'e', string.format('%d', expires))
redis.call('ZADD', KEYS[2], expires, ARGV[4])
for i = 3, #KEYS do
  local at = 6 + (i - 3) * 2
  touch(KEYS[i], ARGV[at + 1], ARGV[at], expires, now, grace)
end
return {1, expires, now}

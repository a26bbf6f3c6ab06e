-- status.lua: spent, held and overrun of one counter's current bucket, after a sweep.
--
-- KEYS[1]   lease index of the tag      KEYS[2] the bucket hash
-- ARGV[1..3] tag prefix, tombstone ms, grace ms (see prelude.lua)
-- ARGV[4]   bucket start s            ARGV[5] bucket end s (-1: none)
--
-- Returns {0, spent, held, overrun, now_ms}, or {2, now_ms} when the bucket is
-- not the server's current one (the client retries with the server's clock).
-- Every due lease is swept first: a status never shows an expired hold as held.

local now = now_ms()
if not in_bucket(now, ARGV[4], ARGV[5]) then
  return {2, now}
end
sweep_due(ARGV[1], KEYS[1], now, ARGV[2])
local v = redis.call('HMGET', KEYS[2], 'spent', 'held', 'overrun')
return {0, v[1] or '0', v[2] or '0', v[3] or '0', now}

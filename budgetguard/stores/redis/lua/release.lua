-- release.lua: drop a reservation's hold without charging anything.
--
-- KEYS[1]   lease record (see reserve.lua)      KEYS[2] lease index of the tag
-- KEYS[3..] the bucket hashes the reservation pinned, same {tag}
-- ARGV[1..3] tag prefix, tombstone ms, grace ms (see prelude.lua)
-- ARGV[4]   reservation id
--
-- Returns 1 when a live hold was dropped, 0 otherwise (settled, released or
-- expired: an expired tombstone stays, so a late settle still charges).

local now = now_ms()
sweep(ARGV[1], KEYS[2], now, ARGV[2])

local rec = redis.call('HMGET', KEYS[1], 's', 'a', 'k', 'x', 'm')
if rec[1] ~= 'held' then
  return 0
end
drop_holds(rec[2], rec[3], rec[4], rec[5])  -- the record's keys are KEYS[3..]
bury(KEYS[1], 'done', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[4])
freed(ARGV[1])
return 1

-- settle.lua: replace a reservation's hold by the actual cost, once.
--
-- KEYS[1]   lease record (see reserve.lua)      KEYS[2] lease index of the tag
-- KEYS[3..] the bucket hashes the reservation pinned, same {tag}
-- ARGV[1..3] tag prefix, tombstone ms, grace ms (see prelude.lua)
-- ARGV[4]   reservation id
-- ARGV[5..] four per bucket: bucket end s (-1: none), expiry mode c|r|t, the actual
--           charge (nano-USD, tokens or 1 request, by the counter's unit), and its
--           overrun: how much of it was never reserved (charge - held, or 0)
--
-- Returns 1 when this call charged the cost, 0 when it was already settled
-- or released. A lease that expired (tombstone "expired", or no record left)
-- lost its hold already, so only the cost is charged: once, thanks to the
-- "done" tombstone written here.

local now = now_ms()
sweep(ARGV[1], KEYS[2], now, ARGV[2])

local rec = redis.call('HMGET', KEYS[1], 's', 'a', 'k', 'x', 'm')
if rec[1] == 'done' then
  return 0
end

local grace = tonumber(ARGV[3])
local held = rec[1] == 'held'
if held then
  drop_holds(rec[2], rec[3], rec[4], rec[5])  -- the record's keys are KEYS[3..]
end
for i = 3, #KEYS do
  local at = 5 + (i - 3) * 4
  redis.call('HINCRBY', KEYS[i], 'spent', ARGV[at + 2])
  if ARGV[at + 3] ~= '0' then
    redis.call('HINCRBY', KEYS[i], 'overrun', ARGV[at + 3])
  end
  -- A live hold's bucket got its expiry at reserve; after a lost lease the
  -- bucket may be gone and this HINCRBY just created it.
  if not held or ARGV[at + 1] == 'r' then
    touch(KEYS[i], ARGV[at + 1], ARGV[at], now, now, grace)
  end
end
bury(KEYS[1], 'done', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[4])
if held then
  freed(ARGV[1])
end
return 1

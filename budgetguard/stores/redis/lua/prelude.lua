-- prelude.lua: helpers prepended to every budgetguard script (never run alone).
--
-- Common ARGV of every script:
--   ARGV[1] tag prefix "<prefix>:{<tag>}" (lease records are "<tag prefix>:r:<id>")
--   ARGV[2] tombstone lifetime, ms
--   ARGV[3] grace after a window's end before its bucket expires, ms
--
-- Money travels as decimal strings and is only added with HINCRBY: Lua 5.1
-- prints numbers above 1e14 in exponent notation, which HINCRBY rejects.
-- Comparisons use tonumber(), exact below 2^53 nano-USD (the client checks).

local SWEEP_PER_CALL = 64
-- Before a denial or a status, expired holds are swept up to this many, so
-- neither ever counts a hold whose lease is over (a mass crash leaves thousands).
local SWEEP_BEFORE_ANSWER = 10240

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The client picked the bucket from its estimate of the server clock; the
-- server's TIME decides whether that bucket is the current one.
local function in_bucket(now, start_s, end_s)
  local stop = tonumber(end_s)
  if stop < 0 then
    return true
  end
  return now >= tonumber(start_s) * 1000 and now < stop * 1000
end

-- Calendar buckets ('c') live until their window ends plus grace, run
-- buckets ('r') until grace after their last touch, totals ('t') forever.
-- until_ms: the key must at least outlive this instant (a lease's end).
local function touch(key, mode, end_s, until_ms, now, grace)
  if mode == 'c' then
    redis.call('PEXPIREAT', key, math.max(tonumber(end_s) * 1000, until_ms) + grace)
  elseif mode == 'r' then
    redis.call('PEXPIRE', key, math.max(until_ms - now, 0) + grace)
  end
end

-- Never resurrect an expired bucket as a negative hold. A hold of 0 has
-- nothing to drop (and HINCRBY refuses "-0", which once broke every script of
-- the tag at its next sweep).
local function drop_hold(key, amount)
  if amount and amount ~= '0' and redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'held', '-' .. amount)
  end
end

-- Calls waiting for budget on this tag (a contention wait, "block") subscribe to
-- "<tag prefix>:freed": a settle, a release or an expired lease wakes them.
local function freed(tag_prefix)
  -- pcall: a Redis ACL user without channel rights must not fail the script
  -- (its writes so far would stand); waiters then just poll.
  redis.pcall('PUBLISH', tag_prefix .. ':freed', '1')
end

-- Drop everything a lease record holds: a on each dollar key of k, and on each token
-- and request key of x the matching amount of m (see reserve.lua). A record of an
-- older version has no x. A key listed twice was held twice.
local function drop_holds(a, k, x, m)
  for _, key in ipairs(cjson.decode(k)) do
    drop_hold(key, a)
  end
  if x then
    local amounts = cjson.decode(m)
    for i, key in ipairs(cjson.decode(x)) do
      drop_hold(key, amounts[i])
    end
  end
end

local function bury(record, state, tomb_ms)
  redis.call('DEL', record)
  redis.call('HSET', record, 's', state)
  redis.call('PEXPIRE', record, tomb_ms)
end

-- Free up to SWEEP_PER_CALL expired leases of this tag. Their records and
-- bucket keys are not in KEYS (no client knows them in advance) but carry
-- the same {tag}, so they live in this script's slot: see docs/redis.md.
local function sweep(tag_prefix, leases, now, tomb_ms, batch)
  local due = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, batch or SWEEP_PER_CALL)
  for _, id in ipairs(due) do
    local record = tag_prefix .. ':r:' .. id
    local rec = redis.call('HMGET', record, 's', 'a', 'k', 'x', 'm')
    if rec[1] == 'held' then
      drop_holds(rec[2], rec[3], rec[4], rec[5])
      bury(record, 'expired', tomb_ms)
    end
  end
  for i = 1, #due, 1000 do  -- unpack() of a long list overflows Lua's stack
    redis.call('ZREM', leases, unpack(due, i, math.min(i + 999, #due)))
  end
  if #due > 0 then
    freed(tag_prefix)
  end
  return #due
end

-- Sweep what is due (up to SWEEP_BEFORE_ANSWER) before answering "no" or "held".
local function sweep_due(tag_prefix, leases, now, tomb_ms)
  if redis.call('ZCOUNT', leases, '-inf', now) > 0 then
    sweep(tag_prefix, leases, now, tomb_ms, SWEEP_BEFORE_ANSWER)
  end
end

-- ---------------------------------------------------------------------------

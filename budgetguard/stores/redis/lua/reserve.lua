-- reserve.lua: hold each counter's share of one call on every counter of one tag,
-- or on none.
--
-- KEYS[1]   lease record of this reservation (hash: s=state, a=amount, e=expiry ms,
--           k=the dollar buckets, each holding a; x=the token and request buckets and
--           m=what each of those holds, decimal strings - apart from k, so that a
--           script of an older version, which drops a from every key of k, can never
--           take a dollar amount off a request counter)
-- KEYS[2]   lease index of the tag (sorted set: reservation id scored by expiry ms)
-- KEYS[3..] one bucket hash per counter (fields spent, held, overrun), same {tag}
-- ARGV[1..3] tag prefix, tombstone ms, grace ms (see prelude.lua)
-- ARGV[4]   reservation id        ARGV[5] amount        ARGV[6] lease ms
-- ARGV[7]   "1" when re-sent after a lost reply (an identical live hold is then ours)
-- ARGV[8..] six per counter: limit, bucket start s, bucket end s (-1: none), expiry mode
--           c|r|t, the amount to hold on it (nano-USD, tokens or 1 request), and two
--           flags: soft "1"|"0" (a soft counter is held on but never refuses), then
--           "d" for a dollar counter (holds ARGV[5]) or "o" for a token or request one
--
-- Returns {0, expires_ms, now_ms, total...}        granted; total: spent + held of
--                                                    each counter, this hold included
--         {1, counter index, spent, held, now_ms}  denied (first counter over its limit)
--         {2, now_ms}                              a bucket is not the server's current one
--         {3}                                      the reservation id was already used

local now = now_ms()
local n = #KEYS - 2
local function arg(i, field)
  return ARGV[8 + (i - 1) * 6 + field]
end

for i = 1, n do
  if not in_bucket(now, arg(i, 1), arg(i, 2)) then
    return {2, now}
  end
end

sweep(ARGV[1], KEYS[2], now, ARGV[2])

local dollar_keys, other_keys, other_amounts = {}, {}, {}
for i = 1, n do
  if string.sub(arg(i, 5), 2, 2) == 'o' then
    other_keys[#other_keys + 1] = KEYS[i + 2]
    other_amounts[#other_amounts + 1] = arg(i, 4)
  else
    dollar_keys[#dollar_keys + 1] = KEYS[i + 2]
  end
end
local encoded_keys = cjson.encode(dollar_keys)
local encoded_others = #other_keys > 0 and cjson.encode(other_keys) or false

local state = redis.call('HGET', KEYS[1], 's')
if state then
  local rec = redis.call('HMGET', KEYS[1], 'a', 'e', 'k', 'x')
  if ARGV[7] == '1' and state == 'held' and rec[1] == ARGV[5] and rec[3] == encoded_keys
      and rec[4] == encoded_others then
    return {0, tonumber(rec[2]), now}
  end
  return {3}
end

local fresh = {}
local totals = {}
-- The first hard counter that cannot take its amount, {index, spent, held}, or nil;
-- one that never could, even with nothing held (spent + amount > limit), before one
-- refused only by holds in flight: a caller waits for holds to settle only when that
-- can help.
local function first_denial()
  local first = nil
  for i = 1, n do
    local v = redis.call('HMGET', KEYS[i + 2], 'spent', 'held')
    local spent, held = v[1] or '0', v[2] or '0'
    local amount = tonumber(arg(i, 4))
    local total = tonumber(spent) + tonumber(held) + amount
    if total > tonumber(arg(i, 0)) and string.sub(arg(i, 5), 1, 1) ~= '1' then
      if tonumber(spent) + amount > tonumber(arg(i, 0)) then
        return {i, spent, held}
      end
      first = first or {i, spent, held}
    end
    fresh[i] = not (v[1] or v[2])
    totals[i] = string.format('%.0f', total)
  end
  return first
end

local denied = first_denial()
if denied then
  -- Expired holds must not refuse anyone: sweep every due lease, then look again.
  sweep_due(ARGV[1], KEYS[2], now, ARGV[2])
  denied = first_denial()
  if denied then
    return {1, denied[1], denied[2], denied[3], now}
  end
end

local expires = now + tonumber(ARGV[6])
local grace = tonumber(ARGV[3])
for i = 1, n do
  redis.call('HINCRBY', KEYS[i + 2], 'held', arg(i, 4))
  -- An existing bucket already expires after its window; only a new one, a
  -- run bucket, or a lease outliving the window needs its expiry (re)set.
  local mode, stop = arg(i, 3), tonumber(arg(i, 2))
  if fresh[i] or mode == 'r' or (mode == 'c' and expires > stop * 1000) then
    touch(KEYS[i + 2], mode, stop, expires, now, grace)
  end
end
redis.call('HSET', KEYS[1], 's', 'held', 'a', ARGV[5], 'e', string.format('%d', expires),
  'k', encoded_keys)
if encoded_others then
  redis.call('HSET', KEYS[1], 'x', encoded_others, 'm', cjson.encode(other_amounts))
end
redis.call('ZADD', KEYS[2], expires, ARGV[4])
local reply = {0, expires, now}
for i = 1, n do
  reply[3 + i] = totals[i]
end
return reply

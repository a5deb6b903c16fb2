-- The rate limits and budgets of one request, in one round trip, atomically (memory.py mirrors this file).
-- KEYS: one counter (a hash: a, b, c) per check, all in one hash slot ({gw:rl}) so that Redis Cluster runs it.
-- ARGV[1]: "r" to check and reserve (all or nothing), "s" to settle (apply signed deltas), "p" to peek
-- (read only: what each counter has taken, as memory.py's _used computes it).
-- Then 6 ARGV per check (limiter.py Check.args): kind, limit, capacity, window_ms, amount, and soft: a budget's
-- threshold, or when a concurrency slot a settlement releases was taken (by this script's clock).
-- Kinds: 1 token bucket, 2 sliding window, 3 concurrency, 4 budget.
-- "r" returns {1, remaining..., reset_ms..., crossed budgets...} or {0, failed check (1-based), retry_ms}.
-- "r" may have one ARGV more, last: the time (Redis's clock, ms) past which the call is stale, 0 for never. Its
-- caller has given up on it by then (no answer within its timeout: Redis was stalled, and runs it on resuming):
-- applied, it would take what no request uses. A stale call takes nothing and returns {2, now}. With that ARGV,
-- every reply of "r" ends with now, which the caller uses to bound Redis's clock (limiter_redis.py).
-- The clock is Redis's own (TIME), so that every gateway process agrees on it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS

local function arg(i, j) return tonumber(ARGV[1 + (i - 1) * 6 + j]) end

local function current(i, kind, limit, cap, win)
  local v = redis.call('HMGET', KEYS[i], 'a', 'b', 'c')
  if not v[1] then
    if kind == 1 then return {cap, now, 0} end
    if kind == 2 or kind == 3 then return {0, 0, math.floor(now / win)} end
    return {0, 0, 0}
  end
  local s = {tonumber(v[1]), tonumber(v[2]), tonumber(v[3])}
  if kind == 1 then
    s[1] = math.min(cap, s[1] + math.max(0, now - s[2]) * limit / 60000)
    s[2] = now
  elseif kind == 2 then
    local index = math.floor(now / win)
    if s[3] == index - 1 then s[2] = s[1]; s[1] = 0
    elseif s[3] ~= index then s[1] = 0; s[2] = 0 end
    s[3] = index
  elseif kind == 3 then
    -- Slots by generation, one lease (win) each: a all of them, b the previous generation's, c the current one's
    -- index. A generation is dropped a lease after it ended: a slot that old has lost its request (a gateway
    -- killed, a settlement lost), and each reservation renews the key's expiry, so it would otherwise stay for as
    -- long as the subject has traffic. A counter of an earlier version (c = 0): its slots, the current generation's.
    local index = math.floor(now / win)
    if s[3] == 0 then s[3] = index
    elseif s[3] == index - 1 then s[1] = s[1] - s[2]; s[2] = s[1]
    elseif s[3] < index - 1 then s[1] = 0; s[2] = 0 end
    s[3] = math.max(s[3], index)
  end
  return s
end

-- admitted, retry_ms, remaining, reset_ms
local function try(kind, limit, cap, win, s, cost)
  if kind == 1 then
    local rate = limit / 60000
    if s[1] < cost then return false, (cost - s[1]) / rate, 0, 0 end
    return true, 0, s[1] - cost, (cap - s[1] + cost) / rate
  elseif kind == 2 then
    local into = now - s[3] * win
    local used = s[2] * (1 - into / win) + s[1]
    local to_end = win - into
    if used + cost > limit then
      local room = limit - s[1] - cost
      local wait = to_end
      if room >= 0 and s[2] > 0 then wait = (1 - into / win - room / s[2]) * win end
      return false, math.max(wait, 1), 0, 0
    end
    return true, 0, limit - used - cost, to_end
  elseif kind == 3 then
    if s[1] + 1 > limit then return false, 1000, 0, 0 end
    return true, 0, limit - s[1] - 1, 0
  end
  if s[1] >= limit or s[1] + cost > limit then return false, win, 0, 0 end
  return true, 0, limit - s[1] - cost, win
end

local function apply(i, kind, limit, cap, win, s, amount)
  local ttl
  if kind == 1 then
    s[1] = math.min(cap, s[1] - amount); s[2] = now
    ttl = (cap - s[1]) / limit * 60000 + 1000
  else
    if kind == 3 and amount < 0 then
      -- A slot given back leaves the generation it was taken in (ARGV 6: when, by this clock, from the reply of
      -- its reservation); one whose generation was dropped is gone already. No time (a gateway of an earlier
      -- version): the previous generation, which errs towards counting a slot a little longer, never shorter.
      local at, gen = arg(i, 6), s[3] - 1
      if at > 0 then gen = math.floor(at / win) end
      if gen < s[3] - 1 then amount = 0 elseif gen == s[3] - 1 then s[2] = math.max(0, s[2] + amount) end
    end
    s[1] = math.max(0, s[1] + amount)
    if kind == 3 then s[2] = math.min(s[2], s[1]) end
    if kind == 2 then ttl = 2 * win + 1000 elseif kind == 3 then ttl = win else ttl = win + 86400000 end
  end
  redis.call('HSET', KEYS[i], 'a', tostring(s[1]), 'b', tostring(s[2]), 'c', tostring(s[3]))
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl))
end

local stale_after = tonumber(ARGV[2 + 6 * n])

if ARGV[1] == 'p' then
  local out = {}
  for i = 1, n do
    local kind, limit, cap, win = arg(i, 1), arg(i, 2), arg(i, 3), arg(i, 4)
    local s = current(i, kind, limit, cap, win)
    local used = s[1]
    if kind == 1 then used = cap - s[1]
    elseif kind == 2 then used = s[2] * (1 - (now - s[3] * win) / win) + s[1] end
    out[i] = tostring(used)
  end
  return out
end

if ARGV[1] == 's' then
  for i = 1, n do
    local kind, limit, cap, win = arg(i, 1), arg(i, 2), arg(i, 3), arg(i, 4)
    apply(i, kind, limit, cap, win, current(i, kind, limit, cap, win), arg(i, 5))
  end
  return 1
end

if stale_after and stale_after > 0 and now > stale_after then return {2, now} end
local states, left, reset = {}, {}, {}
for i = 1, n do
  local kind, limit, cap, win, cost = arg(i, 1), arg(i, 2), arg(i, 3), arg(i, 4), arg(i, 5)
  local s = current(i, kind, limit, cap, win)
  local ok, wait, rem, until_ms = try(kind, limit, cap, win, s, cost)
  if not ok then return {0, i, tostring(wait), now} end
  states[i] = s; left[i] = tostring(rem); reset[i] = tostring(until_ms)
end
local out = {1}
for i = 1, n do out[#out + 1] = left[i] end
for i = 1, n do out[#out + 1] = reset[i] end
for i = 1, n do
  local kind, soft, cost = arg(i, 1), arg(i, 6), arg(i, 5)
  local s = states[i]
  if kind == 4 and soft > 0 and s[2] == 0 and s[1] + cost >= soft then
    s[2] = 1  -- fired once per period, across every process
    out[#out + 1] = i
  end
  apply(i, kind, arg(i, 2), arg(i, 3), arg(i, 4), s, cost)
end
if stale_after then out[#out + 1] = now end
return out

"""The Lua scripts of `wan26_async.redis.RedisRateLimiter`.

Each script runs atomically inside Redis, in one round trip, on Redis's own clock
(``TIME``), so processes on machines whose clocks disagree still share one schedule.
Times are milliseconds since the epoch, as decimal strings (Lua numbers returned to
Redis would be cut to integers).

Keys (one limiter, ``{scope}`` is a hash tag so that a cluster keeps them together):

``KEYS[1]`` state (hash)
    ``phase`` start | probe | steady; ``rate`` requests/s of the shared pace; ``burst``
    its bucket size; ``sburst`` the server's burst as learned; ``tat`` the theoretical
    arrival time of the pace (GCRA); ``gend`` when the latest pause ends; ``pause`` a
    counter of pauses; ``first`` the first 429; ``asf`` admissions since it; ``wave`` the
    first wave's decisions (ms after ``wstart``, refusals marked ``x``) until the probe's
    fit; ``told`` 1 when the rate was given, not learned.
``KEYS[2]`` gate (string): the time the current pause ends, with a PX expiry at it.
``KEYS[3]`` events (sorted set): the requests admitted (and, members ``x:...``, refused)
    since the latest pause ended, scored by when the server decided, kept for the fit
    after the next 429 (at most 4096).

Every ARGV starts with: ttl (ms, refreshed on every write), a member prefix unique to
the reporting process, the sequence number of its first event, the number ``n`` of
events, then ``n`` times on Redis's clock (ms) when the server admitted each request, as
the reporting process estimates it: it maps its own clock onto Redis's with the offset
it measured on its quickest call (the ``now`` that ACQUIRE and LIMITED return), so a
call that waited for a connection does not move them.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "COMMIT", "LIMITED", "SEED"]

_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function fmt(x) return string.format('%.3f', x) end
local ttl = tonumber(ARGV[1])
local n = tonumber(ARGV[4])

-- Store the admitted replies reported with this call.
local function record(now)
  if n == 0 then return end
  local first = tonumber(redis.call('HGET', KEYS[1], 'first'))
  local prefix, seq = ARGV[2], tonumber(ARGV[3])
  local members, since_first = {}, 0
  for i = 1, n do
    local t = tonumber(ARGV[4 + i])
    if first and t >= first then since_first = since_first + 1 end
    members[#members + 1] = fmt(t)
    members[#members + 1] = prefix .. ':' .. (seq + i)
  end
  if since_first > 0 then redis.call('HINCRBY', KEYS[1], 'asf', since_first) end
  redis.call('ZADD', KEYS[3], unpack(members))
  local size = redis.call('ZCARD', KEYS[3])
  if size > 4096 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, size - 4097) end
  redis.call('PEXPIRE', KEYS[3], ttl)
end
"""

#: Report events and reserve up to ``want`` send slots. Extra ARGV: want, horizon (ms).
#: Returns {phase, rate, burst, gate wait, next ask, pause, now, slot delays...} (ms from
#: now):
#: no slot while the gate is closed; unpaced slots in phase start; else GCRA slots up to
#: the horizon, and always at least one (the next in line), so a caller never has to
#: ask twice for one request.
ACQUIRE = _PRELUDE + """
local now = now_ms()
local st = redis.call('HMGET', KEYS[1], 'phase', 'rate', 'burst', 'tat', 'pause')
local phase = st[1] or 'start'
local rate = tonumber(st[2])
local burst = tonumber(st[3]) or 1
record(now)
local want = tonumber(ARGV[5 + n])
local horizon = tonumber(ARGV[6 + n])
local out = {phase, rate and fmt(rate) or '', fmt(burst), '0', '0', st[5] or '0', fmt(now)}
local gate = tonumber(redis.call('GET', KEYS[2])) or 0
if now < gate then
  out[4] = fmt(gate - now)
  out[5] = out[4]
  return out
end
if want <= 0 then return out end
if phase == 'start' or not rate then
  for i = 1, want do out[#out + 1] = '0' end
  return out
end
local probe = phase ~= 'steady'
local interval = 1000 / rate
local tau = 0
if probe then
  horizon = 0  -- a probe reserves nothing ahead: every slot is at its newest pace
else
  tau = (burst - 1) * interval
end
local tat = tonumber(st[4]) or 0
if tat < now then tat = now end  -- idle since: the bucket is full
local limit = now + horizon
local granted = 0
while granted < want do
  local at = tat - tau
  if at < now then at = now end
  if granted > 0 and at > limit then break end
  out[#out + 1] = fmt(at - now)
  tat = tat + interval
  granted = granted + 1
  if probe then  -- the probe speeds up with every request until the server refuses
    rate = math.min(rate * 1.08, 100000)
    interval = 1000 / rate
  end
end
if probe then
  redis.call('HSET', KEYS[1], 'tat', fmt(tat), 'rate', fmt(rate))
  out[2] = fmt(rate)
else
  redis.call('HSET', KEYS[1], 'tat', fmt(tat))
end
redis.call('PEXPIRE', KEYS[1], ttl)
local nxt = tat - tau - limit
if nxt < 0 then nxt = 0 end
out[5] = fmt(nxt)
return out
"""

#: A 429: report events, close the gate until now + wait (the later of it and the gate
#: already set). Extra ARGV: wait (ms), the default Retry-After (ms), when the server
#: refused (ms on Redis's clock; negative: now). Returns {opened, phase before, pause,
#: refused, anchor, now}: ``opened``
#: 1 when this 429 began a new pause (the caller then fits what was admitted since
#: ``anchor``, the end of the previous pause, up to ``refused``), 0 when a pause was
#: already on. The first pause of a limit not
#: learned yet moves it to phase probe at once: a caller killed before its fit leaves a
#: usable state.
LIMITED = _PRELUDE + """
local now = now_ms()
local refused = tonumber(ARGV[7 + n])  -- when the server refused
if refused < 0 or refused > now then refused = now end
local st = redis.call('HMGET', KEYS[1], 'phase', 'rate', 'gend', 'told')
local phase = st[1] or 'start'
record(now)
local wait = tonumber(ARGV[5 + n])
local gate = tonumber(redis.call('GET', KEYS[2])) or 0
local untl = now + wait
if untl > gate then
  redis.call('SET', KEYS[2], fmt(untl), 'PX', math.max(1, math.ceil(wait)))
  redis.call('HSET', KEYS[1], 'gend', fmt(untl))
end
-- the refusal is kept too: an upper bound for the fit
local refusal = {fmt(refused), 'x:' .. ARGV[2] .. ':' .. (tonumber(ARGV[3]) + n + 1)}
if now < gate then
  redis.call('ZADD', KEYS[3], unpack(refusal))
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {0, phase, '0', fmt(refused), '0', fmt(now)}
end
local anchor = tonumber(st[3]) or 0
local pause = redis.call('HINCRBY', KEYS[1], 'pause', 1)
-- the server's bucket refills during the pause: the pace starts afresh at its end
redis.call('HSET', KEYS[1], 'tat', fmt(untl))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. fmt(anchor))
if phase == 'start' and st[4] ~= '1' then
  local sburst = math.max(1, redis.call('ZCOUNT', KEYS[3], fmt(anchor), fmt(refused)))
  local retry_after = tonumber(ARGV[6 + n]) / 1000
  redis.call('HSET', KEYS[1], 'phase', 'probe', 'sburst', sburst,
             'burst', math.max(1, sburst - 1), 'first', fmt(refused),
             'rate', fmt(math.max(1, sburst / retry_after) * 4))
end
redis.call('ZADD', KEYS[3], unpack(refusal))
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, phase, tostring(pause), fmt(refused), fmt(anchor), fmt(now)}
"""

#: The result of a fit, kept only if no other pause began since. ARGV: ttl, pause,
#: phase, rate, burst, server burst, the first wave (until the probe's fit) and its start.
#: Returns 1 when stored.
COMMIT = """
if redis.call('HGET', KEYS[1], 'pause') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'phase', ARGV[3], 'rate', ARGV[4], 'burst', ARGV[5],
           'sburst', ARGV[6], 'wave', ARGV[7], 'wstart', ARGV[8])
local gend = redis.call('HGET', KEYS[1], 'gend')
if gend then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. gend) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

#: Set the pace: ARGV ttl, mode, phase, rate, burst, server burst. Mode ``told`` sets it
#: always (a rate given by the user); ``restore`` only when the state is gone (a Redis
#: restarted without persistence gets back what a process still knows). Returns 1 when set.
SEED = """
if redis.replicate_commands then redis.replicate_commands() end
if ARGV[2] == 'restore' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'phase', ARGV[3], 'rate', ARGV[4], 'burst', ARGV[5],
           'sburst', ARGV[6], 'told', ARGV[2] == 'told' and '1' or '0')
if ARGV[2] == 'restore' then
  -- the processes paced alone meanwhile: the server's bucket is about empty, and what
  -- they admitted is not in Redis: a fit starts from here
  local t = redis.call('TIME')
  local now = string.format('%.3f', tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000)
  local tat = tonumber(now) + tonumber(ARGV[5]) * 1000 / tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tat), 'gend', now, 'first', now,
             'asf', 0)
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

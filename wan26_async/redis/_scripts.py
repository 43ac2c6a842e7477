"""The Lua scripts of `RedisRateLimiter`: the atomic gate and the pacing, nothing learned.

Each script runs atomically inside Redis, in one round trip, on Redis's own clock
(``TIME``), so processes on machines whose clocks disagree still share one schedule.
Times are milliseconds since the epoch, as decimal strings (Lua numbers returned to
Redis would be cut to integers). Every constant comes in as an argument; what the pace
is comes from the state the learner wrote (`wan26_async._ratelimit._learner`).

Keys (one limit; ``{scope}`` is a hash tag, so that a cluster keeps them together):

``KEYS[1]`` state (hash)
    The learner's `LimitState` (see `wan26_async.redis._state`: ``phase rate burst sburst
    ceiling base step add cap hold hspan look lift most first wave told``), and the
    store's own: ``tat`` the theoretical arrival time of the pace (GCRA); ``gend`` when
    the latest pause ends;
    ``pause`` a counter of pauses; ``wdata`` the
    first wave's decisions (ms after ``wstart``, refusals marked ``x``) until the probe.
``KEYS[2]`` gate (string): the time the current pause ends, with a PX expiry at it.
``KEYS[3]`` events (sorted set): the requests admitted (and, members ``x:...``, refused)
    since the latest pause ended, scored by when the server decided, for the next fit.

Every ARGV starts with: ttl (ms, refreshed on every write), the most events kept, a
member prefix unique to the reporting process, the sequence number of its first event,
the number ``n`` of events, then ``n`` times on Redis's clock (ms) when the server
admitted each request, as the reporting process estimates it (it maps its clock onto
Redis's by the offset of its quickest call: the ``now`` that ACQUIRE and LIMITED return).
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "COMMIT", "LIMITED", "SEED"]

_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function fmt(x) return string.format('%.6f', x) end
local ttl = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local n = tonumber(ARGV[5])
local X = 5 + n  -- ARGV[X + i] is the i-th argument after the events

-- Store the admitted replies reported with this call.
local function record()
  if n == 0 then return end
  local prefix, seq = ARGV[3], tonumber(ARGV[4])
  local members = {}
  for i = 1, n do
    members[#members + 1] = fmt(tonumber(ARGV[5 + i]))
    members[#members + 1] = prefix .. ':' .. (seq + i)
  end
  redis.call('ZADD', KEYS[3], unpack(members))
  local size = redis.call('ZCARD', KEYS[3])
  if size > keep then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, size - keep - 1) end
  redis.call('PEXPIRE', KEYS[3], ttl)
end
"""

#: Report events and reserve up to ``want`` send slots. Extra ARGV: want, horizon (ms).
#: Returns {phase, rate, burst, gate wait, next ask, pause, now, slot delays...} (ms from
#: now): no slot while the gate is closed; unpaced slots while unpaced (phase start);
#: else GCRA slots up to the horizon (none ahead in a probe), and always at least one
#: (the next in line), so a caller never has to ask twice for one request. Each slot
#: steps the pace as `ramp` does: after ``hold`` slots, ``rate * step + add`` up to ``cap``;
#: held ``look`` s (and ``most`` slots) at the cap, the cap rises ``lift`` times.
ACQUIRE = _PRELUDE + """
local now = now_ms()
local st = redis.call('HMGET', KEYS[1], 'phase', 'rate', 'burst', 'tat', 'pause', 'step',
                      'add', 'cap', 'hold', 'ceiling', 'look', 'lift', 'most')
local phase = st[1] or 'start'
local rate = tonumber(st[2]) or 0
local burst = tonumber(st[3]) or 1
record()
local want = tonumber(ARGV[X + 1])
local horizon = tonumber(ARGV[X + 2])
local out = {phase, fmt(rate), fmt(burst), '0', '0', st[5] or '0', fmt(now)}
local gate = tonumber(redis.call('GET', KEYS[2])) or 0
if now < gate then
  out[4] = fmt(gate - now)
  out[5] = out[4]
  return out
end
if want <= 0 then return out end
if rate <= 0 then
  for i = 1, want do out[#out + 1] = '0' end
  return out
end
local step, add = tonumber(st[6]) or 1, tonumber(st[7]) or 0
local cap, hold = tonumber(st[8]) or rate, tonumber(st[9]) or 0
local ceiling, look = tonumber(st[10]) or 0, tonumber(st[11]) or 0
local lift, most = tonumber(st[12]) or 1, tonumber(st[13]) or 0
local tau = 0
if phase == 'steady' then tau = (burst - 1) * 1000 / rate else horizon = 0 end
local tat = tonumber(st[4]) or 0
if tat < now then tat = now end  -- idle since: the bucket is full
local limit = now + horizon
local granted = 0
while granted < want do
  local at = tat - tau
  if at < now then at = now end
  if granted > 0 and at > limit then break end
  out[#out + 1] = fmt(at - now)
  tat = tat + 1000 / rate
  granted = granted + 1
  if hold > 0 then hold = hold - 1
  elseif rate < cap then
    rate = math.min(cap, rate * step + add)
    if rate >= cap and look > 0 then hold = math.max(look * rate, most) end
  elseif look > 0 then
    if rate > ceiling then ceiling = rate end
    cap = rate * lift
  end
  if phase == 'steady' then tau = (burst - 1) * 1000 / rate end
end
redis.call('HSET', KEYS[1], 'tat', fmt(tat), 'rate', fmt(rate), 'hold', fmt(hold),
           'cap', fmt(cap), 'ceiling', fmt(ceiling))
out[2] = fmt(rate)
redis.call('PEXPIRE', KEYS[1], ttl)
local nxt = tat - tau - limit
if nxt < 0 then nxt = 0 end
out[5] = fmt(nxt)
return out
"""

#: A 429: report events, close the gate until now + wait (the later of it and the gate
#: already set). Extra ARGV: wait (ms), when the server refused (ms on Redis's clock;
#: negative: now). Returns {opened, phase, pause, refused, anchor, now}: ``opened`` 1
#: when this 429 began a new pause (the caller then has the learner fit what was decided
#: since ``anchor``, the end of the previous pause, and commits it), 0 when a pause was
#: already on.
LIMITED = _PRELUDE + """
local now = now_ms()
local refused = tonumber(ARGV[X + 2])
if refused < 0 or refused > now then refused = now end
local st = redis.call('HMGET', KEYS[1], 'phase', 'gend', 'rate', 'burst')
local phase = st[1] or 'start'
record()
local wait = tonumber(ARGV[X + 1])
local gate = tonumber(redis.call('GET', KEYS[2])) or 0
local untl = now + wait
if untl > gate then
  redis.call('SET', KEYS[2], fmt(untl), 'PX', math.max(1, math.ceil(wait)))
  redis.call('HSET', KEYS[1], 'gend', fmt(untl))
end
-- the refusal is kept too: an upper bound for the fit
local refusal = {fmt(refused), 'x:' .. ARGV[3] .. ':' .. (tonumber(ARGV[4]) + n + 1)}
redis.call('ZADD', KEYS[3], unpack(refusal))
redis.call('PEXPIRE', KEYS[1], ttl)
if now < gate then return {0, phase, '0', fmt(refused), '0', fmt(now)} end
local anchor = tonumber(st[2]) or 0
local pause = redis.call('HINCRBY', KEYS[1], 'pause', 1)
-- the server's bucket refills during the pause (as much as it is long, from less than a
-- token at the refusal): the pace starts afresh at its end
local rate, burst = tonumber(st[3]) or 0, tonumber(st[4]) or 1
local tat = untl
if rate > 0 then tat = untl + math.max(0, burst * 1000 / rate - wait) end
redis.call('HSET', KEYS[1], 'tat', fmt(tat))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. fmt(anchor))
return {1, phase, tostring(pause), fmt(refused), fmt(anchor), fmt(now)}
"""

#: The learner's state after a pause, kept only if no other pause began since. ARGV:
#: ttl, pause, then field, value pairs. Returns 1 when stored.
COMMIT = """
if redis.call('HGET', KEYS[1], 'pause') ~= ARGV[2] then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local gend = redis.call('HGET', KEYS[1], 'gend')
if gend then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. gend) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

#: Set the learner's state: ARGV ttl, mode, then field, value pairs. Mode ``told`` sets
#: it always (a rate given by the user); ``restore`` only when the state is gone (a Redis
#: restarted without persistence gets back what a process still knows), with the pace's
#: bucket taken to be empty and the fit starting from now. Returns 1 when set.
SEED = """
if redis.replicate_commands then redis.replicate_commands() end
if ARGV[2] == 'restore' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[2] == 'restore' then
  -- the processes paced alone meanwhile: the server's bucket is about empty, and what
  -- they admitted is not in Redis: a fit starts from here
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local st = redis.call('HMGET', KEYS[1], 'rate', 'burst')
  local tat = now + tonumber(st[2]) * 1000 / tonumber(st[1])
  redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat),
             'gend', string.format('%.6f', now), 'first', string.format('%.6f', now))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""

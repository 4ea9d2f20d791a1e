"""Counters in Redis, shared by every gateway instance: one Lua script decides all meters of a
request in one round trip, on Redis' own clock (``TIME``), so instances with skewed clocks agree.
Imported only when ``[state] backend = "redis"``.

Keys carry a hash tag per subject (``ccm:{key:team-a}:rpm``) so that one subject's meters share a
Redis Cluster slot. Values: a Rate is a string (its theoretical arrival time, seconds since the
epoch) that expires once the bucket is full again; Slots are a sorted set of holders scored by
their expiry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from .base import Admission, Rate, Slots, StateBackend, meter_state

# ARGV: mode, n (number of Rates), ttl, then per Rate: per_second burst cost, then per Slot: limit holder.
# KEYS: the n Rate keys, then the Slot keys. Floats are returned as strings (Redis truncates numbers).
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[2])
local m = #KEYS - n
local ttl = tonumber(ARGV[3])
local function fmt(x) return string.format('%.6f', x) end
local function store(key, tat)
  local used = tat - now
  if used > 0 then
    redis.call('SET', key, fmt(tat), 'PX', math.ceil(used * 1000) + 1000)
  else
    redis.call('DEL', key)
  end
  return used
end
if ARGV[1] == 'admit' then
  local new, wait, out = {}, 0, {}
  for i = 1, n do
    local interval = 1 / tonumber(ARGV[3 * i + 1])
    local burst, cost = tonumber(ARGV[3 * i + 2]), tonumber(ARGV[3 * i + 3])
    local tat = tonumber(redis.call('GET', KEYS[i])) or now
    local base = math.max(tat, now)
    local check = base + math.min(cost, burst) * interval - now
    if check > burst * interval + 1e-9 then
      wait = math.max(wait, check - burst * interval)
      new[i] = tat
    else
      new[i] = base + cost * interval
    end
  end
  for j = 1, m do
    local key = KEYS[n + j]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= tonumber(ARGV[3 * n + 2 * j + 2]) then wait = math.max(wait, 1) end
  end
  if wait > 0 then
    out[1], out[2] = 0, fmt(wait)
    for i = 1, n do
      out[2 + i] = fmt((tonumber(redis.call('GET', KEYS[i])) or now) - now)
    end
    return out
  end
  out[1], out[2] = 1, '0'
  for i = 1, n do out[2 + i] = fmt(store(KEYS[i], new[i])) end
  for j = 1, m do
    local key = KEYS[n + j]
    redis.call('ZADD', key, now + ttl, ARGV[3 * n + 2 * j + 3])
    redis.call('PEXPIRE', key, math.ceil(ttl * 1000) + 1000)
  end
  return out
end
for i = 1, n do
  local delta = tonumber(ARGV[3 * i + 3]) / tonumber(ARGV[3 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if delta >= 0 then store(KEYS[i], math.max(tat, now) + delta) else store(KEYS[i], math.max(tat + delta, now)) end
end
for j = 1, m do redis.call('ZREM', KEYS[n + j], ARGV[3 * n + 2 * j + 3]) end
return 1
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class RedisBackend(StateBackend):
    """Meters in one Redis (``redis.asyncio``); errors propagate: FailoverBackend handles them."""

    name = "redis"

    def __init__(self, url: str, timeout: float = 0.05) -> None:
        # No client-side retries: a slow or absent Redis must cost at most one timeout per decision.
        self.client: Any = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    async def admit(self, rates: Sequence[Rate], slots: Sequence[Slots], ttl: float) -> Admission:
        reply = await self._run(b"admit", rates, slots, ttl)
        meters = tuple(meter_state(float(used), 0.0, rate) for rate, used in zip(rates, reply[2:], strict=True))
        return Admission(reply[0] == 1, float(reply[1]), meters, self.name)

    async def finish(self, adjust: Sequence[Rate], slots: Sequence[Slots], source: str = "redis") -> None:
        if adjust or slots:
            await self._run(b"finish", adjust, slots, 0.0)

    async def _run(self, mode: bytes, rates: Sequence[Rate], slots: Sequence[Slots], ttl: float) -> Any:
        keys = [r.key for r in rates] + [s.key for s in slots]
        args: list[Any] = [mode, len(rates), ttl]
        for r in rates:
            args += (r.per_second, r.burst, r.cost)
        for s in slots:
            args += (s.limit, s.holder)
        try:
            return await self.client.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(SCRIPT, len(keys), *keys, *args)

    async def close(self) -> None:
        await self.client.aclose()

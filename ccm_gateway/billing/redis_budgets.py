"""Budgets shared by every gateway instance through Redis: one Lua script reserves (all lines or
none), one settles. Imported only when ``[state] backend = "redis"``; always used behind
``budgets.FailoverBudgetStore``.

One hash per budget line and window, ``ccm:{TAG}:budget:key:NAME:30d:678`` with the fields ``spent``
and ``reserved`` (USD). The hash tag is the request's team when the key has one, else the key, so the
key's and its team's lines share a Redis Cluster slot and one script can check both. The window is in
the name, so a new window starts at zero; each hash expires an hour after its window ends, computed
on Redis' clock (``TIME``), so instances with skewed clocks agree on when it goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from .budgets import BudgetStore, Decision, Line, keys_for

GRACE = 3600  # seconds a window's hash outlives the window (late settlements still find it)

# KEYS: one hash per line. ARGV: amount, then per line: limit, window end (Unix seconds).
# Returns {allowed (1/0), refused line index (0: none), remaining per line as strings}.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local amount = tonumber(ARGV[1])
local out, refused = {}, 0
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'reserved')
  local left = tonumber(ARGV[2 * i]) - (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
  out[2 + i] = string.format('%.12f', left)
  if refused == 0 and (left <= 0 or amount > left + 1e-12) then refused = i end
end
if refused > 0 then
  out[1], out[2] = 0, refused
  return out
end
for i = 1, #KEYS do
  redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', amount)
  local ttl = math.max(tonumber(ARGV[2 * i + 1]) - now, 0) + GRACE
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl * 1000))
end
out[1], out[2] = 1, 0
return out
""".replace("GRACE", str(GRACE))

# KEYS: the lines' hashes. ARGV: reserved, actual. A hash that expired (its window is long over) is
# left alone: the ledger keeps the charge.
SETTLE = """
local reserved, actual = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local held = tonumber(redis.call('HGET', KEYS[i], 'reserved')) or 0
    redis.call('HSET', KEYS[i], 'reserved', string.format('%.12f', math.max(held - reserved, 0)))
    if actual ~= 0 then redis.call('HINCRBYFLOAT', KEYS[i], 'spent', actual) end
  end
end
return 1
"""
_SHA = {RESERVE: hashlib.sha1(RESERVE.encode()).hexdigest(), SETTLE: hashlib.sha1(SETTLE.encode()).hexdigest()}


class RedisBudgetStore(BudgetStore):
    """Budget lines in one Redis; errors propagate (``FailoverBudgetStore`` handles them)."""

    name = "redis"

    def __init__(self, url: str, timeout: float = 0.05) -> None:
        # No client-side retries: a slow or absent Redis must cost at most one timeout per decision.
        self.client: Any = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )

    async def reserve(self, lines: Sequence[Line], amount: float) -> Decision:
        args: list[Any] = [repr(float(amount))]
        for line in lines:
            args += (repr(float(line.limit)), repr(float(line.resets_at)))
        reply = await self._run(RESERVE, keys_for(lines), args)
        remaining = tuple(float(x) for x in reply[2:])
        refused = int(reply[1])
        return Decision(reply[0] == 1, remaining, lines[refused - 1].subject if refused else None, "redis")

    async def settle(self, lines: Sequence[Line], reserved: float, actual: float, source: str = "redis") -> None:
        if lines:
            await self._run(SETTLE, keys_for(lines), [repr(float(reserved)), repr(float(actual))])

    def seed(self, subject: str, window: str, spent: float) -> None:
        """The shared totals live in Redis; a single instance's ledger does not know them."""

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(_SHA[script], len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(script, len(keys), *keys, *args)

    async def close(self) -> None:
        await self.client.aclose()

"""The billing meter: what the billing stage does for one request, kept apart from the ASGI plumbing.

``plan`` prices the request's reservation, ``reserve`` takes it on the budget lines and writes the
reserve record, ``finish`` turns the observed Usage into the final usage (with provenance), the cost,
the budget settlement and the final record. The app owns one Meter (its lifespan starts and closes
the ledger); a Meter can be built from a Config alone for use outside ``create_app``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..dialects.head import integer
from ..errors import BudgetExceeded, GatewayError, PermissionDenied, ServiceUnavailable
from ..exchange import USAGE_FIELDS, Exchange
from .budgets import BudgetStore, Line, MemoryBudgetStore, Period, budget_store_from_config
from .cost import Cost, cost_of, estimate_cost
from .estimate import OutputCounter, prompt_estimate
from .ledger import ALL_ESTIMATED, Ledger, LedgerUnavailable, Record
from .pricing import Price, PriceTable

log = logging.getLogger("ccm_gateway.billing")
ANONYMOUS = "anonymous"
RoutePrice = Callable[[str], Price | None]
ROUTE_PRICES = 10_000  # model names whose reservation price is remembered


class _Uids:
    """Ledger uids: 48 random bits per process, then a counter — unique like 96 random bits per request,
    without a system call per request. A forked child draws its own prefix."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(6).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


next_uid = _Uids()


class Hold:
    """One request's reservation and what the final record needs from before the call."""

    __slots__ = ("amount", "cost", "finished", "key", "lines", "mono", "output_allowance", "price", "prompt",
                 "remaining", "source", "streaming", "team", "ts", "uid", "unpriced")

    def __init__(self, key: str, team: str | None) -> None:
        self.uid = next_uid()  # the ledger's key: client-chosen request ids may repeat
        self.key, self.team = key, team
        self.ts = time.time()
        self.mono = asyncio.get_running_loop().time()
        self.lines: list[Line] = []
        self.price: Price | None = None
        self.unpriced = False  # the route resolved, but no deployment of it has a price
        self.prompt = 0
        self.output_allowance = 0
        self.amount = 0.0
        self.remaining: float | None = None  # the tightest line's room before this request
        self.source = "memory"  # the budget store that took the reservation (settled there too)
        self.streaming = False
        self.finished = False
        self.cost: Cost | None = None


class Meter:
    def __init__(self, config: Config, route_price: RoutePrice | None = None, *,
                 budgets: BudgetStore | None = None, ledger: Ledger | None = None) -> None:
        self.config = config
        self.billing = config.billing
        self.prices = PriceTable(config.pricing.models)
        self.route_price = route_price or (lambda name: self.prices.lookup(None, name))
        self.budgets = budgets or budget_store_from_config(config.state)  # shared through Redis, or in memory
        self.ledger = ledger if ledger is not None else _ledger_from(config)
        self.unpriced: Counter[str] = Counter()  # deployments billed with cost null
        self._periods: dict[str, Period] = {}
        self._route_prices: dict[str, Price | None] = {}
        self._prices_from: RoutePrice | None = None
        self._started = False
        self._lock: asyncio.Lock | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Started, or nothing to start (no ledger): the stage then skips ``start`` without awaiting."""
        return self._started or self.ledger is None

    async def start(self) -> None:
        """Open the ledger (recovering what a killed process left open) and seed the budgets."""
        if self._started or self.ledger is None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._started:
                await self.ledger.start()
                await self._seed_budgets()
                self._started = True

    async def close(self) -> None:
        if self.ledger is not None:
            await self.ledger.close()
        self._started = False
        await self.budgets.close()

    async def _seed_budgets(self) -> None:
        """Start each budget window at what the ledger says was spent in it (restarts lose nothing)."""
        assert self.ledger is not None
        now = time.time()
        subjects = [("key", k.name, k.budget_period) for k in self.config.keys if k.budget_usd is not None]
        subjects += [("team", n, t.budget_period) for n, t in self.billing.teams.items()]
        for column, name, period in subjects:
            window, start, _ = self._period(period).window(now)
            spent = await self.ledger.run(self.ledger.backend.spend, column, name, start)
            self.budgets.seed(f"{column}:{name}", window, spent)

    def _period(self, text: str | None) -> Period:
        text = text or self.billing.budget_period
        period = self._periods.get(text)
        if period is None:
            period = self._periods[text] = Period(text)
        return period

    # --- before the call ---------------------------------------------------------------------------

    def lines_for(self, key: str | None, budget: float | None, period: str | None, team: str | None,
                  now: float) -> list[Line]:
        """The budget lines a request of this key is charged to at ``now`` (its own, its team's)."""
        lines: list[Line] = []
        if key is not None and budget is not None:
            window, _, resets = self._period(period).window(now)
            lines.append(Line("key:" + key, budget, window, resets))
        team_budget = self.billing.teams.get(team) if team else None
        if team_budget is not None:
            window, _, resets = self._period(team_budget.budget_period).window(now)
            lines.append(Line("team:" + str(team), team_budget.budget_usd, window, resets))
        return lines

    def plan(self, ex: Exchange) -> Hold:
        principal = ex.principal
        hold = Hold(principal.name if principal is not None else ANONYMOUS,
                    principal.team if principal is not None else None)
        if principal is not None:
            hold.lines = self.lines_for(principal.name, principal.budget_usd, principal.budget_period, hold.team,
                                        hold.ts)
        hold.prompt = prompt_estimate(ex)
        try:
            head = ex.head()
            hold.price = self._route_price(head.model)
            hold.unpriced = hold.price is None
            hold.output_allowance = 0 if ex.operation == "embeddings" else self._allowance(head.fields)
        except GatewayError:  # a bad body or an unknown model: the endpoint answers it, nothing is spent
            hold.prompt = 0
        hold.amount = estimate_cost(hold.prompt, hold.output_allowance, hold.price)
        return hold

    def _route_price(self, model: str) -> Price | None:
        """``route_price``, remembered per model name (routes and prices do not change while serving)."""
        if self._prices_from is not self.route_price:  # replaced (by the app, or a test): start over
            self._route_prices.clear()
            self._prices_from = self.route_price
        try:
            return self._route_prices[model]
        except KeyError:
            pass
        price = self.route_price(model)  # raises for an unknown model: not remembered
        if len(self._route_prices) >= ROUTE_PRICES:  # clients choose model names: bounded
            self._route_prices.clear()
        self._route_prices[model] = price
        return price

    def _allowance(self, fields: dict[str, Any]) -> int:
        """The request's own output limit (a true upper bound), else ``reserve_output_tokens``."""
        asked = integer(fields, "max_tokens", optional=True)
        if asked is None:
            asked = integer(fields, "max_completion_tokens", optional=True)
        return asked if asked is not None and asked > 0 else self.billing.reserve_output_tokens

    async def reserve(self, ex: Exchange, hold: Hold) -> None:
        """Take the reservation on every budget line and put the reserve record on disk."""
        if hold.lines and hold.unpriced and not self.billing.allow_unpriced:
            raise PermissionDenied(f"model {ex.model!r} has no price, and this key has a budget: add the model "
                                   "under [pricing.models] (or set billing.allow_unpriced)")
        if hold.lines:
            local = _in_process(self.budgets)
            if local is not None:
                decision = local.reserve_now(hold.lines, hold.amount)
            else:
                decision = await self.budgets.reserve(hold.lines, hold.amount)
            hold.remaining = min(decision.remaining)
            hold.source = decision.source
            if not decision.allowed:
                line = next(li for li in hold.lines if li.subject == decision.refused_by)
                left = max(min(decision.remaining), 0.0)
                raise BudgetExceeded(
                    f"budget exhausted for {line.subject.replace(':', ' ', 1)}: ${left:.4f} of ${line.limit:.2f} "
                    f"left, this request may cost up to ${hold.amount:.4f}; the budget resets at "
                    f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(line.resets_at))}",
                    headers={"x-ccm-budget-remaining-usd": usd(left)})
        if self.ledger is None:
            return
        record = self._record(ex, hold, "reserve")
        record.estimated, record.input_tokens, record.output_tokens = ALL_ESTIMATED, hold.prompt, hold.output_allowance
        record.cost_usd = hold.amount if hold.price is not None else None
        try:
            await self.ledger.reserve(record)
        except BaseException as exc:  # the ledger failed, or the client left while we waited for it
            self.ledger.add(self._record(ex, hold, "final", outcome="no_upstream"))  # nothing to recover
            if hold.lines:
                await asyncio.shield(self.budgets.settle(hold.lines, hold.amount, 0.0, hold.source))
            if isinstance(exc, LedgerUnavailable):
                raise ServiceUnavailable("the usage ledger is unavailable; the request was not sent") from None
            raise

    # --- after the call ----------------------------------------------------------------------------

    def final_usage(self, ex: Exchange, hold: Hold, counter: OutputCounter, complete: bool) -> str:
        """Make ``ex.usage`` the attempt's final usage, marking what had to be estimated, and price it;
        returns the outcome. Runs once (the stage may call it early to put the cost in the headers)."""
        if hold.finished:
            return _outcome(ex, complete)
        hold.finished = True
        usage = ex.usage
        outcome = _outcome(ex, complete)
        if outcome == "no_upstream" or (outcome == "error" and not usage.reported):
            for name in USAGE_FIELDS:
                setattr(usage, name, 0)
            usage.cache_write_1h = 0
            hold.cost = cost_of(usage, self.prices.for_deployment(ex.deployment) or hold.price)
            return outcome
        estimated: list[str] = []
        if not usage.reported:  # keep an endpoint's own estimate (Gemini embeddings) when it made one
            usage.input = usage.input or hold.prompt
            usage.output = 0 if ex.operation == "embeddings" else max(usage.output, counter.tokens)
            estimated = list(USAGE_FIELDS)
        elif not complete:  # the input was reported up front; the output stopped short of its final count
            usage.output = max(usage.output, counter.tokens)
            estimated = ["output"]
        usage.estimated = tuple(estimated)
        price = self.prices.for_deployment(ex.deployment)
        if price is None and ex.deployment:
            self.unpriced[ex.deployment] += 1
            if self.unpriced[ex.deployment] == 1:
                log.warning("no price for %s: its cost is recorded as unknown (add it under [pricing.models])",
                            ex.deployment)
        hold.cost = cost_of(usage, price)
        return outcome

    async def finish(self, ex: Exchange, hold: Hold, counter: OutputCounter, complete: bool) -> None:
        """Queue the final record and settle the budget to the actual cost; never raises. Everything
        before the budget call is synchronous, so a cancelled request task cannot interrupt it; the
        budget call is shielded (a shared store would wait on the network)."""
        if self.finish_now(ex, hold, counter, complete):
            await self.settle_shared(ex, hold)

    def finish_now(self, ex: Exchange, hold: Hold, counter: OutputCounter, complete: bool) -> bool:
        """The synchronous part of ``finish``: the final usage and cost, the final record queued, and the
        budget settled when its store is in this process. True when a shared store still has to be
        settled (``settle_shared``); never raises."""
        try:
            outcome = self.final_usage(ex, hold, counter, complete)
            ex.cost = hold.cost.total if hold.cost is not None else None
            if self.ledger is not None:
                self.ledger.add(self._record(ex, hold, "final", outcome=outcome))
            if not hold.lines:
                return False
            local = _in_process(self.budgets)
            if local is None:
                return True
            local.settle_now(hold.lines, hold.amount, ex.cost or 0.0)
        except Exception:
            log.exception("billing could not settle request %s", ex.request_id)
        return False

    async def settle_shared(self, ex: Exchange, hold: Hold) -> None:
        """Settle the budget on a shared store, shielded from the request's cancellation; never raises."""
        try:
            await asyncio.shield(self.budgets.settle(hold.lines, hold.amount, ex.cost or 0.0, hold.source))
        except Exception:
            log.exception("billing could not settle request %s", ex.request_id)

    def _record(self, ex: Exchange, hold: Hold, kind: str, outcome: str = "") -> Record:
        provider, _, model = (ex.deployment or "").partition("/")
        record = Record(
            uid=hold.uid, attempt=max(ex.attempts, 1), kind=kind, request_id=ex.request_id, ts=hold.ts,
            instance=self.ledger.instance if self.ledger is not None else "", key=hold.key, team=hold.team,
            route=ex.route or ex.model, provider=provider or None, model=model or None, operation=ex.operation,
            stream=ex.stream, reserved_usd=hold.amount, price=hold.price.name if hold.price else None, outcome=outcome,
        )
        if kind == "final":
            usage = ex.usage
            record.input_tokens, record.cache_read_tokens = usage.input, usage.cache_read
            record.cache_write_tokens, record.output_tokens, record.reasoning_tokens = (
                usage.cache_write, usage.output, usage.reasoning)
            if usage.reported or outcome not in ("no_upstream", "error"):  # else: zero tokens, nothing estimated
                record.estimated = ",".join(n for n, p in usage.provenance().items() if p == "estimated")
            record.cost_usd = hold.cost.total if hold.cost is not None else None
            if outcome == "no_upstream":
                record.cost_usd = 0.0  # no tokens: known to cost nothing, priced or not
            price = self.prices.for_deployment(ex.deployment)
            record.price = price.name if price is not None else None
            record.status = ex.upstream_status
            now = asyncio.get_running_loop().time()
            record.duration_ms = round((now - hold.mono) * 1000, 3)
            if ex.first_byte_at is not None:
                record.ttfb_ms = round((ex.first_byte_at - hold.mono) * 1000, 3)
        return record


def _in_process(store: BudgetStore) -> MemoryBudgetStore | None:
    """The store when it is the plain in-memory one, which is asked without awaiting (a subclass may
    hook the async methods)."""
    kind = type(store)
    if kind is MemoryBudgetStore or (isinstance(store, MemoryBudgetStore) and kind.reserve is MemoryBudgetStore.reserve
                                     and kind.settle is MemoryBudgetStore.settle):
        return store  # type: ignore[return-value]
    return None


def _outcome(ex: Exchange, complete: bool) -> str:
    if ex.attempts == 0 or ex.upstream_status is None:
        return "no_upstream"
    if ex.upstream_status >= 400:
        return "error"
    if complete:
        return "ok"
    return "disconnected" if ex.client_disconnected else "cut"


def usd(value: float) -> str:
    """Dollars for a header: fixed point, 10 decimals, trailing zeros dropped."""
    text = f"{value:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _ledger_from(config: Config) -> Ledger | None:
    if not config.ledger.path:
        return None
    from .sqlite_ledger import SQLiteLedger

    return Ledger(SQLiteLedger(config.ledger.path), flush_ms=config.ledger.flush_ms,
                  batch_size=config.ledger.batch_size, durable_reserve=config.ledger.durable_reserve,
                  stale_after=longest_request(config) + 300.0)


STREAM_HORIZON = 6 * 3600.0  # how long an uncapped stream is presumed alive before its reserve is recovered


def longest_request(config: Config) -> float:
    """The longest a request may run: JSON calls end by ``deadline``, streams only by
    ``stream_deadline`` (a provider without one: STREAM_HORIZON), so another worker never recovers a
    live stream's reserve."""
    provider = [p.timeout for p in config.providers.values()]
    route = [m.timeout for m in config.models if m.timeout is not None]
    deadlines = [t.deadline for t in provider + route if t.deadline is not None]
    streams = [t.stream_deadline or STREAM_HORIZON for t in provider]
    streams += [t.stream_deadline for t in route if t.stream_deadline is not None]
    # Retries, backoff and Retry-After waits come before a stream's first byte: add the request deadline.
    return max([600.0, *deadlines, *streams]) + config.resilience.retry.request_deadline

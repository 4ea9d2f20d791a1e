"""The usage ledger: one append-only record per attempt, written off the request path in batches.

Each billed request writes a ``reserve`` record before the upstream call and a ``final`` record per
attempt after it. Records are idempotent on (uid, attempt, kind), so a batch that is written twice
(a retry after an error) changes nothing. On start-up, a reserve without a final whose process is
gone is finalised as a ``recovered`` estimated charge, so a crash loses no spend.

Durability window: a reserve is committed before the upstream is called (the request waits for
the group commit that carries it, usually well under a millisecond with WAL), so a SIGKILL after
the upstream started always leaves the reserve on disk. Finals wait up to ``flush_ms`` in memory;
one lost to a SIGKILL is recovered from its reserve. ``durable_reserve = false`` trades that
guarantee for latency: the reserve is then on disk within ``flush_ms``.

``LedgerBackend`` is the seam for a shared database (PostgreSQL, a later issue): synchronous methods
that the ``Ledger`` runs on its own single worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import msgspec

log = logging.getLogger("ccm_gateway.ledger")
T = TypeVar("T")
ALL_ESTIMATED = "input,cache_read,cache_write,output,reasoning"


class Record(msgspec.Struct, kw_only=True):
    """One ledger row. ``ts`` is when the request started (Unix seconds): it decides the budget
    window, so reserve and final fall in the same one. ``estimated`` lists the usage fields the
    gateway counted itself (empty: all reported by the provider)."""

    uid: str
    attempt: int
    kind: str  # "reserve" | "final"
    request_id: str
    ts: float
    instance: str
    key: str
    team: str | None = None
    route: str | None = None
    provider: str | None = None
    model: str | None = None
    operation: str = "chat"
    stream: bool = False
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: str = ""
    cost_usd: float | None = None
    reserved_usd: float = 0.0
    price: str | None = None  # the price row used; None: unknown model
    status: int | None = None
    outcome: str = ""  # final: ok | error | disconnected | cut | recovered | no_upstream
    duration_ms: float | None = None
    ttfb_ms: float | None = None


FIELDS = tuple(Record.__struct_fields__)


class LedgerUnavailable(Exception):
    """A reserve could not be written: the request must not go upstream unrecorded."""


def make_instance() -> str:
    """``host:pid:nonce`` — lets recovery tell a dead process's reserves from a live sibling's."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def instance_alive(instance: str, me: str) -> bool | None:
    """True/False when it can be told from here (this host), None for another host's instance."""
    if instance == me:
        return True
    host, _, rest = instance.partition(":")
    my_host, _, my_rest = me.partition(":")
    if host != my_host:
        return None
    pid_text = rest.partition(":")[0]
    if not pid_text.isdigit() or pid_text == my_rest.partition(":")[0]:
        return False  # our own pid with another nonce: a previous life of this process
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LedgerBackend(ABC):
    """Synchronous storage, called from the ledger's worker thread only."""

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def write(self, records: Sequence[Record]) -> None:
        """Insert records in one transaction, ignoring any already there (same uid/attempt/kind)."""

    @abstractmethod
    def recover(self, me: str, stale_before: float) -> int:
        """Finalise reserves without a final whose instance is dead (or silent since
        ``stale_before``) as recovered estimated charges; returns how many."""

    @abstractmethod
    def spend(self, column: str, name: str, since: float) -> float:
        """Sum of final costs for ``key``/``team`` = ``name`` since ``since``."""

    @abstractmethod
    def aggregate(self, since: float, until: float, key: str | None = None) -> list[dict[str, Any]]:
        """Per key/route/provider/model/day totals of final records in [since, until)."""

    @abstractmethod
    def rows(self, since: float, until: float, kinds: Sequence[str] = ("final",)) -> Iterator[dict[str, Any]]:
        """Records in [since, until), oldest first."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection."""


class Ledger:
    """Batches records onto a backend from a single worker thread."""

    def __init__(self, backend: LedgerBackend, *, flush_ms: float = 50.0, batch_size: int = 512,
                 durable_reserve: bool = True, stale_after: float = 900.0, instance: str | None = None) -> None:
        self.backend = backend
        self.flush_s = flush_ms / 1000
        self.batch_size = batch_size
        self.durable_reserve = durable_reserve
        self.stale_after = stale_after
        self.instance = instance or make_instance()
        self.recovered = 0
        self.write_failures = 0
        self._pending: list[Record] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._urgent = False
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._hurry: asyncio.Event | None = None
        self._closing = False
        self._start_lock: asyncio.Lock | None = None

    @property
    def started(self) -> bool:
        return self._task is not None and not self._closing

    async def start(self) -> None:
        """Open the store, recover what a previous process left open, start the writer."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._task is not None:
                return
            self._closing = False
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ccm-ledger")
            await self.run(self.backend.open)
            self.recovered += await self.run(self.backend.recover, self.instance, time.time() - self.stale_after)
            if self.recovered:
                log.warning("usage ledger: recovered %d request(s) left without a final record", self.recovered)
            self._wake, self._hurry = asyncio.Event(), asyncio.Event()
            self._task = asyncio.create_task(self._writer(), name="ccm-ledger-writer")
            self._sweeper = asyncio.create_task(self._sweep(), name="ccm-ledger-sweeper")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a backend call on the ledger's thread (reads share it; SQLite then needs no locks)."""
        assert self._pool is not None, "ledger not started"
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def add(self, record: Record) -> None:
        """Queue a record; never blocks, never raises (the request path calls it)."""
        self._pending.append(record)
        if self._wake is not None:
            self._wake.set()
            if len(self._pending) >= self.batch_size:
                self._hurry.set()  # type: ignore[union-attr]

    async def reserve(self, record: Record) -> None:
        """Queue a reserve record and (``durable_reserve``) wait until it is committed."""
        if not self.durable_reserve or self._wake is None:
            self.add(record)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(record)
        self._waiters.append(waiter)
        self._urgent = True
        self._wake.set()
        self._hurry.set()  # type: ignore[union-attr]
        await waiter

    async def flush(self) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        if self._wake is None or not self._pending:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._urgent = True
        self._wake.set()
        self._hurry.set()  # type: ignore[union-attr]
        with contextlib.suppress(LedgerUnavailable):
            await waiter

    async def close(self) -> None:
        """Write everything still queued, then close the store."""
        if self._task is None:
            return
        self._closing = True
        assert self._wake is not None and self._hurry is not None
        self._wake.set()
        self._hurry.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), 30.0)
        except TimeoutError:
            log.error("usage ledger: %d record(s) could not be written at shutdown", len(self._pending))
            self._task.cancel()
        await self.run(self.backend.close)
        assert self._pool is not None
        self._pool.shutdown(wait=True)
        self._task = self._sweeper = None
        self._wake = self._hurry = None

    async def _writer(self) -> None:
        assert self._wake is not None and self._hurry is not None
        backoff = 0.05
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not (self._urgent or self._closing or len(self._pending) >= self.batch_size):
                self._hurry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self.flush_s)  # gather a batch
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters, self._urgent = [], [], False
            try:
                await self.run(self.backend.write, batch)
            except Exception:
                self.write_failures += 1
                log.exception("usage ledger: writing %d record(s) failed; will retry", len(batch))
                self._pending[:0] = batch  # keep order: reserves before their finals
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(LedgerUnavailable("usage ledger unavailable"))
                if self._closing and self.write_failures > 3:
                    log.error("usage ledger: giving up at shutdown; %d record(s) not written (their reserves, "
                              "if written, are recovered at the next start)", len(self._pending))
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _sweep(self) -> None:
        """Recover reserves of instances that died while this one runs (other workers, hosts)."""
        while True:
            await asyncio.sleep(max(self.stale_after / 4, 1.0))
            try:
                found = await self.run(self.backend.recover, self.instance, time.time() - self.stale_after)
            except Exception:
                log.exception("usage ledger: recovery sweep failed")
                continue
            if found:
                self.recovered += found
                log.warning("usage ledger: recovered %d request(s) of a gone instance", found)

"""The usage ledger: idempotent records, batching and shutdown flush, recovery of a killed process's
open requests, shielded finalisation, the operator read-outs (``GET /v1/usage``, ``usage export``),
and the real thing — ``ccm-gateway serve`` killed with SIGKILL under load, then restarted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from msgspec.structs import replace

from ccm_gateway import create_app, load_config
from ccm_gateway.billing.ledger import Ledger, LedgerUnavailable, Record
from ccm_gateway.billing.meter import Meter
from ccm_gateway.billing.sqlite_ledger import SQLiteLedger
from ccm_gateway.cli import main as cli_main
from ccm_gateway.dialects import Dialect
from ccm_gateway.errors import ServiceUnavailable
from ccm_gateway.exchange import STATE_KEY, Exchange
from ccm_gateway.middleware.billing import BillingMiddleware
from ccm_gateway.mock import MockUpstream

from .conftest import gateway_config
from .servers import ServerThread, start_gateway_process

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "adm-secret-key-0123456789"


def record(uid: str, kind: str, instance: str = "here:1:x", **extra: Any) -> Record:
    return Record(uid=uid, attempt=1, kind=kind, request_id="r-" + uid, ts=1_700_000_000.0, instance=instance,
                  key="k", **extra)


def finals(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM usage_records WHERE kind = 'final' ORDER BY id")]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)
    return proc.pid


# --- the store -------------------------------------------------------------------------------------


def test_records_are_idempotent_and_open_reserves_of_dead_processes_are_recovered(tmp_path: Path) -> None:
    host = socket.gethostname()
    me = f"{host}:{os.getpid()}:mine"
    store = SQLiteLedger(tmp_path / "l.sqlite3")
    store.open()
    done = [record("a", "reserve", me, cost_usd=0.5, reserved_usd=0.5), record("a", "final", me, cost_usd=0.1)]
    store.write(done)
    store.write(done)  # a batch written twice (retry after an error) changes nothing
    dead = f"{host}:{dead_pid()}:gone"
    sibling = f"{host}:{os.getppid()}:alive"  # a live process on this host: another worker
    store.write([record("b", "reserve", dead, input_tokens=100, output_tokens=50, cost_usd=0.25, reserved_usd=0.25),
                 record("c", "reserve", sibling, cost_usd=0.3, reserved_usd=0.3),
                 record("d", "reserve", "elsewhere:1:x", cost_usd=0.4, reserved_usd=0.4)])
    assert store.recover(me, stale_before=0.0) == 1  # only b: c's process lives, d's host cannot be asked
    rows = {r["uid"]: r for r in finals(tmp_path / "l.sqlite3")}
    assert set(rows) == {"a", "b"} and rows["a"]["cost_usd"] == 0.1
    assert rows["b"]["outcome"] == "recovered" and rows["b"]["cost_usd"] == 0.25
    assert rows["b"]["estimated"] == "input,cache_read,cache_write,output,reasoning"
    assert store.recover(me, stale_before=2e9) == 2  # silent past the deadline: c and d too
    assert store.recover(me, stale_before=2e9) == 0  # nothing is recovered twice
    assert store.spend("key", "k", 0.0) == pytest.approx(0.1 + 0.25 + 0.3 + 0.4)
    store.close()


class FlakyStore(SQLiteLedger):
    """Fails its first ``fail`` writes (a full disk, a locked file)."""

    def __init__(self, path: Path, fail: int) -> None:
        super().__init__(path)
        self.fail = fail

    def write(self, records: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("disk I/O error")
        super().write(records)


def test_writer_batches_retries_and_flushes_everything_at_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger = Ledger(FlakyStore(tmp_path / "l.sqlite3", fail=1), flush_ms=10_000, batch_size=10_000)
        await ledger.start()
        with pytest.raises(LedgerUnavailable):  # the first write fails: the request must not go upstream
            await ledger.reserve(record("r0", "reserve"))
        await ledger.reserve(record("r1", "reserve"))  # the retry carries both, committed before this returns
        with sqlite3.connect(tmp_path / "l.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM usage_records").fetchone()[0] == 2
        for i in range(500):
            ledger.add(record(f"f{i}", "final"))
        await ledger.close()  # long flush interval: only the shutdown flush writes them

    asyncio.run(scenario())
    assert len(finals(tmp_path / "l.sqlite3")) == 500


def test_finalisation_is_shielded_from_cancellation(tmp_path: Path) -> None:
    config = load_config({"ledger": {"path": str(tmp_path / "l.sqlite3")},
                          "pricing": {"models": {"m": {"input": 1.0, "output": 2.0}}}}, env={}, dotenv=False)

    async def scenario() -> None:
        meter = Meter(config)
        started = asyncio.Event()

        async def endpoint(scope: Any, receive: Any, send: Any) -> None:
            ex = scope["state"][STATE_KEY]
            ex.attempts, ex.upstream_status, ex.deployment = 1, 200, "p/m"
            ex.usage.input, ex.usage.output, ex.usage.reported = 10, 3, True
            started.set()
            await asyncio.Event().wait()  # the upstream is still streaming

        ex = Exchange(Dialect.OPENAI_CHAT)
        ex.request_id, ex.body = "cancelled", b'{"model": "m", "messages": []}'
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [],
                 "state": {STATE_KEY: ex}}
        stage = BillingMiddleware(endpoint, meter)
        task = asyncio.create_task(stage(scope, None, None))
        await started.wait()
        task.cancel()  # e.g. the server cancels the request task when its client vanishes
        with pytest.raises(asyncio.CancelledError):
            await task
        await meter.close()

    asyncio.run(scenario())
    [row] = finals(tmp_path / "l.sqlite3")
    assert row["request_id"] == "cancelled" and row["outcome"] == "cut" and row["estimated"] == "output"
    assert row["cost_usd"] == pytest.approx(1e-6 * (10 * 1.0 + 3 * 2.0))


# --- operator read-outs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin_gateway(upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("usage") / "usage.sqlite3"
    config = gateway_config(upstream.base_url)
    config.update(admin={"key": "env:CCM_TEST_ADMIN"}, ledger={"path": str(path)},
                  keys=[{"name": "alice", "key": "gk-alice-0123456789"}],
                  pricing={"models": {"oai/*": {"same_as": "gpt-4.1"}}})
    app = create_app(load_config(config, env={"CCM_TEST_ADMIN": ADMIN}, dotenv=False))
    with ServerThread(app) as server:
        yield server, path


def test_usage_endpoint_needs_the_admin_key_and_aggregates(admin_gateway: Any) -> None:
    server, _ = admin_gateway
    for _ in range(3):
        r = httpx.post(server.base_url + "/v1/chat/completions", timeout=10,
                       headers={"authorization": "Bearer gk-alice-0123456789"},
                       json={"model": "oai/m+script=oai_text", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200
    assert httpx.get(server.base_url + "/v1/usage", timeout=10).status_code == 401
    r = httpx.get(server.base_url + "/v1/usage", timeout=10,
                  headers={"authorization": "Bearer gk-alice-0123456789"})  # a gateway key is no admin key
    assert r.status_code == 401
    r = httpx.get(server.base_url + "/v1/usage?since=2020-01-01&key=alice", timeout=10,
                  headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    [row] = r.json()["data"]
    assert (row["key"], row["route"], row["provider"], row["requests"]) == ("alice", "oai/m+script=oai_text", "oai", 3)
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (60, 300, 120)
    assert row["cost_usd"] == pytest.approx(3 * 1e-6 * (20 * 2.0 + 100 * 0.5 + 40 * 8.0))
    assert r.json()["totals"]["requests"] == 3
    r = httpx.get(server.base_url + "/v1/usage?since=soon", timeout=10, headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 400


def test_usage_endpoint_is_absent_without_an_admin_key(gateway: ServerThread) -> None:
    r = httpx.get(gateway.base_url + "/v1/usage", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 404


def test_usage_export_csv(admin_gateway: Any, capsys: pytest.CaptureFixture[str]) -> None:
    server, path = admin_gateway
    httpx.post(server.base_url + "/v1/chat/completions", timeout=10, headers={"authorization": "Bearer "
               "gk-alice-0123456789"}, json={"model": "oai/m+script=oai_text", "messages": []})
    server.run(server.app.state.gateway.meter.ledger.flush())
    assert cli_main(["usage", "export", "--format", "csv", "--db", str(path), "--since", "2020-01-01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("uid,attempt,kind,request_id,ts,")
    assert len(lines) >= 2 and all(",final," in line for line in lines[1:])
    assert cli_main(["usage", "export", "--db", str(path.parent / "missing.sqlite3")]) == 2


# --- SIGKILL under load ----------------------------------------------------------------------------


def serve(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    return start_gateway_process("--config", str(config), cwd=config.parent, output=False)


def test_sigkill_under_load_then_restart_leaves_exactly_one_final_per_upstream_request(
        upstream: MockUpstream, tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[providers.oai]\nkind = "openai"\nbase_url = "{upstream.base_url}/v1"\napi_keys = ["sk-test-kill-0000"]\n'
        f'[pricing.models."oai/*"]\nsame_as = "gpt-4.1"\n'
        f'[ledger]\npath = "{db}"\nflush_ms = 300\n')  # finals wait in memory: a kill loses some of them
    proc, base = serve(config)
    try:
        def one(i: int) -> None:
            slow = i % 3 != 0  # two in three are still streaming when the process dies
            model = "oai/gpt-4.1+chunks=8+delay_ms=400" if slow else "oai/gpt-4.1"
            with contextlib.suppress(httpx.TransportError):  # the gateway dies under it
                httpx.post(base + "/v1/chat/completions", timeout=15, headers={"x-request-id": f"kill-{i}"},
                           json={"model": model, "stream": slow, "messages": [{"role": "user", "content": "x"}]})

        with concurrent.futures.ThreadPoolExecutor(30) as pool:
            pending = [pool.submit(one, i) for i in range(30)]
            for _ in range(200):  # until the upstream has seen every request (bounded)
                seen = {r.headers.get("x-request-id") for r in upstream.requests}
                if all(f"kill-{i}" in seen for i in range(30)):
                    break
                threading.Event().wait(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            concurrent.futures.wait(pending, timeout=20)
        sent = {r.headers["x-request-id"] for r in upstream.requests
                if r.headers.get("x-request-id", "").startswith("kill-")}
        assert len(sent) == 30
        proc, base = serve(config)  # start-up recovers the dead process's open requests
        by_request = Counter(r["request_id"] for r in finals(db))
        assert {rid for rid in sent if by_request[rid] != 1} == set()  # none lost, none duplicated
        rows = {r["request_id"]: r for r in finals(db)}
        recovered = [rid for rid in sent if rows[rid]["outcome"] == "recovered"]
        assert recovered and all(rows[rid]["estimated"] and rows[rid]["cost_usd"] > 0 for rid in recovered)
        # A graceful stop writes every queued final: nothing of this life needs recovery.
        r = httpx.post(base + "/v1/chat/completions", timeout=10, headers={"x-request-id": "after-restart"},
                       json={"model": "oai/gpt-4.1", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        row = next(r for r in finals(db) if r["request_id"] == "after-restart")
        assert row["outcome"] == "ok" and row["estimated"] == ""
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM open_reserves").fetchone()[0] == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_budgets_restart_at_the_ledgers_spend(tmp_path: Path) -> None:
    """After a restart a key's window starts at what the ledger recorded in it, not at zero."""
    path = tmp_path / "l.sqlite3"
    store = SQLiteLedger(path)
    now = time.time()
    store.write([replace(record("old", "final", cost_usd=5.0), ts=now - 3 * 86400),  # before this 1d window
                 replace(record("new1", "final", cost_usd=1.25), ts=now),
                 replace(record("new2", "final", cost_usd=0.5), ts=now)])
    store.close()
    config = load_config({"ledger": {"path": str(path)},
                          "keys": [{"name": "k", "key": "gk-k-0123456789", "budget_usd": 2.0, "budget_period": "1d"}]},
                         env={}, dotenv=False)

    async def scenario() -> float:
        meter = Meter(config)
        await meter.start()
        spent = meter.budgets.accounts["key:k"].spent
        await meter.close()
        return spent

    assert asyncio.run(scenario()) == pytest.approx(1.75)


def test_a_reserve_that_cannot_be_written_stops_the_request_and_frees_the_budget(tmp_path: Path) -> None:
    config = load_config({"keys": [{"name": "k", "key": "gk-k-0123456789", "budget_usd": 1.0}],
                          "pricing": {"models": {"m": {"input": 1.0, "output": 2.0}}}}, env={}, dotenv=False)

    async def scenario() -> None:
        ledger = Ledger(FlakyStore(tmp_path / "l.sqlite3", fail=1), flush_ms=1)
        meter = Meter(config, ledger=ledger)
        await meter.start()
        ex = Exchange(Dialect.OPENAI_CHAT)
        ex.body = b'{"model": "m", "max_tokens": 100, "messages": []}'
        ex.principal = type("P", (), {"name": "k", "team": None, "budget_usd": 1.0, "budget_period": None})()
        hold = meter.plan(ex)
        assert hold.amount > 0 and hold.lines
        with pytest.raises(ServiceUnavailable):
            await meter.reserve(ex, hold)
        assert meter.budgets.accounts["key:k"].reserved == 0.0
        await meter.close()  # the retried batch carries the reserve and its no_upstream final

    asyncio.run(scenario())
    [row] = finals(tmp_path / "l.sqlite3")
    assert row["outcome"] == "no_upstream" and row["cost_usd"] == 0.0
    with sqlite3.connect(tmp_path / "l.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM open_reserves").fetchone()[0] == 0

"""SIGTERM with requests in flight: streams still running at the end of the grace period end with an
error event in their own protocol, a request still waiting for its upstream gets a 503, and the
ledger has every final record once the process has exited."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.mock import MockUpstream
from ccm_gateway.shutdown import Drain

from .conftest import gateway_config
from .servers import ServerThread, start_gateway_process


@pytest.mark.parametrize("workers", [1, 2])  # 2: each worker process drains (workers.serve_workers)
def test_sigterm_ends_overlong_requests_properly_and_flushes_the_ledger(
    upstream: MockUpstream, tmp_path: Path, workers: int
) -> None:
    db = tmp_path / "ledger.sqlite3"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[server]\ngraceful_timeout = 2.0\nworkers = {workers}\n"
        f'[providers.up]\nkind = "openai"\nbase_url = "{upstream.base_url}/v1"\napi_keys = ["sk-test-drain-0000"]\n'
        f'[providers.ant]\nkind = "anthropic"\nbase_url = "{upstream.base_url}"\napi_keys = ["sk-test-drain-1111"]\n'
        f'[ledger]\npath = "{db}"\nflush_ms = 5000\n')  # finals wait in memory: only the shutdown flush writes them
    proc, base = start_gateway_process("--config", str(config), cwd=tmp_path, output=False)
    results: dict[str, Any] = {}
    streaming = {"openai": threading.Event(), "anthropic": threading.Event()}

    def stream(name: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        lines: list[str] = []
        with httpx.stream("POST", base + path, json=body, headers={**headers, "x-request-id": f"drain-{name}"},
                          timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    streaming[name].set()
                lines.append(line)
        results[name] = lines

    def waiting() -> None:  # its upstream has not answered when the grace period ends
        results["json"] = httpx.post(base + "/v1/chat/completions", timeout=30, headers={"x-request-id": "drain-json"},
                                     json={"model": "up/gpt-4o+ttfb_ms=20000", "messages": []})

    threads = [
        threading.Thread(target=stream, args=("openai", "/v1/chat/completions", {
            "model": "up/gpt-4o+chunks=100+delay_ms=200", "stream": True, "messages": []}, {})),
        threading.Thread(target=stream, args=("anthropic", "/v1/messages", {
            "model": "ant/claude-sonnet-4-5+chunks=100+delay_ms=200", "max_tokens": 50, "stream": True,
            "messages": []}, {"anthropic-version": "2023-06-01"})),
        threading.Thread(target=waiting),
    ]
    try:
        for thread in threads:
            thread.start()
        assert all(event.wait(20) for event in streaming.values())
        for _ in range(200):  # until the waiting request has reached the upstream (bounded, ~10 s)
            if any(r.headers.get("x-request-id") == "drain-json" for r in upstream.requests):
                break
            threading.Event().wait(0.05)
        else:
            raise AssertionError("the waiting request never reached the upstream")
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    openai_lines = [line for line in results["openai"] if line]
    assert '"error"' in openai_lines[-1] and "shutting down" in openai_lines[-1]
    assert "data: [DONE]" not in openai_lines
    anthropic_lines = [line for line in results["anthropic"] if line]
    assert anthropic_lines[-2] == "event: error" and "overloaded_error" in anthropic_lines[-1]
    waited = results["json"]
    assert waited.status_code == 503 and "shutting down" in waited.json()["error"]["message"]
    with sqlite3.connect(db) as conn:
        finals = {row[0] for row in conn.execute("SELECT request_id FROM usage_records WHERE kind = 'final'")}
        open_reserves = conn.execute("SELECT COUNT(*) FROM open_reserves").fetchone()[0]
    assert {"drain-openai", "drain-anthropic", "drain-json"} <= finals
    assert open_reserves == 0


def test_embedded_drain_ends_translated_streams_with_the_clients_error_event(upstream: MockUpstream) -> None:
    """A host that runs its own server starts the drain itself; translated streams end properly too
    (unhindered, each of these streams would run 3 s and end normally)."""
    cases = [("/v1/chat/completions", {}, {"model": "claude-sonnet+chunks=30+delay_ms=100", "stream": True,
                                           "messages": [{"role": "user", "content": "x"}]}),
             ("/v1/messages", {"anthropic-version": "2023-06-01"},
              {"model": "gpt-4.1+chunks=30+delay_ms=100", "max_tokens": 10, "stream": True,
               "messages": [{"role": "user", "content": "x"}]})]
    for path, headers, body in cases:
        app = create_app(load_config(gateway_config(upstream.base_url), env={}, dotenv=False))
        drain = app.state.gateway.drain

        async def begin(drain: Drain = drain) -> None:
            drain.begin(0.5)  # ends what still runs after 0.45 s

        with ServerThread(app) as server:
            lines: list[str] = []
            with httpx.stream("POST", server.base_url + path, json=body, headers=headers, timeout=20) as r:
                for line in r.iter_lines():
                    if line.startswith("data:") and not any(seen.startswith("data:") for seen in lines):
                        server.run(begin())
                    if line:
                        lines.append(line)
            late = httpx.post(server.base_url + path, json={**body, "stream": False}, headers=headers, timeout=10)
        assert "shutting down" in lines[-1], (path, lines[-3:])
        assert late.status_code == 503 and "shutting down" in late.text  # arrived after the grace period
        assert not drain.tasks

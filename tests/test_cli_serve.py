"""`ccm-gateway serve` as users run it: a real process, the embedded default config, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccm_gateway.mock import MockUpstream

from .servers import free_port


def start_gateway(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    clean_env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("CCM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccm_gateway", "serve", "--port", str(port), *args],
        env={**clean_env, **(env or {})}, cwd=tempfile.mkdtemp(prefix="ccm-serve-"),  # the ledger file lands there
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):  # up to ~20 s for the interpreter and hypercorn to come up
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "gateway exited")
        try:
            if httpx.get(base + "/health", timeout=0.5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            threading.Event().wait(0.1)
    proc.kill()
    raise AssertionError("gateway did not come up")


@pytest.fixture
def stop_after() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_default_config_answers_with_no_keys(stop_after: list[subprocess.Popen[bytes]]) -> None:
    proc, base = start_gateway()
    stop_after.append(proc)
    r = httpx.post(base + "/v1/chat/completions", json={"model": "mock", "messages": [
        {"role": "user", "content": "hello"}]}, timeout=10)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].endswith("You said: hello")
    r = httpx.post(base + "/v1/messages", headers={"anthropic-version": "2023-06-01"}, json={
        "model": "mock", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}, timeout=10)
    assert r.json()["content"][0]["text"].endswith("You said: hello")
    r = httpx.post(base + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []}, timeout=10)
    assert r.status_code == 404 and "no API key configured" in r.json()["error"]["message"]
    assert [m["id"] for m in httpx.get(base + "/v1/models").json()["data"]] == ["mock"]


def test_sigterm_lets_inflight_stream_finish(
    tmp_path: Path, upstream: MockUpstream, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[server]\ngraceful_timeout = 10.0\n"
        f'[providers.up]\nkind = "openai"\nbase_url = "{upstream.base_url}/v1"\napi_keys = ["env:UP_KEY"]\n'
    )
    proc, base = start_gateway("--config", str(config), env={"UP_KEY": "sk-test-upstream-key"})
    stop_after.append(proc)
    body = {"model": "up/gpt-4o+chunks=12+delay_ms=150", "stream": True, "messages": [
        {"role": "user", "content": "long"}]}
    lines: list[str] = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=20) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and not lines:
                proc.send_signal(signal.SIGTERM)  # mid-stream: the answer must still complete
            if line:
                lines.append(line)
    assert lines[-1] == "data: [DONE]"
    assert sum(1 for line in lines if '"content"' in line) >= 12
    assert proc.wait(15) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(base + "/health", timeout=1)


def test_two_workers_serve_and_stop_cleanly(stop_after: list[subprocess.Popen[bytes]]) -> None:
    proc, base = start_gateway("--workers", "2")
    stop_after.append(proc)
    for i in range(8):
        r = httpx.post(base + "/v1/chat/completions", timeout=10, json={
            "model": "mock", "messages": [{"role": "user", "content": f"n{i}"}]})
        assert r.json()["choices"][0]["message"]["content"].endswith(f"You said: n{i}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0

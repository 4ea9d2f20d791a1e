"""`ccm-gateway serve` as users run it: a real process, the embedded default config, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ccm_gateway.mock import MockUpstream

from .servers import start_gateway_process


def start_gateway(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    return start_gateway_process(*args, env=env, cwd=tempfile.mkdtemp(prefix="ccm-serve-"))  # ledger lands there


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

"""The security suite: a real gateway process under abuse (huge bodies, 100k messages, depth 10k, a
1 MB header, slowloris) stays up with bounded memory, and canary secrets — provider keys, gateway
keys, the admin key — never show in its output, error bodies or exception text on any error path."""

from __future__ import annotations

import json
import logging
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware

from ccm_gateway import ConfigError, create_app, load_config
from ccm_gateway.mock import MockUpstream

from .conftest import ANTHROPIC_KEY, CANARIES, OPENAI_KEY, gateway_config
from .servers import ServerThread, free_port, start_gateway_process

GATEWAY_KEY = "ccm-canary-gatewaykey-4e1f9a7b"
ADMIN_KEY = "ccm-canary-adminkey-8c2d6e0f"
ALL_CANARIES = (*CANARIES, GATEWAY_KEY, ADMIN_KEY)
MB = 1024 * 1024


def memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


@pytest.fixture(scope="module")
def abused(upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`ccm-gateway serve` with auth, an admin key and short slowloris timeouts; its output is kept."""
    tmp = tmp_path_factory.mktemp("abused")
    config = tmp / "gateway.toml"
    admin_port = free_port()
    config.write_text(
        "[server]\nkeep_alive_timeout = 1.0\nread_timeout = 1.0\n"
        f'[admin]\nkey = "{ADMIN_KEY}"\nport = {admin_port}\n'
        f'[[keys]]\nname = "canary"\nkey = "{GATEWAY_KEY}"\n'
        f'[providers.up]\nkind = "openai"\nbase_url = "{upstream.base_url}/v1"\napi_keys = ["{OPENAI_KEY}"]\n'
        'timeout = { first_byte = 0.5, idle = 0.5, deadline = 2.0 }\n'
        f'[providers.ant]\nkind = "anthropic"\nbase_url = "{upstream.base_url}"\napi_keys = ["{ANTHROPIC_KEY}"]\n')
    proc, base = start_gateway_process("--config", str(config), cwd=tmp, output=True)
    state: dict[str, Any] = {"proc": proc, "base": base, "port": int(base.rsplit(":", 1)[1]),
                             "admin": f"http://127.0.0.1:{admin_port}",
                             "start": memory(proc.pid), "seen": []}
    try:
        yield state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        for canary in ALL_CANARIES:
            assert canary not in output, "a secret reached the gateway's log output"


AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


def send_raw(port: int, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request head and then body chunks until the server answers (or the body ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        try:
            for chunk in body_chunks:
                if select.select([s], [], [], 0)[0]:
                    break  # the answer is there: stop sending
                s.sendall(chunk)
        except OSError:
            pass  # the server closed its side after answering
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return data


def test_100_mb_bodies_are_refused(abused: dict[str, Any]) -> None:
    megabyte = b"x" * MB
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n")
    declared = send_raw(abused["port"], head + b"content-length: %d\r\n\r\n" % (100 * MB), iter([megabyte] * 100))
    assert declared.startswith(b"HTTP/1.1 413")
    chunked = send_raw(abused["port"], head + b"transfer-encoding: chunked\r\n\r\n",
                       iter([b"100000\r\n" + megabyte + b"\r\n"] * 100))
    assert chunked.startswith(b"HTTP/1.1 413")


def test_100k_messages_and_depth_10k_are_refused(abused: dict[str, Any]) -> None:
    base = abused["base"]
    many = {"model": "up/gpt-4o", "messages": [{"role": "user", "content": "x"}] * 100_000}
    r = httpx.post(base + "/v1/chat/completions", json=many, headers=AUTH, timeout=30)
    assert r.status_code == 400 and "100000 messages exceed the limit" in r.json()["error"]["message"]
    deep = b'{"model":"up/gpt-4o","messages":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    r = httpx.post(base + "/v1/chat/completions", content=deep, headers=AUTH, timeout=30)
    assert r.status_code == 400 and "deeper than 64" in r.json()["error"]["message"]
    r = httpx.post(base + "/v1/messages", content=deep.replace(b"gpt-4o", b"claude-x"), timeout=30,
                   headers={**AUTH, "anthropic-version": "2023-06-01"})
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_a_1_mb_header_gets_431(abused: dict[str, Any]) -> None:
    head = b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * MB + b"\r\n\r\n"
    assert send_raw(abused["port"], head, iter([])).startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize("header", [b"x-test: a\rb", b"x-test: a\x00b", b"authorization: Bearer a\nb"])
def test_control_characters_in_headers_are_refused(abused: dict[str, Any], header: bytes) -> None:
    answer = send_raw(abused["port"], b"GET /v1/models HTTP/1.1\r\nhost: x\r\n" + header + b"\r\n\r\n", iter([]))
    assert answer.startswith(b"HTTP/1.1 400")


def test_a_dribbled_request_head_is_cut_off(abused: dict[str, Any]) -> None:
    """Slowloris: one byte every 0.2 s never completes a head; keep_alive_timeout (1 s) closes it."""
    with socket.create_connection(("127.0.0.1", abused["port"]), timeout=5) as s:
        s.settimeout(0.2)
        closed = False
        for byte in (b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 200)[:60]:  # at most 12 s
            try:
                s.sendall(bytes([byte]))
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed


def test_no_secret_on_any_error_path(abused: dict[str, Any]) -> None:
    base, seen = abused["base"], abused["seen"]
    chat = "/v1/chat/completions"
    calls = [
        ("POST", chat, AUTH, {"model": "up/gpt-4o+auth=other-key-1234", "messages": []}, 401),  # upstream echoes key
        ("POST", "/v1/messages", {**AUTH, "anthropic-version": "2023-06-01"},
         {"model": "ant/claude-x+auth=other", "max_tokens": 1, "messages": []}, 401),
        ("POST", chat, {"authorization": f"Bearer {GATEWAY_KEY}x"}, {"model": "up/gpt-4o", "messages": []}, 401),
        ("POST", chat, {"x-api-key": GATEWAY_KEY[:-1]}, {"model": "up/gpt-4o", "messages": []}, 401),
        ("POST", chat, AUTH, {"model": "up/gpt-4o+ttfb_ms=1500", "stream": True, "messages": []}, 504),  # timeout
        ("POST", chat, AUTH, {"model": "up/gpt-4o+status=500", "messages": []}, 500),
        ("POST", chat, AUTH, {"model": "up/gpt-4o", "messages": [], "api_key": OPENAI_KEY}, 400),
        ("GET", "/v1/usage", {"authorization": f"Bearer {ADMIN_KEY}0"}, None, 401),
        ("GET", "/v1/admin/config", {"authorization": f"Bearer {ADMIN_KEY}"}, None, 200),
        ("GET", "/v1/admin/config", {"x-api-key": ADMIN_KEY[:-1]}, None, 401),
    ]
    for method, path, headers, body, status in calls:
        origin = abused["admin"] if path.startswith(("/v1/usage", "/v1/admin/")) else base
        r = httpx.request(method, origin + path, headers=headers, json=body, timeout=15)
        assert r.status_code == status, (path, r.text)
        seen.append(r.text)
        seen.extend(f"{k}: {v}" for k, v in r.headers.items())
    r = httpx.post(base + chat, headers=AUTH, timeout=15,
                   json={"model": "up/gpt-4o+chunks=3+delay_ms=1500", "stream": True, "messages": []})
    assert "stopped sending" in r.text  # an idle timeout mid-stream: the error event
    seen.append(r.text)
    blob = "\n".join(seen)
    for canary in ALL_CANARIES:
        assert canary not in blob


def test_admin_endpoints_answer_only_on_the_admin_port(abused: dict[str, Any]) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(abused["base"] + "/v1/admin/config", headers=admin, timeout=10).status_code == 404
    r = httpx.get(abused["admin"] + "/v1/admin/config", headers=admin, timeout=10)
    assert r.status_code == 200 and r.json()["admin"]["key"].startswith("<secret")
    r = httpx.post(abused["admin"] + "/v1/chat/completions", headers=AUTH, timeout=10,
                   json={"model": "up/gpt-4o", "messages": []})
    assert r.status_code == 404
    assert httpx.get(abused["base"] + "/metrics", timeout=10).status_code == 404  # operators' port only
    r = httpx.get(abused["admin"] + "/metrics", timeout=10)
    assert r.status_code == 200 and "ccm_requests_total" in r.text


def test_memory_stays_bounded_and_the_process_survives(abused: dict[str, Any]) -> None:
    # Runs last in this module: after every abuse above, the gateway still answers, and its peak
    # memory never held anything like a 100 MB body (a 32 MB cap and a 3 MB message list, transiently).
    r = httpx.post(abused["base"] + "/v1/chat/completions", headers=AUTH, timeout=10,
                   json={"model": "up/gpt-4o", "messages": [{"role": "user", "content": "still there?"}]})
    assert r.status_code == 200
    now = memory(abused["proc"].pid)
    assert now["VmHWM"] - abused["start"]["VmRSS"] < 120 * MB, (abused["start"], now)
    assert now["VmRSS"] - abused["start"]["VmRSS"] < 80 * MB, (abused["start"], now)


# --- in-process: config errors and a crash inside a middleware ------------------------------------

def test_config_errors_never_echo_secrets(tmp_path: Path) -> None:
    bad = {"providers": {"x": {"kind": "openai", "api_key": OPENAI_KEY, "api_keys": [{"key": ANTHROPIC_KEY,
                                                                                      "weight": "heavy"}]}},
           "keys": [{"name": "k", "key": GATEWAY_KEY, "rpm": "many"}], "admin": {"key": ADMIN_KEY, "port": "x"}}
    with pytest.raises(ConfigError) as caught:
        load_config(bad, env={}, dotenv=False)
    text = str(caught.value) + repr(caught.value) + "\n".join(caught.value.errors)
    assert "api_key" in text  # the problems are reported …
    for canary in ALL_CANARIES:
        assert canary not in text  # … without the values
    path = tmp_path / "bad.toml"
    path.write_text(f'[providers.x]\nkind = "openai"\napi_keys = ["{OPENAI_KEY}"]\nbase_url = 5\n'
                    f'[[keys]]\nname = "k"\nkey = "{GATEWAY_KEY} with spaces"\n')
    done = subprocess.run([sys.executable, "-m", "ccm_gateway", "check-config", str(path)],
                          capture_output=True, timeout=60)
    assert done.returncode == 2
    for canary in ALL_CANARIES:
        assert canary.encode() not in done.stdout + done.stderr


class Crash:
    """A stage that fails inside the chain, after auth has seen the gateway key."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/completions"):
            raise RuntimeError("stage exploded")
        await self.app(scope, receive, send)


def test_a_crash_inside_a_middleware_leaks_nothing(upstream: MockUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    raw = gateway_config(upstream.base_url)
    raw["keys"] = [{"name": "canary", "key": GATEWAY_KEY}]
    app = create_app(load_config(raw, env={}, dotenv=False), middleware=[Middleware(Crash)])
    with ServerThread(app) as gw:
        r = httpx.post(gw.base_url + "/v1/chat/completions", headers=AUTH, timeout=10,
                       json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 500
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in r.text and "exploded" not in r.text
    logged = "\n".join(rec.getMessage() + str(rec.exc_info) + str(rec.__dict__) for rec in caplog.records)
    assert "stage exploded" in logged  # the trace went to the log …
    for canary in ALL_CANARIES:
        assert canary not in r.text + json.dumps(dict(r.headers)) + logged  # … and no secret anywhere


def test_attacker_listener_receives_nothing_from_a_real_process(abused: dict[str, Any]) -> None:
    attacker = socket.socket()
    attacker.bind(("127.0.0.1", 0))
    attacker.listen(4)
    url = f"http://127.0.0.1:{attacker.getsockname()[1]}"
    try:
        bodies = [{"model": "up/gpt-4o", "messages": [], "api_base": url},
                  {"model": "up/gpt-4o", "messages": [{"role": "user", "content": "x", "base_url": url}]},
                  {"model": "up/gpt-4o", "messages": [], "metadata": {"a": {"extra_headers": {"host": url}}}}]
        for body in bodies:
            r = httpx.post(abused["base"] + "/v1/chat/completions", json=body, headers=AUTH, timeout=10)
            assert r.status_code == 400
        threading.Event().wait(0.3)
        assert not select.select([attacker], [], [], 0)[0]  # no connection is waiting to be accepted
    finally:
        attacker.close()

"""Request hardening: depth, client-chosen upstreams, caps, model names, slow bodies, upstream answers
that are too big, redirect or leak internal hosts, and the admin config view and port."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ccm_gateway import ConfigError, create_app, load_config
from ccm_gateway.request_guard import forbidden_key, nesting_exceeds
from ccm_gateway.scrub import host_needles, scrub_internals

from .conftest import CANARIES, OPENAI_KEY, gateway_config
from .servers import ServerThread, free_port

NAMES = frozenset({"api_base", "base_url", "extra_headers", "api_key", "azure_endpoint"})
QUOTED = tuple(b'"' + n.encode() + b'"' for n in sorted(NAMES))
ANTHROPIC = {"anthropic-version": "2023-06-01"}


def nested(depth: int) -> bytes:
    return b'{"model":"gpt-4.1","messages":[],"metadata":' + b"[" * depth + b"]" * depth + b"}"


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert not nesting_exceeds(b"[" * 64 + b"]" * 64, 64)
    assert nesting_exceeds(b"[" * 65 + b"]" * 65, 64)
    assert nesting_exceeds(b'{"a":' * 40 + b'[' * 30 + b"1" + b"]" * 30 + b"}" * 40, 64)
    in_strings = json.dumps({"text": "[" * 500 + "{" * 500, "more": ["]]]]", "\"[[[[\\"]}).encode()
    assert not nesting_exceeds(in_strings, 8)
    # An escaped backslash before a quote ends the string: the brackets after it count.
    assert nesting_exceeds(b'["\\\\"' + b"," + b"[" * 10 + b"]" * 10 + b"]", 8)
    assert not nesting_exceeds(b'["\\"' + b"[" * 10 + b'"]', 8)  # an escaped quote does not end it
    assert nesting_exceeds(b"[" * 10_000 + b"]" * 10_000, 64)
    # Other escapes before a closing quote (\n, \u00bf, \/) end the string too: brackets after it count.
    for escape in (b"\\n", b"\\u00bf", b"\\/", b"\\t\\\\"):
        assert nesting_exceeds(b'["a' + escape + b'",' + b"[" * 10 + b"]" * 10 + b"]", 8), escape


def test_forbidden_keys_found_as_keys_only_and_outside_tool_data() -> None:
    def found(value: Any) -> str | None:
        return forbidden_key(json.dumps(value).encode(), NAMES, QUOTED)

    assert found({"model": "m", "api_base": "http://evil"}) == "api_base"
    assert found({"model": "m", "metadata": {"deep": [{"base_url": "x"}]}}) == "base_url"
    assert found({"messages": [{"role": "user", "content": "hi", "extra_headers": {}}]}) == "extra_headers"
    assert found({"messages": [{"role": "user", "content": 'set "base_url": to x'}]}) is None  # text, not a key
    assert found({"messages": [{"role": "user", "content": "base_url"}]}) is None
    tool = {"name": "configure", "input_schema": {"type": "object", "properties": {"base_url": {"type": "string"}}}}
    call = {"type": "tool_use", "id": "t", "name": "configure", "input": {"base_url": "http://x", "api_key": "k"}}
    assert found({"tools": [tool], "messages": [{"role": "assistant", "content": [call]}]}) is None
    escaped = b'{"model":"m","base\\u005furl":"http://evil"}'
    assert forbidden_key(escaped, NAMES, QUOTED) == "base_url"


@pytest.fixture(scope="module")
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=15) as c:
        yield c


def openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def anthropic_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return body["error"]


def test_too_deep_json_is_refused_in_each_protocol(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", content=nested(100), headers={"content-type": "application/json"})
    assert "deeper than 64" in openai_error(r, 400)["message"]
    r = client.post("/v1/messages", content=nested(10_000), headers=ANTHROPIC)
    assert anthropic_error(r, 400)["type"] == "invalid_request_error"
    ok = client.post("/v1/chat/completions", content=nested(60), headers={"content-type": "application/json"})
    assert ok.status_code == 200


class Attacker:
    """A loopback listener standing in for an attacker's server: counts connections it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def attacker() -> Iterator[Attacker]:
    listener = Attacker()
    yield listener
    listener.close()


@pytest.mark.parametrize("where", ["top", "nested", "message"])
@pytest.mark.parametrize("key", ["api_base", "base_url", "extra_headers", "api_key"])
def test_client_chosen_upstream_is_refused_and_never_contacted(
    client: httpx.Client, attacker: Attacker, where: str, key: str
) -> None:
    value: Any = {"x-forward-to": attacker.url} if key == "extra_headers" else attacker.url
    chat: dict[str, Any] = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
    messages: dict[str, Any] = {"model": "claude-sonnet", "max_tokens": 8,
                                "messages": [{"role": "user", "content": "hi"}]}
    for body in (chat, messages):
        if where == "top":
            body[key] = value
        elif where == "nested":
            body["metadata"] = {"options": [{key: value}]}
        else:
            body["messages"][0][key] = value
    r = client.post("/v1/chat/completions", json=chat)
    assert openai_error(r, 400)["param"] == key
    r = client.post("/v1/messages", json=messages, headers=ANTHROPIC)
    assert key in anthropic_error(r, 400)["message"]
    for path in ("/v1/chat/completions/count_tokens", "/v1/embeddings"):
        r = client.post(path, json={"model": "gpt-4.1", "input": "x", "messages": [], key: value})
        assert r.status_code == 400
    threading.Event().wait(0.3)  # anything sent would have connected by now
    assert attacker.connections == 0


def test_tool_schemas_may_name_base_url(client: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "configure", "parameters": {
        "type": "object", "properties": {"base_url": {"type": "string"}, "api_key": {"type": "string"}}}}}
    r = client.post("/v1/chat/completions", json={
        "model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert r.status_code == 200


@pytest.mark.parametrize("model", ["gpt-4.1\r\nx-injected: 1", "gpt\n4.1", "gpt\x004.1", "g" * 300])
def test_bad_model_names_are_refused(client: httpx.Client, model: str) -> None:
    r = client.post("/v1/chat/completions", json={"model": model, "messages": []})
    assert openai_error(r, 400)["param"] == "model"
    r = client.post("/v1/messages", headers=ANTHROPIC, json={"model": model, "max_tokens": 1, "messages": []})
    anthropic_error(r, 400)


@pytest.mark.parametrize("field,value", [("max_tokens", 10**9), ("max_completion_tokens", 0), ("max_tokens", -5)])
def test_output_token_cap(client: httpx.Client, field: str, value: int) -> None:
    r = client.post("/v1/chat/completions", json={"model": "gpt-4.1", "messages": [], field: value})
    assert openai_error(r, 400)["param"] == field


@pytest.fixture(scope="module")
def capped(upstream) -> Iterator[ServerThread]:
    config = gateway_config(upstream.base_url, read_timeout=0.5)
    config["requests"] = {"max_messages": 5, "max_content_parts": 6, "max_tools": 2, "max_response_bytes": 4096}
    app = create_app(load_config(config, env={}, dotenv=False))
    with ServerThread(app) as server:
        yield server


def test_count_caps(capped: ServerThread) -> None:
    url = capped.base_url
    user = {"role": "user", "content": "hi"}
    r = httpx.post(url + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": [user] * 5})
    assert r.status_code == 200
    r = httpx.post(url + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": [user] * 6})
    assert "6 messages exceed the limit of 5" in openai_error(r, 400)["message"]
    parts = {"role": "user", "content": [{"type": "text", "text": "a"}] * 4}
    r = httpx.post(url + "/v1/messages", headers=ANTHROPIC, json={"model": "claude-sonnet", "max_tokens": 4,
                                                                  "messages": [parts, parts]})
    assert "8 content parts" in anthropic_error(r, 400)["message"]
    tool = {"name": "t", "input_schema": {"type": "object"}}
    r = httpx.post(url + "/v1/messages/count_tokens", headers=ANTHROPIC, json={
        "model": "claude-sonnet", "messages": [user], "tools": [tool] * 3})
    assert anthropic_error(r, 400)["message"].startswith("tools: 3 tools")


def test_a_dribbled_body_gets_408(capped: ServerThread) -> None:
    with socket.create_connection(("127.0.0.1", capped.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 100\r\n\r\n{\"model\":")
        data = b""
        for _ in range(50):  # the gateway answers once read_timeout (0.5 s) has passed
            chunk = s.recv(4096)
            data += chunk
            if not chunk or b"not received" in data:
                break
    assert data.startswith(b"HTTP/1.1 408")
    assert b"not received within 0.5s" in data


@pytest.mark.parametrize("header", [b"x-test: a\rb", b"x-test: a\x00b", b"x-te st: a", b"x-test: a\nb"])
def test_control_characters_in_headers_are_refused(gateway: ServerThread, header: bytes) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n" + header + b"\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400")


# --- upstream answers: internal hosts, URL credentials, size, redirects ---------------------------

class FakeUpstream:
    """An OpenAI-shaped upstream misbehaving on purpose, picked by the model name."""

    def __init__(self, redirect_to: str) -> None:
        self.redirect_to = redirect_to
        self.base = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        model = json.loads(body)["model"]
        status, headers, chunks = 200, [(b"content-type", b"application/json")], [b"{}"]
        if model == "leaky":
            status = 500
            text = (f"proxy {self.base} failed; retried via http://svc:{OPENAI_KEY}@10.1.2.3/v1 "
                    f"and {self.base.split('//')[1]}")
            chunks = [json.dumps({"error": {"message": text, "type": "server_error", "param": None,
                                            "code": None}}).encode()]
        elif model == "huge":
            chunks = [b'{"pad":"' + b"x" * 10_000 + b'"}']
            headers.append((b"content-length", str(len(chunks[0])).encode()))
        elif model == "huge-chunked":
            chunks = [b'{"pad":"'] + [b"x" * 1000] * 20 + [b'"}']
        elif model == "redirect":
            status, headers, chunks = 307, [(b"location", self.redirect_to.encode())], [b""]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def misbehaving(attacker: Attacker) -> Iterator[ServerThread]:
    fake = FakeUpstream(attacker.url + "/v1/chat/completions")
    with ServerThread(fake) as up:
        fake.base = up.base_url
        config = {"providers": {"up": {"kind": "openai", "base_url": up.base_url + "/v1", "api_keys": [OPENAI_KEY]}},
                  "requests": {"max_response_bytes": 4096}}
        with ServerThread(create_app(load_config(config, env={}, dotenv=False))) as gw:
            yield gw


def test_upstream_errors_lose_internal_hosts_and_url_credentials(misbehaving: ServerThread) -> None:
    r = httpx.post(misbehaving.base_url + "/v1/chat/completions", json={"model": "up/leaky", "messages": []})
    assert r.status_code == 500
    message = r.json()["error"]["message"]
    assert "127.0.0.1" not in message and OPENAI_KEY not in message and "svc:" not in message
    assert message.startswith("proxy http://upstream failed; retried via http://***@10.1.2.3/v1")


def test_oversized_upstream_answer(misbehaving: ServerThread) -> None:
    r = httpx.post(misbehaving.base_url + "/v1/chat/completions", json={"model": "up/huge", "messages": []})
    assert "exceeds 4096 bytes" in openai_error(r, 502)["message"]
    # No Content-Length: noticed while reading; the billing stage holds a JSON head until the last byte,
    # so the client still gets a clean 502 (without billing the connection is cut: never a complete 200).
    r = httpx.post(misbehaving.base_url + "/v1/chat/completions", json={"model": "up/huge-chunked", "messages": []})
    assert "exceeds 4096 bytes" in openai_error(r, 502)["message"]


def test_redirects_are_not_followed(misbehaving: ServerThread, attacker: Attacker) -> None:
    r = httpx.post(misbehaving.base_url + "/v1/chat/completions", json={"model": "up/redirect", "messages": []})
    assert r.status_code == 307 and "location" not in r.headers
    threading.Event().wait(0.3)
    assert attacker.connections == 0


# --- admin: the config view and the admin port -----------------------------------------------

ADMIN_KEY = "admin-canary-0d9f8e7c6b5a4321"


def admin_app(upstream_url: str, **admin: Any) -> Any:
    config = gateway_config(upstream_url)
    config["admin"] = {"key": ADMIN_KEY, **admin}
    return create_app(load_config(config, env={}, dotenv=False)), config


def test_config_view_is_the_redacted_config(upstream) -> None:
    app, raw = admin_app(upstream.base_url)
    with ServerThread(app) as gw:
        url = gw.base_url + "/v1/admin/config"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer wrong-key-123"}).status_code == 401
        r = httpx.get(url, headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200
        assert r.json() == json.loads(json.dumps(load_config(raw, env={}, dotenv=False).redacted()))
        assert r.json()["providers"]["oai"]["api_keys"][0]["key"].startswith("<secret")
        for canary in (*CANARIES, ADMIN_KEY):
            assert canary not in r.text


def test_admin_port_serves_only_admin_paths(upstream) -> None:
    admin_port = free_port()
    app, _ = admin_app(upstream.base_url, port=admin_port)
    gw = ServerThread(app)
    gw._config.bind.append(f"127.0.0.1:{admin_port}")  # as `ccm-gateway serve` binds both
    with gw:
        auth = {"authorization": f"Bearer {ADMIN_KEY}"}
        api, admin = gw.base_url, f"http://127.0.0.1:{admin_port}"
        assert httpx.get(api + "/v1/admin/config", headers=auth).status_code == 404
        assert httpx.get(admin + "/v1/admin/config", headers=auth).status_code == 200
        assert "no such endpoint" in httpx.get(api + "/v1/usage", headers=auth).json()["error"]["message"]
        assert "ledger is off" in httpx.get(admin + "/v1/usage", headers=auth).json()["error"]["message"]
        assert httpx.post(admin + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []}).status_code == 404
        assert httpx.post(api + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []}).status_code == 200


def test_request_caps_and_admin_port_are_validated() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"admin": {"port": 8080}, "requests": {"max_depth": 0, "forbidden_keys": "base_url"}},
                    env={}, dotenv=False)
    text = "\n".join(caught.value.errors)
    assert "requests.max_depth" in text or "requests.forbidden_keys" in text
    with pytest.raises(ConfigError, match=r"admin\.port: must differ from server\.port"):
        load_config({"admin": {"port": 8080}}, env={}, dotenv=False)


def test_scrub_removes_hosts_and_url_credentials() -> None:
    hosts = host_needles("http://10.0.0.7:8000/v1")
    body = b'{"error":"connect to 10.0.0.7:8000 failed (10.0.0.7), see https://bob:s3cret@auth.internal/x"}'
    assert scrub_internals(body, hosts) == \
        b'{"error":"connect to upstream failed (upstream), see https://***@auth.internal/x"}'
    assert scrub_internals(b"at [::1]:9000", host_needles("http://[::1]:9000")) == b"at [upstream]:9000"
    assert scrub_internals(b"redis://:pw@cache:6379", ()) == b"redis://***@cache:6379"
    assert scrub_internals(b"mail me@example.com", ()) == b"mail me@example.com"  # not a URL
    assert host_needles("not a url") == ()


def test_a_too_deep_body_is_a_400_even_when_auth_reads_the_model_first() -> None:
    """A key with a model allow-list makes the auth stage read the request head before the request
    guard runs: msgspec's own recursion bound must end as a 400 in the caller's protocol, not a 500."""
    key = "gw-deep-key-0123456789"
    raw = {"keys": [{"name": "k", "key": key, "models": ["mock*"]}], "providers": {"mock": {"kind": "mock"}},
           "models": [{"name": "mock", "targets": [{"provider": "mock", "model": "m"}]}]}
    deep = b'{"model":"mock","messages":[{"role":"user","content":' + b"[" * 10_000 + b"]" * 10_000 + b"}]}"
    with ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as gw:
        r = httpx.post(gw.base_url + "/v1/chat/completions", content=deep, timeout=10,
                       headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
        assert r.status_code == 400 and "nests too deeply" in r.json()["error"]["message"]
        r = httpx.post(gw.base_url + "/v1/messages", content=deep, timeout=10,
                       headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
        assert r.status_code == 400 and r.json()["type"] == "error"


def test_the_exchange_stages_own_refusals_carry_the_request_id(upstream: Any) -> None:
    """A 413 is answered before any later stage runs; it still names the request (the client's valid
    id, or a fresh one), so operators can find it."""
    raw = gateway_config(upstream.base_url, max_body_bytes=1000)
    with ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as gw:
        big = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(gw.base_url + "/v1/chat/completions", json=big, timeout=10, headers={"x-request-id": "big-1"})
        assert r.status_code == 413 and r.headers["x-request-id"] == "big-1"
        r = httpx.post(gw.base_url + "/v1/chat/completions", json=big, timeout=10)
        assert r.status_code == 413 and r.headers["x-request-id"].startswith("req_")


def test_configured_names_are_caught_when_spelled_with_escapes() -> None:
    """Any character of a configured forbidden name written as a \\u escape sends the body to the exact
    check (not only lower-case letters): uppercase, digits and dashes too."""
    names = frozenset({"azureEndpoint", "x-api-key"})
    quoted = tuple(b'"' + n.encode() + b'"' for n in names)
    assert forbidden_key(b'{"\\u0078-api-key": "k"}', names, quoted) == "x-api-key"
    assert forbidden_key(b'{"azure\\u0045ndpoint": "u"}', names, quoted) == "azureEndpoint"
    assert forbidden_key(b'{"text": "caf\\u00e9 x-api-key"}', names, quoted) is None  # text, not a key

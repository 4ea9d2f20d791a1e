"""Credentials never reach log output: canary secrets through every logger, in-process and served."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.mock import MockUpstream
from ccm_gateway.observability.log_format import JsonFormatter
from ccm_gateway.observability.redaction import RedactingFormatter, RedactionFilter, redact, register_secrets

from .conftest import ANTHROPIC_KEY, AZURE_KEY, CANARIES, CLOSED_PORT, GEMINI_KEY, OPENAI_KEY, gateway_config
from .log_capture import json_lines
from .servers import ServerThread, start_gateway_process

GATEWAY_KEY = "gw-canary-3d9f1b7e5a2c4680"
ADMIN_KEY = "admin-canary-6b1e9d3f7a5c2408"
REDIS_PASSWORD = "redispw-canary-4a7c1e9b3d5f"
PLAIN_SECRET = "plain-canary-value-x9y8z7"  # nothing pattern-like about it: only exact matching can catch it


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abc.def-ghi_jkl",
    "{'authorization': 'Bearer abc.def-ghi_jkl'}",
    '{"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}',
    "[(b'authorization', b'Bearer abc.def-ghi_jkl')]",
    "<CIMultiDict('X-Api-Key': 'abc.def-ghi_jkl')>",
    "api-key=abc.def-ghi_jkl",
    "headers x-goog-api-key: abc.def-ghi_jkl sent",
    "GET https://generativelanguage.googleapis.com/v1beta/models?key=abc.def-ghi_jkl HTTP/1.1",
    "POST /v1/x?alt=sse&key=abc.def-ghi_jkl&foo=1",
    "connecting to redis://default:abc.def-ghi_jkl@redis.internal:6379/0",
    "upstream said: Incorrect API key provided: sk-proj-abc.def-ghi_jkl",
    "token bearer abc.def-ghi_jkl in a sentence",
])
def test_credential_shapes_are_masked(text: str) -> None:
    out = redact(text)
    assert "abc.def-ghi_jkl" not in out and "dXNlcjpwYXNzd29yZA" not in out
    assert "***" in out


def test_ordinary_text_is_left_alone() -> None:
    text = "route gpt-4.1 answered 200 in 12 ms; keys=3, api-key header missing"
    assert redact(text) == text


def test_registered_secret_values_are_masked_wherever_they_appear() -> None:
    register_secrets([PLAIN_SECRET])
    assert redact(f"oops {PLAIN_SECRET}!") == "oops ***!"
    assert PLAIN_SECRET not in redact(repr({"nested": [PLAIN_SECRET.upper()]}))


def _record(logger: str, msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    record = logging.getLogger(logger).makeRecord(logger, logging.ERROR, __file__, 1, msg, args,
                                                  (type(exc), exc, exc.__traceback__) if exc else None)
    return record


def test_formatters_and_filter_cover_arguments_and_tracebacks() -> None:
    register_secrets([PLAIN_SECRET])
    try:
        raise RuntimeError(f"upstream refused key {PLAIN_SECRET}")
    except RuntimeError as exc:
        error = exc
    for formatter in (JsonFormatter(), RedactingFormatter()):
        out = formatter.format(_record("aiohttp.client", "sending %s", {"x-api-key": PLAIN_SECRET}, exc=error))
        assert PLAIN_SECRET not in out and "RuntimeError" in out
    record = _record("hypercorn.error", "got %s", PLAIN_SECRET, exc=error)
    assert RedactionFilter().filter(record)
    assert PLAIN_SECRET not in logging.Formatter().format(record)


@pytest.fixture
def root_output() -> Iterator[io.StringIO]:
    """Everything every logger emits, as the served gateway writes it: JSON through the root handler."""
    with json_lines(logging.getLogger(), logging.DEBUG) as stream:
        yield stream


def test_canaries_through_every_logger_in_process(upstream: MockUpstream, root_output: io.StringIO) -> None:
    raw = gateway_config(upstream.base_url)
    raw["keys"] = [{"name": "alice", "key": GATEWAY_KEY}]
    raw["admin"] = {"key": ADMIN_KEY}
    app = create_app(load_config(raw, env={}, dotenv=False))  # registers the config's secrets
    auth = {"authorization": "Bearer " + GATEWAY_KEY}
    with ServerThread(app) as server:
        posts = [
            ("/v1/chat/completions", {"model": "gpt-4.1+auth=wrong", "messages": []}),  # upstream 401 echoing a key
            ("/v1/chat/completions", {"model": "gpt-4.1+status=500", "messages": []}),
            ("/v1/chat/completions", {"model": "gpt-4.1+truncate=2", "stream": True, "messages": []}),
            ("/v1/chat/completions", {"model": "unreachable", "messages": []}),
            ("/v1/chat/completions", {"model": "azure-gpt", "messages": []}),
            ("/v1/embeddings", {"model": "embed-gemini", "input": "x"}),
        ]
        for path, body in posts:
            httpx.post(server.base_url + path, json=body, headers=auth, timeout=15)
        httpx.post(server.base_url + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []},
                   headers={"authorization": "Bearer wrong-" + GATEWAY_KEY}, timeout=15)
        httpx.get(server.base_url + "/v1/usage", headers={"authorization": "Bearer " + ADMIN_KEY}, timeout=15)
    # What third-party loggers could say: header dumps, URLs with keys, exceptions quoting a key.
    logging.getLogger("aiohttp.client").debug("request headers %s", {"Authorization": "Bearer " + OPENAI_KEY})
    logging.getLogger("aiohttp.access").info("GET /v1beta/models?key=%s 200", GEMINI_KEY)
    logging.getLogger("hypercorn.error").warning("bad request from client with x-api-key: %s", ANTHROPIC_KEY)
    try:
        raise ConnectionError(f"cannot connect with {AZURE_KEY} to redis://:{REDIS_PASSWORD}@127.0.0.1:{CLOSED_PORT}")
    except ConnectionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    output = root_output.getvalue()
    assert "upstream failure after response start" in output  # the gateway's own records are here
    assert '"logger":"asyncio"' in output and "ConnectionError" in output
    assert '"status":401' in output  # and the access lines
    for secret in (*CANARIES, GATEWAY_KEY, ADMIN_KEY, REDIS_PASSWORD):
        assert secret not in output, secret
    for line in output.splitlines():
        json.loads(line)  # every record is one JSON object


def test_served_gateway_logs_carry_no_secret(upstream: MockUpstream, tmp_path) -> None:
    """``ccm-gateway serve`` as operators run it (JSON logs at debug level): a key echoed by an upstream
    401, a refused gateway key, Redis down with a password in its URL — no secret in the output."""
    config = tmp_path / "gw.toml"
    config.write_text(f"""
[logging]
level = "debug"
format = "json"
[state]
backend = "redis"
url = "env:CANARY_REDIS_URL"
timeout_ms = 20
[limits]
rpm = 1000
[admin]
key = "env:CANARY_ADMIN"
[[keys]]
name = "alice"
key = "env:CANARY_GATEWAY"
[providers.oai]
kind = "openai"
base_url = "{upstream.base_url}/v1"
api_keys = ["env:CANARY_OPENAI"]
[[models]]
name = "gpt"
targets = [{{ provider = "oai", model = "gpt-4.1" }}]
""")
    env = {"CANARY_OPENAI": OPENAI_KEY, "CANARY_GATEWAY": GATEWAY_KEY, "CANARY_ADMIN": ADMIN_KEY,
           "CANARY_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{CLOSED_PORT}/0"}
    proc, base = start_gateway_process("--config", str(config), env=env)
    try:
        auth = {"authorization": "Bearer " + GATEWAY_KEY}
        r = httpx.post(base + "/v1/chat/completions", headers=auth, timeout=15,
                       json={"model": "oai/gpt-4.1+auth=wrong", "messages": []})
        assert r.status_code == 401 and OPENAI_KEY not in r.text
        r = httpx.post(base + "/v1/chat/completions", headers=auth, timeout=15,
                       json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        r = httpx.post(base + "/v1/chat/completions", headers={"x-api-key": GATEWAY_KEY + "x"}, timeout=15,
                       json={"model": "gpt", "messages": []})
        assert r.status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0].decode()
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(rec.get("logger") == "hypercorn.error" for rec in records)
    assert any("state backend redis unavailable" in rec.get("msg", "") for rec in records)  # the failover warning
    statuses = sorted(rec["status"] for rec in records if "status" in rec and "request_id" in rec)
    assert statuses == [200, 401, 401]
    for secret in (OPENAI_KEY, GATEWAY_KEY, ADMIN_KEY, REDIS_PASSWORD):
        assert secret not in out, secret


def test_provider_header_values_and_base_url_passwords_are_secrets() -> None:
    """Fixed upstream headers often carry a second credential, and a base URL can hold one: the config
    view masks both and the log redactor knows their values."""
    from ccm_gateway.observability.redaction import config_secrets

    config = load_config({"providers": {"p": {
        "kind": "openai-compatible", "base_url": "http://user:url-pass-0123456@llm.internal/v1",
        "headers": {"cf-aig-authorization": "Bearer gateway-hdr-secret-9876"}}}}, env={}, dotenv=False)
    shown = str(config.redacted())
    assert "gateway-hdr-secret-9876" not in shown and "url-pass-0123456" not in shown
    assert "cf-aig-authorization" in shown and "llm.internal" in shown  # names and hosts stay readable
    assert {"Bearer gateway-hdr-secret-9876", "url-pass-0123456"} <= set(config_secrets(config))

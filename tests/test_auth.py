"""Gateway keys: every header form, one 401 for every kind of bad key, per-key model allow-lists
(403, and on /v1/models), hashed-only keys, auth on/off decisions, and a canary key that never
shows up in logs, bodies or headers."""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.middleware.auth import AuthMiddleware
from ccm_gateway.mock import MockUpstream

from .conftest import gateway_config
from .servers import ServerThread

FULL_KEY = "gk-canary-full-5d1e9a7c3b0f2e84"  # a canary: it must never appear in any output
LIMITED_KEY = "gk-limited-0a9b8c7d6e5f4a3b"
HASHED_KEY = "gk-hashed-only-1c2d3e4f5a6b7c8d"
FILE_KEY = "gk-from-file-77aa88bb99cc00dd"
ANT = {"anthropic-version": "2023-06-01"}
CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-sonnet", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}


def auth_config(upstream_url: str, key_file: Path) -> dict[str, Any]:
    config = gateway_config(upstream_url)
    config["keys"] = [
        {"name": "full", "key": "env:CCM_TEST_GATEWAY_KEY", "team": "core"},
        {"name": "limited", "key": LIMITED_KEY, "models": ["gpt-*", "local-*"]},
        {"name": "hashed", "key_sha256": hashlib.sha256(HASHED_KEY.encode()).hexdigest()},
        {"name": "filed", "key": f"file:{key_file}"},
    ]
    return config  # no [auth] section: keys present → auth on


@pytest.fixture(scope="module")
def secured(upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    key_file = tmp_path_factory.mktemp("keys") / "gateway.key"
    key_file.write_text(FILE_KEY + "\n")
    config = load_config(auth_config(upstream.base_url, key_file), env={"CCM_TEST_GATEWAY_KEY": FULL_KEY},
                         dotenv=False)
    app = create_app(config)
    assert all(k.key is None for k in config.keys)  # only digests are kept
    assert FULL_KEY not in repr(config.redacted())
    with ServerThread(app) as server:
        yield server


def post(server: ServerThread, path: str, body: dict, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("headers", [
    {"authorization": f"Bearer {FULL_KEY}"},
    {"authorization": f"bearer  {FULL_KEY}"},
    {"x-api-key": FULL_KEY},
    {"x-goog-api-key": FULL_KEY},
    {"authorization": f"Bearer {HASHED_KEY}"},
    {"x-api-key": FILE_KEY},
    {"authorization": "Bearer not-a-gateway-key", "x-api-key": FULL_KEY},  # any valid credential
])
def test_every_header_form_is_accepted(secured: ServerThread, headers: dict[str, str]) -> None:
    assert post(secured, "/v1/chat/completions", CHAT, headers).status_code == 200
    assert post(secured, "/v1/messages", MESSAGES, {**headers, **ANT}).status_code == 200


def test_official_sdks_authenticate(secured: ServerThread) -> None:
    oai = openai.OpenAI(base_url=secured.base_url + "/v1", api_key=FULL_KEY, max_retries=0)
    assert oai.chat.completions.create(**CHAT).choices[0].message.content
    ant = anthropic.Anthropic(base_url=secured.base_url, api_key=FULL_KEY, max_retries=0)
    assert ant.messages.create(**MESSAGES).content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=secured.base_url + "/v1", api_key="wrong-key-123", max_retries=0
                      ).chat.completions.create(**CHAT)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=secured.base_url, api_key="wrong-key-123", max_retries=0
                            ).messages.create(**MESSAGES)


BAD = [
    {},
    {"authorization": "Bearer gk-wrong-but-well-formed-key"},
    {"x-api-key": FULL_KEY + "x"},
    {"x-api-key": FULL_KEY[:-1]},
    {"authorization": FULL_KEY},  # no scheme
    {"authorization": f"Basic {FULL_KEY}"},
    {"authorization": "Bearer"},
    {"x-api-key": "short"},
    {"x-api-key": "a" * 8192},  # oversized
    {"authorization": "Bearer " + "b" * 8000},
    {"x-goog-api-key": "has space inside key"},
    {"x-api-key": hashlib.sha256(HASHED_KEY.encode()).hexdigest()},  # the digest is not the key
]


@pytest.mark.parametrize(("path", "extra"), [("/v1/chat/completions", {}), ("/v1/messages", ANT)])
def test_every_bad_key_gets_the_same_401(secured: ServerThread, path: str, extra: dict[str, str]) -> None:
    body = CHAT if path.endswith("completions") else MESSAGES
    answers = set()
    for headers in BAD:
        r = post(secured, path, body, {**headers, **extra, "x-request-id": "req-fixed"})
        assert r.status_code == 401, headers
        answers.add((r.content, r.headers["content-type"], r.headers.get("www-authenticate")))
    assert len(answers) == 1  # no oracle: nothing tells the caller what was wrong
    body = httpx.Response(200, content=answers.pop()[0]).json()
    if path == "/v1/messages":
        assert body["error"]["type"] == "authentication_error"
    else:
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "invalid_api_key"


def test_unauthenticated_get_and_unknown_paths(secured: ServerThread) -> None:
    assert httpx.get(secured.base_url + "/v1/models", timeout=10).status_code == 401
    assert httpx.get(secured.base_url + "/v1/nothing-here", timeout=10).status_code == 401  # no path oracle
    assert httpx.get(secured.base_url + "/health", timeout=10).status_code == 200


def test_header_with_cr_or_lf_is_refused_cleanly(secured: ServerThread) -> None:
    """A bare CR in a header value never reaches the app: the server answers 400 and stays up."""
    with socket.create_connection(("127.0.0.1", secured.port), timeout=5) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nx-api-key: " + FULL_KEY.encode()
                  + b"\rinjected: 1\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 4") and FULL_KEY.encode() not in reply
    stage = AuthMiddleware(None, load_config({"keys": [{"name": "a", "key": FULL_KEY}]}, env={}, dotenv=False).keys)
    for value in (FULL_KEY + "\r\n", FULL_KEY + "\n", "\r\n" + FULL_KEY, FULL_KEY + "\x00"):
        assert stage.identify([(b"x-api-key", value.encode())]) is None
    assert stage.identify([(b"x-api-key", FULL_KEY.encode())]) is not None
    assert httpx.get(secured.base_url + "/v1/models", headers={"x-api-key": FULL_KEY}, timeout=10).status_code == 200


def test_model_allow_list(secured: ServerThread) -> None:
    limited = {"authorization": f"Bearer {LIMITED_KEY}"}
    assert post(secured, "/v1/chat/completions", CHAT, limited).status_code == 200
    r = post(secured, "/v1/chat/completions", {**CHAT, "model": "claude-sonnet"}, limited)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = post(secured, "/v1/chat/completions", {**CHAT, "model": "openai/gpt-4o"}, limited)
    assert r.status_code == 403  # direct provider/model names are matched too
    r = post(secured, "/v1/messages", MESSAGES, {"x-api-key": LIMITED_KEY, **ANT})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    embed = {"model": "text-embedding-3-small", "input": "hi"}
    assert post(secured, "/v1/embeddings", embed, limited).status_code == 403
    assert post(secured, "/v1/embeddings", embed, {"x-api-key": FULL_KEY}).status_code == 200
    assert post(secured, "/v1/embeddings", embed, {}).status_code == 401


def test_models_listing_is_filtered_per_key(secured: ServerThread) -> None:
    def listed(headers: dict[str, str]) -> set[str]:
        r = httpx.get(secured.base_url + "/v1/models", headers=headers, timeout=10)
        assert r.status_code == 200
        return {m["id"] for m in r.json()["data"]}

    everything = listed({"authorization": f"Bearer {FULL_KEY}"})
    assert {"gpt-4.1", "claude-sonnet", "local-llama"} <= everything
    assert listed({"x-api-key": LIMITED_KEY, **ANT}) == {"gpt-4.1", "local-llama"}


def test_canary_key_never_in_logs_bodies_or_headers(secured: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for headers in ({"authorization": f"Bearer {FULL_KEY}"}, {"x-api-key": FULL_KEY + "x"},
                    {"x-api-key": FULL_KEY[:-1]}, {"authorization": f"Basic {FULL_KEY}"}):
        for path, body, extra in (("/v1/chat/completions", CHAT, {}), ("/v1/messages", MESSAGES, ANT),
                                  ("/v1/chat/completions", {**CHAT, "model": "nope"}, {}),
                                  ("/v1/chat/completions", {**CHAT, "stream": True}, {})):
            r = post(secured, path, body, {**headers, **extra})
            seen += [r.text, repr(r.headers)]
    seen += [rec.getMessage() + repr(rec.__dict__) for rec in caplog.records]
    for text in seen:
        assert FULL_KEY not in text and FULL_KEY[:-1] not in text


def test_auth_decisions_and_warning(upstream: MockUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ccm_gateway")
    create_app(load_config(gateway_config(upstream.base_url), env={}, dotenv=False))
    assert any("auth is off" in r.getMessage() and "anyone" in r.getMessage() for r in caplog.records)
    caplog.clear()
    keyed = {**gateway_config(upstream.base_url), "keys": [{"name": "a", "key": LIMITED_KEY}]}
    app = create_app(load_config(keyed, env={}, dotenv=False))
    assert not caplog.records
    assert any(m.cls is AuthMiddleware for m in app.user_middleware)
    off = create_app(load_config({**keyed, "auth": {"enabled": False}}, env={}, dotenv=False))
    assert not any(m.cls is AuthMiddleware for m in off.user_middleware)
    assert any("auth.enabled = false" in r.getMessage() for r in caplog.records)

"""Upstream credentials never reach clients, logs or reprs — checked with canary keys."""

from __future__ import annotations

import logging

import httpx
import pytest

from ccm_gateway import load_config

from .conftest import ANTHROPIC_KEY, CANARIES, OPENAI_KEY, gateway_config
from .servers import ServerThread


def test_upstream_auth_error_echoing_the_key_is_redacted(gateway: ServerThread) -> None:
    # The mock, like real providers, echoes the presented key in its 401 body.
    r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=10,
                   json={"model": "gpt-4.1+auth=some-other-key", "messages": []})
    assert r.status_code == 401
    assert "Incorrect API key provided" in r.json()["error"]["message"]
    assert OPENAI_KEY not in r.text and OPENAI_KEY[:20] not in r.text
    r = httpx.post(gateway.base_url + "/v1/messages", timeout=10,
                   headers={"anthropic-version": "2023-06-01"},
                   json={"model": "claude-sonnet+auth=x", "max_tokens": 1, "messages": []})
    assert r.status_code == 401 and ANTHROPIC_KEY not in r.text


def test_no_canary_in_logs_bodies_or_headers(gateway: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    requests = [
        ("/v1/chat/completions", {}, {"model": "gpt-4.1", "messages": [{"role": "user", "content": "a"}]}),
        ("/v1/chat/completions", {}, {"model": "gpt-4.1+status=500", "messages": []}),
        ("/v1/chat/completions", {}, {"model": "gpt-4.1+truncate=2", "stream": True, "messages": []}),
        ("/v1/chat/completions", {}, {"model": "gpt-4.1+auth=nope", "messages": []}),
        ("/v1/chat/completions", {}, {"model": "unreachable", "messages": []}),
        ("/v1/chat/completions", {}, {"model": "gpt-4.1+ttfb_ms=1500", "stream": True, "messages": []}),
        ("/v1/messages", {"anthropic-version": "2023-06-01"},
         {"model": "claude-sonnet", "max_tokens": 1, "stream": True, "messages": []}),
        ("/v1/messages", {"anthropic-version": "2023-06-01"},
         {"model": "claude-sonnet+chunks=3+delay_ms=1500", "max_tokens": 1, "stream": True, "messages": []}),
    ]
    for path, headers, body in requests:
        r = httpx.post(gateway.base_url + path, headers=headers, json=body, timeout=15)
        seen.append(r.text)
        seen.extend(f"{k}: {v}" for k, v in r.headers.items())
    seen.extend(record.getMessage() for record in caplog.records)
    seen.extend(str(record.exc_info) for record in caplog.records if record.exc_info)
    blob = "\n".join(seen)
    for canary in CANARIES:
        assert canary not in blob
    assert any("stopped sending" in record.getMessage() for record in caplog.records)  # logs were captured


def test_config_repr_and_redacted_view_hide_keys(upstream) -> None:
    config = load_config(gateway_config(upstream.base_url), env={}, dotenv=False)
    for text in (repr(config), str(config.redacted()), repr(config.providers["oai"].api_keys)):
        for canary in CANARIES:
            assert canary not in text
    assert config.providers["oai"].api_keys[0].key.reveal() == OPENAI_KEY

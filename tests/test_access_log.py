"""One JSON access line per API request, from an allow-list of fields; request ids end to end."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.mock import MockUpstream
from ccm_gateway.observability.access_log import AccessLine
from ccm_gateway.observability.log_format import ACCESS_LOGGER

from .conftest import CANARIES, gateway_config
from .log_capture import json_lines
from .servers import ServerThread

KEY = "gw-access-log-key-0123456789"
PROMPT = "the-user-prompt-text-5e1f"
FIELDS = set(AccessLine.__struct_fields__)


@pytest.fixture(scope="module")
def served(upstream: MockUpstream) -> Iterator[ServerThread]:
    raw = gateway_config(upstream.base_url)
    raw["keys"] = [{"name": "carol", "key": KEY, "team": "research"}]
    with ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as server:
        yield server


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    with json_lines(logging.getLogger(ACCESS_LOGGER), logging.INFO) as stream:
        yield stream


def line_for(stream: io.StringIO, request_id: str) -> dict[str, Any]:
    """The access line of a request (the stage writes it a moment after the client's last byte)."""
    for _ in range(200):
        for text in stream.getvalue().splitlines():
            line = json.loads(text)
            if line["request_id"] == request_id:
                return line
        threading.Event().wait(0.02)
    raise AssertionError(f"no access line for {request_id}")


def test_json_answer_line(served: ServerThread, lines: io.StringIO, upstream: MockUpstream) -> None:
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": PROMPT}], extra_headers={"x-request-id": "trace.42:a-b"})
    answer = raw.parse()
    assert raw.headers["x-request-id"] == "trace.42:a-b"
    assert any(r.headers.get("x-request-id") == "trace.42:a-b" for r in upstream.requests)  # sent upstream
    line = line_for(lines, "trace.42:a-b")
    assert set(line) <= FIELDS
    assert line["status"] == 200 and line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert (line["key"], line["team"], line["route"]) == ("carol", "research", "gpt-4.1")
    assert (line["provider"], line["model"], line["dialect"]) == ("oai", "gpt-4.1-2025-04-14", "openai_chat")
    assert line["stream"] is False and line["attempts"] == 1 and line["upstream_status"] == 200
    assert line["tokens"]["input"] == answer.usage.prompt_tokens
    assert line["tokens"]["output"] == answer.usage.completion_tokens
    assert line["cost_usd"] > 0
    assert 0 < line["upstream_ms"] <= line["latency_ms"]
    assert "ttft_ms" not in line  # a JSON answer has no first token to time
    text = lines.getvalue()
    assert PROMPT not in text and KEY not in text and not any(c in text for c in CANARIES)


def test_stream_and_translated_lines(served: ServerThread, lines: io.StringIO) -> None:
    client = openai.OpenAI(base_url=served.base_url + "/v1", api_key=KEY, max_retries=0)
    # A first stream loads what the SDK imports lazily: on a cold machine (fresh .pyc files) that holds
    # the interpreter long enough for the measured stream's chunks to arrive in one read.
    list(client.chat.completions.create(model="gpt-4.1", stream=True, messages=[{"role": "user", "content": "x"}]))
    stream = client.chat.completions.with_raw_response.create(
        model="gpt-4.1+chunks=4+delay_ms=200", stream=True, messages=[{"role": "user", "content": "hi"}])
    request_id = stream.headers["x-request-id"]
    assert request_id.startswith("req_")
    list(stream.parse())
    line = line_for(lines, request_id)
    assert line["stream"] is True and line["status"] == 200
    assert 0 < line["ttft_ms"] <= line["latency_ms"]
    # The mock waits 200 ms between chunks (long enough that a busy test process does not read two at once).
    assert line["max_chunk_gap_ms"] >= 100
    assert line["tokens"]["output"] > 0
    ant = anthropic.Anthropic(base_url=served.base_url, api_key=KEY, max_retries=0)
    raw = ant.messages.with_raw_response.create(model="gpt-4.1", max_tokens=20,
                                                messages=[{"role": "user", "content": "hi"}])
    line = line_for(lines, raw.headers["x-request-id"])
    assert (line["dialect"], line["provider"], line["status"]) == ("anthropic_messages", "oai", 200)
    assert line["tokens"]["output"] == raw.parse().usage.output_tokens


def test_refusals_and_upstream_errors(served: ServerThread, lines: io.StringIO) -> None:
    r = httpx.post(served.base_url + "/v1/chat/completions", timeout=10, headers={"x-request-id": "bad-key-1"},
                   json={"model": "gpt-4.1", "messages": []})
    assert r.status_code == 401 and r.headers["x-request-id"] == "bad-key-1"  # refusals carry it too
    line = line_for(lines, "bad-key-1")
    assert (line["status"], line["error"], line["attempts"]) == (401, "AuthenticationFailed", 0)
    assert "key" not in line and "route" not in line and "tokens" not in line
    r = httpx.post(served.base_url + "/v1/chat/completions", timeout=10,
                   headers={"authorization": "Bearer " + KEY, "x-request-id": "up-503"},
                   json={"model": "gpt-4.1+status=503", "messages": []})
    assert r.status_code == 503
    line = line_for(lines, "up-503")
    assert (line["status"], line["upstream_status"], line["attempts"]) == (503, 503, 1)


@pytest.mark.parametrize("given", ["x" * 129, "has space", "semi;colon", "ünïcode", ""])
def test_unusable_client_request_ids_are_replaced(served: ServerThread, lines: io.StringIO, given: str,
                                                   upstream: MockUpstream) -> None:
    r = httpx.post(served.base_url + "/v1/chat/completions", timeout=10,
                   headers={"authorization": "Bearer " + KEY, "x-request-id": given.encode()},
                   json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    made = r.headers["x-request-id"]
    assert made.startswith("req_") and len(made) == 36
    assert upstream.requests[-1].headers["x-request-id"] == made
    assert line_for(lines, made)["status"] == 200


def test_access_lines_can_be_turned_off(upstream: MockUpstream, lines: io.StringIO) -> None:
    raw = gateway_config(upstream.base_url)
    raw["logging"] = {"access": False}
    with ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as server:
        r = httpx.post(server.base_url + "/v1/chat/completions", timeout=10,
                       json={"model": "gpt-4.1", "messages": []})
        assert r.status_code == 200
    assert lines.getvalue() == ""


def test_client_that_leaves_before_the_answer_is_logged_as_499(served: ServerThread, lines: io.StringIO) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(served.base_url + "/v1/chat/completions", timeout=httpx.Timeout(10, read=0.3),
                   headers={"authorization": "Bearer " + KEY, "x-request-id": "left-early"},
                   json={"model": "gpt-4.1+ttfb_ms=900", "stream": True, "messages": []})
    line = line_for(lines, "left-early")
    assert (line["status"], line["disconnected"], line["attempts"]) == (499, True, 1)

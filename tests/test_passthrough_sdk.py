"""The official SDKs talk to the gateway (real hypercorn on loopback) and get the upstream's answers,
streaming and not, through byte pass-through to the mock upstream."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from ccm_gateway.mock import MockUpstream

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, exchange_for
from .servers import ServerThread

REPLY = "Hello from the ccm_gateway mock. You said: "


@pytest.fixture
def oai(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="client-key", max_retries=0, timeout=10)


@pytest.fixture
def ant(gateway: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="client-key", max_retries=0, timeout=10)


def last_request(upstream: MockUpstream, path: str):
    found = [r for r in upstream.requests if r.path == path]
    assert found, f"upstream saw no request to {path}"
    return found[-1]


def test_openai_sdk_non_streaming(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "ping one"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == REPLY + "ping one"
    assert completion.model == "gpt-4.1-2025-04-14"  # the upstream's answer, untouched
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    sent = last_request(upstream, "/v1/chat/completions")
    body = sent.json()
    assert body["model"] == "gpt-4.1-2025-04-14"  # only the model name was rewritten
    assert body["messages"] == [{"role": "user", "content": "ping one"}]
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"  # the provider key, not the client's
    assert sent.headers["user-agent"].startswith("ccm-gateway/")  # ours, not the client SDK's
    request_id = raw.headers["x-request-id"]
    assert sent.headers["x-request-id"] == request_id
    assert raw.headers["x-upstream-request-id"].startswith("req-mock")
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    usage = exchange_for(request_id).usage
    assert usage.reported and usage.input == completion.usage.prompt_tokens
    assert usage.output == completion.usage.completion_tokens


def test_openai_sdk_streaming_with_usage(oai: openai.OpenAI) -> None:
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        request_id = raw.headers["x-request-id"]
        assert raw.headers["content-type"].startswith("text/event-stream")
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY + "stream me"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    usage = exchange_for(request_id).usage
    assert usage.reported and usage.output == chunks[-1].usage.completion_tokens
    assert usage.input == chunks[-1].usage.prompt_tokens


def test_openai_sdk_parallel_tool_calls_stream_through(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        model="gpt-4.1+tools=2", messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert len(calls) == 2 and calls[0].id != calls[1].id
    assert all(isinstance(json.loads(c.function.arguments), dict) for c in calls)


def test_openai_compatible_provider_without_key(gateway: ServerThread, upstream: MockUpstream) -> None:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="x", max_retries=0, timeout=10)
    out = client.chat.completions.create(model="local-llama", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == REPLY + "hi"
    sent = last_request(upstream, "/v1/chat/completions")
    assert sent.json()["model"] == "llama3.1:8b"
    assert "authorization" not in sent.headers  # no key configured, and the client's never goes upstream


def test_direct_provider_model_addressing(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    out = oai.chat.completions.create(model="oai/gpt-4o-mini", messages=[{"role": "user", "content": "d"}])
    assert out.choices[0].message.content == REPLY + "d"
    assert last_request(upstream, "/v1/chat/completions").json()["model"] == "gpt-4o-mini"


def test_anthropic_sdk_non_streaming(ant: anthropic.Anthropic, upstream: MockUpstream) -> None:
    raw = ant.messages.with_raw_response.create(
        model="claude-sonnet", max_tokens=64, messages=[{"role": "user", "content": "hello claude"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    message = raw.parse()
    assert message.content[0].text == REPLY + "hello claude"
    assert message.stop_reason == "end_turn"
    sent = last_request(upstream, "/v1/messages")
    assert sent.json()["model"] == "claude-sonnet-4-5"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in sent.headers
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert sent.headers["anthropic-version"]  # the client's version is forwarded
    assert raw.headers["request-id"].startswith("req_mock")  # the upstream's id reaches the SDK
    usage = exchange_for(raw.headers["x-request-id"]).usage
    assert usage.input == message.usage.input_tokens and usage.output == message.usage.output_tokens


def test_anthropic_sdk_streaming(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="claude-sonnet", max_tokens=64, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert final.content[0].text == REPLY + "stream please"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 1
    usage = exchange_for(request_id).usage
    assert usage.reported
    assert (usage.input, usage.output) == (final.usage.input_tokens, final.usage.output_tokens)


def test_anthropic_sdk_streaming_tool_use(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="ant/claude-sonnet-4-5+tools=2", max_tokens=64, messages=[{"role": "user", "content": "go"}]
    ) as stream:
        final = stream.get_final_message()
    tools = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(tools) == 2
    assert all(isinstance(t.input, dict) and t.input for t in tools)


def test_claude_code_beta_query_is_ignored_and_not_forwarded(gateway: ServerThread, upstream: MockUpstream) -> None:
    r = httpx.post(
        gateway.base_url + "/v1/messages?beta=true",
        headers={"x-api-key": "client", "anthropic-version": "2023-06-01"},
        json={"model": "claude-sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "cc"}]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    sent = last_request(upstream, "/v1/messages")
    assert sent.query == ""


def test_client_request_id_is_kept_and_sent_upstream(gateway: ServerThread, upstream: MockUpstream) -> None:
    r = httpx.post(
        gateway.base_url + "/v1/chat/completions", headers={"x-request-id": "client-trace-42"},
        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "id"}]}, timeout=10,
    )
    assert r.headers["x-request-id"] == "client-trace-42"
    assert last_request(upstream, "/v1/chat/completions").headers["x-request-id"] == "client-trace-42"
    bad = httpx.post(
        gateway.base_url + "/v1/chat/completions", headers={"x-request-id": "evil id with spaces"},
        json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "id"}]}, timeout=10,
    )
    assert bad.headers["x-request-id"].startswith("req_")


def test_models_list_in_both_shapes(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"gpt-4.1", "claude-sonnet", "local-llama"} <= ids
    anthropic_ids = [m.id for m in ant.models.list()]
    assert "claude-sonnet" in anthropic_ids


def test_health_and_ready(gateway: ServerThread) -> None:
    assert httpx.get(gateway.base_url + "/health").json() == {"status": "ok"}
    ready = httpx.get(gateway.base_url + "/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

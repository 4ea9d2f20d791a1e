"""Anthropic client (Claude Code's path) → OpenAI / OpenAI-compatible upstream, through the gateway.

Recorded-shape upstream streams (``+script=NAME``, ccm_gateway/mock/scripts.py) are replayed by the
mock upstream; the anthropic SDK's own accumulator builds the final message, which must equal the
translation of the same content answered as JSON, and the raw stream must keep every §7.2 invariant.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from ccm_gateway.mock import MockUpstream
from ccm_gateway.mock.scripts import LONG_TOOL_NAME

from .conftest import exchange_for
from .servers import ServerThread
from .sse_checks import check_anthropic, post_raw
from .test_claude_code_requests import BETAS, claude_code_body

WEATHER = {"city": "Paris", "unit": "celsius"}
TIME = {"timezone": "Europe/Paris"}
# script → (upstream provider, expected [(type, key fields)], expected stop_reason)
GOLDEN: dict[str, tuple[str, list[tuple[Any, ...]], str]] = {
    "oai_text": ("oai", [("text", "Hello, world!")], "end_turn"),
    "oai_tool": ("oai", [("text", "Let me check."), ("tool_use", "call_w1", "get_weather", WEATHER)], "tool_use"),
    "oai_parallel": ("oai", [("tool_use", "call_A", "get_weather", WEATHER),
                             ("tool_use", "call_B", "get_time", TIME)], "tool_use"),
    "oai_reasoning_tool": ("local", [("thinking", "The user wants the weather.", ""),
                                     ("tool_use", "call_r1", "get_weather", WEATHER)], "tool_use"),
    "oai_combined": ("oai", [("text", "All in one chunk.")], "end_turn"),
    "oai_no_index": ("local", [("tool_use", "call_n1", "get_weather", WEATHER),
                               ("tool_use", "call_n2", "get_time", TIME)], "tool_use"),
    "oai_whole_args": ("local", [("tool_use", "call_x1", "get_weather", WEATHER)], "tool_use"),
    "oai_index_reused": ("local", [("tool_use", "call_i1", "get_weather", WEATHER),
                                   ("tool_use", "call_i2", "get_time", TIME)], "tool_use"),
}


@pytest.fixture
def ant(gateway: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="client-key", max_retries=0, timeout=10)


def summary(message: Any) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for b in message.content:
        if b.type == "text":
            out.append(("text", b.text))
        elif b.type == "thinking":
            out.append(("thinking", b.thinking, b.signature))
        elif b.type == "tool_use":
            out.append(("tool_use", b.id, b.name, b.input))
        else:
            out.append((b.type,))
    return out


USER = [{"role": "user", "content": "weather in Paris?"}]


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": "weather in Paris?"}], **extra}


@pytest.mark.parametrize("script", sorted(GOLDEN))
def test_stream_accumulates_to_the_json_translation(script: str, ant: anthropic.Anthropic,
                                                    gateway: ServerThread) -> None:
    provider, expected, stop = GOLDEN[script]
    model = f"{provider}/m+script={script}"
    with ant.messages.stream(**body(model)) as stream:
        streamed = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    whole = ant.messages.create(**body(model))
    assert summary(streamed) == expected == summary(whole)
    assert streamed.stop_reason == whole.stop_reason == stop
    for m in (streamed, whole):  # §4.8: 120 prompt incl. 100 cached → 20 uncached + 100 cache read
        assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (20, 100, 40)
        assert m.usage.cache_creation_input_tokens == 0
        assert m.model == model
    usage = exchange_for(request_id).usage
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (20, 100, 40, 12)
    status, raw = post_raw(gateway.base_url, "/v1/messages", body(model, stream=True))
    assert status == 200
    check_anthropic(raw)


def test_upstream_request_is_openai_shaped(ant: anthropic.Anthropic, upstream: MockUpstream) -> None:
    ant.messages.create(
        model="oai/gpt-x+script=oai_text", max_tokens=100_000, system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": "hi"}], stop_sequences=["END"], metadata={"user_id": "u-1"},
        extra_body={"context_management": {"x": 1}, "temperature": 0.3},  # this SDK has no temperature arg
    )
    sent = [r for r in upstream.requests if r.path == "/v1/chat/completions"][-1]
    got = sent.json()
    assert got["model"] == "gpt-x+script=oai_text"
    assert got["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert got["max_completion_tokens"] == 100_000 and "max_tokens" not in got  # OpenAI: the new field
    assert (got["temperature"], got["stop"], got["user"]) == (0.3, ["END"], "u-1")
    assert "context_management" not in got and "metadata" not in got  # unknown fields never forwarded
    assert sent.headers["authorization"].startswith("Bearer sk-canary") and "anthropic-version" not in sent.headers


def test_two_turn_tool_conversation_with_thinking_replayed(ant: anthropic.Anthropic, upstream: MockUpstream) -> None:
    """Claude Code's loop: tool call (with compat reasoning) → tool_result → second turn."""
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    first = [{"role": "user", "content": "weather in Paris?"}]
    with ant.messages.stream(model="local/r1+script=oai_reasoning_tool", max_tokens=512, tools=tools,
                             messages=first) as stream:
        turn = stream.get_final_message()
    assert turn.stop_reason == "tool_use"
    call = turn.content[-1]
    history = [*first, {"role": "assistant", "content": [b.to_dict() for b in turn.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"},
                                            {"type": "text", "text": "and tomorrow?"}]}]
    with ant.messages.stream(model="local/r1+script=oai_text", max_tokens=512, tools=tools,
                             messages=history) as stream:
        second = stream.get_final_message()
    assert summary(second) == [("text", "Hello, world!")]
    got = [r for r in upstream.requests if r.path == "/v1/chat/completions"][-1].json()
    assert got["messages"] == [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning_content": "The user wants the weather.",
         "tool_calls": [{"id": "call_r1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_r1", "content": "18C"},
        {"role": "user", "content": "and tomorrow?"},
    ]
    assert got["tools"][0]["function"]["parameters"]["required"] == ["city"]
    assert got["max_tokens"] == 512 and got["stream_options"] == {"include_usage": True}  # compat: max_tokens


def test_mid_stream_error_becomes_an_error_event(ant: anthropic.Anthropic, gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/messages", body("oai/m+script=oai_error", stream=True))
    assert status == 200
    events = check_anthropic(raw, complete=False)
    assert events[-1]["error"]["type"] == "api_error"
    with pytest.raises(anthropic.APIStatusError), ant.messages.stream(**body("oai/m+script=oai_error")) as s:
        s.get_final_message()


def test_truncated_stream_is_an_error_not_a_clean_stop(gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/messages", body("oai/m+script=oai_truncated", stream=True))
    assert status == 200
    events = check_anthropic(raw, complete=False)
    assert "ended the stream early" in events[-1]["error"]["message"]


@pytest.mark.parametrize(("upstream_status", "status", "kind"), [
    (400, 400, "invalid_request_error"), (401, 401, "authentication_error"), (404, 404, "not_found_error"),
    (429, 429, "rate_limit_error"), (500, 500, "api_error"), (503, 529, "overloaded_error"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_are_anthropic_shaped(upstream_status: int, status: int, kind: str, stream: bool,
                                              gateway: ServerThread) -> None:
    code, raw = post_raw(gateway.base_url, "/v1/messages", body(f"oai/m+status={upstream_status}", stream=stream))
    assert code == status  # before the stream started: a JSON error with its status, not a 200
    err = json.loads(raw)
    assert err["type"] == "error" and err["error"]["type"] == kind
    assert "canary" not in raw


def test_keepalive_pings_during_upstream_silence(gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/messages", body("oai-ka/m+script=oai_text+delay_ms=500", stream=True))
    assert status == 200
    events = check_anthropic(raw)
    pings = [e for e in events if e["type"] == "ping"]
    assert len(pings) >= 3  # one after message_start, more while the upstream was silent


def test_long_tool_names_are_restored_in_the_stream(ant: anthropic.Anthropic, upstream: MockUpstream) -> None:
    assert len(LONG_TOOL_NAME) > 64
    tools = [{"name": LONG_TOOL_NAME, "input_schema": {"type": "object", "properties": {}}}]
    with ant.messages.stream(model="oai/m+script=oai_long_name", max_tokens=64, tools=tools,
                             tool_choice={"type": "tool", "name": LONG_TOOL_NAME, "disable_parallel_tool_use": True},
                             messages=[{"role": "user", "content": "go"}]) as stream:
        final = stream.get_final_message()
    got = [r for r in upstream.requests if r.path == "/v1/chat/completions"][-1].json()
    short = got["tools"][0]["function"]["name"]
    assert len(short) <= 64 and short != LONG_TOOL_NAME
    assert got["tool_choice"] == {"type": "function", "function": {"name": short}}
    assert got["parallel_tool_calls"] is False
    assert final.content[0].name == LONG_TOOL_NAME  # restored from the upstream's short name


def test_client_hangup_cancels_the_translated_upstream_read(gateway: ServerThread, upstream: MockUpstream) -> None:
    model = "m+chunks=3+delay_ms=3000"  # the role chunk at once, then 3 s of silence between chunks
    body = {"model": "local/" + model, "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", gateway.base_url + "/v1/messages", json=body, timeout=10) as r:
        request_id = r.headers["x-request-id"]
        assert next(r.iter_lines()) == "event: message_start"  # the stream started on the role chunk
    ex = exchange_for(request_id)
    result = next(s for s in reversed(upstream.streams) if s.model == model)
    assert result.sent == 1 and result.total > 3  # the gateway did not wait for the next upstream chunk
    assert ex.client_disconnected


@pytest.mark.parametrize("provider", ["oai", "gem"])
def test_claude_code_request_to_another_protocol(provider: str, gateway: ServerThread,
                                                 upstream: MockUpstream) -> None:
    """What Claude Code really sends (see test_claude_code_requests.py), translated."""
    body = claude_code_body(f"{provider}/m")
    with httpx.stream("POST", gateway.base_url + "/v1/messages?beta=true", json=body, timeout=10, headers={
        "anthropic-version": "2023-06-01", "anthropic-beta": BETAS, "authorization": "Bearer k"}) as r:
        assert r.status_code == 200
        check_anthropic(r.read().decode())
    sent = upstream.requests[-1]
    assert sent.query == ("alt=sse" if provider == "gem" else "")  # ?beta=true is not forwarded (P20)
    assert "anthropic-beta" not in sent.headers and "anthropic-version" not in sent.headers
    got = sent.json()
    if provider == "oai":
        system = "You are Claude Code.\n\nmid-conversation system note"
        assert got["messages"][0] == {"role": "system", "content": system}
        assert [m["role"] for m in got["messages"]] == ["system", "user", "assistant", "tool"]
        assert got["reasoning_effort"] == "high" and got["max_completion_tokens"] == 64000
        assert len(got["tools"]) == 40 and got["user"] == "user_abc_account_def_session_ghi"
        for field in ("context_management", "output_config", "thinking", "metadata"):
            assert field not in got
    else:
        assert got["systemInstruction"]["parts"][1] == {"text": "mid-conversation system note"}
        assert [c["role"] for c in got["contents"]] == ["user", "model", "user"]
        assert got["contents"][2]["parts"] == [{"functionResponse": {"name": "Bash", "response": {"result": "a.txt"}}}]
        assert len(got["tools"][0]["functionDeclarations"]) == 40


@pytest.mark.parametrize(("model", "kind", "value"), [
    ("oai/m+script=oai_length", "stop", "max_tokens"),  # truncated tool JSON must not look runnable
    ("oai/m+script=oai_filtered", "stop", "refusal"),
    ("gem/g+script=gem_one_tool", "stop", "tool_use"),
    ("oai/m+script=oai_error_first", "status", 429),  # an error before any event: JSON, with its status
    ("gem/g+script=gem_error_first", "status", 429),
    ("gem/g+script=gem_truncated", "error", "ended the stream early"),
])
def test_stream_endings(model: str, kind: str, value: Any, gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/messages", body(model, stream=True))
    if kind == "status":
        assert status == value and json.loads(raw)["error"]["type"] == "rate_limit_error"
    elif kind == "error":
        assert value in check_anthropic(raw, complete=False)[-1]["error"]["message"]
    else:
        assert check_anthropic(raw)[-2]["delta"]["stop_reason"] == value
        status, raw = post_raw(gateway.base_url, "/v1/messages", body(model))
        assert status == 200 and json.loads(raw)["stop_reason"] == value


def test_azure_upstream_is_openai_proper(ant: anthropic.Anthropic, upstream: MockUpstream) -> None:
    with ant.messages.stream(model="azure/my-deploy+script=oai_tool", max_tokens=100, messages=USER,
                             thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    sent = upstream.requests[-1]
    assert sent.path == "/openai/deployments/my-deploy+script=oai_tool/chat/completions"
    assert "api-version=" in sent.query and sent.headers["api-key"].startswith("azure-canary")
    got = sent.json()
    assert got["max_completion_tokens"] == 100 and got["reasoning_effort"] == "low"

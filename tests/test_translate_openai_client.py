"""OpenAI client (OpenAI SDK apps) → Anthropic upstream, through the gateway.

Recorded-shape Anthropic streams (``+script=NAME``) are replayed by the mock upstream; the openai
SDK's stream accumulator builds the final completion, which must equal the translation of the same
content answered as JSON, and the raw stream must keep every §7.3 invariant.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from ccm_gateway.mock import MockUpstream

from .conftest import exchange_for
from .servers import ServerThread
from .sse_checks import check_openai, post_raw

WEATHER = {"city": "Paris", "unit": "celsius"}
SIG = "EqQBCkYIBxgCKkDsignatureScript0123456789=="
# script → (content, [(id, name, arguments)], reasoning_content, thinking_blocks, finish_reason)
GOLDEN: dict[str, tuple[Any, ...]] = {
    "ant_text": ("Hello, world!", [], None, None, "stop"),
    "ant_thinking_tool": ("Let me check.", [("toolu_01A", "get_weather", WEATHER)], "The user wants the weather.",
                          [{"type": "thinking", "thinking": "The user wants the weather.", "signature": SIG}],
                          "tool_calls"),
    "ant_parallel": (None, [("toolu_01B", "get_weather", WEATHER),
                            ("toolu_01C", "get_time", {"timezone": "Europe/Paris"})], None, None, "tool_calls"),
    "ant_redacted": ("Done.", [], None, [{"type": "redacted_thinking", "data": "opaque-redacted-data"}], "stop"),
}


@pytest.fixture
def oai(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="client-key", max_retries=0, timeout=10)


def summary(completion: Any) -> tuple[Any, ...]:
    choice = completion.choices[0]
    m = choice.message
    extra = m.to_dict()
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in m.tool_calls or ()]
    blocks = [{k: v for k, v in b.items() if k != "index"} for b in extra.get("thinking_blocks") or ()] or None
    return (m.content or None, calls, extra.get("reasoning_content"), blocks, choice.finish_reason)


def messages() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "weather in Paris?"}]


@pytest.mark.parametrize("script", sorted(GOLDEN))
def test_stream_accumulates_to_the_json_translation(script: str, oai: openai.OpenAI, gateway: ServerThread) -> None:
    model = f"ant/m+script={script}"
    with oai.chat.completions.stream(model=model, messages=messages(),
                                     stream_options={"include_usage": True}) as stream:
        streamed = stream.get_final_completion()
    whole = oai.chat.completions.with_raw_response.create(model=model, messages=messages())
    request_id = whole.headers["x-request-id"]
    whole_completion = whole.parse()
    assert summary(streamed) == GOLDEN[script] == summary(whole_completion)
    for c in (streamed, whole_completion):  # §4.8: prompt = 20 uncached + 100 cache read + 30 cache write
        u = c.usage
        assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (150, 55, 205)
        assert u.prompt_tokens_details.cached_tokens == 100
        assert c.model == model
    usage = exchange_for(request_id).usage
    assert (usage.input, usage.cache_read, usage.cache_write, usage.output) == (20, 100, 30, 55)
    for include_usage in (False, True):
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        status, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                               {"model": model, "messages": messages(), "stream": True, **extra})
        assert status == 200
        check_openai(raw, include_usage=include_usage)


def test_upstream_request_is_anthropic_shaped(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    oai.chat.completions.create(
        model="ant/claude-x+script=ant_text",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "developer", "content": "Mid-conversation rule."}, {"role": "user", "content": "again"}],
        temperature=1.5, top_p=0.9, stop="END", user="u-1", seed=7, logprobs=True, n=1,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    )
    sent = [r for r in upstream.requests if r.path == "/v1/messages"][-1]
    got = sent.json()
    assert got["model"] == "claude-x+script=ant_text"
    assert got["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Mid-conversation rule."}]
    assert got["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                            {"type": "text", "text": "again"}]}]
    assert got["max_tokens"] == 4096 and got["temperature"] == 1.0 and "top_p" not in got  # P16, P17
    assert got["stop_sequences"] == ["END"] and got["metadata"] == {"user_id": "u-1"}
    assert got["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    for field in ("seed", "logprobs", "n", "user", "response_format", "stream_options"):
        assert field not in got  # P24: never forward OpenAI-only fields to Anthropic
    assert sent.headers["anthropic-version"] == "2023-06-01" and sent.headers["x-api-key"].startswith("sk-ant-canary")


def test_two_turn_tool_conversation_with_thinking_replayed(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    first = messages()
    with oai.chat.completions.stream(model="ant/c+script=ant_thinking_tool", messages=first, tools=tools,
                                     reasoning_effort="medium") as stream:
        turn = stream.get_final_completion().choices[0].message
    sent = [r for r in upstream.requests if r.path == "/v1/messages"][-1].json()
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048} and sent["max_tokens"] > 2048
    assistant = turn.to_dict()  # as accumulated: stream indices, reasoning_content, parsed… all sent back
    assert assistant["thinking_blocks"][0]["signature"] == SIG
    history = [*first, assistant, {"role": "tool", "tool_call_id": "toolu_01A", "content": "18C"},
               {"role": "user", "content": "and tomorrow?"}]
    second = oai.chat.completions.create(model="ant/c+script=ant_text", messages=history, tools=tools)
    assert second.choices[0].message.content == "Hello, world!"
    got = [r for r in upstream.requests if r.path == "/v1/messages"][-1].json()
    assert got["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "The user wants the weather.", "signature": SIG},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": WEATHER}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "18C"}]},
            {"type": "text", "text": "and tomorrow?"}]},
    ]
    assert got["tools"] == [{"name": "get_weather", "input_schema": {"type": "object",
                                                                     "properties": {"city": {"type": "string"}}}}]


def test_mid_stream_error_becomes_an_error_chunk(oai: openai.OpenAI, gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                           {"model": "ant/m+script=ant_error", "messages": messages(), "stream": True})
    assert status == 200
    chunks = check_openai(raw, include_usage=False, complete=False)
    assert chunks[-1]["error"]["message"] == "Overloaded"
    with pytest.raises(openai.APIError), oai.chat.completions.stream(model="ant/m+script=ant_error",
                                                                     messages=messages()) as stream:
        stream.get_final_completion()


def test_error_before_any_content_is_a_json_error(gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                           {"model": "ant/m+script=ant_error_first", "messages": messages(), "stream": True})
    assert status == 503 and json.loads(raw)["error"]["code"] == "service_unavailable"


def test_truncated_stream_is_an_error_not_a_clean_stop(gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                           {"model": "ant/m+script=ant_truncated", "messages": messages(), "stream": True})
    assert status == 200
    chunks = check_openai(raw, include_usage=False, complete=False)
    assert "ended the stream early" in chunks[-1]["error"]["message"]
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in chunks)


def test_truncated_tool_call_stops_with_length(gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                           {"model": "ant/m+script=ant_max_tokens", "messages": messages(), "stream": True})
    assert status == 200
    chunks = check_openai(raw, include_usage=False)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"  # truncated tool JSON must not look runnable


@pytest.mark.parametrize(("upstream_status", "status", "code"), [
    (400, 400, None), (401, 401, "invalid_api_key"), (404, 404, None), (429, 429, "rate_limit_exceeded"),
    (500, 500, None), (529, 503, "service_unavailable"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_are_openai_shaped(upstream_status: int, status: int, code: str | None, stream: bool,
                                           gateway: ServerThread) -> None:
    got, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                        {"model": f"ant/m+status={upstream_status}", "messages": messages(), "stream": stream})
    assert got == status
    err = json.loads(raw)["error"]
    assert err["code"] == code and err["message"]
    assert "canary" not in raw


@pytest.mark.parametrize(("model", "kind", "value"), [
    ("ant/m+script=ant_refusal", "finish", "content_filter"),
    ("gem/g+script=gem_max_tokens", "finish", "length"),
    ("gem/g+script=gem_one_tool", "finish", "tool_calls"),
    ("gem/g+script=gem_error", "error", "The model is overloaded."),
    ("gem/g+script=gem_error_first", "status", 429),
])
def test_stream_endings(model: str, kind: str, value: Any, gateway: ServerThread) -> None:
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                           {"model": model, "messages": messages(), "stream": True})
    if kind == "status":
        assert status == value and json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    elif kind == "error":
        assert check_openai(raw, include_usage=False, complete=False)[-1]["error"]["message"] == value
    else:
        assert check_openai(raw, include_usage=False)[-1]["choices"][0]["finish_reason"] == value
        status, raw = post_raw(gateway.base_url, "/v1/chat/completions", {"model": model, "messages": messages()})
        assert status == 200 and json.loads(raw)["choices"][0]["finish_reason"] == value

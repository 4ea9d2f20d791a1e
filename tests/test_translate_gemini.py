"""Anthropic and OpenAI clients → Gemini upstream (the mock's Gemini dialect), streams and JSON."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from ccm_gateway.dialects import gemini
from ccm_gateway.mock import MockUpstream

from .conftest import GEMINI_KEY, exchange_for
from .servers import ServerThread
from .sse_checks import check_anthropic, check_openai, post_raw

SIG = "CiQBjz1rX2thoughtSignature+script/0123=="
WEATHER = {"city": "Paris", "unit": "celsius"}
TIME = {"timezone": "Europe/Paris"}
TOOLS_SCHEMA = {"type": "object", "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#",
                "$defs": {"Unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "properties": {"city": {"type": ["string", "null"], "exclusiveMinimum": 0},
                               "unit": {"$ref": "#/$defs/Unit"}, "kind": {"const": "weather"}}}
GEMINI_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "nullable": True},
                                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                                                  "kind": {"enum": ["weather"], "type": "string"}}}


@pytest.fixture
def ant(gateway: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="client-key", max_retries=0, timeout=10)


@pytest.fixture
def oai(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="client-key", max_retries=0, timeout=10)


def last_gemini(upstream: MockUpstream) -> Any:
    return [r for r in upstream.requests if r.path.startswith("/v1beta/models/") and "Content" in r.path][-1]


def ant_summary(m: Any) -> list[tuple[Any, ...]]:
    return [("text", b.text) if b.type == "text" else ("thinking", b.thinking) if b.type == "thinking"
            else ("tool_use", b.name, b.input) for b in m.content]


USER = [{"role": "user", "content": "weather in Paris?"}]


@pytest.mark.parametrize(("script", "expected", "stop"), [
    ("gem_text", [("thinking", "Thinking about greetings."), ("text", "Hello, world!")], "end_turn"),
    ("gem_tools", [("text", "Let me check."), ("tool_use", "get_weather", WEATHER), ("tool_use", "get_time", TIME)],
     "tool_use"),
    ("gem_max_tokens", [("text", "Cut")], "max_tokens"),
    ("gem_safety", [], "refusal"),
])
def test_anthropic_client_stream_equals_json(script: str, expected: list[Any], stop: str, ant: anthropic.Anthropic,
                                             gateway: ServerThread) -> None:
    model = f"gem/gemini-x+script={script}"
    with ant.messages.stream(model=model, max_tokens=100, messages=USER) as stream:
        streamed = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    whole = ant.messages.create(model=model, max_tokens=100, messages=USER)
    assert ant_summary(streamed) == expected == ant_summary(whole)
    assert streamed.stop_reason == whole.stop_reason == stop
    for m in (streamed, whole):  # §4.8: cached content is part of the prompt; thoughts are output (P14)
        assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (20, 100, 40)
    usage = exchange_for(request_id).usage
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (20, 100, 40, 12)
    status, raw = post_raw(gateway.base_url, "/v1/messages",
                           {"model": model, "max_tokens": 100, "messages": USER, "stream": True})
    assert status == 200
    check_anthropic(raw)


@pytest.mark.parametrize("script", ["gem_text", "gem_tools"])
def test_openai_client_stream_equals_json(script: str, oai: openai.OpenAI, gateway: ServerThread) -> None:
    model = f"gem/gemini-x+script={script}"
    with oai.chat.completions.stream(model=model, messages=USER, stream_options={"include_usage": True}) as stream:
        streamed = stream.get_final_completion()
    whole = oai.chat.completions.create(model=model, messages=USER)

    def summary(c: Any) -> tuple[Any, ...]:
        m = c.choices[0].message
        calls = [(t.function.name, json.loads(t.function.arguments)) for t in m.tool_calls or ()]
        return m.content, calls, m.to_dict().get("reasoning_content"), c.choices[0].finish_reason

    assert summary(streamed) == summary(whole)
    assert (streamed.usage.prompt_tokens, streamed.usage.completion_tokens) == (120, 40)
    assert whole.usage.prompt_tokens_details.cached_tokens == 100
    assert whole.usage.completion_tokens_details.reasoning_tokens == 12
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions", {"model": model, "messages": USER, "stream": True})
    assert status == 200
    check_openai(raw, include_usage=False)


def test_anthropic_two_turn_tools_with_thought_signature(ant: anthropic.Anthropic, upstream: MockUpstream) -> None:
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": TOOLS_SCHEMA},
             {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]
    with ant.messages.stream(model="gem/gemini-x+script=gem_tools", max_tokens=300, tools=tools, messages=USER,
                             system="Be brief.", tool_choice={"type": "any"},
                             thinking={"type": "enabled", "budget_tokens": 2048}) as stream:
        turn = stream.get_final_message()
    sent = last_gemini(upstream)
    assert sent.path == "/v1beta/models/gemini-x+script=gem_tools:streamGenerateContent" and sent.query == "alt=sse"
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    first = sent.json()
    assert first["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert first["tools"][0]["functionDeclarations"][0] == {"name": "get_weather", "description": "Weather",
                                                            "parameters": GEMINI_SCHEMA}
    assert "parameters" not in first["tools"][0]["functionDeclarations"][1]
    assert first["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert first["generationConfig"] == {"maxOutputTokens": 300,
                                         "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True}}
    calls = [b for b in turn.content if b.type == "tool_use"]
    assert turn.stop_reason == "tool_use" and len(calls) == 2 and calls[0].id != calls[1].id
    assert gemini.signature_of(calls[0].id) == SIG and gemini.signature_of(calls[1].id) is None
    history = [*USER, {"role": "assistant", "content": [b.to_dict() for b in turn.content]},
               {"role": "user", "content": [
                   {"type": "tool_result", "tool_use_id": calls[1].id, "content": "noon"},
                   {"type": "tool_result", "tool_use_id": calls[0].id, "content": "18C"},
                   {"type": "text", "text": "and tomorrow?"}]}]
    second = ant.messages.create(model="gem/gemini-x+script=gem_text", max_tokens=300, tools=tools,
                                 messages=history)
    assert ant_summary(second)[-1] == ("text", "Hello, world!")
    assert last_gemini(upstream).json()["contents"] == [
        {"role": "user", "parts": [{"text": "weather in Paris?"}]},
        {"role": "model", "parts": [
            {"text": "Let me check."},
            {"functionCall": {"name": "get_weather", "args": WEATHER}, "thoughtSignature": SIG},  # same part
            {"functionCall": {"name": "get_time", "args": TIME}}]},
        {"role": "user", "parts": [  # one response per call, in call order (P21)
            {"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}},
            {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
            {"text": "and tomorrow?"}]},
    ]


def test_openai_two_turn_tools_with_a_missing_result(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    first = oai.chat.completions.create(model="gem/gemini-x+script=gem_tools", messages=USER)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    history = [*USER, message.to_dict(), {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "18C"}]
    oai.chat.completions.create(model="gem/gemini-x+script=gem_text", messages=history)
    contents = last_gemini(upstream).json()["contents"]
    assert contents[1]["parts"][1]["thoughtSignature"] == SIG
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}},
        {"functionResponse": {"name": "get_time", "response": {"error": "no result"}}}]}


def test_plain_mock_reply(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="gem/gemini-x", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == "Hello from the ccm_gateway mock. You said: hi"


@pytest.mark.parametrize(("directive", "anthropic_status", "openai_status"), [
    ("auth=another-key", 401, 401), ("status=429", 429, 429), ("status=503", 529, 503), ("status=400", 400, 400),
])
def test_gemini_errors_are_translated(directive: str, anthropic_status: int, openai_status: int,
                                      gateway: ServerThread) -> None:
    model = f"gem/gemini-x+{directive}"
    status, raw = post_raw(gateway.base_url, "/v1/messages", {"model": model, "max_tokens": 5, "messages": USER})
    assert status == anthropic_status and json.loads(raw)["type"] == "error"
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions", {"model": model, "messages": USER, "stream": True})
    assert status == openai_status and "error" in json.loads(raw)
    assert "canary" not in raw


def test_gemini_mid_stream_error_and_truncation(gateway: ServerThread) -> None:
    body = {"max_tokens": 5, "messages": USER, "stream": True}
    status, raw = post_raw(gateway.base_url, "/v1/messages", {**body, "model": "gem/g+script=gem_error"})
    assert status == 200
    assert check_anthropic(raw, complete=False)[-1]["error"]["type"] == "overloaded_error"
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions", {**body, "model": "gem/g+script=gem_truncated"})
    assert status == 200
    assert "ended the stream early" in check_openai(raw, include_usage=False, complete=False)[-1]["error"]["message"]

"""Unit tests of the request and response mappers (PROTOCOLS §4.1–4.4, §4.8, §4.9, §7.4)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from ccm_gateway.dialects import anthropic_translate as ant
from ccm_gateway.dialects import canonical as c
from ccm_gateway.dialects import openai_translate as oai
from ccm_gateway.errors import InvalidRequest

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCg=="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def enc(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode(body)


def to_openai(body: dict[str, Any], *, compat: bool = False, max_output: int | None = None,
              names: c.Names | None = None) -> dict[str, Any]:
    req = ant.decode_request(enc(body))
    return json.loads(oai.encode_request(req, "up", names or c.Names(), compat=compat, stream_options=True,
                                         max_output=max_output))


def to_anthropic(body: dict[str, Any], *, max_output: int | None = None,
                 names: c.Names | None = None) -> dict[str, Any]:
    req = oai.decode_request(enc(body))
    return json.loads(ant.encode_request(req, "up", names or c.Names(), max_output=max_output))


# --- Anthropic client → OpenAI upstream ---------------------------------------------------------------------


def test_anthropic_conversation_to_openai() -> None:
    got = to_openai({
        "model": "m", "max_tokens": 50_000,
        "system": [{"type": "text", "text": "Rule one.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Rule two."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "text", "text": "  "},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": PNG}}]},
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                                         {"type": "document", "source": {"type": "base64",
                                                                         "media_type": "application/pdf",
                                                                         "data": PDF}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
            {"role": "system", "content": "Mid-conversation rule."},
            {"role": "user", "content": [
                {"type": "text", "text": "thanks"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True, "content": "timeout"},
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "18C"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]},
        ],
        "tools": [{"name": "get_weather", "input_schema": WEATHER_SCHEMA, "cache_control": {"type": "ephemeral"}},
                  {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["a", "b", "c", "d", "e"], "top_k": 5, "cache_control": {"type": "ephemeral"},
    }, max_output=32_000)
    assert got["messages"] == [
        {"role": "system", "content": "Rule one.\n\nRule two.\n\nMid-conversation rule."},
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "document.pdf"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"},  # results first, errors marked
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                     {"type": "text", "text": "thanks"}]},
    ]
    assert got["tools"] == [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    assert got["tool_choice"] == "required" and got["parallel_tool_calls"] is False
    assert got["max_completion_tokens"] == 32_000  # clamped to the route's max_output_tokens (P17)
    assert got["stop"] == ["a", "b", "c", "d"]
    for field in ("top_k", "cache_control", "system", "thinking"):
        assert field not in got


def test_anthropic_thinking_to_reasoning_effort() -> None:
    body = {"model": "m", "max_tokens": 9000, "temperature": 0.2,
            "thinking": {"type": "enabled", "budget_tokens": 8000},
            "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}}}
    got = to_openai(body)
    assert got["reasoning_effort"] == "high" and "temperature" not in got  # reasoning models take defaults only
    assert got["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "structured_output", "schema": WEATHER_SCHEMA, "strict": True}}
    compat = to_openai(body, compat=True)
    assert "reasoning_effort" not in compat and compat["temperature"] == 0.2 and compat["max_tokens"] == 9000


def test_unknown_blocks_and_fields_are_not_forwarded() -> None:
    got = to_openai({"model": "m", "max_tokens": 5, "betas": ["x"], "context_management": {},
                     "messages": [{"role": "user", "content": [
                         {"type": "text", "text": "hi"}, {"type": "server_tool_use", "id": "srvtoolu_1"}]}]})
    assert set(got) == {"model", "messages", "max_completion_tokens"}
    assert got["messages"] == [{"role": "user", "content": "hi"}]


# --- OpenAI client → Anthropic upstream ---------------------------------------------------------------------


def test_openai_conversation_to_anthropic() -> None:
    names = c.Names()
    long_name = "mcp__" + "y" * 70
    got = to_anthropic({
        "model": "m", "max_completion_tokens": 100_000, "parallel_tool_calls": False,
        "messages": [
            {"role": "assistant", "content": "Prefill from a previous session."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                         {"type": "image_url", "image_url": {"url": "http://x/y.jpg"}},
                                         {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                                                   "filename": "a.pdf"}}]},
            {"role": "assistant", "content": None, "reasoning_content": "unsigned thoughts", "tool_calls": [
                {"id": "functions.Bash:0", "type": "function",
                 "function": {"name": long_name, "arguments": '{"a":1}'}},
                {"id": "call_2", "type": "function", "function": {"name": "t2", "arguments": "not json"}},
                {"id": "call_3", "type": "function", "function": {"name": "t2", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "functions.Bash:0", "content": "ok"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "done"}]},
            {"role": "user", "content": "next"},
        ],
        "tools": [{"type": "function", "function": {"name": long_name, "parameters": WEATHER_SCHEMA}},
                  {"type": "function", "function": {"name": "t2"}}],
    }, max_output=64_000, names=names)
    safe = c.safe_id("functions.Bash:0")
    short = c.short_name(long_name)
    assert len(short) == 64 and names.name_back(short) == long_name
    assert got["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "(continued)"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Prefill from a previous session."}]},
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "http://x/y.jpg"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
             "title": "a.pdf"}]},
        {"role": "assistant", "content": [  # the unsigned reasoning is not replayed to Anthropic (P15)
            {"type": "tool_use", "id": safe, "name": short, "input": {"a": 1}},
            {"type": "tool_use", "id": "call_2", "name": "t2", "input": {}},
            {"type": "tool_use", "id": "call_3", "name": "t2", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": safe, "content": [{"type": "text", "text": "ok"}]},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "done"}]},
            {"type": "tool_result", "tool_use_id": "call_3", "is_error": True, "content": "no result was recorded"},
            {"type": "text", "text": "next"}]},
    ]
    assert got["max_tokens"] == 64_000
    assert got["tools"][0] == {"name": short, "input_schema": WEATHER_SCHEMA}
    assert got["tools"][1]["input_schema"] == {"type": "object", "properties": {}}
    assert got["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_reasoning_effort_to_thinking_with_its_constraints() -> None:
    got = to_anthropic({"model": "m", "max_tokens": 1000, "reasoning_effort": "high", "temperature": 0.5, "top_p": 0.5,
                        "messages": [{"role": "user", "content": "x"}],
                        "tools": [{"type": "function", "function": {"name": "t"}}],
                        "tool_choice": {"type": "function", "function": {"name": "t"}}})
    assert got["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert got["max_tokens"] > 4096  # max_tokens must exceed the budget
    assert "temperature" not in got and "top_p" not in got
    assert got["tool_choice"] == {"type": "auto"}  # forced tool use is rejected with thinking
    plain = to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})
    assert "tool_choice" not in plain and "thinking" not in plain  # never tool_choice without tools


@pytest.mark.parametrize("part", [
    {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
    {"type": "image_url", "image_url": {"url": "data:text/html;base64,PGgxPg=="}},
])
def test_untranslatable_content_is_a_400(part: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        to_anthropic({"model": "m", "messages": [{"role": "user", "content": [part]}]})


def test_n_above_one_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="n:"):
        to_anthropic({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]})


def test_data_url_without_mime_is_sniffed() -> None:
    assert c.parse_data_url(f"data:;base64,{PNG}") == ("image/png", PNG)


# --- round trips (§7.4) ----------------------------------------------------------------------------------------


def test_openai_history_round_trips_through_anthropic() -> None:
    history = {"model": "m", "max_tokens": 100, "messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "q"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "assistant", "content": "a", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": '{"y":2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
        {"role": "tool", "tool_call_id": "call_2", "content": "r2"},
        {"role": "user", "content": "more"}]}
    first = oai.decode_request(enc(history))
    anthropic_body = ant.encode_request(first, "m", c.Names(), max_output=None)
    again = ant.decode_request(anthropic_body)
    back = json.loads(oai.encode_request(again, "m", c.Names(), compat=True, stream_options=False, max_output=None))
    assert back["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "q"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "assistant", "content": "a", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": '{"y":2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
        {"role": "tool", "tool_call_id": "call_2", "content": "r2"},
        {"role": "user", "content": "more"}]


# --- responses and usage (§4.3, §4.4, §4.8) --------------------------------------------------------------------


def test_openai_response_to_anthropic() -> None:
    body = enc({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "", "reasoning_content": "why",
        "tool_calls": [{"id": "call.1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 800},
                  "completion_tokens_details": {"reasoning_tokens": 20}}})
    got = json.loads(ant.encode_response(oai.decode_response(body, c.Names()), "alias"))
    assert got["id"].startswith("msg_") and got["model"] == "alias"
    assert got["content"] == [{"type": "thinking", "thinking": "why", "signature": ""},
                              {"type": "tool_use", "id": c.safe_id("call.1"), "name": "f", "input": {"a": 1}}]
    assert got["stop_reason"] == "tool_use"  # tools were called although upstream said "stop" (P7)
    assert got["usage"] == {"input_tokens": 200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 800,
                            "output_tokens": 50}  # never double-counted (P5)


def test_anthropic_response_to_openai() -> None:
    body = enc({"id": "msg_1", "model": "claude", "stop_reason": "refusal", "content": [{"type": "text", "text": "no"}],
                "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5,
                          "output_tokens": 7}})
    got = json.loads(oai.encode_response(ant.decode_response(body, c.Names()), "alias"))
    assert got["choices"][0]["finish_reason"] == "content_filter"
    assert got["choices"][0]["message"]["content"] == "no"
    assert got["usage"]["prompt_tokens"] == 115 and got["usage"]["total_tokens"] == 122
    assert got["usage"]["prompt_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 5}


# --- Gemini request (§4.13) and error mapping (§4.12) ------------------------------------------------------------


def test_canonical_to_gemini_request() -> None:
    from ccm_gateway.dialects import gemini

    names = c.Names()
    req = oai.decode_request(enc({
        "model": "m", "max_tokens": 500, "temperature": 0.3, "top_p": 0.9, "stop": ["a", "b", "c", "d", "e", "f"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "additionalProperties": False, "properties": {"n": {"type": ["integer", "null"]}}}}},
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}}]}],
        "tools": [{"type": "function", "function": {"name": "1bad name!", "parameters": WEATHER_SCHEMA}}],
        "tool_choice": {"type": "function", "function": {"name": "1bad name!"}},
    }))
    got = json.loads(gemini.encode_request(req, "m", names, max_output=256))
    assert got["systemInstruction"] == {"parts": [{"text": "S"}]}
    assert got["contents"] == [{"role": "user", "parts": [
        {"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"inlineData": {"mimeType": "application/pdf", "data": PDF}}]}]
    name = got["tools"][0]["functionDeclarations"][0]["name"]
    assert name == "_1bad_name_" and names.name_back(name) == "1bad name!"
    assert got["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    assert got["generationConfig"] == {
        "maxOutputTokens": 256, "temperature": 0.3, "topP": 0.9, "stopSequences": ["a", "b", "c", "d", "e"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"n": {"type": "integer", "nullable": True}}}}


@pytest.mark.parametrize(("status", "code", "anthropic", "openai"), [
    (402, None, (402, "billing_error", None), (429, "insufficient_quota", "insufficient_quota")),
    (429, "insufficient_quota", (429, "rate_limit_error", None), (429, "requests", "insufficient_quota")),
    (400, "context_length_exceeded", (400, "invalid_request_error", None),
     (400, "invalid_request_error", "context_length_exceeded")),
    (400, "API_KEY_INVALID", (401, "authentication_error", None), (401, "invalid_request_error", "invalid_api_key")),
    (503, "UNAVAILABLE", (529, "overloaded_error", None), (503, "server_error", "service_unavailable")),
    (500, "overloaded_error", (529, "overloaded_error", None), (503, "server_error", "service_unavailable")),
    (504, "DEADLINE_EXCEEDED", (504, "timeout_error", None), (504, "timeout", None)),
    (418, None, (418, "invalid_request_error", None), (418, "invalid_request_error", None)),
])
def test_upstream_error_mapping(status: int, code: str | None, anthropic: tuple[Any, ...],
                                openai: tuple[Any, ...]) -> None:
    from ccm_gateway.dialects import Dialect
    from ccm_gateway.dialects.translate_errors import upstream_error

    err = upstream_error(status, "boom", code)
    assert (err.status_for(Dialect.ANTHROPIC_MESSAGES), err.anthropic_type, None) == anthropic
    assert (err.status_for(Dialect.OPENAI_CHAT), err.openai_type, err.openai_code) == openai


def test_upstream_tool_ids_survive_a_round_trip_through_an_anthropic_client() -> None:
    """Kimi/Moonshot-style ids are not valid Anthropic ids: the client sees a reversible encoding, and
    the next turn gives the upstream its own id back, with no state kept between requests."""
    upstream_id = "functions.Bash:0"
    client_id = c.safe_id(upstream_id)
    assert client_id != upstream_id and c.original_id(client_id) == upstream_id
    assert c.safe_id("toolu_01A") == "toolu_01A" and c.original_id("toolu_01A") == "toolu_01A"
    got = to_openai({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": client_id, "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": client_id, "content": "ok"}]}]})
    assert got["messages"][1]["tool_calls"][0]["id"] == upstream_id
    assert got["messages"][2] == {"role": "tool", "tool_call_id": upstream_id, "content": "ok"}


def test_openai_upstream_gets_a_tool_message_for_every_call() -> None:
    got = to_openai({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "a", "input": {}},
                                          {"type": "tool_use", "id": "toolu_2", "name": "b", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "two"},
                                     {"type": "tool_result", "tool_use_id": "toolu_9", "content": "stray"},
                                     {"type": "text", "text": "go on"}]}]})
    assert got["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_2", "content": "two"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: no result was recorded"},
        {"role": "user", "content": [{"type": "text", "text": "[tool result toolu_9] stray"},
                                     {"type": "text", "text": "go on"}]},
    ]


def test_anthropic_upstream_gets_stray_tool_results_as_text() -> None:
    got = to_anthropic({"model": "m", "messages": [
        {"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_9", "content": "stray"}]})
    assert got["messages"] == [{"role": "user", "content": [  # merged turn: results first, then the text
        {"type": "text", "text": "[tool result call_9] stray"}, {"type": "text", "text": "x"}]}]


def test_thinking_is_off_when_the_tool_turn_lost_its_signed_thinking() -> None:
    history = [{"role": "user", "content": "x"},
               {"role": "assistant", "content": None, "reasoning_content": "unsigned",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]
    got = to_anthropic({"model": "m", "reasoning_effort": "low", "temperature": 0.5, "messages": history,
                        "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert "thinking" not in got and got["temperature"] == 0.5
    signed = [history[0], {**history[1], "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
              history[2]]
    got = to_anthropic({"model": "m", "reasoning_effort": "low", "messages": signed,
                        "tools": [{"type": "function", "function": {"name": "f"}}]})
    assert got["thinking"] == {"type": "enabled", "budget_tokens": 1024}

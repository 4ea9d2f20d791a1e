"""The rest of the README conformance table, through the real gateway, for every protocol pair:
error bodies, missing and stray tool results, long tool names, ids Anthropic would reject, interleaved
arguments, OpenAI → Gemini request mapping, keep-alives, upstreams that ignore ``stream``, arbitrary
chunk boundaries with CRLF under concurrency, and client hang-ups."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest
from starlette.middleware import Middleware

from ccm_gateway import create_app, load_config
from ccm_gateway.mock import MockUpstream
from ccm_gateway.mock.scripts import LONG_TOOL_NAME

from .conftest import TIMEOUTS, ExchangeRecorder, exchange_for, gateway_config
from .servers import ServerThread
from .sse_checks import check_anthropic, check_openai, frames, post_raw

USER = [{"role": "user", "content": "weather in Paris?"}]
WEATHER = {"city": "Paris", "unit": "celsius"}
TIME = {"timezone": "Europe/Paris"}
ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
PDF = base64.b64encode(b"%PDF-1.4 tiny").decode()


@pytest.fixture
def ant(gateway: ServerThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.base_url, api_key="client-key", max_retries=0, timeout=10)


@pytest.fixture
def oai(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="client-key", max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def ka_gateway(upstream: MockUpstream) -> Iterator[ServerThread]:
    """A gateway whose Anthropic and Gemini providers send keep-alives after 0.2 s of upstream silence."""
    config = gateway_config(upstream.base_url)
    keepalive = {**TIMEOUTS, "keepalive": 0.2}
    config["providers"]["ant-ka"] = {**config["providers"]["ant"], "timeout": keepalive}
    config["providers"]["gem-ka"] = {**config["providers"]["gem"], "timeout": keepalive}
    app = create_app(load_config(config, env={}, dotenv=False), middleware=[Middleware(ExchangeRecorder)])
    with ServerThread(app) as server:
        yield server


def sent_to(upstream: MockUpstream, marker: str) -> dict[str, Any]:
    """The JSON body of the last upstream request whose path carries ``marker``."""
    for r in reversed(upstream.requests):
        if marker in r.path:
            return r.json()
    raise AssertionError(f"no upstream request for {marker}")


def ant_summary(m: Any, ids: bool = True) -> list[tuple[Any, ...]]:
    return [("text", b.text) if b.type == "text" else ("thinking", b.thinking) if b.type == "thinking"
            else ("tool_use", b.id if ids else "", b.name, b.input) for b in m.content]


def oai_summary(c: Any, ids: bool = True) -> tuple[Any, ...]:
    m = c.choices[0].message
    calls = [(t.id if ids else "", t.function.name, json.loads(t.function.arguments)) for t in m.tool_calls or ()]
    return m.content or None, calls, m.to_dict().get("reasoning_content"), c.choices[0].finish_reason


def ant_stream(ant: anthropic.Anthropic, model: str, **kw: Any) -> Any:
    with ant.messages.stream(model=model, max_tokens=256, messages=kw.pop("messages", USER), **kw) as s:
        return s.get_final_message()


def oai_stream(oai: openai.OpenAI, model: str, **kw: Any) -> Any:
    with oai.chat.completions.stream(model=model, messages=kw.pop("messages", USER), **kw) as s:
        return s.get_final_completion()


# --- refusal / content filter / safety finish: OpenAI → Gemini ---------------------------------------------------


def test_gemini_safety_is_content_filter_for_openai_clients(oai: openai.OpenAI, gateway: ServerThread) -> None:
    model = "gem/g+script=gem_safety"
    with pytest.raises(openai.ContentFilterFinishReasonError) as caught:  # the SDK's accumulator refuses it
        oai_stream(oai, model)
    streamed, whole = caught.value.completion, oai.chat.completions.create(model=model, messages=USER)
    assert oai_summary(streamed) == oai_summary(whole) == (None, [], None, "content_filter")
    status, raw = post_raw(gateway.base_url, "/v1/chat/completions", {"model": model, "messages": USER, "stream": True})
    assert status == 200
    assert check_openai(raw, include_usage=False)[-1]["choices"][0]["finish_reason"] == "content_filter"


# --- error status mapping table (§4.12), with the providers' own error bodies, JSON and stream ----------------

ANTHROPIC_CLIENT_ERRORS = [  # (model, status, error.type, words in the message)
    ("oai/m+script=oai_402", 402, "billing_error", "Payment required"),
    ("oai/m+script=oai_quota", 429, "rate_limit_error", "quota"),
    ("oai/m+script=oai_context", 400, "invalid_request_error", "maximum context length"),
    ("gem/g+script=gem_context", 400, "invalid_request_error", "input token count"),
    ("gem/g+script=gem_deadline", 504, "timeout_error", "Deadline"),
    ("gem/g+status=429", 429, "rate_limit_error", ""),
]
OPENAI_CLIENT_ERRORS = [  # (model, status, error.code, words in the message)
    ("ant/m+script=ant_402", 429, "insufficient_quota", "credit balance"),
    ("ant/m+script=ant_context", 400, None, "prompt is too long"),
    ("ant/m+script=ant_500_overloaded", 503, "service_unavailable", "Overloaded"),
    ("gem/g+script=gem_context", 400, None, "input token count"),
    ("gem/g+script=gem_deadline", 504, None, "Deadline"),
    ("gem/g+status=503", 503, "service_unavailable", ""),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "status", "kind", "words"), ANTHROPIC_CLIENT_ERRORS)
def test_error_table_for_anthropic_clients(model: str, status: int, kind: str, words: str, stream: bool,
                                           gateway: ServerThread) -> None:
    got, raw = post_raw(gateway.base_url, "/v1/messages",
                        {"model": model, "max_tokens": 5, "messages": USER, "stream": stream})
    err = json.loads(raw)
    assert (got, err["type"], err["error"]["type"]) == (status, "error", kind)
    assert words in err["error"]["message"] and "canary" not in raw


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("model", "status", "code", "words"), OPENAI_CLIENT_ERRORS)
def test_error_table_for_openai_clients(model: str, status: int, code: str | None, words: str, stream: bool,
                                        gateway: ServerThread) -> None:
    got, raw = post_raw(gateway.base_url, "/v1/chat/completions", {"model": model, "messages": USER, "stream": stream})
    err = json.loads(raw)["error"]
    assert (got, err["code"]) == (status, code)
    assert words in err["message"] and "canary" not in raw


# --- missing and stray tool results ------------------------------------------------------------------------------

ANT_HISTORY = [*USER,
               {"role": "assistant", "content": [
                   {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": WEATHER},
                   {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": TIME}]},
               {"role": "user", "content": [
                   {"type": "tool_result", "tool_use_id": "toolu_2", "content": "noon"},
                   {"type": "tool_result", "tool_use_id": "toolu_9", "content": "stray"},
                   {"type": "text", "text": "go on"}]}]
OAI_HISTORY = [*USER,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                   {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
               {"role": "tool", "tool_call_id": "call_9", "content": "stray"},
               {"role": "user", "content": "go on"}]


def test_anthropic_client_to_openai_missing_and_stray_results(ant: anthropic.Anthropic,
                                                              upstream: MockUpstream) -> None:
    assert ant_summary(ant_stream(ant, "oai/m+script=oai_text", messages=ANT_HISTORY)) == [("text", "Hello, world!")]
    assert sent_to(upstream, "/v1/chat/completions")["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: no result was recorded"},
        {"role": "user", "content": [{"type": "text", "text": "[tool result toolu_9] stray"},
                                     {"type": "text", "text": "go on"}]}]


def test_anthropic_client_to_gemini_missing_and_stray_results(ant: anthropic.Anthropic,
                                                              upstream: MockUpstream) -> None:
    assert ant_summary(ant_stream(ant, "gem/g+script=gem_text", messages=ANT_HISTORY))[-1] == ("text", "Hello, world!")
    assert sent_to(upstream, ":streamGenerateContent")["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"error": "no result"}}},
        {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
        {"text": "[tool result toolu_9] stray"}, {"text": "go on"}]}


def test_openai_client_to_anthropic_missing_and_stray_results(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    assert oai_stream(oai, "ant/m+script=ant_text", messages=OAI_HISTORY).choices[0].message.content == "Hello, world!"
    got = sent_to(upstream, "/v1/messages")["messages"]
    assert got[1]["content"][0]["id"] == "call_1" and got[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        {"type": "tool_result", "tool_use_id": "call_1", "is_error": True, "content": "no result was recorded"},
        {"type": "text", "text": "[tool result call_9] stray"}, {"type": "text", "text": "go on"}]}


def test_openai_client_to_gemini_stray_result(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    assert oai_stream(oai, "gem/g+script=gem_text", messages=OAI_HISTORY).choices[0].message.content == "Hello, world!"
    assert sent_to(upstream, ":streamGenerateContent")["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"error": "no result"}}},
        {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
        {"text": "[tool result call_9] stray"}, {"text": "go on"}]}


# --- tool names over 64 characters, shortened for the upstream and restored ------------------------------------

LONG_SCHEMA = {"type": "object", "properties": {}}


@pytest.mark.parametrize(("model", "marker"), [("ant/m+script=ant_long_name", "/v1/messages"),
                                                ("gem/g+script=gem_long_name", ":streamGenerateContent")])
def test_long_tool_names_for_openai_clients(model: str, marker: str, oai: openai.OpenAI,
                                            upstream: MockUpstream) -> None:
    tools = [{"type": "function", "function": {"name": LONG_TOOL_NAME, "parameters": LONG_SCHEMA}}]
    choice = {"type": "function", "function": {"name": LONG_TOOL_NAME}}
    streamed = oai_stream(oai, model, tools=tools, tool_choice=choice)
    got = sent_to(upstream, marker)
    if marker == "/v1/messages":
        short, forced = got["tools"][0]["name"], got["tool_choice"]["name"]
    else:
        short = got["tools"][0]["functionDeclarations"][0]["name"]
        forced = got["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"][0]
    assert len(short) <= 64 and short == forced != LONG_TOOL_NAME
    whole = oai.chat.completions.create(model=model, messages=USER, tools=tools, tool_choice=choice)
    assert oai_summary(streamed, ids=False) == oai_summary(whole, ids=False) == (
        None, [("", LONG_TOOL_NAME, {})], None, "tool_calls")


def test_long_tool_names_for_anthropic_clients_to_gemini(ant: anthropic.Anthropic, upstream: MockUpstream) -> None:
    tools = [{"name": LONG_TOOL_NAME, "input_schema": LONG_SCHEMA}]
    model = "gem/g+script=gem_long_name"
    streamed = ant_stream(ant, model, tools=tools, tool_choice={"type": "tool", "name": LONG_TOOL_NAME})
    got = sent_to(upstream, ":streamGenerateContent")
    short = got["tools"][0]["functionDeclarations"][0]["name"]
    assert len(short) <= 64 and got["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == [short]
    whole = ant.messages.create(model=model, max_tokens=256, messages=USER, tools=tools)
    assert ant_summary(streamed, ids=False) == ant_summary(whole, ids=False) == [("tool_use", "", LONG_TOOL_NAME, {})]
    history = [*USER, {"role": "assistant", "content": [b.to_dict() for b in streamed.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": streamed.content[0].id,
                                             "content": "ok"}]}]
    ant.messages.create(model="gem/g+script=gem_text", max_tokens=256, messages=history, tools=tools)
    parts = sent_to(upstream, ":generateContent")["contents"]
    assert parts[1]["parts"][0]["functionCall"]["name"] == short  # the next turn: the upstream's own name
    assert parts[2]["parts"][0]["functionResponse"]["name"] == short


# --- tool ids Anthropic would reject ----------------------------------------------------------------------------


def test_kimi_tool_ids_round_trip_through_an_anthropic_client(ant: anthropic.Anthropic,
                                                              upstream: MockUpstream) -> None:
    model = "local/kimi+script=oai_kimi_id"
    streamed = ant_stream(ant, model)
    whole = ant.messages.create(model=model, max_tokens=256, messages=USER)
    call = streamed.content[0]
    assert ant_summary(streamed) == ant_summary(whole) == [("tool_use", call.id, "get_weather", WEATHER)]
    assert ANTHROPIC_ID.match(call.id) and call.id != "functions.get_weather:0"
    history = [*USER, {"role": "assistant", "content": [call.to_dict()]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]}]
    ant.messages.create(model="local/kimi+script=oai_text", max_tokens=256, messages=history)
    got = sent_to(upstream, "/v1/chat/completions")["messages"]
    assert got[1]["tool_calls"][0]["id"] == "functions.get_weather:0"  # the upstream gets its own id back
    assert got[2] == {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "18C"}


def test_openai_client_ids_invalid_for_anthropic_are_encoded(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    bad = "functions.get_weather:0"
    history = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": bad, "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(WEATHER)}}]},
        {"role": "tool", "tool_call_id": bad, "content": "18C"}]
    assert oai_stream(oai, "ant/m+script=ant_text", messages=history).choices[0].message.content == "Hello, world!"
    got = sent_to(upstream, "/v1/messages")["messages"]
    sent_id = got[1]["content"][0]["id"]
    assert ANTHROPIC_ID.match(sent_id) and got[2]["content"][0]["tool_use_id"] == sent_id
    completion = oai.chat.completions.create(model="ant/m+script=ant_text", messages=history)  # stable, stateless
    assert completion.choices[0].message.content == "Hello, world!"
    assert sent_to(upstream, "/v1/messages")["messages"][1]["content"][0]["id"] == sent_id


# --- interleaved parallel tool arguments ------------------------------------------------------------------------


def test_interleaved_tool_arguments_are_an_error(ant: anthropic.Anthropic, gateway: ServerThread) -> None:
    model = "local/m+script=oai_interleaved"
    status, raw = post_raw(gateway.base_url, "/v1/messages",
                           {"model": model, "max_tokens": 5, "messages": USER, "stream": True})
    assert status == 200
    events = check_anthropic(raw, complete=False)
    assert "interleaved" in events[-1]["error"]["message"]  # an error event, never message_stop (checked above)
    with pytest.raises(anthropic.APIStatusError):
        ant_stream(ant, model)


# --- OpenAI → Gemini request mapping ----------------------------------------------------------------------------


def test_openai_request_is_gemini_shaped(oai: openai.OpenAI, upstream: MockUpstream) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time"}}]
    oai.chat.completions.create(
        model="gem/gemini-x+script=gem_text", tools=tools, tool_choice="required",
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [
                      {"type": "text", "text": "look"},
                      {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                      {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                      {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                                "filename": "a.pdf"}}]},
                  {"role": "developer", "content": "Mid-conversation rule."}],
        temperature=0.3, top_p=0.9, stop=["END"], max_completion_tokens=300, seed=7, user="u-1",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": {"n": {"type": ["integer", "null"]}}}}},
    )
    got = sent_to(upstream, ":generateContent")
    assert got["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Mid-conversation rule."}]}
    assert got["contents"] == [{"role": "user", "parts": [
        {"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
        {"inlineData": {"mimeType": "application/pdf", "data": PDF}}]}]
    assert got["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "get_time"}]}]
    assert got["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert got["generationConfig"] == {
        "maxOutputTokens": 300, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"n": {"type": "integer", "nullable": True}}}}
    for field in ("seed", "user", "messages", "model", "stream"):
        assert field not in got


# --- keep-alives while the upstream is silent ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["ant-ka/m+script=ant_text+delay_ms=250",
                                   "gem-ka/g+script=gem_tools+delay_ms=400"])
def test_openai_client_keepalives(model: str, ka_gateway: ServerThread) -> None:
    status, raw = post_raw(ka_gateway.base_url, "/v1/chat/completions",
                           {"model": model, "messages": USER, "stream": True})
    assert status == 200
    assert len([d for name, d in frames(raw) if name == ":"]) >= 2
    assert check_openai(raw, include_usage=False)[-1]["choices"][0]["finish_reason"] in ("stop", "tool_calls")


def test_anthropic_client_keepalives_from_gemini(ka_gateway: ServerThread) -> None:
    status, raw = post_raw(ka_gateway.base_url, "/v1/messages", {
        "model": "gem-ka/g+script=gem_tools+delay_ms=400", "max_tokens": 50, "messages": USER, "stream": True})
    assert status == 200
    events = check_anthropic(raw)
    assert len([e for e in events if e["type"] == "ping"]) >= 3  # one after message_start, more in the silence
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


# --- upstreams that ignore ``stream: true`` and answer JSON ------------------------------------------------------


@pytest.mark.parametrize(("model", "ids"), [("oai/m+script=oai_ignores_stream", True),
                                            ("gem/g+script=gem_ignores_stream", False)])
def test_ignored_stream_to_anthropic_clients(model: str, ids: bool, ant: anthropic.Anthropic,
                                             gateway: ServerThread) -> None:
    streamed = ant_stream(ant, model)
    whole = ant.messages.create(model=model, max_tokens=256, messages=USER)
    assert ant_summary(streamed, ids) == ant_summary(whole, ids) and streamed.stop_reason == "tool_use"
    assert [b.type for b in streamed.content][-1] == "tool_use"
    assert (streamed.usage.input_tokens, streamed.usage.cache_read_input_tokens) == (20, 100)
    status, raw = post_raw(gateway.base_url, "/v1/messages",
                           {"model": model, "max_tokens": 5, "messages": USER, "stream": True})
    assert status == 200
    check_anthropic(raw)


@pytest.mark.parametrize(("model", "ids"), [("ant/m+script=ant_ignores_stream", True),
                                            ("gem/g+script=gem_ignores_stream", False)])
def test_ignored_stream_to_openai_clients(model: str, ids: bool, oai: openai.OpenAI, gateway: ServerThread) -> None:
    streamed = oai_stream(oai, model, stream_options={"include_usage": True})
    request = oai.chat.completions.with_raw_response.create(model=model, messages=USER)
    whole = request.parse()
    assert oai_summary(streamed, ids) == oai_summary(whole, ids) and whole.choices[0].finish_reason == "tool_calls"
    assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens > 0
    for include_usage in (False, True):
        extra = {"stream_options": {"include_usage": True}} if include_usage else {}
        status, raw = post_raw(gateway.base_url, "/v1/chat/completions",
                               {"model": model, "messages": USER, "stream": True, **extra})
        assert status == 200
        check_openai(raw, include_usage=include_usage)


# --- arbitrary chunk boundaries, CRLF, concurrent streams ------------------------------------------------------


def test_split_crlf_streams_concurrently_equal_the_json(ant: anthropic.Anthropic, oai: openai.OpenAI,
                                                        upstream: MockUpstream) -> None:
    """Every upstream event cut into 7-byte writes with CRLF lines, four streams at once; each accumulates
    to the translation of the same answer as JSON."""
    def anthropic_pair(provider: str, script: str, ids: bool) -> Callable[[], None]:
        def run() -> None:
            split = ant_stream(ant, f"{provider}+script={script}_split+delay_ms=1")
            whole = ant.messages.create(model=f"{provider}+script={script}", max_tokens=256, messages=USER)
            assert ant_summary(split, ids) == ant_summary(whole, ids) and len(split.content) >= 2
            assert split.stop_reason == whole.stop_reason == "tool_use"
        return run

    def openai_pair(provider: str, script: str, ids: bool) -> Callable[[], None]:
        def run() -> None:
            split = oai_stream(oai, f"{provider}+script={script}_split+delay_ms=1")
            whole = oai.chat.completions.create(model=f"{provider}+script={script}", messages=USER)
            assert oai_summary(split, ids) == oai_summary(whole, ids) and oai_summary(split)[3] == "tool_calls"
        return run

    jobs = [anthropic_pair("oai/m", "oai_parallel", True), anthropic_pair("gem/g", "gem_tools", False),
            openai_pair("ant/m", "ant_thinking_tool", True), openai_pair("gem/g", "gem_tools", False)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result(timeout=20)
    split = [s for s in upstream.streams[-16:] if "_split" in s.model]
    assert len(split) >= 4 and all(s.total > 50 and s.sent == s.total for s in split)


# --- client hang-up cancels the upstream read -------------------------------------------------------------------


@pytest.mark.parametrize(("path", "model", "marker"), [
    ("/v1/chat/completions", "ant/hang-oa+script=ant_text+delay_ms=3000", "hang-oa"),
    ("/v1/messages", "gem/hang-ag+script=gem_text+delay_ms=3000", "hang-ag"),
    ("/v1/chat/completions", "gem/hang-og+script=gem_text+delay_ms=3000", "hang-og"),
])
def test_client_hangup_cancels_the_upstream_read(path: str, model: str, marker: str, gateway: ServerThread,
                                                 upstream: MockUpstream) -> None:
    body = {"model": model, "max_tokens": 10, "stream": True, "messages": USER}
    with httpx.stream("POST", gateway.base_url + path, json=body, timeout=10) as r:
        request_id = r.headers["x-request-id"]
        assert next(r.iter_lines())  # the stream started on the upstream's first event
    ex = exchange_for(request_id)
    result = next(s for s in reversed(upstream.streams) if marker in s.model)
    assert result.sent == 1 and result.total > 3  # the gateway did not wait for the next upstream event
    assert ex.client_disconnected

"""The mock upstream must be faithful: the official SDKs, pointed straight at it, accept all it sends."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import aiohttp
import anthropic
import openai
import pytest

from ccm_gateway.mock import (
    MockPlan,
    MockUpstream,
    anthropic_error,
    anthropic_json,
    anthropic_sse,
    count_tokens,
    openai_error,
    openai_json,
    openai_sse,
    parse_plan,
    prompt_text,
    read_request,
    reply_for,
)

pytestmark = pytest.mark.timeout(30)

SDK_TIMEOUT = 10.0
PROMPT = "What is the weather in Paris?"
EXPECTED = "Hello from the ccm_gateway mock. You said: " + PROMPT




@pytest.fixture
def oai(mock: MockUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock.base_url + "/v1", api_key="x", max_retries=0, timeout=SDK_TIMEOUT)


@pytest.fixture
def ant(mock: MockUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock.base_url, api_key="x", max_retries=0, timeout=SDK_TIMEOUT)


def _user(text: str = PROMPT) -> list[dict]:
    return [{"role": "user", "content": text}]


def _raw_post(url: str, body: dict | bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """Plain urllib POST so tests can see exact bytes (no SDK parsing in the way)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=SDK_TIMEOUT) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _sse_data(raw: bytes) -> list[str]:
    return [line[len("data: ") :] for line in raw.decode().split("\n") if line.startswith("data: ")]


# ------------------------------------------------------------------------------------------------
# parse_plan


def test_parse_plan_plain_and_directives() -> None:
    assert parse_plan("gpt-4o") == MockPlan(model="gpt-4o")
    plan = parse_plan("gpt-4o+chunks=5+delay_ms=20+ttfb_ms=7+truncate=3+tools=2+size=100")
    assert plan == MockPlan(
        model="gpt-4o", chunks=5, delay_ms=20, ttfb_ms=7, truncate=3, tools=2, size=100, status=200
    )
    assert parse_plan("m+error_body=html+status=502") == MockPlan(model="m", status=502, error_body="html")
    assert parse_plan("m+text=Hi%20there%2B%21").text == "Hi there+!"
    assert parse_plan("m+text=").text == ""
    assert parse_plan("m+auth=sk-test").auth == "sk-test"
    assert parse_plan("claude-x+truncate=3") is parse_plan("claude-x+truncate=3")  # cached


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("m+colour=red", "unknown mock directive 'colour'"),
        ("m+status=abc", "expects an integer"),
        ("m+status=302", "200 or 400..599"),
        ("m+status=600", "200 or 400..599"),
        ("m+chunks=0", "'chunks' must be 1.."),
        ("m+delay_ms=-1", "'delay_ms' must be 0.."),
        ("m+tools=1000", "'tools' must be 0..128"),
        ("m+error_body=xml", "'native' or 'html'"),
        ("m+status", "must look like key=value"),
        ("m++status=500", "must look like key=value"),
        ("m+status=500+status=502", "given twice"),
        ("m+auth=", "non-empty"),
    ],
)
def test_parse_plan_errors(model: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="mock directive") as info:
        parse_plan(model)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------------
# prompt_text / reply_for / count_tokens


def test_prompt_text_shapes() -> None:
    openai_body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "text", "text": "world"},
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "tool output"},
        ],
    }
    assert prompt_text(json.dumps(openai_body).encode()) == "Hello world"
    anthropic_body = {
        "model": "m",
        "max_tokens": 10,
        "system": "sys",
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "no"}]},
            {"role": "user", "content": [{"type": "text", "text": "Bonjour"}]},
        ],
    }
    assert prompt_text(json.dumps(anthropic_body).encode()) == "Bonjour"
    assert prompt_text(b'{"messages":[{"role":"user","content":"plain"}]}') == "plain"
    assert prompt_text(b"not json") == ""
    assert prompt_text(b"[1, 2]") == ""
    assert prompt_text(b'{"messages": "nope"}') == ""
    assert prompt_text(b'{"messages":[{"role":"assistant","content":"only"}]}') == ""
    assert prompt_text(b'{"model":"m"}') == ""


def test_read_request() -> None:
    info = read_request(
        b'{"model":"m","stream":true,"stream_options":{"include_usage":true},'
        b'"messages":[{"role":"user","content":"hi"}]}'
    )
    assert (info.model, info.stream, info.include_usage, info.prompt) == ("m", True, True, "hi")
    with pytest.raises(ValueError, match="invalid JSON"):
        read_request(b"{broken")


def test_reply_for_and_count_tokens() -> None:
    assert reply_for(parse_plan("m"), PROMPT) == EXPECTED
    assert reply_for(parse_plan("m"), "x" * 500) == "Hello from the ccm_gateway mock. You said: " + "x" * 200
    assert reply_for(parse_plan("m+text=Hi%20there"), PROMPT) == "Hi there"
    for size in (0, 1, 5, 6, 1000, 12345):
        text = reply_for(parse_plan(f"m+size={size}"), PROMPT)
        assert len(text.encode()) == size
        assert text == reply_for(parse_plan(f"m+size={size}"), "other prompt")
        assert not text.endswith(" ")
    assert len(reply_for(parse_plan("m+size=1000"), "").split()) > 100
    assert count_tokens("") == 1
    assert count_tokens("abcdefgh") == 2


# ------------------------------------------------------------------------------------------------
# Wire invariants straight from replies.py (PROTOCOLS §7.2 / §7.3)


def _openai_chunks(events: list[bytes]) -> list[dict]:
    assert all(e.startswith(b"data: ") and e.endswith(b"\n\n") and e.count(b"\n\n") == 1 for e in events)
    assert events[-1] == b"data: [DONE]\n\n"
    return [json.loads(e[6:]) for e in events[:-1]]


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize(
    "directives", ["", "+chunks=4", "+tools=2", "+tools=1+text=", "+chunks=50+text=tiny"]
)
def test_openai_sse_invariants(include_usage: bool, directives: str) -> None:
    plan = parse_plan("gpt-x" + directives)
    reply = reply_for(plan, PROMPT)
    chunks = _openai_chunks(openai_sse(plan, plan.model, 7, reply, include_usage))
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if include_usage:
        *body, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        usage = usage_chunk["usage"]
        assert usage["prompt_tokens"] == 7
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
        assert usage["completion_tokens_details"] == {"reasoning_tokens": 0}
        assert all("usage" in c and c["usage"] is None for c in body)
    else:
        body = chunks
        assert all("usage" not in c for c in body)
    finishes = [c["choices"][0]["finish_reason"] for c in body]
    assert finishes[:-1] == [None] * (len(body) - 1)
    assert finishes[-1] == ("tool_calls" if plan.tools else "stop")
    assert body[-1]["choices"][0]["delta"] == {}
    deltas = [c["choices"][0]["delta"] for c in body[1:-1]]
    text_deltas = [d["content"] for d in deltas if "content" in d]
    assert "".join(text_deltas) == reply
    if plan.chunks is not None:
        assert len(text_deltas) == plan.chunks
    calls: dict[int, dict] = {}
    fragments: dict[int, int] = {}
    for delta in deltas:
        for call in delta.get("tool_calls", []):
            index = call["index"]
            if index not in calls:
                assert {"id", "type", "function"} <= call.keys()
                assert call["function"]["name"]
                calls[index] = {"id": call["id"], "name": call["function"]["name"], "arguments": ""}
                fragments[index] = 0
            else:
                assert "id" not in call and "type" not in call and "name" not in call["function"]
            calls[index]["arguments"] += call["function"]["arguments"]
            fragments[index] += bool(call["function"]["arguments"])
    assert sorted(calls) == list(range(plan.tools))
    assert all(n >= 2 for n in fragments.values())
    assert len({c["id"] for c in calls.values()}) == plan.tools
    assert all(isinstance(json.loads(c["arguments"]), dict) for c in calls.values())


@pytest.mark.parametrize("directives", ["", "+chunks=3", "+tools=2", "+tools=2+text=", "+text="])
def test_anthropic_sse_invariants(directives: str) -> None:
    plan = parse_plan("claude-x" + directives)
    reply = reply_for(plan, PROMPT)
    events = anthropic_sse(plan, plan.model, 9, reply)
    parsed = []
    for event in events:
        assert event.endswith(b"\n\n") and event.count(b"\n\n") == 1
        name_line, data_line = event[:-2].decode().split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: ") :])
        assert data["type"] == name_line[len("event: ") :]
        parsed.append(data)
    kinds = [d["type"] for d in parsed]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("ping") == 1 and kinds[kinds.index("content_block_start") + 1] == "ping"
    start = parsed[0]["message"]
    assert start["usage"] == {
        "input_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }
    assert start["stop_reason"] is None and start["content"] == []
    blocks: list[dict] = []
    open_index = None
    for data in parsed[1:-2]:
        if data["type"] == "content_block_start":
            assert open_index is None and data["index"] == len(blocks)
            open_index = data["index"]
            blocks.append({**data["content_block"], "_json": ""})
        elif data["type"] == "content_block_delta":
            assert data["index"] == open_index
            delta = data["delta"]
            if delta["type"] == "text_delta":
                blocks[open_index]["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                blocks[open_index]["_json"] += delta["partial_json"]
        elif data["type"] == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None
    texts = [b for b in blocks if b["type"] == "text"]
    tools = [b for b in blocks if b["type"] == "tool_use"]
    assert "".join(b["text"] for b in texts) == reply
    assert len(tools) == plan.tools
    assert all(t["input"] == {} and isinstance(json.loads(t["_json"]), dict) for t in tools)
    if plan.chunks:
        assert kinds.count("content_block_delta") == plan.chunks
    delta = parsed[-2]
    assert delta["delta"] == {"stop_reason": "tool_use" if plan.tools else "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] >= 1


def test_truncate_in_replies() -> None:
    plan = parse_plan("m+truncate=3")
    assert len(openai_sse(plan, "m", 1, "a b c d", True)) == 3
    assert len(anthropic_sse(plan, "m", 1, "a b c d")) == 3
    assert openai_sse(parse_plan("m+truncate=0"), "m", 1, "a b", False) == []


def test_json_bodies_match_streams() -> None:
    plan = parse_plan("m+tools=2")
    oa = json.loads(openai_json(plan, "m", 3, "hi"))
    assert oa["object"] == "chat.completion" and oa["choices"][0]["finish_reason"] == "tool_calls"
    message = oa["choices"][0]["message"]
    assert message["content"] == "hi" and len(message["tool_calls"]) == 2
    assert oa["usage"]["prompt_tokens"] == 3
    an = json.loads(anthropic_json(plan, "m", 3, "hi"))
    assert [b["type"] for b in an["content"]] == ["text", "tool_use", "tool_use"]
    assert an["stop_reason"] == "tool_use" and an["usage"]["input_tokens"] == 3
    only_tools = json.loads(openai_json(parse_plan("m+tools=1"), "m", 3, ""))
    assert only_tools["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error_shape(status: int, kind: str) -> None:
    assert json.loads(anthropic_error(status, "boom")) == {
        "type": "error",
        "error": {"type": kind, "message": "boom"},
    }


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, "invalid_request_error", None),
        (401, "invalid_request_error", "invalid_api_key"),
        (404, "invalid_request_error", "model_not_found"),
        (429, "rate_limit_exceeded", "rate_limit_exceeded"),
        (500, "server_error", None),
        (503, "server_error", None),
    ],
)
def test_openai_error_shape(status: int, kind: str, code: str | None) -> None:
    assert json.loads(openai_error(status, "boom")) == {
        "error": {"message": "boom", "type": kind, "param": None, "code": code}
    }


# ------------------------------------------------------------------------------------------------
# OpenAI SDK against the server


def test_openai_sdk_non_stream(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=_user())
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == EXPECTED
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == count_tokens(PROMPT)
    assert completion.id.startswith("chatcmpl-mock")


def test_openai_sdk_stream_with_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o+chunks=5", messages=_user(), stream=True, stream_options={"include_usage": True}
    )
    text, usage_chunks, finish = "", [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage_chunks.append(chunk)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == EXPECTED and finish == "stop"
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    usage = usage_chunks[0].usage
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_sdk_parallel_tool_stream(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model="gpt-4o+tools=2", messages=_user(), stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            if call.id:
                entry["id"] = call.id
            if call.function and call.function.name:
                entry["name"] = call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1]
    assert all(c["id"].startswith("call_mock") and c["name"] for c in calls.values())
    assert [json.loads(c["arguments"]) for c in calls.values()] == [
        {"index": 0, "query": "mock query 0"},
        {"index": 1, "query": "mock query 1"},
    ]


def test_openai_sdk_stream_helper_accumulates_tools(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(model="m+tools=2+text=Checking.", messages=_user()) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Checking."
    assert [json.loads(c.function.arguments)["index"] for c in message.tool_calls] == [0, 1]


def test_openai_base_url_without_v1_and_models(mock: MockUpstream) -> None:
    client = openai.OpenAI(base_url=mock.base_url, api_key="x", max_retries=0, timeout=SDK_TIMEOUT)
    assert client.chat.completions.create(model="m", messages=_user()).choices[0].message.content == EXPECTED
    assert "mock-1" in [m.id for m in client.models.list()]


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_openai_sdk_errors(oai: openai.OpenAI, status: int, exc: type[Exception]) -> None:
    with pytest.raises(exc) as info:
        oai.chat.completions.create(model=f"gpt-4o+status={status}", messages=_user())
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["message"]
    if status == 429:
        assert info.value.response.headers["retry-after"] == "1"
    # Streaming requests fail before the head too, so the SDK raises the same class.
    with pytest.raises(exc):
        oai.chat.completions.create(model=f"gpt-4o+status={status}", messages=_user(), stream=True)


def test_openai_sdk_html_error(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        oai.chat.completions.create(model="m+error_body=html+status=502", messages=_user())
    assert info.value.status_code == 502
    assert info.value.response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in info.value.response.text


# ------------------------------------------------------------------------------------------------
# Anthropic SDK against the server


def test_anthropic_sdk_create(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(model="claude-x", max_tokens=100, messages=_user())
    assert message.model == "claude-x" and message.id.startswith("msg_mock")
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == EXPECTED
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == count_tokens(PROMPT) and message.usage.output_tokens > 0


def test_anthropic_sdk_stream(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="claude-x+chunks=4", max_tokens=100, messages=_user()) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) == 4 and "".join(pieces) == EXPECTED
    assert final.content[0].text == EXPECTED
    assert final.usage.input_tokens > 0 and final.usage.output_tokens == count_tokens(EXPECTED)
    assert final.stop_reason == "end_turn"


def test_anthropic_sdk_stream_tools(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model="claude-x+tools=2", max_tokens=100, messages=_user()) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    tool_blocks = [b for b in final.content if b.type == "tool_use"]
    assert [b.input for b in tool_blocks] == [
        {"index": 0, "query": "mock query 0"},
        {"index": 1, "query": "mock query 1"},
    ]
    assert all(b.id.startswith("toolu_mock") for b in tool_blocks)
    assert final.stop_reason == "tool_use"


def test_anthropic_sdk_non_stream_tools_only(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(model="claude-x+tools=1+text=", max_tokens=100, messages=_user())
    assert [b.type for b in message.content] == ["tool_use"] and message.stop_reason == "tool_use"


@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, anthropic.BadRequestError),
        (401, anthropic.AuthenticationError),
        (404, anthropic.NotFoundError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (503, anthropic.InternalServerError),
        (529, anthropic.InternalServerError),
    ],
)
def test_anthropic_sdk_errors(ant: anthropic.Anthropic, status: int, exc: type[Exception]) -> None:
    with pytest.raises(exc) as info:
        ant.messages.create(model=f"claude-x+status={status}", max_tokens=10, messages=_user())
    assert info.value.status_code == status
    assert info.value.body["type"] == "error"
    with (
        pytest.raises(exc),
        ant.messages.stream(model=f"claude-x+status={status}", max_tokens=10, messages=_user()) as stream,
    ):
        stream.get_final_message()


def test_anthropic_count_tokens(ant: anthropic.Anthropic) -> None:
    result = ant.messages.count_tokens(model="claude-x", messages=_user())
    assert result.input_tokens == count_tokens(PROMPT)


# ------------------------------------------------------------------------------------------------
# Raw HTTP behaviour


def test_truncate_openai_raw(mock: MockUpstream) -> None:
    body = {"model": "gpt-4o+truncate=3", "messages": _user(), "stream": True}
    status, headers, raw = _raw_post(mock.base_url + "/v1/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    data = _sse_data(raw)
    assert len(data) == 3 and "[DONE]" not in data
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for d in data)


def test_truncate_anthropic_raw(mock: MockUpstream) -> None:
    body = {"model": "claude-x+truncate=4", "max_tokens": 5, "messages": _user(), "stream": True}
    status, _, raw = _raw_post(mock.base_url + "/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert status == 200
    assert raw.count(b"event: ") == 4 and b"message_stop" not in raw and b"message_delta" not in raw


def test_full_stream_raw_terminators(mock: MockUpstream) -> None:
    body = {"model": "gpt-4o", "messages": _user(), "stream": True}
    _, headers, raw = _raw_post(mock.base_url + "/chat/completions", body)
    assert raw.endswith(b"data: [DONE]\n\n") and headers["x-request-id"].startswith("req-mock-")
    assert headers["x-ratelimit-remaining-requests"] == "99"
    body = {"model": "claude-x", "max_tokens": 5, "messages": _user(), "stream": True}
    _, headers, raw = _raw_post(mock.base_url + "/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert headers["request-id"].startswith("req_mock")
    assert headers["anthropic-ratelimit-requests-remaining"] == "99"
    assert headers["cache-control"] == "no-cache"


def test_anthropic_requires_version_header(mock: MockUpstream) -> None:
    status, _, raw = _raw_post(
        mock.base_url + "/v1/messages", {"model": "c", "max_tokens": 5, "messages": []}
    )
    assert status == 400
    assert json.loads(raw)["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }


def test_malformed_bodies_get_native_400(mock: MockUpstream) -> None:
    status, _, raw = _raw_post(mock.base_url + "/v1/chat/completions", b"{not json")
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    status, _, raw = _raw_post(mock.base_url + "/v1/messages", b"[]", {"anthropic-version": "2023-06-01"})
    assert status == 400 and json.loads(raw)["type"] == "error"
    status, _, raw = _raw_post(mock.base_url + "/v1/chat/completions", {"model": "m+bogus=1", "messages": []})
    assert status == 400 and "unknown mock directive 'bogus'" in json.loads(raw)["error"]["message"]
    status, _, raw = _raw_post(mock.base_url + "/v1/chat/completions", {"messages": []})
    assert status == 400 and "model" in json.loads(raw)["error"]["message"]


def test_auth_directive_openai(mock: MockUpstream) -> None:
    good = openai.OpenAI(
        base_url=mock.base_url + "/v1", api_key="sk-good", max_retries=0, timeout=SDK_TIMEOUT
    )
    bad = openai.OpenAI(
        base_url=mock.base_url + "/v1", api_key="sk-leaked-123", max_retries=0, timeout=SDK_TIMEOUT
    )
    assert good.chat.completions.create(model="m+auth=sk-good", messages=_user()).choices[0].message.content
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="m+auth=sk-good", messages=_user())
    assert "Incorrect API key provided: sk-leaked-123" in info.value.body["message"]
    assert info.value.body["code"] == "invalid_api_key"


def test_auth_directive_anthropic(mock: MockUpstream) -> None:
    good = anthropic.Anthropic(base_url=mock.base_url, api_key="ak-good", max_retries=0, timeout=SDK_TIMEOUT)
    bad = anthropic.Anthropic(
        base_url=mock.base_url, api_key="ak-leaked-9", max_retries=0, timeout=SDK_TIMEOUT
    )
    assert good.messages.create(model="c+auth=ak-good", max_tokens=5, messages=_user()).content
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model="c+auth=ak-good", max_tokens=5, messages=_user())
    assert "Incorrect API key provided: ak-leaked-9" in info.value.body["error"]["message"]
    assert info.value.body["error"]["type"] == "authentication_error"
    # The x-api-key form (what gateways usually send upstream) is checked the same way.
    url, body = (
        mock.base_url + "/v1/messages",
        {"model": "c+auth=ak-good", "max_tokens": 5, "messages": _user()},
    )
    version = {"anthropic-version": "2023-06-01"}
    assert _raw_post(url, body, {**version, "x-api-key": "ak-good"})[0] == 200
    status, _, raw = _raw_post(url, body, {**version, "x-api-key": "ak-other"})
    assert status == 401 and "Incorrect API key provided: ak-other" in raw.decode()


def test_requests_are_recorded(mock: MockUpstream, ant: anthropic.Anthropic) -> None:
    ant.messages.create(
        model="claude-x",
        max_tokens=7,
        messages=_user("record me"),
        extra_headers={"X-Custom-Header": "yes", "anthropic-beta": "b1,b2"},
        extra_query={"beta": "true"},
    )
    recorded = mock.requests[-1]
    assert (recorded.method, recorded.path, recorded.query) == ("POST", "/v1/messages", "beta=true")
    # Older anthropic SDKs send x-api-key, newer ones `Authorization: Bearer`; the mock records either.
    assert recorded.headers.get("x-api-key") == "x" or recorded.headers["authorization"] == "Bearer x"
    assert recorded.headers["x-custom-header"] == "yes"
    assert recorded.headers["anthropic-beta"] == "b1,b2"
    assert recorded.headers["anthropic-version"]
    assert all(name == name.lower() for name in recorded.headers)
    assert recorded.json() == {"max_tokens": 7, "messages": _user("record me"), "model": "claude-x"}


def test_requests_capped(mock: MockUpstream) -> None:
    mock.requests[:] = [mock.requests[-1]] * 999 if mock.requests else []
    for _ in range(3):
        urllib.request.urlopen(mock.base_url + "/v1/models", timeout=SDK_TIMEOUT).read()
    assert len(mock.requests) <= 1000
    assert mock.requests[-1].path == "/v1/models" and mock.requests[-1].method == "GET"


def test_delay_and_ttfb(mock: MockUpstream) -> None:
    body = {"model": "m+chunks=3+delay_ms=100", "messages": _user(), "stream": True}
    url = mock.base_url + "/v1/chat/completions"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=SDK_TIMEOUT) as response:
        first = response.readline()  # the role chunk is written before any delay
        started = time.monotonic()
        rest = response.read()
    elapsed = time.monotonic() - started
    assert first.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")
    assert 0.4 <= elapsed < 5  # 5 more events after the first, 100 ms apart

    started = time.monotonic()
    _raw_post(mock.base_url + "/v1/chat/completions", {"model": "m+ttfb_ms=300", "messages": _user()})
    assert 0.3 <= time.monotonic() - started < 5


def test_async_start_stop() -> None:
    async def scenario() -> None:
        async with MockUpstream() as server:
            timeout = aiohttp.ClientTimeout(total=SDK_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                payload = {"model": "claude-x+chunks=2", "max_tokens": 5, "messages": _user(), "stream": True}
                headers = {"anthropic-version": "2023-06-01"}
                async with session.post(
                    server.base_url + "/v1/messages", json=payload, headers=headers
                ) as resp:
                    assert resp.status == 200
                    raw = await resp.read()
            assert raw.count(b"event: content_block_delta") == 2
            assert server.requests[-1].headers["anthropic-version"] == "2023-06-01"
            base_url = server.base_url
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                await session.get(base_url + "/v1/models")

    asyncio.run(scenario())


def test_stop_with_open_stream() -> None:
    server = MockUpstream().start_in_thread()
    body = {"model": "m+chunks=1000+delay_ms=50", "messages": _user(), "stream": True}
    request = urllib.request.Request(server.base_url + "/v1/chat/completions", data=json.dumps(body).encode())
    response = urllib.request.urlopen(request, timeout=SDK_TIMEOUT)
    assert response.readline().startswith(b"data: ")
    started = time.monotonic()
    server.stop_thread()
    assert time.monotonic() - started < 5
    response.close()

"""The translated stream driver without a network: keep-alives, upstreams that ignore ``stream``,
arbitrary chunk boundaries, and per-request state under concurrency (P25)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from ccm_gateway.config import ProviderConfig, Timeouts
from ccm_gateway.dialects import Dialect, anthropic_stream, openai_stream
from ccm_gateway.dialects import canonical as c
from ccm_gateway.exchange import Exchange, Usage
from ccm_gateway.mock.scripts import SCRIPTS
from ccm_gateway.providers.upstream import Upstream
from ccm_gateway.routing import Deployment
from ccm_gateway.translate import Translated

from .sse_checks import check_anthropic, check_openai, frames

SSE = {"content-type": "text/event-stream"}
JSON = {"content-type": "application/json"}


class FakeResponse:
    def __init__(self, parts: list[bytes], headers: dict[str, str], delay: float = 0.0) -> None:
        self.status = 200
        self.headers = headers
        self.parts = parts
        self.delay = delay

    async def chunks(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield part

    async def read(self, limit: int) -> bytes:
        return b"".join(self.parts)[:limit]

    def close(self) -> None:
        return None


def call_for(dialect: Dialect, kind: str, body: dict[str, Any], resp: FakeResponse) -> Translated:
    ex = Exchange(dialect)
    ex.body = msgspec.json.encode(body)
    ex.request_id = "unit"
    ex.head()
    config = ProviderConfig(kind=kind, base_url="http://127.0.0.1:9", timeout=Timeouts(keepalive=0.05, idle=2.0))
    upstream = Upstream("fake", config)

    async def send(*args: Any, **kwargs: Any) -> FakeResponse:
        return resp

    upstream.send = send  # type: ignore[method-assign]
    return Translated(ex, Deployment(upstream, "up-model"), None)


async def collect(call: Translated) -> tuple[int, str]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await call.run(send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()


OPENAI_BODY = {"model": "g", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
ANTHROPIC_BODY = {"model": "m", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def test_openai_client_gets_keepalive_comments_while_gemini_is_silent() -> None:
    resp = FakeResponse(list(SCRIPTS["gem_tools"].events), SSE, delay=0.2)
    status, raw = asyncio.run(collect(call_for(Dialect.OPENAI_CHAT, "gemini", OPENAI_BODY, resp)))
    assert status == 200
    assert len([d for name, d in frames(raw) if name == ":"]) >= 3
    chunks = check_openai(raw, include_usage=False)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_upstream_that_ignores_stream_is_streamed_to_the_client() -> None:
    resp = FakeResponse([SCRIPTS["oai_tool"].body], JSON)
    call = call_for(Dialect.ANTHROPIC_MESSAGES, "openai", ANTHROPIC_BODY, resp)
    status, raw = asyncio.run(collect(call))
    assert status == 200
    events = check_anthropic(raw)
    assert [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"] == ["text", "tool_use"]
    assert events[-2]["usage"]["output_tokens"] == 40 and call.ex.usage.cache_read == 100


def translate_bytes(parts: list[bytes], upstream: str, client: Dialect) -> list[Any]:
    names = c.Names()
    decoder: Any = {"openai": openai_stream.StreamDecoder, "anthropic": anthropic_stream.StreamDecoder}[upstream](names)
    encoder: Any = (anthropic_stream.StreamEncoder("m", 5, Usage()) if client is Dialect.ANTHROPIC_MESSAGES
                    else openai_stream.StreamEncoder("m", True, Usage()))
    out = [encoder.start()]
    for part in parts:
        out.append(encoder.feed(decoder.feed(part)))
    out.append(encoder.feed(decoder.close()))
    out.append(encoder.finish())
    raw = b"".join(out).decode()
    payloads = [json.loads(d) for name, d in frames(raw) if d != "[DONE]"]
    for p in payloads:  # ids and timestamps are per stream
        for key in ("id", "created"):
            p.pop(key, None)
        if "message" in p:
            p["message"].pop("id")
    return payloads


def test_arbitrary_chunk_boundaries_give_the_same_stream() -> None:
    for name, upstream, client in (("oai_parallel", "openai", Dialect.ANTHROPIC_MESSAGES),
                                   ("ant_thinking_tool", "anthropic", Dialect.OPENAI_CHAT)):
        whole = b"".join(SCRIPTS[name].events)
        by_event = translate_bytes(list(SCRIPTS[name].events), upstream, client)
        by_byte = translate_bytes([whole[i:i + 1] for i in range(len(whole))], upstream, client)
        crlf = translate_bytes([whole.replace(b"\n", b"\r\n")[i:i + 7] for i in range(0, 2 * len(whole), 7)],
                               upstream, client)
        assert by_event == by_byte == crlf and len(by_event) > 5


def test_concurrent_streams_keep_their_own_state() -> None:
    async def both() -> list[tuple[int, str]]:
        a = call_for(Dialect.ANTHROPIC_MESSAGES, "openai", ANTHROPIC_BODY,
                     FakeResponse(list(SCRIPTS["oai_parallel"].events), SSE, delay=0.01))
        b = call_for(Dialect.ANTHROPIC_MESSAGES, "openai", ANTHROPIC_BODY,
                     FakeResponse(list(SCRIPTS["oai_text"].events), SSE, delay=0.013))
        return list(await asyncio.gather(collect(a), collect(b)))

    (_, tools), (_, text) = asyncio.run(both())
    starts = [e["content_block"]["type"] for e in check_anthropic(tools) if e["type"] == "content_block_start"]
    assert starts == ["tool_use", "tool_use"]
    events = check_anthropic(text)
    assert [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"] == ["text"]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"


def test_interleaved_tool_arguments_end_in_an_error_not_a_truncated_call() -> None:
    from ccm_gateway.mock.scripts import _oc, _tc

    parts = [_oc({"role": "assistant", "content": ""}), _oc(_tc(0, '{"cmd": "rm -rf /tmp/x', "call_1", "bash")),
             _oc(_tc(1, "{}", "call_2", "noop")), _oc(_tc(0, '"}')), _oc(finish="tool_calls"), b"data: [DONE]\n\n"]
    status, raw = asyncio.run(collect(call_for(Dialect.ANTHROPIC_MESSAGES, "openai", ANTHROPIC_BODY,
                                               FakeResponse(parts, SSE))))
    assert status == 200
    events = check_anthropic(raw, complete=False)
    assert "interleaved" in events[-1]["error"]["message"]

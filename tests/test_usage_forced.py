"""OpenAI pass-through streams whose client did not ask for usage (PROTOCOLS.md §5 P12): the gateway
asks the upstream for it (``stream_options.include_usage``) so the cost is the provider's count, and
takes the usage-only chunk out of what the client receives — whatever the chunk boundaries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import openai
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.mock import MockUpstream, replies
from ccm_gateway.streaming import UsageChunkStripper

from .conftest import exchange_for
from .servers import ServerThread
from .sse_checks import check_openai

USER = [{"role": "user", "content": "count me"}]


def sent_upstream(upstream: MockUpstream, request_id: str) -> dict[str, Any]:
    found = [r for r in upstream.requests if r.headers.get("x-request-id") == request_id]
    assert len(found) == 1
    return found[0].json()


def sdk(gateway: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="client-key", max_retries=0, timeout=10)


@pytest.mark.parametrize("options", [None, {"include_usage": False}], ids=["unset", "explicit-false"])
def test_client_without_include_usage_gets_no_usage_chunk_but_is_billed_reported_usage(
    gateway: ServerThread, upstream: MockUpstream, options: dict[str, Any] | None
) -> None:
    extra = {"stream_options": options} if options is not None else {}
    with sdk(gateway).chat.completions.with_streaming_response.create(
        model="gpt-4.1+tools=1", messages=USER, stream=True, **extra
    ) as raw:
        request_id = raw.headers["x-request-id"]
        chunks = list(raw.parse())
    assert chunks and all(c.choices for c in chunks)  # no "choices": [] chunk for a client that indexes [0]
    assert all(c.usage is None for c in chunks)
    assert sent_upstream(upstream, request_id)["stream_options"] == {"include_usage": True}
    usage = exchange_for(request_id).usage
    assert usage.reported and usage.estimated == ()
    assert usage.input > 0 and usage.output > 0


def test_client_that_asked_gets_exactly_one_usage_chunk(gateway: ServerThread, upstream: MockUpstream) -> None:
    r = httpx.post(gateway.base_url + "/v1/chat/completions", timeout=10, json={
        "model": "gpt-4.1", "messages": USER, "stream": True, "stream_options": {"include_usage": True}})
    chunks = check_openai(r.text, include_usage=True)
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert sent_upstream(upstream, r.headers["x-request-id"])["stream_options"] == {"include_usage": True}


@pytest.fixture(scope="module")
def no_options_gateway(upstream: MockUpstream) -> Iterator[ServerThread]:
    config = load_config({"providers": {"strict": {"kind": "openai-compatible", "base_url": upstream.base_url + "/v1",
                                                   "stream_options": False}}}, env={}, dotenv=False)
    with ServerThread(create_app(config)) as server:
        yield server


def test_provider_without_stream_options_is_left_alone(no_options_gateway: ServerThread,
                                                       upstream: MockUpstream) -> None:
    body = {"model": "strict/m", "messages": USER, "stream": True}
    r = httpx.post(no_options_gateway.base_url + "/v1/chat/completions", json=body, timeout=10)
    check_openai(r.text, include_usage=False)
    found = [q for q in upstream.requests if q.headers.get("x-request-id") == r.headers["x-request-id"]]
    assert found and msgspec.json.decode(found[0].body) == {**body, "model": "m"}  # no stream_options added


# --- the stripper, on every chunking -----------------------------------------------------------------


def upstream_stream(spaced: bool = False) -> bytes:
    plan = replies.parse_plan("m+tools=2")
    stream = b"".join(replies.openai_sse(plan, "m", 120, "some reply text", include_usage=True))
    return stream.replace(b'"choices":[]', b'"choices": []') if spaced else stream


def expected_without_usage(stream: bytes) -> bytes:
    events = stream.split(b"\n\n")
    return b"\n\n".join(e for e in events if not (b'"choices"' in e and b"[]" in e and b'"usage":{' in e))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50, 100_000])
@pytest.mark.parametrize("spaced", [False, True])
def test_stripper_drops_only_the_usage_chunk_whatever_the_chunking(size: int, spaced: bool) -> None:
    stream = upstream_stream(spaced)
    assert stream.count(b'"usage":{') == 1  # the mock sent one usage chunk
    stripper = UsageChunkStripper()
    out = b"".join(stripper.feed(stream[i:i + size]) for i in range(0, len(stream), size)) + stripper.close()
    assert out == expected_without_usage(stream) and out != stream
    assert b'"usage":{' not in out and out.endswith(b"data: [DONE]\n\n")


def test_stripper_passes_content_lines_on_before_their_end() -> None:
    stripper = UsageChunkStripper()
    first = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hel'
    assert stripper.feed(first) == first  # a content chunk: not held back
    assert stripper.feed(b'lo"}}]}\n\ndata: {"id":"c","choi') == b'lo"}}]}\n\n'  # may be the usage chunk: held
    assert stripper.feed(b'ces":[],"usage":{"prompt_tokens":1}}\n\ndata: [DONE]\n\n') == b"data: [DONE]\n\n"

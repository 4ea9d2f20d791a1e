"""Usage is read from pass-through bodies and streams without decoding every event."""

from __future__ import annotations

import json

import pytest

from ccm_gateway.dialects import anthropic_messages, openai_chat
from ccm_gateway.exchange import Usage
from ccm_gateway.mock import replies
from ccm_gateway.streaming import UsageSniffer, carries_usage_object


def feed_in_pieces(sniffer: UsageSniffer, stream: bytes, size: int) -> None:
    for start in range(0, len(stream), size):
        sniffer.feed(stream[start:start + size])


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_openai_stream_usage_survives_any_chunking(size: int) -> None:
    plan = replies.parse_plan("m+tools=2")
    stream = b"".join(replies.openai_sse(plan, "m", 120, "some reply text", include_usage=True))
    usage = Usage()
    feed_in_pieces(UsageSniffer(openai_chat.apply_usage, usage), stream, size)
    assert usage.reported and usage.input == 120 and usage.output > 0


@pytest.mark.parametrize("size", [1, 13, 4096])
def test_anthropic_stream_usage_takes_start_and_final_delta(size: int) -> None:
    stream = b"".join(replies.anthropic_sse(replies.parse_plan("m"), "m", 377, "hello there"))
    usage = Usage()
    feed_in_pieces(UsageSniffer(anthropic_messages.apply_usage, usage), stream, size)
    assert usage.input == 377
    assert usage.output == replies.count_tokens("hello there")  # the cumulative final count, not 1


def test_openai_null_usage_chunks_are_not_decoded() -> None:
    assert not carries_usage_object(b'data: {"choices":[],"usage":null}\n\n')
    assert carries_usage_object(b'data: {"usage": {"prompt_tokens": 1}}\n\n')
    assert not carries_usage_object(b'data: {"content":"the word \\"usage\\" in text"}\n\n')


def test_openai_cached_tokens_are_not_counted_twice() -> None:
    usage = Usage()
    openai_chat.apply_usage(
        b'{"usage":{"prompt_tokens":1000,"completion_tokens":50,"prompt_tokens_details":{"cached_tokens":800},'
        b'"completion_tokens_details":{"reasoning_tokens":20}}}', usage)
    assert (usage.input, usage.cache_read, usage.output, usage.reasoning) == (200, 800, 50, 20)
    assert usage.prompt_total == 1000


def test_anthropic_cache_fields_map_to_read_and_write() -> None:
    usage = Usage()
    anthropic_messages.apply_usage(
        b'{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":300,'
        b'"cache_read_input_tokens":5000,"output_tokens":7}}', usage)
    assert (usage.input, usage.cache_write, usage.cache_read, usage.output) == (10, 300, 5000, 7)
    assert usage.prompt_total == 5310


def test_a_monster_line_does_not_grow_the_buffer_forever() -> None:
    usage = Usage()
    sniffer = UsageSniffer(openai_chat.apply_usage, usage)
    for _ in range(10):
        sniffer.feed(b"x" * (1024 * 1024))  # no newline at all
    assert len(sniffer._tail) <= 4 * 1024 * 1024


def test_streams_in_python_json_style_still_yield_usage() -> None:
    """Compact upstreams get one substring search per chunk; a server writing ``": "`` (Python's
    json.dumps) must still have its usage found."""
    chunks = [{"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None},
              {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}]
    stream = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"
    usage = Usage()
    feed_in_pieces(UsageSniffer(openai_chat.apply_usage, usage), stream, 50)
    assert usage.reported and (usage.input, usage.output) == (7, 2)

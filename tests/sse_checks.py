"""Raw-stream invariant checks for translated streams (PROTOCOLS §7.2 and §7.3)."""

from __future__ import annotations

import json
from typing import Any

import httpx


def frames(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE event; comments come back as (":", text)."""
    out: list[tuple[str | None, str]] = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith(":"):
                out.append((":", line[1:].strip()))
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            out.append((name, "\n".join(data)))
    return out


def post_raw(base_url: str, path: str, body: dict[str, Any]) -> tuple[int, str]:
    headers = {"authorization": "Bearer client-key", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", base_url + path, json=body, headers=headers, timeout=10) as r:
        return r.status_code, r.read().decode()


def check_anthropic(raw: str, *, complete: bool = True) -> list[dict[str, Any]]:
    """Every frame named and typed alike, message_start first, contiguous balanced blocks, no delta after
    its block's stop, tool arguments only as input_json_delta, exactly one message_delta then
    message_stop (or an error event last when ``complete`` is False). Returns the decoded events."""
    events: list[dict[str, Any]] = []
    for name, data in frames(raw):
        assert name is not None and name != ":", f"frame without an event: line: {data!r}"
        payload = json.loads(data)
        assert payload["type"] == name, (name, payload)
        events.append(payload)
    assert events and events[0]["type"] == "message_start", events[:1]
    usage = events[0]["message"]["usage"]
    assert usage["input_tokens"] > 0, "message_start must carry a seeded input estimate (P4)"
    open_index: int | None = None
    started = 0
    kinds: dict[int, str] = {}
    for ev in events[1:]:
        t = ev["type"]
        if t == "content_block_start":
            assert open_index is None, "blocks must not interleave"
            assert ev["index"] == started, "indices must be contiguous from 0"
            kinds[started] = ev["content_block"]["type"]
            if kinds[started] == "tool_use":
                assert ev["content_block"]["input"] == {}, "arguments only as input_json_delta (P11)"
            open_index, started = started, started + 1
        elif t == "content_block_delta":
            assert ev["index"] == open_index, "delta for a block that is not open"
        elif t == "content_block_stop":
            assert ev["index"] == open_index
            open_index = None
    assert open_index is None or not complete, "a block was left open"
    types = [e["type"] for e in events]
    if complete:
        assert types[-2:] == ["message_delta", "message_stop"], types[-3:]
        assert types.count("message_delta") == 1
        stop = events[-2]["delta"]["stop_reason"]
        has_tool = "tool_use" in kinds.values()
        assert (stop == "tool_use") == has_tool or stop == "max_tokens", (stop, kinds)
    else:
        assert types[-1] == "error" and "message_stop" not in types, types
    return events


def check_openai(raw: str, *, include_usage: bool, complete: bool = True) -> list[dict[str, Any]]:
    """Constant id/created/model, role first, tool id+name only on a call's first fragment, one finish
    chunk, the usage chunk only when asked (choices: []), ``[DONE]`` last (or an error last)."""
    data = [d for name, d in frames(raw) if name != ":"]
    if not complete:
        assert data[-1] != "[DONE]" and "error" in json.loads(data[-1]), data[-1:]
        return [json.loads(d) for d in data]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {(c["id"], c["created"], c["model"]) for c in chunks}.__len__() == 1
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 1
    usage_chunks = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == [] and chunks[-1] is usage_chunks[0]
    else:
        assert not usage_chunks and all(c["choices"] for c in chunks)
    seen: set[int] = set()
    for c in chunks:
        for call in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            first = call["index"] not in seen
            assert ("id" in call) == first and ("name" in call.get("function", {})) == first, call
            seen.add(call["index"])
    return chunks

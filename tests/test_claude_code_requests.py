"""Requests shaped like the ones Claude Code sends (seen by running `claude -p` against the gateway):
`?beta=true`, a long `anthropic-beta` list, newer top-level fields (`context_management`,
`output_config`, `thinking`, `metadata`), system blocks with cache_control, many tools — all of which
must reach an Anthropic upstream untouched."""

from __future__ import annotations

import json

import httpx

from ccm_gateway.mock import MockUpstream

from .servers import ServerThread

BETAS = ("claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14,"
         "context-management-2025-06-27,mid-conversation-system-2026-04-07,effort-2025-11-24")


def claude_code_body(model: str) -> dict:
    return {
        "model": model,
        "max_tokens": 64000,
        "stream": True,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "say hello \u00e9\u4e2d"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "ok", "signature": "c2lnbmF0dXJl"},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.txt"}]},
            {"role": "system", "content": "mid-conversation system note"},
        ],
        "tools": [{"name": f"mcp__srv__tool_{i}", "description": "d" * 200,
                   "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}} for i in range(40)],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        "metadata": {"user_id": "user_abc_account_def_session_ghi"},
    }


def test_claude_code_request_reaches_anthropic_byte_for_byte(gateway: ServerThread, upstream: MockUpstream) -> None:
    # Exactly the client's bytes, odd spacing included: with the upstream model name unchanged
    # (a detected "claude-…" name) the gateway must not re-serialise anything.
    raw = json.dumps(claude_code_body("claude-sonnet-4-5-20250929"), indent=1, ensure_ascii=False).encode()
    r = httpx.post(gateway.base_url + "/v1/messages?beta=true", content=raw, timeout=10, headers={
        "content-type": "application/json", "anthropic-version": "2023-06-01", "anthropic-beta": BETAS,
        "authorization": "Bearer gateway-key-from-claude-code", "x-app": "cli",
    })
    assert r.status_code == 200
    assert r.text.rstrip().endswith('data: {"type":"message_stop"}')
    sent = next(req for req in reversed(upstream.requests) if req.path == "/v1/messages")
    assert sent.body == raw
    assert sent.query == ""
    assert sent.headers["anthropic-beta"] == BETAS
    assert "gateway-key-from-claude-code" not in json.dumps(sent.headers)
    assert "x-app" not in sent.headers  # only allow-listed client headers go upstream


def test_alias_rewrites_only_the_model(gateway: ServerThread, upstream: MockUpstream) -> None:
    body = claude_code_body("claude-sonnet")
    r = httpx.post(gateway.base_url + "/v1/messages?beta=true", json=body, timeout=10,
                   headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 200
    sent = next(req for req in reversed(upstream.requests) if req.path == "/v1/messages").json()
    assert sent == {**body, "model": "claude-sonnet-4-5"}
    assert list(sent) == list(body)  # field order kept too


def test_claude_code_stream_survives_an_overloaded_deployment(upstream: MockUpstream) -> None:
    """Seen running `claude -p` through a route whose heavier deployment answers 529: Claude Code's
    streamed request is retried on the other deployment before anything reaches it — the same bytes
    but the model name, one complete stream — and once the breaker opens the overloaded deployment
    is not asked again."""
    from ccm_gateway import create_app, load_config

    overloaded = "claude-sonnet-4-5+status=529+ttfb_ms=1"  # a model string no other test uses
    raw_config = {
        "providers": {"ant": {"kind": "anthropic", "base_url": upstream.base_url,
                              "api_keys": ["sk-ant-cc-0123456789"]}},
        "models": [{"name": "cc-main", "targets": [{"provider": "ant", "model": overloaded, "weight": 1000},
                                                   {"provider": "ant", "model": "claude-sonnet-4-5"}]}],
        "resilience": {"breaker": {"consecutive_failures": 2, "open_base": 300, "max_ejected_share": 1.0},
                       "affinity_metadata": False},
    }
    body = claude_code_body("cc-main")
    raw = json.dumps(body).encode()
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "anthropic-beta": BETAS}
    with ServerThread(create_app(load_config(raw_config, env={}, dotenv=False))) as gw:
        answers = [httpx.post(gw.base_url + "/v1/messages?beta=true", content=raw, headers=headers, timeout=10)
                   for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200]
    for r in answers:
        assert r.text.count("event: message_start") == 1 and r.text.rstrip().endswith('{"type":"message_stop"}')
        assert r.headers["x-ccm-deployment"] == "ant/claude-sonnet-4-5"
    assert [r.headers["x-ccm-attempts"] for r in answers] == ["2", "2", "1"]  # open after two 529s
    assert upstream.hits(overloaded) == 2
    sent = [r.json() for r in upstream.requests if r.path == "/v1/messages"]
    assert sent[-1] == {**body, "model": "claude-sonnet-4-5"}

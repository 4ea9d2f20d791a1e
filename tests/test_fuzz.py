"""Fuzzing the HTTP API with hypothesis: structured-but-wrong bodies and random headers on the chat,
count_tokens and embeddings endpoints never get a 5xx, and every refusal is an error body in the
caller's protocol. Bounded: a fixed number of examples per endpoint, no example database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .servers import ServerThread

MODELS = st.sampled_from(["gpt-4.1", "claude-sonnet", "mock", "local-llama", "embed-small", "embed-gemini",
                          "oai/gpt-4o", "ant/claude-x", "gem/gemini-2.5-flash", "no-such-model", ""])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "developer", "function", "", 7, None])
BLOCK_TYPES = st.sampled_from(["text", "image", "image_url", "tool_use", "tool_result", "thinking", "document",
                               "input_audio", "file", "nonsense"])
BLOCK = st.fixed_dictionaries({"type": BLOCK_TYPES}, optional={
    "text": JSON, "image_url": JSON, "source": JSON, "id": JSON, "name": JSON, "input": JSON,
    "tool_use_id": JSON, "content": JSON, "thinking": JSON, "signature": JSON})
CONTENT = st.one_of(st.text(max_size=30), st.lists(st.one_of(BLOCK, JSON), max_size=3), JSON)
MESSAGE = st.one_of(st.fixed_dictionaries({"role": ROLES}, optional={
    "content": CONTENT, "tool_calls": JSON, "tool_call_id": JSON, "name": JSON}), JSON)
CHAT = st.fixed_dictionaries({}, optional={
    "model": st.one_of(MODELS, JSON), "messages": st.one_of(st.lists(MESSAGE, max_size=4), JSON),
    "max_tokens": st.one_of(st.integers(-5, 10**7), JSON), "max_completion_tokens": JSON,
    "stream": st.one_of(st.booleans(), JSON), "stream_options": JSON,
    "tools": st.one_of(st.lists(JSON, max_size=3), JSON),
    "tool_choice": JSON, "system": st.one_of(st.text(max_size=20), st.lists(BLOCK, max_size=2), JSON),
    "temperature": JSON, "thinking": JSON, "reasoning_effort": JSON, "response_format": JSON,
    "metadata": JSON, "stop": JSON, "n": JSON})
EMBEDDINGS = st.fixed_dictionaries({}, optional={
    "model": st.one_of(MODELS, JSON), "input": st.one_of(st.text(max_size=20), st.lists(st.text(max_size=8)), JSON),
    "encoding_format": st.one_of(st.sampled_from(["float", "base64", "x"]), JSON),
    "dimensions": st.one_of(st.integers(-3, 5000), JSON)})
HEADER_NAMES = st.sampled_from(["anthropic-version", "anthropic-beta", "content-type", "x-request-id", "authorization",
                                "x-api-key", "accept", "x-forwarded-for", "x-stainless-retry-count", "x-fuzz"])
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
HEADERS = st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4)
BODIES = st.one_of(CHAT.map(lambda b: json.dumps(b).encode()), JSON.map(lambda b: json.dumps(b).encode()),
                   st.binary(max_size=64))
FUZZ = settings(max_examples=80, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(gateway: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=15) as c:
        yield c


def check(response: httpx.Response, anthropic: bool) -> None:
    """Never a 5xx; an error is the caller's protocol's error body."""
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return
    body = response.json()
    assert "Traceback" not in response.text
    if anthropic:
        assert body["type"] == "error" and isinstance(body["error"]["message"], str)
        assert isinstance(body["error"]["type"], str)
    else:
        assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["type"], str)


def post(client: httpx.Client, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    headers = {**headers, "content-type": headers.get("content-type", "application/json")}
    return client.post(path, content=body, headers=headers)


def anthropic_caller(path: str, headers: dict[str, str]) -> bool:
    return path.startswith("/v1/messages") or ("anthropic-version" in headers and not path.startswith("/v1/chat/")
                                               and path != "/v1/embeddings")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_chat_endpoints(client: httpx.Client, path: str) -> None:
    @FUZZ
    @given(body=st.one_of(CHAT.map(lambda b: json.dumps(b).encode()), BODIES), headers=HEADERS)
    def run(body: bytes, headers: dict[str, str]) -> None:
        check(post(client, path, body, headers), anthropic_caller(path, headers))

    run()


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/chat/completions/count_tokens"])
def test_count_tokens_endpoints(client: httpx.Client, path: str) -> None:
    @FUZZ
    @given(body=BODIES, headers=HEADERS)
    def run(body: bytes, headers: dict[str, str]) -> None:
        check(post(client, path, body, headers), anthropic_caller(path, headers))

    run()


def test_embeddings_endpoint(client: httpx.Client) -> None:
    @FUZZ
    @given(body=st.one_of(EMBEDDINGS.map(lambda b: json.dumps(b).encode()), BODIES), headers=HEADERS)
    def run(body: bytes, headers: dict[str, str]) -> None:
        check(post(client, "/v1/embeddings", body, headers), False)

    run()


def test_fuzzed_chat_requests_reach_the_upstream_sometimes(client: httpx.Client) -> None:
    """The fuzzer is not only bouncing off the first check: valid-enough bodies get answers."""
    statuses: list[int] = []

    @FUZZ
    @given(body=CHAT, model=st.sampled_from(["gpt-4.1", "mock"]))
    def run(body: dict[str, Any], model: str) -> None:
        body = {**body, "model": model, "messages": [{"role": "user", "content": "hi"}]}
        body.pop("stream", None)
        r = client.post("/v1/chat/completions", json=body)
        check(r, False)
        statuses.append(r.status_code)

    run()
    assert 200 in statuses and any(400 <= s < 500 for s in statuses)

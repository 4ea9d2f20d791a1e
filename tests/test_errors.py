"""Every error a client can meet comes back in its own protocol with the right status — never a 500
with a stack trace — whether the gateway produced it or the upstream did."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccm_gateway.mock import MockUpstream

from .servers import ServerThread


@dataclass(frozen=True)
class Dialect:
    name: str
    path: str
    headers: dict[str, str]

    def body(self, model: str = "", **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], **extra}
        if model:
            body["model"] = model
        if self.name == "anthropic":
            body.setdefault("max_tokens", 16)
        return body

    def model(self, kind: str) -> str:
        return {"openai": "gpt-4.1", "anthropic": "claude-sonnet"}[self.name] if kind == "ok" else kind

    def error(self, response: httpx.Response) -> dict[str, Any]:
        """Asserts the body is this dialect's error shape; returns the inner error object."""
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        if self.name == "anthropic":
            assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        else:
            assert set(body["error"]) == {"message", "type", "param", "code"}
        assert "Traceback" not in response.text
        return body["error"]


OPENAI = Dialect("openai", "/v1/chat/completions", {})
ANTHROPIC = Dialect("anthropic", "/v1/messages", {"anthropic-version": "2023-06-01"})
BOTH = pytest.mark.parametrize("d", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])


@pytest.fixture
def post(gateway: ServerThread) -> Iterator[Any]:
    with httpx.Client(base_url=gateway.base_url, timeout=15) as client:

        def send(d: Dialect, body: Any = None, content: bytes | None = None, **kw: Any) -> httpx.Response:
            headers = {**d.headers, **kw.pop("headers", {})}
            if content is not None:
                return client.post(d.path, content=content, headers=headers, **kw)
            return client.post(d.path, json=body, headers=headers, **kw)

        yield send


def sse_events(text: str) -> list[tuple[str | None, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        name = None
        data = ""
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        events.append((name, data))
    return events


@BOTH
def test_unknown_model_is_404(d: Dialect, post: Any) -> None:
    r = post(d, d.body("no-such-model"))
    assert r.status_code == 404
    err = d.error(r)
    assert "no-such-model" in err["message"]
    if d is OPENAI:
        assert err["code"] == "model_not_found"
    else:
        assert err["type"] == "not_found_error"


@BOTH
def test_malformed_json_is_400(d: Dialect, post: Any) -> None:
    r = post(d, content=b'{"model": "gpt-4.1", "messages": [')
    assert r.status_code == 400
    assert "not valid JSON" in d.error(r)["message"]


@BOTH
@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("model", 42, "a string"), ("messages", {"role": "user"}, "an array"), ("stream", "yes", "a boolean")],
)
def test_wrong_type_is_400_naming_the_field(d: Dialect, post: Any, field: str, value: Any, expected: str) -> None:
    body = d.body(d.model("ok"))
    body[field] = value
    r = post(d, body)
    assert r.status_code == 400
    err = d.error(r)
    assert err["message"].startswith(f"{field}: expected {expected}")
    if d is OPENAI:
        assert err["param"] == field


@BOTH
def test_missing_required_fields_are_400_naming_the_field(d: Dialect, post: Any) -> None:
    r = post(d, {"messages": []})
    assert r.status_code == 400 and d.error(r)["message"] == "model: field required"
    r = post(d, {"model": d.model("ok")})
    assert r.status_code == 400 and d.error(r)["message"] == "messages: field required"


def test_anthropic_requires_max_tokens(post: Any) -> None:
    r = post(ANTHROPIC, {"model": "claude-sonnet", "messages": []})
    assert r.status_code == 400 and ANTHROPIC.error(r)["message"] == "max_tokens: field required"


@BOTH
def test_non_object_body_is_400(d: Dialect, post: Any) -> None:
    for junk in (b"[1, 2]", b'"text"', b"", b"null", b"\xff\xfe"):
        r = post(d, content=junk)
        assert r.status_code == 400, junk
        d.error(r)


@BOTH
def test_body_over_limit_is_413(d: Dialect, post: Any) -> None:
    big = d.body(d.model("ok"))
    big["messages"][0]["content"] = "x" * (300 * 1024)  # the test gateway allows 256 KiB
    r = post(d, big)
    assert r.status_code == 413
    err = d.error(r)
    assert err["type"] == ("request_too_large" if d is ANTHROPIC else "invalid_request_error")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds on bytes received too
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 8192
        yield b'"}]}'

    r = post(d, content=chunked())
    assert r.status_code == 413
    d.error(r)


@BOTH
def test_upstream_connection_failure_is_502(d: Dialect, post: Any) -> None:
    r = post(d, d.body("unreachable" if d is OPENAI else "unreachable-claude"))
    assert r.status_code == 502
    assert "cannot reach upstream" in d.error(r)["message"]


@BOTH
def test_upstream_timeout_before_first_byte_is_504(d: Dialect, post: Any) -> None:
    r = post(d, d.body(d.model("ok") + "+ttfb_ms=2500", stream=True))  # first_byte is 1 s in tests
    assert r.status_code == 504
    err = d.error(r)
    assert err["type"] == ("timeout_error" if d is ANTHROPIC else "timeout")


def test_non_streaming_deadline_is_504(post: Any) -> None:
    r = post(OPENAI, OPENAI.body("gpt-4.1+ttfb_ms=5000"))  # whole-answer deadline is 4 s in tests
    assert r.status_code == 504


@BOTH
@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503, 529])
def test_upstream_error_in_callers_protocol_passes_through_unchanged(
    d: Dialect, post: Any, upstream: MockUpstream, status: int
) -> None:
    model = d.model("ok") + f"+status={status}"
    r = post(d, d.body(model))
    direct = httpx.post(  # what the upstream itself answers for the same request
        upstream.base_url + d.path, headers=d.headers,
        json=d.body(("gpt-4.1-2025-04-14" if d is OPENAI else "claude-sonnet-4-5") + f"+status={status}"),
    )
    assert r.status_code == direct.status_code == status
    assert r.json() == direct.json()
    if status == 429:
        assert r.headers["retry-after"] == "1"


@BOTH
def test_upstream_error_in_another_shape_is_reshaped(d: Dialect, post: Any) -> None:
    r = post(d, d.body(d.model("ok") + "+status=502+error_body=html"))
    assert r.status_code == 502
    err = d.error(r)
    assert "returned HTTP 502" in err["message"] and "<html" not in r.text


def test_sdks_raise_their_own_error_classes(gateway: ServerThread) -> None:
    oai = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="x", max_retries=0, timeout=10)
    ant = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=10)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=msgs)
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="gpt-4.1+status=429", messages=msgs)
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.create(model="nope", max_tokens=5, messages=msgs)
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.create(model="claude-sonnet", max_tokens="many", messages=msgs)  # type: ignore[arg-type]
    with pytest.raises(anthropic.InternalServerError) as info:
        ant.messages.create(model="claude-sonnet+status=529", max_tokens=5, messages=msgs)
    assert info.value.status_code == 529


@BOTH
def test_stream_cut_off_upstream_ends_with_an_error_event(d: Dialect, post: Any) -> None:
    r = post(d, d.body(d.model("ok") + "+truncate=3", stream=True))
    assert r.status_code == 200
    events = sse_events(r.text)
    name, data = events[-1]
    if d is ANTHROPIC:
        assert name == "error" and json.loads(data)["type"] == "error"
        assert all(n != "message_stop" for n, _ in events)
    else:
        assert "error" in json.loads(data)
        assert all(data != "[DONE]" for _, data in events)


@BOTH
def test_stalled_stream_ends_with_a_timeout_error_event(d: Dialect, post: Any) -> None:
    r = post(d, d.body(d.model("ok") + "+chunks=4+delay_ms=2500", stream=True))  # idle limit 1 s
    assert r.status_code == 200
    name, data = sse_events(r.text)[-1]
    error = json.loads(data)["error"]
    assert "stopped sending" in error["message"]
    if d is ANTHROPIC:
        assert name == "error" and error["type"] == "timeout_error"


def test_anthropic_sdk_raises_on_a_cut_off_stream(gateway: ServerThread) -> None:
    ant = anthropic.Anthropic(base_url=gateway.base_url, api_key="x", max_retries=0, timeout=10)
    with pytest.raises(anthropic.APIStatusError), ant.messages.stream(
        model="claude-sonnet+truncate=4", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        stream.get_final_message()


@BOTH
def test_wrong_method_and_unknown_endpoint(d: Dialect, gateway: ServerThread) -> None:
    r = httpx.get(gateway.base_url + d.path, headers=d.headers)
    assert r.status_code == 405
    d.error(r)
    r = httpx.post(gateway.base_url + "/v1/nothing-here", headers=d.headers, json={})
    assert r.status_code == 404
    d.error(r)


def test_provider_without_key_explains_itself(post: Any) -> None:
    r = post(OPENAI, OPENAI.body("needs-key"))
    assert r.status_code == 404
    assert "no API key configured" in OPENAI.error(r)["message"]


def test_protocol_mismatch_is_translated(post: Any) -> None:
    r = post(ANTHROPIC, ANTHROPIC.body("gpt-4.1"))  # an Anthropic client, an OpenAI upstream
    assert r.status_code == 200
    assert r.json()["type"] == "message" and r.json()["content"][0]["type"] == "text"


@BOTH
def test_junk_never_yields_a_500(d: Dialect, post: Any) -> None:
    bodies: list[Any] = [
        {"model": None, "messages": []}, {"model": "", "messages": []}, {"model": ["x"]},
        {"model": "gpt-4.1", "messages": None}, {"model": "gpt-4.1", "messages": [], "max_tokens": "1"},
        {"model": "mock/mock-1+status=abc", "messages": [], "max_tokens": 1}, {"model": "/", "messages": []},
        {"model": "oai/", "messages": [], "max_tokens": 1}, {"model": "x" * 5000, "messages": []},
    ]
    for body in bodies:
        r = post(d, body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        d.error(r)

"""The mock upstream's fault directives (ccm_gateway/mock): what the resilience tests inject — error statuses
with wait headers and typed bodies, fail-first counters, connection resets, stalls, cut-off streams, slow
drips — checked directly against the loopback mock with aiohttp, for OpenAI, Anthropic and Gemini paths."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from ccm_gateway.mock import MockUpstream, parse_plan
from ccm_gateway.resilience import Outcome, classify, retry_after

pytestmark = pytest.mark.timeout(60)

OPENAI, ANTHROPIC = "/v1/chat/completions", "/v1/messages"
PATHS = pytest.mark.parametrize("path", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])
USER = [{"role": "user", "content": "hi"}]
TIMEOUT = aiohttp.ClientTimeout(total=20)




def run(scenario: Callable[[aiohttp.ClientSession], Awaitable[None]]) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            await scenario(session)

    asyncio.run(main())


def request(mock: MockUpstream, session: aiohttp.ClientSession, path: str, model: str,
            stream: bool = False) -> Any:
    body: dict[str, Any] = {"model": model, "messages": USER, "stream": stream}
    headers = {}
    if path == ANTHROPIC:
        body["max_tokens"] = 16
        headers["anthropic-version"] = "2023-06-01"
    return session.post(mock.base_url + path, json=body, headers=headers)


def gemini_request(mock: MockUpstream, session: aiohttp.ClientSession, model: str, stream: bool = False) -> Any:
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return session.post(f"{mock.base_url}/v1beta/models/{model}:{action}", headers={"x-goog-api-key": "k"},
                        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})


def terminated(path: str, raw: bytes) -> bool:
    return raw.endswith(b"data: [DONE]\n\n") if path == OPENAI else raw.endswith(b'{"type":"message_stop"}\n\n')


async def wait_closed(mock: MockUpstream) -> None:
    for _ in range(100):  # bounded: 5 s
        if mock.open_streams == 0:
            return
        await asyncio.sleep(0.05)


# -- parsing -----------------------------------------------------------------------------------


def test_new_directives_parse() -> None:
    plan = parse_plan("m+status=429+retry_after=3+retry_after_ms=2500+ratelimit_reset=2026-01-01T00%3A00%3A05%2B00%3A00"
                      "+error_type=insufficient_quota+fail_first=2")
    assert (plan.model, plan.status, plan.retry_after, plan.retry_after_ms, plan.error_type, plan.fail_first) == (
        "m", 429, 3, 2500, "insufficient_quota", 2)
    assert plan.ratelimit_reset == "2026-01-01T00:00:05+00:00"
    plan = parse_plan("m+fault=reset+stall_first_ms=5+reset_after=4+stall_after=2+stall_ms=9+drip_bytes=3")
    assert (plan.fault, plan.stall_first_ms, plan.reset_after, plan.stall_after, plan.stall_ms, plan.drip_bytes) == (
        "reset", 5, 4, 2, 9, 3)
    healthy = parse_plan("m+status=503+fail_first=1+ttfb_ms=5+delay_ms=7").healthy()
    assert (healthy.status, healthy.fail_first, healthy.ttfb_ms, healthy.delay_ms) == (200, None, 0, 7)


@pytest.mark.parametrize(("model", "message"), [
    ("m+fault=explode", "'fault' must be one of reset"),
    ("m+retry_after=-1", "'retry_after' must be 0..86400"),
    ("m+stall_ms=700000+stall_after=1", "'stall_ms' must be 0..600000"),
    ("m+drip_bytes=0", "'drip_bytes' must be 1..1048576"),
    ("m+fail_first=0+status=503", "'fail_first' must be 1..1000000"),
    ("m+fail_first=2", "'fail_first' needs an error status or a fault"),
    ("m+retry_after=2", "need an error status"),
    ("m+error_type=insufficient_quota", "need an error status"),
    ("m+status=400+error_type=bad%20name", "'error_type' must be a name"),
    ("m+stall_after=2", "'stall_after' and 'stall_ms' go together"),
    ("m+status=429+ratelimit_reset=", "'ratelimit_reset' must be 1..64 printable characters"),
])
def test_bad_directives_are_refused(model: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_plan(model)


def test_a_bad_directive_is_a_native_400(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with request(mock, session, ANTHROPIC, "m+fault=explode") as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["type"] == "error" and "fault" in body["error"]["message"]

    run(scenario)


# -- error responses ---------------------------------------------------------------------------


@PATHS
def test_retry_after_headers(mock: MockUpstream, path: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with request(mock, session, path, "m+status=429") as resp:
            assert resp.status == 429 and resp.headers["retry-after"] == "1"  # the default stays
        async with request(mock, session, path, "m+status=429+retry_after=7") as resp:
            assert resp.headers["retry-after"] == "7" and retry_after(resp.headers) == 7.0
        async with request(mock, session, path, "m+status=503+retry_after_ms=1500") as resp:
            assert resp.status == 503 and resp.headers["retry-after-ms"] == "1500"
            assert "retry-after" not in resp.headers and retry_after(resp.headers) == 1.5

    run(scenario)


def test_ratelimit_reset_headers(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with request(mock, session, OPENAI, "m+status=429+ratelimit_reset=6m0s+retry_after=0") as resp:
            assert resp.headers["x-ratelimit-reset-requests"] == "6m0s"
            assert resp.headers["x-ratelimit-remaining-requests"] == "0"
            del_retry = {k.lower(): v for k, v in resp.headers.items() if k.lower() != "retry-after"}
            assert retry_after(del_retry) == 360.0
        stamp = "2023-11-14T22:13:32Z"
        async with request(mock, session, ANTHROPIC, f"m+status=429+ratelimit_reset={stamp}") as resp:
            assert resp.headers["anthropic-ratelimit-requests-reset"] == stamp
            assert resp.headers["anthropic-ratelimit-requests-remaining"] == "0"
            assert "x-ratelimit-reset-requests" not in resp.headers

    run(scenario)


def test_error_types(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with request(mock, session, OPENAI, "m+status=429+error_type=insufficient_quota") as resp:
            raw = await resp.read()
            error = json.loads(raw)["error"]
            assert error["type"] == error["code"] == "insufficient_quota"
            assert classify(resp.status, raw) is Outcome.DEAD_KEY
        async with request(mock, session, OPENAI, "m+status=400+error_type=context_length_exceeded") as resp:
            raw = await resp.read()
            error = json.loads(raw)["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
            assert classify(resp.status, raw) is Outcome.CLIENT_ERROR
        async with request(mock, session, ANTHROPIC, "m+status=529") as resp:
            raw = await resp.read()
            assert json.loads(raw)["error"]["type"] == "overloaded_error"
            assert classify(resp.status, raw) is Outcome.FAILURE
        async with request(mock, session, ANTHROPIC, "m+status=500+error_type=overloaded_error") as resp:
            assert (await resp.json())["error"]["type"] == "overloaded_error"
        async with request(mock, session, ANTHROPIC, "m+status=402+error_type=billing_error") as resp:
            assert classify(resp.status, await resp.read()) is Outcome.DEAD_KEY

    run(scenario)


def test_gemini_error_headers_and_reason(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with gemini_request(mock, session, "gemini-x+status=429+retry_after=4+error_type=RATE_LIMIT_EXCEEDED"
                                  ) as resp:
            assert resp.status == 429 and resp.headers["retry-after"] == "4"
            assert (await resp.json())["error"]["details"][0]["reason"] == "RATE_LIMIT_EXCEEDED"

    run(scenario)


# -- fail_first and counters -------------------------------------------------------------------


@PATHS
def test_fail_first_then_served(mock: MockUpstream, path: str) -> None:
    model = f"ff-{path[-4:]}+status=503+fail_first=2"

    async def scenario(session: aiohttp.ClientSession) -> None:
        statuses = []
        for _ in range(4):
            async with request(mock, session, path, model) as resp:
                statuses.append(resp.status)
                await resp.read()
        assert statuses == [503, 503, 200, 200]
        assert mock.hits(model) == 4 and mock.hits(model + "+x=1") == 0
        async with request(mock, session, path, model, stream=True) as resp:
            assert resp.status == 200 and terminated(path, await resp.read())  # streams are served too

    run(scenario)


def test_fail_first_counts_exact_model_strings_per_instance(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with request(mock, session, OPENAI, "fx+status=500+fail_first=1") as resp:
            assert resp.status == 500
        async with request(mock, session, OPENAI, "fx+fail_first=1+status=500") as resp:
            assert resp.status == 500  # another spelling is another counter
        async with request(mock, session, OPENAI, "fx+status=500+fail_first=1") as resp:
            assert resp.status == 200
        async with MockUpstream() as other, session.post(  # a fresh instance starts from zero
                other.base_url + OPENAI, json={"model": "fx+status=500+fail_first=1", "messages": USER}) as resp:
            assert resp.status == 500
        mock.reset_counters()
        assert mock.hits("fx+status=500+fail_first=1") == 0
        async with request(mock, session, OPENAI, "fx+status=500+fail_first=1") as resp:
            assert resp.status == 500  # armed again

    run(scenario)


def test_gemini_fail_first(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        statuses = []
        for _ in range(2):
            async with gemini_request(mock, session, "gemini-ff+status=503+fail_first=1") as resp:
                statuses.append(resp.status)
        assert statuses == [503, 200] and mock.hits("gemini-ff+status=503+fail_first=1") == 2

    run(scenario)


# -- connection faults -------------------------------------------------------------------------


@PATHS
def test_fault_reset_gives_no_response(mock: MockUpstream, path: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ClientConnectionError):  # reset by peer / disconnected, never a status
            async with request(mock, session, path, "m+fault=reset"):
                pass
        with pytest.raises(aiohttp.ClientConnectionError):
            async with request(mock, session, path, "m+fault=reset", stream=True):
                pass
        model = f"rf-{path[-4:]}+fault=reset+fail_first=1"
        with pytest.raises(aiohttp.ClientConnectionError):
            async with request(mock, session, path, model):
                pass
        async with request(mock, session, path, model) as resp:
            assert resp.status == 200  # the server itself is fine

    run(scenario)


def test_gemini_fault_reset(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with gemini_request(mock, session, "gemini-x+fault=reset"):
                pass

    run(scenario)


@PATHS
def test_stall_first_sends_the_head_then_waits(mock: MockUpstream, path: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        for stream in (False, True):
            async with request(mock, session, path, "m+stall_first_ms=1500", stream=stream) as resp:
                assert resp.status == 200  # the head is here …
                first = asyncio.ensure_future(resp.content.read(1))
                done, _ = await asyncio.wait({first}, timeout=0.3)
                assert not done  # … the body is not
                assert await first
                rest = await resp.read()
            if stream:
                assert terminated(path, rest)
            else:
                assert json.loads(b"{" + rest)["model"] == "m"

    run(scenario)


@PATHS
def test_reset_after_cuts_the_stream(mock: MockUpstream, path: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        events: list[bytes] = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async with request(mock, session, path, "m+chunks=5+reset_after=3", stream=True) as resp:
                assert resp.status == 200
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n\n")
                    events += complete
        assert len(events) == 3 and not any(b"[DONE]" in e or b"message_stop" in e for e in events)
        assert mock.streams[-1].reset and mock.streams[-1].sent == 3

    run(scenario)


@PATHS
def test_stall_after_pauses_once_then_finishes(mock: MockUpstream, path: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with request(mock, session, path, "m+chunks=4+stall_after=2+stall_ms=1500", stream=True) as resp:
            for _ in range(2):
                assert (await resp.content.readuntil(b"\n\n")).endswith(b"\n\n")
            third = asyncio.ensure_future(resp.content.readuntil(b"\n\n"))
            done, _ = await asyncio.wait({third}, timeout=0.3)
            assert not done  # stalled after two events
            assert (await third).endswith(b"\n\n")
            assert terminated(path, await resp.read())

    run(scenario)


@PATHS
def test_drip_bytes_splits_events_but_keeps_the_stream(mock: MockUpstream, path: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        async with request(mock, session, path, "m+chunks=3+text=abcdef", stream=True) as resp:
            plain = await resp.read()
        async with request(mock, session, path, "m+chunks=3+text=abcdef+drip_bytes=7", stream=True) as resp:
            dripped = await resp.read()

        def content(raw: bytes) -> list[Any]:
            out = []
            for event in raw.split(b"\n\n"):
                data = event.rpartition(b"data: ")[2]
                if data and data != b"[DONE]":
                    body = json.loads(data)
                    body.pop("id", None)
                    if "message" in body:
                        body["message"].pop("id", None)
                    out.append(body.get("choices") or body.get("delta") or body["type"])
            return out

        assert content(dripped) == content(plain) and terminated(path, dripped)
        async with request(mock, session, path, "m+drip_bytes=10+delay_ms=100", stream=True) as resp:
            first = await resp.content.readany()
            assert b"\n\n" not in first and len(first) < 100  # a piece of the first event, not the event
        await wait_closed(mock)
        assert mock.open_streams == 0 and mock.streams[-1].reader_left

    run(scenario)


# -- the reader leaving ------------------------------------------------------------------------


@PATHS
def test_open_streams_drops_when_the_reader_leaves_a_stall(mock: MockUpstream, path: str) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        await wait_closed(mock)
        assert mock.open_streams == 0
        resp = await request(mock, session, path, "m+chunks=4+stall_after=1+stall_ms=30000", stream=True)
        await resp.content.readuntil(b"\n\n")
        assert mock.open_streams == 1
        resp.close()  # the reader leaves while the mock sleeps in its 30-second stall
        await wait_closed(mock)
        assert mock.open_streams == 0 and mock.streams[-1].reader_left and mock.streams[-1].sent == 1

        resp = await request(mock, session, path, "m+stall_first_ms=30000")  # a JSON answer stalled after its head
        assert resp.status == 200 and mock.open_streams == 1
        resp.close()
        await wait_closed(mock)
        assert mock.open_streams == 0

    run(scenario)


def test_gemini_stream_faults(mock: MockUpstream) -> None:
    async def scenario(session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with gemini_request(mock, session, "gemini-x+text=one%20two%20three+reset_after=1",
                                      stream=True) as resp:
                await resp.read()
        resp = await gemini_request(mock, session, "gemini-x+stall_first_ms=30000", stream=True)
        assert resp.status == 200 and mock.open_streams == 1
        resp.close()
        await wait_closed(mock)
        assert mock.open_streams == 0

    run(scenario)

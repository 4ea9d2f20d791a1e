"""The billing stage through real hypercorn: costs per provider (cache read/write and reasoning
included) in headers and in the ledger, pass-through and translated, JSON and streams; budgets per key
and per team in each protocol; the concurrent-budget race; and a client that hangs up mid-stream.

Upstream answers come from recorded scripts (``ccm_gateway/mock/scripts.py``) whose usage is known:
OpenAI prompt 120 (100 cached) + completion 40 (12 reasoning); Anthropic input 20 + cache write 30 +
cache read 100 + output 55; Gemini prompt 120 (100 cached) + candidates 28 + thoughts 12.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.billing.estimate import KEEP_BYTES, OutputCounter
from ccm_gateway.billing.meter import Meter
from ccm_gateway.dialects import Dialect
from ccm_gateway.exchange import STATE_KEY, Exchange
from ccm_gateway.middleware.billing import BillingMiddleware
from ccm_gateway.mock import MockUpstream

from .conftest import gateway_config
from .servers import ServerThread

RICH, POOR, MEMBER, CAPPED, RACER = (f"gk-{name}-key-0123456789" for name in ("rich", "poor", "member", "capped",
                                                                             "racer"))
ANT = {"anthropic-version": "2023-06-01"}
# Test prices (USD per million tokens). "oai/*" prices reasoning apart from output to show the split.
PRICES = {"oai/*": {"input": 2.0, "cache_read": 0.5, "output": 8.0, "reasoning": 10.0},
          "ant/*": {"same_as": "claude-sonnet-4-5"}, "gem/*": {"same_as": "gemini-2.5-pro"}}
OAI_COST = 1e-6 * (20 * 2.0 + 100 * 0.5 + 28 * 8.0 + 12 * 10.0)
ANT_COST = 1e-6 * (20 * 3.0 + 100 * 0.30 + 30 * 3.75 + 55 * 15.0)
GEM_COST = 1e-6 * (20 * 1.25 + 100 * 0.125 + 28 * 10.0 + 12 * 10.0)


def billing_config(upstream_url: str, ledger: Path, racer_budget: float = 100.0) -> dict[str, Any]:
    config = gateway_config(upstream_url)
    config["keys"] = [
        {"name": "rich", "key": RICH},
        {"name": "poor", "key": POOR, "budget_usd": 0.0, "budget_period": "1d"},
        {"name": "member", "key": MEMBER, "team": "frugal"},
        {"name": "capped", "key": CAPPED, "budget_usd": 100.0, "budget_period": "month"},
        {"name": "racer", "key": RACER, "budget_usd": racer_budget, "budget_period": "30d"},
    ]
    config["billing"] = {"teams": {"frugal": {"budget_usd": 0.0}}}
    # An OpenAI provider whose streams the gateway may not ask for usage (stream_options refused).
    config["providers"]["oai-plain"] = {**config["providers"]["oai"], "stream_options": False}
    config["pricing"] = {"models": {**PRICES, "oai-plain/*": PRICES["oai/*"]}}
    config["ledger"] = {"path": str(ledger), "flush_ms": 5}
    return config


class Billed:
    """A gateway with billing and a ledger, and a way to read the ledger's final records."""

    def __init__(self, upstream: MockUpstream, ledger: Path, racer_budget: float = 100.0) -> None:
        self.path = ledger
        config = load_config(billing_config(upstream.base_url, ledger, racer_budget), env={}, dotenv=False)
        self.app = create_app(config)
        self.server = ServerThread(self.app).start()
        self.meter = self.app.state.gateway.meter

    def final(self, request_id: str) -> dict[str, Any]:
        """The request's final record (the stage may finish a moment after the client's last byte)."""
        for _ in range(100):
            self.server.run(self.meter.ledger.flush())
            rows = self.rows("SELECT * FROM usage_records WHERE kind = 'final' AND request_id = ?", request_id)
            if rows:
                assert len(rows) == 1
                return rows[0]
            threading.Event().wait(0.05)
        raise AssertionError(f"no final record for {request_id}")

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, args)]


@pytest.fixture(scope="module")
def billed(upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Billed]:
    gw = Billed(upstream, tmp_path_factory.mktemp("billing") / "usage.sqlite3")
    yield gw
    gw.server.stop()


def call(gw: Billed, client: str, model: str, stream: bool, key: str = RICH, request_id: str | None = None,
         **extra: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", **({"x-request-id": request_id} if request_id else {})}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream,
                            **extra}
    if client == "anthropic":
        body.setdefault("max_tokens", 256)
        headers.update(ANT)
        return httpx.post(gw.server.base_url + "/v1/messages", json=body, headers=headers, timeout=10)
    return httpx.post(gw.server.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=10)


CASES = [  # (client protocol, model, cost): pass-through when client and provider match, else translated
    ("openai", "oai/m+script=oai_reasoning_tool", OAI_COST),
    ("anthropic", "oai/m+script=oai_reasoning_tool", OAI_COST),
    ("anthropic", "ant/m+script=ant_thinking_tool", ANT_COST),
    ("openai", "ant/m+script=ant_thinking_tool", ANT_COST),
    ("openai", "gem/m+script=gem_tools", GEM_COST),
    ("anthropic", "gem/m+script=gem_tools", GEM_COST),
]


@pytest.mark.parametrize(("client", "model", "expected"), CASES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cost_per_provider_is_exact_in_headers_and_ledger(billed: Billed, client: str, model: str, expected: float,
                                                          stream: bool) -> None:
    r = call(billed, client, model, stream)
    assert r.status_code == 200, r.text
    record = billed.final(r.headers["x-request-id"])
    assert record["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert record["estimated"] == "" and record["outcome"] == "ok"
    assert record["key"] == "rich" and record["provider"] == model.split("/")[0]
    if stream:  # a stream's head leaves before its tokens exist: only the reservation is in it
        assert "x-ccm-cost-usd" not in r.headers and float(r.headers["x-ccm-cost-reserved-usd"]) > 0
    else:
        assert float(r.headers["x-ccm-cost-usd"]) == pytest.approx(expected, rel=1e-6)
        assert r.headers["x-ccm-usage"].startswith("input=20, cache_read=100")


def test_unknown_model_is_recorded_with_cost_unknown(billed: Billed) -> None:
    r = call(billed, "openai", "local-llama", False)
    assert r.status_code == 200 and r.headers["x-ccm-cost-usd"] == "unknown"
    record = billed.final(r.headers["x-request-id"])
    assert record["cost_usd"] is None and record["price"] is None and record["output_tokens"] > 0
    assert billed.meter.unpriced["local/llama3.1:8b"] >= 1


def test_stream_without_usage_is_counted_locally_and_marked_estimated(billed: Billed) -> None:
    # No include_usage from the client, and a provider the gateway may not ask for it: no usage chunk.
    r = call(billed, "openai", "oai-plain/gpt-x+text=twenty%20characters%21", True)
    assert r.status_code == 200
    record = billed.final(r.headers["x-request-id"])
    assert record["estimated"] == "input,cache_read,cache_write,output,reasoning"
    assert record["output_tokens"] == 5  # "twenty characters!" is 18 characters → 5 tokens at 4 characters each
    assert record["cost_usd"] == pytest.approx(1e-6 * (record["input_tokens"] * 2.0 + 5 * 8.0))


def test_stream_without_include_usage_is_billed_the_providers_usage(billed: Billed) -> None:
    """The client did not ask for usage; the gateway did (P12): reported numbers, nothing estimated."""
    r = call(billed, "openai", "oai/m+script=oai_reasoning_tool", True)
    assert r.status_code == 200 and '"usage":{' not in r.text
    record = billed.final(r.headers["x-request-id"])
    assert record["estimated"] == "" and record["cost_usd"] == pytest.approx(OAI_COST, rel=1e-9)


@pytest.mark.parametrize(("client", "status", "kind"), [("openai", 429, "insufficient_quota"),
                                                        ("anthropic", 402, "billing_error")])
def test_key_over_budget_is_refused_in_the_callers_protocol(billed: Billed, client: str, status: int,
                                                            kind: str) -> None:
    before = len(billed.rows("SELECT id FROM usage_records"))
    r = call(billed, client, "ant/m+script=ant_text", False, key=POOR)
    assert r.status_code == status and r.headers["x-should-retry"] == "false"
    error = r.json()["error"]
    assert error["type"] == kind and "key poor" in error["message"]
    assert r.headers["x-ccm-budget-remaining-usd"] == "0.0"
    billed.server.run(billed.meter.ledger.flush())
    assert len(billed.rows("SELECT id FROM usage_records")) == before  # nothing was spent, nothing recorded


def test_team_budget_applies_to_its_keys(billed: Billed) -> None:
    r = call(billed, "openai", "gpt-4.1", False, key=MEMBER)
    assert r.status_code == 429 and "team frugal" in r.json()["error"]["message"]


def test_budgeted_key_may_not_use_unpriced_models(billed: Billed) -> None:
    r = call(billed, "anthropic", "local-llama", False, key=CAPPED)
    assert r.status_code == 403 and "has no price" in r.json()["error"]["message"]
    assert call(billed, "openai", "local-llama", False, key=RICH).status_code == 200  # no budget: allowed


def test_budgeted_key_sees_its_remaining_budget(billed: Billed) -> None:
    r = call(billed, "openai", "oai/m+script=oai_text", False, key=CAPPED)
    assert r.status_code == 200
    assert float(r.headers["x-ccm-budget-remaining-usd"]) == pytest.approx(100.0 - OAI_COST, abs=1e-9)


def test_twenty_concurrent_requests_with_budget_for_one(upstream: MockUpstream, billed: Billed,
                                                        tmp_path: Path) -> None:
    body_model = "oai/gpt-x+ttfb_ms=400+text=" + "word " * 15  # about as much output as the allowance
    probe = call(billed, "openai", body_model, False, max_tokens=20)
    reservation = float(probe.headers["x-ccm-cost-reserved-usd"])
    actual = float(probe.headers["x-ccm-cost-usd"])
    assert actual > reservation / 4  # so that 20 unguarded requests would overrun by far
    budget = 1.5 * reservation  # room for one request, not two
    gw = Billed(upstream, tmp_path / "race.sqlite3", racer_budget=budget)
    try:
        start = threading.Barrier(20)

        def one(_: int) -> int:
            start.wait(10)
            return call(gw, "openai", body_model, False, key=RACER, max_tokens=20).status_code

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(one, range(20)))
        assert set(statuses) <= {200, 429} and statuses.count(200) >= 1 and statuses.count(429) >= 1
        gw.server.run(gw.meter.ledger.flush())
        spent = gw.rows("SELECT COALESCE(SUM(cost_usd), 0) AS s FROM usage_records WHERE kind = 'final' "
                        "AND key = 'racer'")[0]["s"]
        assert spent == pytest.approx(statuses.count(200) * actual)
        assert spent <= budget + reservation
    finally:
        gw.server.stop()


def _sse_data(line: str) -> dict[str, Any]:
    return msgspec.json.decode(line[len("data: "):])


def test_client_hangup_mid_stream_is_charged_for_what_the_upstream_sent(billed: Billed,
                                                                        upstream: MockUpstream) -> None:
    model = "ant/claude-x+chunks=4+delay_ms=300+text=" + "abcd " * 8
    headers = {"authorization": f"Bearer {RICH}", "x-request-id": "hangup-mid-stream", **ANT}
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    input_tokens = None
    with httpx.stream("POST", billed.server.base_url + "/v1/messages", json=body, headers=headers, timeout=10) as r:
        for line in r.iter_lines():  # read up to the first text delta, then hang up
            if line.startswith("data: ") and '"message_start"' in line:
                input_tokens = _sse_data(line)["message"]["usage"]["input_tokens"]
            if '"text_delta"' in line:
                break
    record = billed.final("hangup-mid-stream")
    result = next(s for s in reversed(upstream.streams) if s.model == model.split("/", 1)[1])
    assert result.sent < result.total  # the upstream stream was cut when the client left
    assert record["outcome"] == "disconnected" and record["estimated"] == "output"
    assert record["input_tokens"] == input_tokens  # reported by message_start
    assert record["output_tokens"] >= 3  # the first delta's 10 characters, counted locally
    assert record["cost_usd"] == pytest.approx(1e-6 * (input_tokens * 3.0 + record["output_tokens"] * 15.0))


def test_client_that_stops_reading_is_charged_the_upstreams_reported_usage(billed: Billed,
                                                                           upstream: MockUpstream) -> None:
    model = "ant/claude-y+chunks=4+delay_ms=50+text=" + "efgh " * 8
    headers = {"authorization": f"Bearer {RICH}", "x-request-id": "slow-reader", **ANT}
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", billed.server.base_url + "/v1/messages", json=body, headers=headers, timeout=10) as r:
        lines = r.iter_lines()  # kept: a dropped iterator would close the response
        next(lines)  # the client reads one line only ...
        for _ in range(200):  # ... while the upstream finishes (bounded wait)
            done = [s for s in upstream.streams if s.model == model.split("/", 1)[1] and s.sent == s.total]
            if done:
                break
            threading.Event().wait(0.02)
        else:
            raise AssertionError("the upstream stream did not finish")
        record = billed.final("slow-reader")
    assert (record["estimated"], record["outcome"]) == ("", "ok"), str(record)
    assert record["output_tokens"] == 10  # the upstream's message_delta: 40 characters, not what the client read


def test_json_answer_without_usage_is_counted_from_its_text() -> None:
    """A compatible server that reports no usage: the held JSON body is counted, and the head says so."""
    config = load_config({"pricing": {"models": {"m": {"input": 1.0, "output": 2.0}}}}, env={}, dotenv=False)
    sent: list[dict[str, Any]] = []

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        ex = scope["state"][STATE_KEY]
        ex.attempts, ex.upstream_status, ex.deployment = 1, 200, "p/m"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"choices":[{"message":{"content":"sixteen chars!!!"}}]}',
                    "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def sink(message: dict[str, Any]) -> None:
        sent.append(message)

    async def scenario() -> Exchange:
        ex = Exchange(Dialect.OPENAI_CHAT)
        ex.body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [],
                 "state": {STATE_KEY: ex}}
        await BillingMiddleware(endpoint, Meter(config))(scope, None, sink)
        return ex

    ex = asyncio.run(scenario())
    headers = dict(sent[0]["headers"])
    assert ex.usage.output == 4 and ex.usage.input == len(ex.body) // 4  # 16 characters; the prompt estimate
    assert headers[b"x-ccm-usage-estimated"] == b"input,cache_read,cache_write,output,reasoning"
    assert float(headers[b"x-ccm-cost-usd"]) == pytest.approx(1e-6 * (ex.usage.input * 1.0 + 4 * 2.0))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body", "http.response.body"]


_OPENAI_STREAM = [*[b'data: {"choices":[{"delta":{"content":"abcdefgh"}}],"usage":null}\n\n'] * 3, b"data: [DONE]\n\n"]
_ANTHROPIC_END = (b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":2}}\n\n'
                  b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


@pytest.mark.parametrize(("chunks", "ended"), [
    (_OPENAI_STREAM, True),
    ([b"".join(_OPENAI_STREAM)], True),  # a whole stream in one read
    ([bytes([b]) for b in b"".join(_OPENAI_STREAM)], True),  # byte by byte: the terminator split up
    ([_ANTHROPIC_END], True),
    (_OPENAI_STREAM[:3], False),  # cut off before [DONE]
    ([*_OPENAI_STREAM[:3], b'data: {"error":{"message":"upstream stopped sending"}}\n\n'], False),
    ([_ANTHROPIC_END[:60], b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"}}\n\n'], False),
    ([], False),
])
def test_output_counter_tells_a_stream_that_ended_from_one_that_was_cut(chunks: list[bytes], ended: bool) -> None:
    counter = OutputCounter()
    for chunk in chunks:
        counter.feed(chunk)
    assert counter.ended is ended


def test_output_counter_counts_and_keeps_the_ending_across_its_keep_limit() -> None:
    """Past KEEP_BYTES the kept chunks are counted and dropped: the count and the stream's last bytes
    survive it."""
    counter = OutputCounter()
    event = b'data: {"choices":[{"delta":{"content":"' + b"x" * 1000 + b'"}}]}\n\n'
    n = KEEP_BYTES // len(event) + 5
    for _ in range(n):
        counter.feed(event)
    counter.feed(b"data: [DO")
    counter.feed(b"NE]\n\n")
    assert counter.ended
    assert counter.chars == 1000 * n
    counter.feed(b'data: {"choices":[{"delta":{"content":"' + b"y" * 300 + b'"}}]}\n\n')
    assert not counter.ended  # it is the stream's last bytes that must hold the terminator


def test_client_that_leaves_before_the_first_chunk_is_recorded_as_disconnected(billed: Billed) -> None:
    """The upstream answered 200 and the gateway waits for its first chunk (the commit point) when the
    client hangs up: the record says the upstream was reached ("disconnected"), not "no_upstream"
    (which would refund a request the provider may bill)."""
    model = "ant/claude-w+stall_first_ms=3000"
    headers = {"authorization": f"Bearer {RICH}", "x-request-id": "left-before-first-chunk", **ANT}
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):  # nothing reaches the client before the first chunk
        httpx.post(billed.server.base_url + "/v1/messages", json=body, headers=headers,
                   timeout=httpx.Timeout(10, read=0.5))
    record = billed.final("left-before-first-chunk")
    assert record["outcome"] == "disconnected", str(record)

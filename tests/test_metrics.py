"""``GET /metrics`` after real requests through the gateway: names, labels and values."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from ccm_gateway import ConfigError, Exchange, create_app, load_config
from ccm_gateway.dialects import Dialect
from ccm_gateway.mock import MockUpstream
from ccm_gateway.observability.metrics import MAX_ADHOC_ROUTES, Metrics

from .conftest import CANARIES, gateway_config
from .redis_server import RedisServer
from .servers import ServerThread, start_gateway_process

ALICE = "gw-alice-metrics-0123456789"
BOB = "gw-bob-metrics-0123456789"
ADMIN = "admin-metrics-key-0123456789"
GPT = ("gpt-4.1", "oai", "gpt-4.1-2025-04-14")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, sample: str, **labels: str) -> float:
    return found.get((sample, tuple(sorted(labels.items()))), 0.0)


def total(found: dict, sample: str, **labels: str) -> float:
    """The sum over every sample named ``sample`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in found.items() if n == sample and want <= set(lab))


def deployment(route: str, provider: str, model: str) -> dict[str, str]:
    return {"route": route, "provider": provider, "model": model}


@pytest.fixture(scope="module")
def served(upstream: MockUpstream) -> Iterator[ServerThread]:
    raw = gateway_config(upstream.base_url)
    raw["models"].append({"name": "broken", "targets": [{"provider": "oai", "model": "gpt-4.1+status=503"}]})
    raw["keys"] = [{"name": "alice", "key": ALICE, "budget_usd": 100.0},
                   {"name": "bob", "key": BOB, "rpm": 1}]
    raw["billing"] = {"allow_unpriced": True}  # "broken" has no price
    app = create_app(load_config(raw, env={}, dotenv=False))
    with ServerThread(app) as server:
        yield server


@pytest.fixture(scope="module")
def scraped(served: ServerThread) -> tuple[dict, dict[str, Any]]:
    """One of each: JSON, stream, translated, an upstream error, a 401 and a 429; then a scrape."""
    seen: dict[str, Any] = {}
    oai = openai.OpenAI(base_url=served.base_url + "/v1", api_key=ALICE, max_retries=0)
    msgs = [{"role": "user", "content": "hello there"}]
    seen["json"] = oai.chat.completions.create(model="gpt-4.1", messages=msgs)
    chunks = list(oai.chat.completions.create(model="gpt-4.1", messages=msgs, stream=True,
                                              stream_options={"include_usage": True}))
    seen["stream"] = next(c.usage for c in chunks if c.usage is not None)
    ant = anthropic.Anthropic(base_url=served.base_url, api_key=ALICE, max_retries=0)
    seen["translated"] = ant.messages.create(model="gpt-4.1", max_tokens=50, messages=msgs)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="broken", messages=msgs)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.base_url + "/v1", api_key="gw-wrong-key-000000", max_retries=0) \
            .chat.completions.create(model="gpt-4.1", messages=msgs)
    bob = openai.OpenAI(base_url=served.base_url + "/v1", api_key=BOB, max_retries=0)
    bob.chat.completions.create(model="gpt-4.1", messages=msgs)
    with pytest.raises(openai.RateLimitError):
        bob.chat.completions.create(model="gpt-4.1", messages=msgs)
    found = {}
    for _ in range(100):  # the last request's stage may finish a moment after its client has the answer
        r = httpx.get(served.base_url + "/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        seen["text"] = r.text
        found = samples(r.text)
        if value(found, "ccm_in_flight_requests") == 0 and total(found, "ccm_requests_total") == 7:
            break
        threading.Event().wait(0.05)
    return found, seen


def test_requests_counted_by_route_provider_model_dialect_status(scraped: tuple[dict, dict]) -> None:
    found, _ = scraped
    gpt = deployment(*GPT)
    assert value(found, "ccm_requests_total", **gpt, dialect="openai_chat", status="200") == 3  # alice ×2, bob
    assert value(found, "ccm_requests_total", **gpt, dialect="anthropic_messages", status="200") == 1
    assert value(found, "ccm_requests_total", route="broken", provider="oai", model="gpt-4.1+status=503",
                 dialect="openai_chat", status="503") == 1
    none = deployment("none", "none", "none")  # refused before a route was resolved
    assert value(found, "ccm_requests_total", **none, dialect="openai_chat", status="401") == 1
    assert value(found, "ccm_requests_total", **none, dialect="openai_chat", status="429") == 1
    assert total(found, "ccm_requests_total") == 7
    assert value(found, "ccm_rate_limit_rejections_total", dialect="openai_chat") == 1
    assert value(found, "ccm_in_flight_requests") == 0


def test_latency_histograms(scraped: tuple[dict, dict]) -> None:
    found, _ = scraped
    gpt = deployment(*GPT)
    assert total(found, "ccm_request_duration_seconds_count") == 7
    assert value(found, "ccm_request_duration_seconds_count", **gpt) == 4
    # Upstream and overhead: every request that reached an upstream (4 of gpt-4.1, 1 broken).
    assert total(found, "ccm_upstream_duration_seconds_count") == 5
    assert total(found, "ccm_overhead_duration_seconds_count") == 5
    assert 0 < value(found, "ccm_upstream_duration_seconds_sum", **gpt) <= value(
        found, "ccm_request_duration_seconds_sum", **gpt)
    overhead = value(found, "ccm_overhead_duration_seconds_sum", **gpt)
    assert math.isclose(overhead + value(found, "ccm_upstream_duration_seconds_sum", **gpt),
                        value(found, "ccm_request_duration_seconds_sum", **gpt), rel_tol=1e-6)
    # One stream: one time-to-first-token and one chunk-gap observation.
    assert value(found, "ccm_time_to_first_token_seconds_count", **gpt) == 1
    assert value(found, "ccm_stream_chunk_gap_seconds_count", **gpt) == 1
    assert value(found, "ccm_time_to_first_token_seconds_bucket", **gpt, le="+Inf") == 1


def test_tokens_and_cost_match_what_clients_were_told(scraped: tuple[dict, dict]) -> None:
    found, seen = scraped
    gpt = deployment(*GPT)
    json_usage, stream_usage, translated = seen["json"].usage, seen["stream"], seen["translated"].usage
    # bob's answer has the same usage as alice's JSON one (same request to the deterministic mock).
    output = 2 * json_usage.completion_tokens + stream_usage.completion_tokens + translated.output_tokens
    assert value(found, "ccm_tokens_total", **gpt, kind="output") == output
    prompt = 2 * json_usage.prompt_tokens + stream_usage.prompt_tokens + translated.input_tokens
    assert value(found, "ccm_tokens_total", **gpt, kind="input") == prompt
    cost = value(found, "ccm_cost_usd_total", **gpt)
    assert cost > 0
    # alice's budget gauge is read from the billing meter: 100 minus what alice's 3 answers cost.
    alice_cost = cost * 3 / 4  # all four answers have equal cost: same usage, same price
    left = value(found, "ccm_budget_remaining_usd", subject="key", name="alice")
    assert math.isclose(left, 100.0 - alice_cost, rel_tol=1e-9), (left, cost)


def test_process_gauges_and_no_secret_or_request_text(scraped: tuple[dict, dict]) -> None:
    found, seen = scraped
    assert value(found, "ccm_asyncio_tasks") >= 1
    assert value(found, "ccm_upstream_connections", provider="oai", state="idle") >= 1
    assert value(found, "ccm_upstream_connections", provider="oai", state="active") == 0
    text = seen["text"]
    for secret in (*CANARIES, ALICE, BOB, ADMIN, "hello there", "req_"):
        assert secret not in text


def test_metrics_can_require_the_admin_key(upstream: MockUpstream) -> None:
    raw = gateway_config(upstream.base_url)
    raw["admin"] = {"key": ADMIN}
    raw["metrics"] = {"require_admin_key": True}
    with ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as server:
        assert httpx.get(server.base_url + "/metrics", timeout=10).status_code == 401
        r = httpx.get(server.base_url + "/metrics", headers={"authorization": "Bearer " + ADMIN}, timeout=10)
        assert r.status_code == 200 and "# TYPE ccm_requests_total counter" in r.text
    raw["metrics"] = {"enabled": False}
    with ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as server:
        assert httpx.get(server.base_url + "/metrics", timeout=10).status_code == 404


def test_breaker_state_transitions_and_retries_after_real_failures(upstream: MockUpstream) -> None:
    """A deployment answering 503 trips its breaker while the other one serves: /metrics shows the open
    member (by provider/model#key, never its base URL), the transition and the retries."""
    raw = gateway_config(upstream.base_url)
    failing = {"provider": "oai", "model": "gpt-4.1+status=503", "weight": 1000}
    raw["models"].append({"name": "flaky", "targets": [failing, {"provider": "oai", "model": "gpt-4.1"}]})
    raw["resilience"] = {"retry": {"max_attempts": 2, "backoff_base": 0.001},
                         "breaker": {"consecutive_failures": 2, "open_base": 300, "max_ejected_share": 1.0}}
    with ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)
        for _ in range(8):  # the failing member has nearly all the weight: it is picked first until it opens
            client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "hi"}])
        text = httpx.get(server.base_url + "/metrics", timeout=10).text
    found = samples(text)
    assert value(found, "ccm_breaker_state", member="oai/gpt-4.1+status=503#k0", state="open") == 1
    assert value(found, "ccm_breaker_state", member="oai/gpt-4.1#k0", state="closed") == 1
    assert value(found, "ccm_breaker_transitions_total", **{"from": "closed", "to": "open"}) == 1
    assert total(found, "ccm_retries_total", route="flaky") >= 2
    assert upstream.base_url.split("//")[1] not in text  # members are named without their base URL


def _finished(route: str, deployment_label: str, attempts: int = 1, fallback: str | None = None) -> Exchange:
    ex = Exchange(Dialect.OPENAI_CHAT)
    ex.route, ex.deployment, ex.attempts, ex.fallback = route, deployment_label, attempts, fallback
    ex.upstream_time = 0.01
    return ex


def test_retries_and_fallbacks_counted() -> None:
    metrics = Metrics({"main", "backup"})
    metrics.record(_finished("main", "oai/m", attempts=3), 200, 0.02, None, False)
    metrics.record(_finished("main", "oai/m", attempts=1, fallback="backup"), 200, 0.02, None, False)
    metrics.record(_finished("main", "oai/m", attempts=1), 200, 0.02, None, False)
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in metrics.registry.collect() for s in family.samples}
    assert value(found, "ccm_retries_total", route="main", provider="oai", model="m") == 2
    assert value(found, "ccm_fallbacks_total", route="main", fallback="backup") == 1


def test_ad_hoc_route_labels_are_bounded() -> None:
    metrics = Metrics({"configured"})
    for i in range(MAX_ADHOC_ROUTES * 2):  # names that failed (a client's junk) never take a slot
        metrics.record(_finished(f"oai/junk-{i}", f"oai/junk-{i}"), 404, 0.01, None, False)
    for i in range(MAX_ADHOC_ROUTES + 20):  # clients choose ad-hoc names: past the bound they are "other"
        metrics.record(_finished(f"oai/model-{i}", f"oai/model-{i}"), 200, 0.01, None, False)
    metrics.record(_finished("configured", "oai/real"), 200, 0.01, None, False)
    routes = {s.labels["route"] for family in metrics.registry.collect() for s in family.samples
              if s.name == "ccm_requests_total"}
    assert len(routes) == MAX_ADHOC_ROUTES + 2  # the first ad-hoc names, "other" and the configured route
    assert {"other", "configured", "oai/model-0"} <= routes
    others = [s for family in metrics.registry.collect() for s in family.samples
              if s.name == "ccm_requests_total" and s.labels["route"] == "other"]
    assert sorted((s.labels["model"], s.value) for s in others) == [("other", 20), ("other", 64)]
    assert not any(r.startswith("oai/junk") for r in routes)


def served_per_worker(shared: Path) -> dict[str, float]:
    """{worker pid: ccm_requests_total it wrote} from the workers' metric files."""
    out: dict[str, float] = {}
    for path in shared.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        out[path.stem.rsplit("_", 1)[1]] = sum(v for key, v, *_ in values if json.loads(key)[1] == "ccm_requests_total")
    return out


def test_two_workers_count_together(tmp_path: Path) -> None:
    """``--workers 2``: each worker writes its own metric files; any worker's /metrics sums them."""
    config = tmp_path / "gw.toml"
    config.write_text('[providers.mock]\nkind = "mock"\n[[models]]\nname = "m"\n'
                      'targets = [{ provider = "mock", model = "mock-1+ttfb_ms=100" }]\n')
    shared = tmp_path / "prom"
    shared.mkdir()
    proc, base = start_gateway_process("--config", str(config), "--workers", "2", output=False,
                                       env={"PROMETHEUS_MULTIPROC_DIR": str(shared)})
    try:
        for _ in range(200):  # both workers up: each has made its counter file (bounded: ~20 s)
            if len(served_per_worker(shared)) == 2:
                break
            threading.Event().wait(0.1)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

        def call() -> None:
            with httpx.Client(timeout=10) as client:  # a connection each: either worker may accept it
                assert client.post(base + "/v1/chat/completions", json=body).status_code == 200

        sent = 0
        for _ in range(10):  # waves of concurrent requests until both workers have served some
            threads = [threading.Thread(target=call) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            sent += len(threads)
            per_worker = served_per_worker(shared)
            if len(per_worker) == 2 and all(per_worker.values()):
                break
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        found: dict = {}
        for _ in range(50):  # the last stage may finish a moment after its client has the answer
            found = samples(httpx.get(base + "/metrics", timeout=10).text)
            if total(found, "ccm_requests_total") == sent:
                break
            threading.Event().wait(0.05)
        assert value(found, "ccm_requests_total", route="m", provider="mock", model="mock-1+ttfb_ms=100",
                     dialect="openai_chat", status="200") == sent == sum(served_per_worker(shared).values())
    finally:
        proc.terminate()
        proc.wait(15)


def test_budget_and_fallback_gauges_with_redis(upstream: MockUpstream) -> None:
    """Budgets shared through Redis are read from Redis at scrape time (a team's key hashes under the
    team's tag); when Redis goes away the fallback gauges turn to 1 once a request found it down."""
    with RedisServer() as redis:
        raw = gateway_config(upstream.base_url)
        raw["state"] = {"backend": "redis", "url": redis.url, "timeout_ms": 200}
        raw["limits"] = {"rpm": 1000}
        raw["keys"] = [{"name": "dave", "key": ALICE, "team": "lab", "budget_usd": 50.0}]
        raw["billing"] = {"teams": {"lab": {"budget_usd": 80.0}}}
        app = create_app(load_config(raw, env={}, dotenv=False))
        with ServerThread(app) as server:
            client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=ALICE, max_retries=0)
            client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
            found: dict = {}
            for _ in range(100):  # settled in the stage's finally, a moment after the answer
                found = samples(httpx.get(server.base_url + "/metrics", timeout=10).text)
                if value(found, "ccm_cost_usd_total", **deployment(*GPT)) > 0 and \
                        value(found, "ccm_budget_remaining_usd", subject="team", name="lab") < 80:
                    break
                threading.Event().wait(0.05)
            cost = value(found, "ccm_cost_usd_total", **deployment(*GPT))
            assert cost > 0
            assert math.isclose(value(found, "ccm_budget_remaining_usd", subject="key", name="dave"), 50 - cost)
            assert math.isclose(value(found, "ccm_budget_remaining_usd", subject="team", name="lab"), 80 - cost)
            assert value(found, "ccm_redis_fallback_active", store="limits") == 0
            assert value(found, "ccm_redis_fallback_active", store="budgets") == 0
            redis.kill()
            client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
            found = samples(httpx.get(server.base_url + "/metrics", timeout=10).text)
            assert value(found, "ccm_redis_fallback_active", store="limits") == 1
            assert value(found, "ccm_redis_fallback_active", store="budgets") == 1


def test_metrics_config_is_checked(upstream: MockUpstream) -> None:
    raw = gateway_config(upstream.base_url)
    raw["metrics"] = {"require_admin_key": True}
    with pytest.raises(ConfigError) as err:
        load_config(raw, env={}, dotenv=False)
    assert any(line.startswith("metrics.require_admin_key:") for line in err.value.errors)
    raw = gateway_config(upstream.base_url)
    raw["logging"] = {"format": "xml"}
    with pytest.raises(ConfigError) as err:
        load_config(raw, env={}, dotenv=False)
    assert any("logging.format" in line for line in err.value.errors)


def test_in_flight_and_active_connections_during_a_stream(upstream: MockUpstream) -> None:
    app = create_app(load_config(gateway_config(upstream.base_url), env={}, dotenv=False))
    with ServerThread(app) as server, httpx.Client(timeout=10) as client:
        body = {"model": "gpt-4.1+chunks=3+delay_ms=800", "stream": True, "messages": []}  # < idle 1 s
        with client.stream("POST", server.base_url + "/v1/chat/completions", json=body) as r:
            chunks = r.iter_bytes()
            next(chunks)  # the stream has started and is waiting for its next chunk
            during = samples(httpx.get(server.base_url + "/metrics", timeout=10).text)
            list(chunks)
        assert value(during, "ccm_in_flight_requests") == 1
        assert value(during, "ccm_upstream_connections", provider="oai", state="active") == 1
        assert total(during, "ccm_requests_total") == 0  # counted when it ends
        after: dict = {}
        for _ in range(100):
            after = samples(httpx.get(server.base_url + "/metrics", timeout=10).text)
            if total(after, "ccm_requests_total") == 1:
                break
            threading.Event().wait(0.05)
        assert value(after, "ccm_in_flight_requests") == 0
        assert value(after, "ccm_upstream_connections", provider="oai", state="active") == 0
        assert value(after, "ccm_upstream_connections", provider="oai", state="idle") == 1
        name = body["model"]  # an ad-hoc route (one of the first seen): labelled by its name
        assert value(after, "ccm_stream_chunk_gap_seconds_count", **deployment(name, "oai", name)) == 1
        assert value(after, "ccm_stream_chunk_gap_seconds_bucket", **deployment(name, "oai", name), le="0.1") == 0


def test_refusals_before_any_stage_are_counted_and_logged(upstream: MockUpstream,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A 413 is answered by the exchange stage before the observe stage runs: it still reaches the
    request counter and the access log (abuse is what operators most need to see)."""
    raw = gateway_config(upstream.base_url, max_body_bytes=1000)
    with (ServerThread(create_app(load_config(raw, env={}, dotenv=False))) as server,
          caplog.at_level(logging.INFO, logger="ccm_gateway.access")):
        big = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(server.base_url + "/v1/chat/completions", json=big, timeout=10,
                       headers={"x-request-id": "too-big-1"})
        assert r.status_code == 413
        found = samples(httpx.get(server.base_url + "/metrics", timeout=10).text)
    none = {"route": "none", "provider": "none", "model": "none"}
    assert value(found, "ccm_requests_total", **none, dialect="openai_chat", status="413") == 1
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "ccm_gateway.access"]
    assert [(line["request_id"], line["status"]) for line in lines] == [("too-big-1", 413)]

"""The fault-injection matrix: the real gateway app in front of the loopback mock, which fails on request.

Each test builds its own gateway (its own breakers) with short timeouts and open times, so no test
depends on another's history. Two deployments ``a`` (preferred by weight) and ``b`` of one route;
faults ride in ``a``'s upstream model name. Both client dialects, pass-through and translated, for the
first cases.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from ccm_gateway import create_app, load_config, routing
from ccm_gateway.mock import MockUpstream

from .conftest import ANTHROPIC_KEY, CLOSED_PORT, OPENAI_KEY
from .servers import ServerThread
from .sse_checks import frames

# Healthy answers come well within these on a loaded CI machine; the stall faults (3 s) go well beyond.
TIMEOUTS = {"connect": 1.0, "first_byte": 1.5, "idle": 1.5, "deadline": 3.0}
# Short open times, no jitter, one probe success closes: the breaker's whole cycle fits in a test.
BREAKER = {"consecutive_failures": 3, "open_base": 1.0, "open_max": 8.0, "jitter": 0.0, "half_open_successes": 1}
FAST_RETRY = {"backoff_base": 0.01, "backoff_max": 0.02}
USER = [{"role": "user", "content": "hello"}]
# (client dialect, provider kind): same kind = pass-through, other kind = translated.
PATHS = [("openai", "openai"), ("anthropic", "anthropic"), ("anthropic", "openai"), ("openai", "anthropic")]
PATH_IDS = ["openai-pass", "anthropic-pass", "anthropic-to-openai", "openai-to-anthropic"]


@pytest.fixture(autouse=True)
def heaviest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weighted pick takes the heaviest member, so ``a`` (weight 1000) is always tried first: at
    1000:1 a random pick still loses about one draw in a thousand, and this file makes dozens."""
    monkeypatch.setattr(routing, "_weighted", lambda items, weights: items[weights.index(max(weights))])


def provider(upstream: MockUpstream, kind: str, keys: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    base = upstream.base_url + ("/v1" if kind == "openai" else "")
    key = OPENAI_KEY if kind == "openai" else ANTHROPIC_KEY
    return {"kind": kind, "base_url": base, "api_keys": keys or [key], "timeout": TIMEOUTS, **extra}


def config(upstream: MockUpstream, kind: str, a_model: str, b_model: str = "ok", *, resilience: dict | None = None,
           models: list[dict] | None = None, routing: dict | None = None, providers: dict | None = None) -> dict:
    """Route ``duo``: deployment ``a`` (weight 1000, so it is tried first while it may serve) and ``b``."""
    return {
        "providers": {"a": provider(upstream, kind), "b": provider(upstream, kind), **(providers or {})},
        "models": [{"name": "duo", "targets": [{"provider": "a", "model": a_model, "weight": 1000},
                                               {"provider": "b", "model": b_model, "weight": 1}]},
                   *(models or [])],
        "routing": routing or {},
        "resilience": {"breaker": BREAKER, "retry": FAST_RETRY, **(resilience or {})},
        "billing": {"enabled": False},
    }


@contextlib.contextmanager
def serve(raw: dict[str, Any]) -> Iterator[ServerThread]:
    app = create_app(load_config(raw, env={}, dotenv=False))
    with ServerThread(app) as server:
        yield server


def unique(name: str) -> str:
    """A model string no other test (or run) used: the mock counts hits per exact model string."""
    base, plus, directives = name.partition("+")
    return f"{base}-{threading.get_ident()}-{next(_COUNTER)}{plus}{directives}"


_COUNTER = iter(range(1, 1_000_000))


def post(gw: ServerThread, dialect: str, model: str = "duo", *, stream: bool = False, headers: dict | None = None,
         **extra: Any) -> httpx.Response:
    if dialect == "openai":
        path, body = "/v1/chat/completions", {"model": model, "messages": USER, "stream": stream, **extra}
    else:
        path, body = "/v1/messages", {"model": model, "max_tokens": 16, "messages": USER, "stream": stream, **extra}
    return httpx.post(gw.base_url + path, json=body, headers=headers or {}, timeout=15)


def text_of(dialect: str, r: httpx.Response) -> str:
    """The answer's text, from a JSON body or by joining a stream's deltas."""
    if not r.headers.get("content-type", "").startswith("text/event-stream"):
        body = r.json()
        if dialect == "openai":
            return body["choices"][0]["message"]["content"]
        return "".join(b.get("text", "") for b in body["content"])
    out = []
    for _, data in frames(r.text):
        if not data.startswith("{"):
            continue
        event = json.loads(data)
        if dialect == "openai":
            for choice in event.get("choices", []):
                out.append(choice.get("delta", {}).get("content") or "")
        elif event.get("type") == "content_block_delta":
            out.append(event["delta"].get("text", ""))
    return "".join(out)


def member_state(gw: ServerThread, name: str, model: str, key: int = 0) -> dict[str, Any]:
    """A member's breaker state from ``/ready`` (keyed provider/model#k<key index>, never a URL)."""
    deployments = httpx.get(gw.base_url + "/ready", timeout=5).json()["deployments"]
    assert not any("127.0.0.1" in k for k in deployments)
    return deployments[f"{name}/{model}#k{key}"]


def wait_for(predicate: Any, seconds: float = 5.0) -> None:
    """Bounded polling (no fixed sleep longer than needed)."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        threading.Event().wait(0.02)
    raise AssertionError("condition not reached")


@pytest.mark.parametrize(("dialect", "kind"), PATHS, ids=PATH_IDS)
def test_503s_fail_over_open_the_breaker_and_one_probe_follows(upstream: MockUpstream, dialect: str,
                                                               kind: str) -> None:
    bad = unique("m+status=503")
    with serve(config(upstream, kind, bad, resilience={"breaker": {**BREAKER, "consecutive_failures": 5}})) as gw:
        for i in range(7):
            r = post(gw, dialect, stream=i % 2 == 1)
            assert r.status_code == 200, r.text
            assert r.headers["x-ccm-deployment"] == "b/ok"
            assert text_of(dialect, r)
        # 503×5 opened a's breaker: the last two requests went straight to b.
        assert upstream.hits(bad) == 5
        assert r.headers["x-ccm-attempts"] == "1"
        assert member_state(gw, "a", bad)["state"] == "open"
        wait_for(lambda: member_state(gw, "a", bad)["open_for"] == 0)
        for _ in range(3):  # after the open time: exactly one probe (it fails; a opens again, for longer)
            assert post(gw, dialect).status_code == 200
        assert upstream.hits(bad) == 6
        state = member_state(gw, "a", bad)
        assert state["state"] == "open" and state["trips"] == 2


def test_a_probe_that_succeeds_closes_the_breaker(upstream: MockUpstream) -> None:
    flaky = unique("m+status=503+fail_first=3")  # fails three times, then serves
    with serve(config(upstream, "openai", flaky)) as gw:
        for _ in range(3):
            assert post(gw, "openai").headers["x-ccm-deployment"] == "b/ok"
        assert member_state(gw, "a", flaky)["state"] == "open"
        wait_for(lambda: member_state(gw, "a", flaky)["open_for"] == 0)
        r = post(gw, "openai")
        assert r.headers["x-ccm-deployment"] == f"a/{flaky}" and r.headers["x-ccm-attempts"] == "1"
        assert member_state(gw, "a", flaky)["state"] == "closed"


def test_openai_sdk_sees_one_clean_answer_while_a_deployment_fails(upstream: MockUpstream) -> None:
    with serve(config(upstream, "openai", unique("m+status=503"))) as gw:
        client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="duo", messages=USER)
        assert raw.headers["x-ccm-attempts"] == "2" and raw.headers["x-ccm-deployment"] == "b/ok"
        assert raw.parse().choices[0].message.content


@pytest.mark.parametrize(("dialect", "kind"), PATHS[:3], ids=PATH_IDS[:3])
def test_429_with_retry_after_cools_the_deployment_down_without_failing_it(upstream: MockUpstream, dialect: str,
                                                                           kind: str) -> None:
    limited = unique("m+status=429+retry_after=30")
    with serve(config(upstream, kind, limited)) as gw:
        r = post(gw, dialect)
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "2"
        state = member_state(gw, "a", limited)
        assert state["state"] == "closed" and state["failures"] == 0 and state["cooled_for"] > 25
        r = post(gw, dialect)  # cooling down: not tried at all
        assert r.headers["x-ccm-attempts"] == "1" and r.headers["x-ccm-deployment"] == "b/ok"
        assert upstream.hits(limited) == 1


def test_a_429_on_the_only_deployment_is_waited_out_when_it_fits_the_deadline(upstream: MockUpstream) -> None:
    once = unique("m+status=429+retry_after=1+fail_first=1")
    raw = config(upstream, "openai", once)
    raw["models"] = [{"name": "solo", "targets": [{"provider": "a", "model": once}]}]
    with serve(raw) as gw:
        r = post(gw, "openai", "solo")
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "2"
        assert upstream.hits(once) == 2


@pytest.mark.parametrize(("dialect", "kind"), [("openai", "openai"), ("anthropic", "anthropic")])
def test_a_refused_key_is_ejected_and_the_other_key_serves(upstream: MockUpstream, dialect: str, kind: str) -> None:
    good = "good-key-" + kind + "-4f1c2b"
    model = unique(f"m+auth={good}")
    raw = config(upstream, kind, model)
    raw["providers"]["a"]["api_keys"] = [{"key": "dead-key-0000000000", "weight": 1000}, {"key": good, "weight": 1}]
    raw["models"].append({"name": "keys", "targets": [{"provider": "a", "model": model}]})
    with serve(raw) as gw:
        r = post(gw, dialect, "keys")
        assert r.status_code == 200, r.text
        assert r.headers["x-ccm-deployment"] == f"a/{model}"  # the same deployment, its other key
        assert r.headers["x-ccm-attempts"] == "2"
        assert member_state(gw, "a", model, key=0)["ejected_for"] > 60
        assert member_state(gw, "a", model, key=1)["ejected_for"] == 0
        r = post(gw, dialect, "keys")
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "1"
        assert "dead-key" not in r.text and good not in r.text
        assert upstream.hits(model) == 3


def test_another_deployment_is_preferred_over_another_key_of_the_failed_one(upstream: MockUpstream) -> None:
    model = unique("m+auth=good-key-openai-4f1c2b")
    raw = config(upstream, "openai", model)
    raw["providers"]["a"]["api_keys"] = [{"key": "dead-key-0000000000", "weight": 1000},
                                         {"key": "good-key-openai-4f1c2b", "weight": 1}]
    with serve(raw) as gw:
        r = post(gw, "openai")
        assert r.status_code == 200 and r.headers["x-ccm-deployment"] == "b/ok"


@pytest.mark.parametrize(("dialect", "kind"), PATHS, ids=PATH_IDS)
def test_context_length_400_is_relayed_without_retry_and_leaves_the_breaker_alone(upstream: MockUpstream,
                                                                                  dialect: str, kind: str) -> None:
    too_long = unique("m+status=400+error_type=context_length_exceeded")
    with serve(config(upstream, kind, too_long)) as gw:
        for _ in range(4):  # more than consecutive_failures: still not a failure
            r = post(gw, dialect)
            assert r.status_code == 400
            assert r.headers["x-ccm-attempts"] == "1" and "x-should-retry" not in r.headers
        assert upstream.hits(too_long) == 4
        state = member_state(gw, "a", too_long)
        assert state["state"] == "closed" and state["failures"] == 0


@pytest.mark.parametrize(("dialect", "kind"), PATHS[:3], ids=PATH_IDS[:3])
def test_connection_refused_fails_over(upstream: MockUpstream, dialect: str, kind: str) -> None:
    raw = config(upstream, kind, "m")
    raw["providers"]["a"]["base_url"] = f"http://127.0.0.1:{CLOSED_PORT}" + ("/v1" if kind == "openai" else "")
    with serve(raw) as gw:
        r = post(gw, dialect, stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-deployment"] == "b/ok"
        assert r.headers["x-ccm-attempts"] == "2"
        assert text_of(dialect, r)


def test_connection_reset_fails_over(upstream: MockUpstream) -> None:
    reset = unique("m+fault=reset")
    with serve(config(upstream, "openai", reset)) as gw:
        r = post(gw, "openai")
        assert r.status_code == 200 and r.headers["x-ccm-deployment"] == "b/ok"
        assert upstream.hits(reset) == 1


@pytest.mark.parametrize("fault", ["stall_first_ms=3000", "ttfb_ms=3000"])
@pytest.mark.parametrize(("dialect", "kind"), PATHS, ids=PATH_IDS)
def test_a_stream_stalled_before_its_first_byte_is_retried_elsewhere(upstream: MockUpstream, dialect: str,
                                                                     kind: str, fault: str) -> None:
    stalled = unique(f"m+{fault}+text=once%20only")
    with serve(config(upstream, kind, stalled, "ok+text=once%20only")) as gw:
        r = post(gw, dialect, stream=True)
        assert r.status_code == 200
        assert r.headers["x-ccm-deployment"] == "b/ok+text=once%20only" and r.headers["x-ccm-attempts"] == "2"
        assert text_of(dialect, r) == "once only"  # nothing from the stalled attempt, nothing twice
        assert upstream.hits(stalled) == 1


@pytest.mark.parametrize(("dialect", "kind"), PATHS, ids=PATH_IDS)
def test_a_stall_mid_stream_ends_with_an_error_event_and_is_not_retried(upstream: MockUpstream, dialect: str,
                                                                        kind: str) -> None:
    events = 3 if kind == "openai" else 5  # after two text deltas (Anthropic: message_start, block start, ping)
    stalled = unique(f"m+chunks=4+stall_after={events}+stall_ms=3000+text=abcdefgh")
    with serve(config(upstream, kind, stalled, unique("ok"))) as gw:
        r = post(gw, dialect, stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "1"
        events = frames(r.text)
        last = events[-1]
        if dialect == "anthropic":
            assert last[0] == "error"
        else:
            assert '"error"' in last[1]
        assert upstream.hits(stalled) == 1
        text = text_of(dialect, r)
        assert text and "abcdefgh".startswith(text) and text != "abcdefgh"  # the part before the stall, once
        assert sum(1 for name, data in events if (name == "message_start" or '"role":"assistant"' in data)) == 1


def test_anthropic_sdk_stream_stall_mid_stream_raises_and_the_upstream_is_hit_once(upstream: MockUpstream) -> None:
    stalled = unique("m+chunks=4+stall_after=5+stall_ms=3000")
    with serve(config(upstream, "anthropic", stalled)) as gw:
        client = anthropic.Anthropic(base_url=gw.base_url, api_key="unused", max_retries=0)
        seen = []
        # The error event is raised by the SDK's stream reader, after the text that came before the stall.
        with pytest.raises(anthropic.APIError), client.messages.stream(model="duo", max_tokens=16,
                                                                        messages=USER) as stream:
            for text in stream.text_stream:
                seen.append(text)
        assert seen and upstream.hits(stalled) == 1


def test_client_disconnect_closes_the_upstream_stream_at_once() -> None:
    own = MockUpstream().start_in_thread()  # its own mock: no other test's streams in open_streams
    try:
        slow = "m+chunks=3+delay_ms=5000"
        raw = config(own, "openai", slow)
        raw["providers"]["a"]["timeout"] = {**TIMEOUTS, "idle": 30.0}  # only the hang-up can end it early
        with serve(raw) as gw:
            body = {"model": "duo", "stream": True, "messages": USER}
            with httpx.stream("POST", gw.base_url + "/v1/chat/completions", json=body, timeout=10) as r:
                assert next(r.iter_lines()).startswith("data: ")
                assert own.open_streams == 1
            # The next event is 5 s away: the upstream stream ends within a second, because the gateway closed it.
            wait_for(lambda: own.open_streams == 0, seconds=1.0)
            assert own.hits(slow) == 1
    finally:
        own.stop_thread()


@pytest.mark.parametrize(("dialect", "status", "kind"), [("openai", 503, "server_error"),
                                                         ("anthropic", 503, "overloaded_error")])
def test_every_deployment_open_answers_503_at_once_with_retry_after(upstream: MockUpstream, dialect: str,
                                                                    status: int, kind: str) -> None:
    bad_a, bad_b = unique("m+status=503"), unique("m+status=503")
    raw = config(upstream, dialect, bad_a, bad_b,
                 resilience={"breaker": {**BREAKER, "consecutive_failures": 1, "open_base": 30, "open_max": 60,
                                         "max_ejected_share": 1.0}})
    with serve(raw) as gw:
        r = post(gw, dialect)
        assert r.status_code == 503 and r.headers["x-should-retry"] == "false"  # retried already: do not again
        assert r.headers["x-ccm-attempts"] == "2"
        r = post(gw, dialect)
        assert r.status_code == 503
        assert 25 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["x-should-retry"] == "false" and "x-ccm-attempts" not in r.headers
        body = r.json()
        assert (body["error"]["type"]) == kind
        assert upstream.hits(bad_a) == upstream.hits(bad_b) == 1
        ready = httpx.get(gw.base_url + "/ready", timeout=5)
        assert ready.status_code == 503 and "duo" in ready.json()["unavailable_models"]  # nothing left to serve


def test_one_blocked_model_leaves_the_instance_ready_but_degraded(upstream: MockUpstream) -> None:
    """A provider outage that opens every member of one model must not take the replica out of its load
    balancer while other models still serve: /ready stays 200 and names the blocked model."""
    bad = unique("m+status=503")
    raw = config(upstream, "openai", bad, bad,
                 resilience={"breaker": {**BREAKER, "consecutive_failures": 1, "open_base": 30, "open_max": 60,
                                         "max_ejected_share": 1.0}},
                 models=[{"name": "healthy", "targets": [{"provider": "b", "model": "ok"}]}])
    with serve(raw) as gw:
        assert post(gw, "openai").status_code == 503
        ready = httpx.get(gw.base_url + "/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["unavailable_models"] == ["duo"]
        assert post(gw, "openai", model="healthy").status_code == 200


def test_ready_reports_degraded_while_a_member_is_open(upstream: MockUpstream) -> None:
    with serve(config(upstream, "openai", unique("m+status=503"))) as gw:
        assert httpx.get(gw.base_url + "/ready").json()["status"] == "ready"
        for _ in range(3):
            post(gw, "openai")
        ready = httpx.get(gw.base_url + "/ready")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_the_fallback_route_serves_when_the_route_is_exhausted(upstream: MockUpstream, dialect: str) -> None:
    bad = unique("m+status=500")
    raw = config(upstream, dialect, "unused", resilience={"retry": {**FAST_RETRY, "max_attempts": 2}},
                 models=[{"name": "primary", "targets": [{"provider": "a", "model": bad}], "fallbacks": ["backup"]},
                         {"name": "backup", "targets": [{"provider": "b", "model": "ok"}]}])
    with serve(raw) as gw:
        r = post(gw, dialect, "primary")
        assert r.status_code == 200
        assert r.headers["x-ccm-fallback"] == "backup" and r.headers["x-ccm-deployment"] == "b/ok"
        assert r.headers["x-ccm-attempts"] == "3"  # two on the primary (with backoff), then the fallback
        assert upstream.hits(bad) == 2


def test_default_fallbacks_come_after_the_routes_own(upstream: MockUpstream) -> None:
    bad = unique("m+status=502")
    raw = config(upstream, "openai", "unused", resilience={"retry": {**FAST_RETRY, "max_attempts": 1}},
                 models=[{"name": "primary", "targets": [{"provider": "a", "model": bad}]},
                         {"name": "spare", "targets": [{"provider": "b", "model": "ok"}]}],
                 routing={"default_fallbacks": ["spare"]})
    with serve(raw) as gw:
        r = post(gw, "openai", "primary")
        assert r.status_code == 200 and r.headers["x-ccm-fallback"] == "spare"


def test_context_window_fallback_routes_a_long_prompt_to_the_larger_model(upstream: MockUpstream) -> None:
    raw = config(upstream, "openai", "unused",
                 models=[{"name": "small", "context_window": 50, "targets": [{"provider": "a", "model": "small-m"}],
                          "context_window_fallbacks": ["large"]},
                         {"name": "large", "context_window": 100_000, "targets": [{"provider": "b", "model": "big-m"}]},
                         {"name": "strict", "context_window": 50, "targets": [{"provider": "a", "model": "small-m"}]}])
    long_prompt = [{"role": "user", "content": "word " * 400}]
    with serve(raw) as gw:
        r = post(gw, "openai", "small", messages=long_prompt)
        assert r.status_code == 200 and r.headers["x-ccm-fallback"] == "large"
        assert r.headers["x-ccm-deployment"] == "b/big-m"
        short = post(gw, "openai", "small")
        assert short.headers["x-ccm-deployment"] == "a/small-m" and "x-ccm-fallback" not in short.headers
        refused = post(gw, "openai", "strict", messages=long_prompt)  # no fallback configured: the 400 stays
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"


def test_no_retry_once_the_retry_budget_is_spent(upstream: MockUpstream) -> None:
    bad = unique("m+status=503")
    raw = config(upstream, "openai", bad, resilience={"retry": {**FAST_RETRY, "budget_ratio": 0.0,
                                                                 "budget_min_per_second": 0.0}})
    with serve(raw) as gw:
        r = post(gw, "openai")
        assert r.status_code == 503 and r.headers["x-ccm-attempts"] == "1"
        assert "x-should-retry" not in r.headers  # the gateway did not retry: the client may
        assert upstream.hits(bad) == 1


def test_affinity_keeps_a_session_on_one_deployment(upstream: MockUpstream) -> None:
    raw = config(upstream, "openai", "ok")
    raw["models"][0]["targets"][0]["weight"] = 1  # a and b equally weighted
    raw["models"][0]["targets"][1]["model"] = "ok-b"
    with serve(raw) as gw:
        seen: dict[str, set[str]] = {}
        for session in ("s1", "s2", "s3", "s4", "s5", "s6"):
            for _ in range(4):
                r = post(gw, "openai", headers={"x-ccm-affinity": session})
                seen.setdefault(session, set()).add(r.headers["x-ccm-deployment"])
        assert all(len(d) == 1 for d in seen.values()), seen
        assert len(set().union(*seen.values())) == 2  # sessions spread over both deployments
        users = {post(gw, "anthropic", metadata={"user_id": "u-42"}).headers["x-ccm-deployment"] for _ in range(4)}
        assert len(users) == 1


def test_resilience_off_makes_exactly_one_attempt(upstream: MockUpstream) -> None:
    bad = unique("m+status=503")
    raw = config(upstream, "openai", bad, resilience={"enabled": False})
    raw["models"].append({"name": "solo", "targets": [{"provider": "a", "model": bad}]})
    with serve(raw) as gw:
        for _ in range(4):  # no retries and no breaker: each request is one upstream call, relayed
            r = post(gw, "openai", "solo")
            assert r.status_code == 503 and "x-ccm-attempts" not in r.headers
        assert upstream.hits(bad) == 4


@pytest.mark.parametrize(("dialect", "kind"), PATHS, ids=PATH_IDS)
def test_a_stream_cut_mid_way_ends_with_an_error_event_and_is_not_retried(upstream: MockUpstream, dialect: str,
                                                                          kind: str) -> None:
    events = 3 if kind == "openai" else 5
    cut = unique(f"m+chunks=4+reset_after={events}+text=abcdefgh")
    with serve(config(upstream, kind, cut, unique("ok"))) as gw:
        r = post(gw, dialect, stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "1"
        last = frames(r.text)[-1]
        assert last[0] == "error" if dialect == "anthropic" else '"error"' in last[1]
        text = text_of(dialect, r)
        assert text and "abcdefgh".startswith(text) and text != "abcdefgh"
        assert upstream.hits(cut) == 1


@pytest.mark.parametrize(("dialect", "kind"), PATHS, ids=PATH_IDS)
def test_a_slow_drip_is_served_whole_and_once(upstream: MockUpstream, dialect: str, kind: str) -> None:
    drip = unique("m+chunks=3+drip_bytes=16+delay_ms=5+text=abcdef")  # events written 16 bytes at a time
    with serve(config(upstream, kind, drip)) as gw:
        r = post(gw, dialect, stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "1"
        assert text_of(dialect, r) == "abcdef"
        assert upstream.hits(drip) == 1


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_an_anthropic_stream_that_opens_with_an_overloaded_error_is_retried(upstream: MockUpstream,
                                                                            dialect: str) -> None:
    overloaded = unique("m+script=ant_error_first")
    with serve(config(upstream, "anthropic", overloaded)) as gw:
        r = post(gw, dialect, stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-deployment"] == "b/ok"
        assert r.headers["x-ccm-attempts"] == "2" and text_of(dialect, r)
        assert member_state(gw, "a", overloaded)["failures"] == 1


def test_an_overloaded_error_after_text_ends_the_stream_and_counts_as_a_failure(upstream: MockUpstream) -> None:
    overloaded = unique("m+script=ant_error")
    with serve(config(upstream, "anthropic", overloaded)) as gw:
        r = post(gw, "anthropic", stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "1"
        assert frames(r.text)[-1][0] == "error" and text_of("anthropic", r) == "Partial"
        assert member_state(gw, "a", overloaded)["failures"] == 1


class Counted:
    """The gateway app, counting the API requests that reach it (lifespan passes through)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            self.requests += 1
        await self.app(scope, receive, send)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_the_sdks_do_not_retry_what_the_gateway_already_retried(upstream: MockUpstream, sdk: str) -> None:
    raw = config(upstream, sdk, unique("m+status=503"), unique("m+status=503"),
                 resilience={"breaker": {**BREAKER, "consecutive_failures": 1, "open_base": 30, "open_max": 60,
                                         "max_ejected_share": 1.0}})
    app = Counted(create_app(load_config(raw, env={}, dotenv=False)))
    with ServerThread(app) as gw:
        for _ in range(2):  # the first is retried by the gateway and fails; the second finds all open
            if sdk == "openai":
                client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=3)
                with pytest.raises(openai.APIStatusError) as info:
                    client.chat.completions.create(model="duo", messages=USER)
            else:
                client = anthropic.Anthropic(base_url=gw.base_url, api_key="unused", max_retries=3)
                with pytest.raises(anthropic.APIStatusError) as info:
                    client.messages.create(model="duo", max_tokens=16, messages=USER)
            assert info.value.status_code == 503
        assert app.requests == 2  # x-should-retry: false — the SDKs' own 3 retries were not spent


# --- embeddings go through the same attempt loop ---------------------------------------------------


def embed(gw: ServerThread, model: str = "duo") -> httpx.Response:
    return httpx.post(gw.base_url + "/v1/embeddings", json={"model": model, "input": ["alpha", "beta"],
                                                             "encoding_format": "float"}, timeout=15)


def sent_to(upstream: MockUpstream, model: str) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/embeddings") and r.json()["model"] == model)


def test_embeddings_failover_and_breaker(upstream: MockUpstream) -> None:
    failing = unique("text-embedding-3-small+status=503")
    with serve(config(upstream, "openai", failing, "text-embedding-3-small")) as gw:
        answers = []
        for _ in range(10):  # bounded: "a" has nearly all the weight, so it fails 3 times within a few requests
            answers.append(embed(gw))
            if member_state(gw, "a", failing)["state"] == "open":
                break
        after = embed(gw)  # open: not asked again
        assert [r.status_code for r in [*answers, after]] == [200] * (len(answers) + 1)
        assert all(len(r.json()["data"]) == 2 for r in answers)
        assert {r.headers["x-ccm-deployment"] for r in [*answers, after]} == {"b/text-embedding-3-small"}
        assert after.headers["x-ccm-attempts"] == "1"
        assert sent_to(upstream, failing) == 3
        assert member_state(gw, "a", failing)["state"] == "open"


def test_gemini_embeddings_fall_over_to_openai(upstream: MockUpstream) -> None:
    """A Gemini deployment's failure is retried on an OpenAI-shaped one: the client sees one answer."""
    raw = config(upstream, "openai", "unused", "text-embedding-3-small")
    raw["providers"]["a"] = {"kind": "gemini", "base_url": upstream.base_url + "/v1beta", "api_keys": ["gem-k-0123456"],
                             "timeout": TIMEOUTS}
    raw["models"][0]["targets"][0]["model"] = "gemini-embedding-001+status=500"  # the mock's Gemini embedder
    with serve(raw) as gw:
        r = embed(gw)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2 and isinstance(r.json()["data"][0]["embedding"], list)
    assert r.headers["x-ccm-attempts"] == "2" and r.headers["x-ccm-deployment"] == "b/text-embedding-3-small"
    gemini_first = [q for q in upstream.requests if q.headers.get("x-request-id") == r.headers["x-request-id"]]
    assert [q.path.rsplit("/", 1)[-1] for q in gemini_first] == [
        "gemini-embedding-001+status=500:batchEmbedContents", "embeddings"]


def test_embeddings_errors_keep_their_shape_when_every_member_fails(upstream: MockUpstream) -> None:
    a, b = unique("text-embedding-3-small+status=429+retry_after=30"), unique("text-embedding-3-large+status=429")
    with serve(config(upstream, "openai", a, b)) as gw:
        r = embed(gw)
        assert r.status_code == 429 and r.json()["error"]["type"]  # the last upstream error, OpenAI-shaped
        assert r.headers["x-should-retry"] == "false" and int(r.headers["x-ccm-attempts"]) >= 2
    assert sent_to(upstream, a) >= 1 and sent_to(upstream, b) >= 1  # both were tried before giving up

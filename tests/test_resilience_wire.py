"""The resilience wiring beyond the fault matrix: billing of a retried request, stream timeouts that
are not the JSON deadline, per-route timeouts, the probe slot a departed client frees, config checks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from ccm_gateway import load_config
from ccm_gateway.config import ConfigError
from ccm_gateway.mock import MockUpstream

from .sse_checks import frames
from .test_fault_matrix import config, member_state, post, serve, text_of, unique, wait_for


def test_a_retried_request_is_billed_once_with_the_attempt_that_served(upstream: MockUpstream,
                                                                       tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    raw = config(upstream, "openai", unique("m+status=503"))
    raw["billing"] = {"enabled": True}
    raw["ledger"] = {"path": str(path)}
    with serve(raw) as gw:
        r = post(gw, "openai")
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "2"
    with sqlite3.connect(path) as db:  # the server stopped: its ledger is flushed
        rows = db.execute("SELECT attempt, provider, model, status, outcome FROM usage_records "
                          "WHERE kind = 'final'").fetchall()
    assert rows == [(2, "b", "ok", 200, "ok")]


@pytest.mark.parametrize(("dialect", "kind"), [("openai", "openai"), ("anthropic", "openai")])
def test_a_stream_is_not_cut_by_the_json_deadline(upstream: MockUpstream, dialect: str, kind: str) -> None:
    raw = config(upstream, kind, "unused")
    raw["providers"]["a"]["timeout"] = {"first_byte": 1.0, "idle": 1.0, "deadline": 0.5}
    slow = "m+chunks=5+delay_ms=250+text=abcde"
    raw["models"].append({"name": "slow", "targets": [{"provider": "a", "model": slow}]})
    with serve(raw) as gw:
        r = post(gw, dialect, "slow", stream=True)  # about 1 s of events, every gap well inside idle
        assert r.status_code == 200 and text_of(dialect, r) == "abcde"
        json_answer = post(gw, dialect, "slow")  # a JSON answer is done well within its deadline
        assert json_answer.status_code == 200


def test_stream_deadline_caps_a_whole_stream_when_set(upstream: MockUpstream) -> None:
    raw = config(upstream, "openai", "unused")
    raw["models"].append({"name": "capped", "timeout": {"stream_deadline": 0.4},
                          "targets": [{"provider": "a", "model": "m+chunks=6+delay_ms=200"}]})
    with serve(raw) as gw:
        r = post(gw, "openai", "capped", stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-attempts"] == "1"
        assert '"error"' in frames(r.text)[-1][1]  # ended with the error event, not [DONE]


def test_a_routes_timeout_table_overrides_its_providers(upstream: MockUpstream) -> None:
    stalled = unique("m+stall_first_ms=3000")
    raw = config(upstream, "openai", "unused")
    for name in ("a", "b"):
        raw["providers"][name]["timeout"] = {"first_byte": 30.0, "idle": 30.0}
    raw["models"].append({"name": "quick", "timeout": {"first_byte": 0.3},
                          "targets": [{"provider": "a", "model": stalled, "weight": 1000},
                                      {"provider": "b", "model": "ok"}]})
    with serve(raw) as gw:
        r = post(gw, "openai", "quick", stream=True)
        assert r.status_code == 200 and r.headers["x-ccm-deployment"] == "b/ok"
        assert r.headers["x-ccm-attempts"] == "2" and upstream.hits(stalled) == 1


def test_a_client_that_leaves_during_a_probe_frees_the_probe_slot() -> None:
    own = MockUpstream().start_in_thread()  # its own mock: open_streams counts only this test's streams
    # Fails three times (the breaker opens), then serves slowly: the probe is a long stream.
    flaky = "m+status=503+fail_first=3+chunks=3+delay_ms=5000"
    try:
        with serve(config(own, "openai", flaky)) as gw:
            for _ in range(3):
                assert post(gw, "openai").headers["x-ccm-deployment"] == "b/ok"
            wait_for(lambda: member_state(gw, "a", flaky)["open_for"] == 0)
            body = {"model": "duo", "stream": True, "messages": [{"role": "user", "content": "x"}]}
            for probe in (4, 5):  # the second probe is only possible if the first one's slot came back
                with httpx.stream("POST", gw.base_url + "/v1/chat/completions", json=body, timeout=10) as r:
                    assert r.headers["x-ccm-deployment"] == f"a/{flaky}", (probe, member_state(gw, "a", flaky))
                    assert next(r.iter_lines()).startswith("data: ")
                wait_for(lambda: own.open_streams == 0, seconds=2.0)
                assert own.hits(flaky) == probe
            assert member_state(gw, "a", flaky)["state"] == "half_open"  # a cancelled probe proves nothing
    finally:
        own.stop_thread()


@pytest.mark.parametrize(("patch", "problem"), [
    ({"models": [{"name": "x", "targets": [{"provider": "p", "model": "m"}], "context_window_fallbacks": ["nope"]}]},
     'models[0].context_window_fallbacks[0]: unknown model "nope"'),
    ({"routing": {"default_fallbacks": ["nope"]}}, 'routing.default_fallbacks[0]: unknown model "nope"'),
    ({"models": [{"name": "x", "targets": [{"provider": "p", "model": "m"}], "timeout": {"first_bite": 1}}]},
     "first_bite"),
    ({"resilience": {"retry": {"max_attempts": 0}}}, "resilience.retry.max_attempts"),
])
def test_resilience_config_mistakes_are_named(patch: dict, problem: str) -> None:
    raw = {"providers": {"p": {"kind": "openai", "api_keys": ["sk-000000000000"]}}, **patch}
    with pytest.raises(ConfigError) as info:
        load_config(raw, env={}, dotenv=False)
    assert problem in str(info.value)


def test_a_content_policy_refusal_goes_to_the_content_policy_fallback(upstream: MockUpstream) -> None:
    refused = unique("m+status=400+error_type=content_policy_violation")
    raw = config(upstream, "openai", "unused", models=[
        {"name": "guarded", "targets": [{"provider": "a", "model": refused}], "content_policy_fallbacks": ["lenient"]},
        {"name": "plain", "targets": [{"provider": "a", "model": refused}]},
        {"name": "lenient", "targets": [{"provider": "b", "model": "ok"}]}])
    with serve(raw) as gw:
        r = post(gw, "openai", "guarded")
        assert r.status_code == 200 and r.headers["x-ccm-fallback"] == "lenient"
        assert r.headers["x-ccm-attempts"] == "2"
        refused_here = post(gw, "openai", "plain")  # no such fallback: the client's 400 as the upstream said it
        assert refused_here.status_code == 400 and "content_policy_violation" in refused_here.text
        assert member_state(gw, "a", refused)["failures"] == 0


def test_the_budget_reservation_covers_a_dearer_fallback(upstream: MockUpstream) -> None:
    raw = config(upstream, "openai", "unused", models=[
        {"name": "cheap", "targets": [{"provider": "a", "model": "cheap"}]},
        {"name": "guarded", "targets": [{"provider": "a", "model": "cheap"}], "fallbacks": ["dear"]},
        {"name": "dear", "targets": [{"provider": "b", "model": "dear"}]}])
    raw["billing"] = {"enabled": True}
    raw["pricing"] = {"models": {"a/cheap": {"input": 1.0, "output": 1.0}, "b/dear": {"input": 50.0, "output": 50.0}}}
    with serve(raw) as gw:
        alone = float(post(gw, "openai", "cheap").headers["x-ccm-cost-reserved-usd"])
        guarded = float(post(gw, "openai", "guarded").headers["x-ccm-cost-reserved-usd"])
        assert guarded == pytest.approx(alone * 50)

"""Model names resolve to deployments: aliases, provider/model, detection, presets, weighted keys."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ccm_gateway import load_config
from ccm_gateway.app import Gateway
from ccm_gateway.dialects import Dialect
from ccm_gateway.errors import ModelNotFound


def gateway(extra: dict | None = None, routing: dict | None = None) -> Gateway:
    config = {
        "providers": {
            "openai": {"kind": "openai", "api_keys": ["sk-aaaaaaaaaaaa"]},
            "anthropic": {"kind": "anthropic", "api_keys": [
                {"key": "sk-ant-heavy-000000", "weight": 3}, {"key": "sk-ant-light-000000", "weight": 1}]},
            "groq": {"kind": "groq", "api_keys": ["gsk-000000000000"]},
            **(extra or {}),
        },
        "models": [
            {"name": "smart", "targets": [{"provider": "openai", "model": "gpt-4.1", "weight": 1},
                                          {"provider": "groq", "model": "llama-3.3-70b", "weight": 1}]},
        ],
        "routing": routing or {"allow_direct": True, "detect_provider": True},
    }
    return Gateway(load_config(config, env={}, dotenv=False))


def test_credentials_are_chosen_in_proportion_to_weight() -> None:
    random.seed(7)
    upstream = gateway().upstreams["anthropic"]
    counts = Counter(upstream.pick_key().reveal() for _ in range(4000))
    share = counts["sk-ant-heavy-000000"] / 4000
    assert 0.70 < share < 0.80  # 3:1


def test_alias_spreads_over_weighted_targets() -> None:
    random.seed(3)
    route = gateway().router.resolve("smart")
    counts = Counter(route.pick(Dialect.OPENAI_CHAT).label for _ in range(2000))
    assert set(counts) == {"openai/gpt-4.1", "groq/llama-3.3-70b"}
    assert 0.4 < counts["openai/gpt-4.1"] / 2000 < 0.6


def test_direct_and_detected_names() -> None:
    router = gateway().router
    assert router.resolve("anthropic/claude-opus-4-1").deployments[0].label == "anthropic/claude-opus-4-1"
    assert router.resolve("claude-sonnet-4-5").deployments[0].label == "anthropic/claude-sonnet-4-5"
    assert router.resolve("gpt-4o-mini").deployments[0].label == "openai/gpt-4o-mini"
    assert router.resolve("o3-mini").deployments[0].upstream.name == "openai"
    with pytest.raises(ModelNotFound):
        router.resolve("llama-3.3-70b")  # nothing detects it and no route names it


def test_direct_and_detection_can_be_switched_off() -> None:
    router = gateway(routing={"allow_direct": False, "detect_provider": False}).router
    for name in ("anthropic/claude-opus-4-1", "claude-sonnet-4-5"):
        with pytest.raises(ModelNotFound):
            router.resolve(name)
    assert router.resolve("smart").name == "smart"


def test_presets_fill_base_url_and_auth() -> None:
    gw = gateway({"together": {"kind": "together", "api_keys": ["tg-0000000000"]},
                  "box": {"kind": "ollama"}})
    assert gw.upstreams["groq"].base_url == "https://api.groq.com/openai/v1"
    assert gw.upstreams["together"].base_url == "https://api.together.xyz/v1"
    assert gw.upstreams["box"].available and gw.upstreams["box"].auth_headers(None) == {}
    key = gw.upstreams["groq"].pick_key()
    assert gw.upstreams["groq"].auth_headers(key) == {"authorization": "Bearer gsk-000000000000"}
    assert gw.upstreams["anthropic"].auth_headers(gw.upstreams["anthropic"].keys[0]) == {
        "x-api-key": "sk-ant-heavy-000000"}


def test_deployments_of_another_protocol_are_picked_by_weight_too() -> None:
    """With translation every deployment can serve every client dialect: the weights decide."""
    random.seed(3)
    gw = gateway()
    gw.router.routes["mixed"] = type(gw.router.routes["smart"])(
        "mixed", [*gw.router.resolve("anthropic/claude-x").deployments, *gw.router.routes["smart"].deployments])
    picked = Counter(gw.router.routes["mixed"].pick(Dialect.ANTHROPIC_MESSAGES).upstream.name for _ in range(300))
    assert set(picked) == {"anthropic", "openai", "groq"}

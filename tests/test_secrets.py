"""Secret references (``env:``, ``file:``, ``aws-sm:``, registered schemes) resolve at load, and a
resolved value never leaks through repr/str/f-strings/redacted views (only ``reveal()`` gives it)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from ccm_gateway import Config, ConfigError, Secret, load_config, register_source
from ccm_gateway import secrets as secrets_module
from ccm_gateway.secrets import MissingSecret

CANARY = "sk-canary-secrets-4e8b1d7f2a9c"
CANARY_2 = "sk-canary-secrets-second-0c6a3e"


def _provider(*api_keys: Any) -> dict[str, Any]:
    return {"providers": {"openai": {"kind": "openai", "api_keys": list(api_keys)}}}


def _keys(config: Config, provider: str = "openai") -> list[Secret]:
    return [k.key for k in config.providers[provider].api_keys]


def _error(raw: Mapping[str, Any], env: Mapping[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(raw, env=env, dotenv=False)
    assert len(info.value.errors) == 1, info.value.errors
    return info.value.errors[0]


# --- env: and file: -----------------------------------------------------------------------------


def test_env_reference_resolves() -> None:
    config = load_config(_provider("env:OPENAI_API_KEY"), env={"OPENAI_API_KEY": CANARY}, dotenv=False)
    (secret,) = _keys(config)
    assert secret.reveal() == CANARY
    assert secret.source == "env:OPENAI_API_KEY"


def test_empty_env_variable_counts_as_unset() -> None:
    """``OPENAI_API_KEY=`` in a shell is a classic mistake; sending an empty bearer token is worse."""
    line = _error(_provider("env:OPENAI_API_KEY"), {"OPENAI_API_KEY": ""})
    assert line.startswith("providers.openai.api_keys[0].key: ") and "OPENAI_API_KEY" in line, line


def test_file_reference_resolves_with_whitespace_stripped(tmp_path: Path) -> None:
    """Docker/k8s secret files usually end with a newline that must not become part of the key."""
    path = tmp_path / "openai.key"
    path.write_text(f"  {CANARY}\n\n", encoding="utf-8")
    config = load_config(_provider(f"file:{path}"), env={}, dotenv=False)
    (secret,) = _keys(config)
    assert secret.reveal() == CANARY
    assert secret.source == f"file:{path}"


def test_missing_secret_file_names_field_and_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    line = _error(_provider(f"file:{path}"), {})
    assert line.startswith("providers.openai.api_keys[0].key: "), line
    assert str(path) in line, line


def test_optional_reference_missing_drops_the_key() -> None:
    """``env:X?`` lets one config serve machines with and without the key: the key simply goes away."""
    config = load_config(_provider("env:OPENAI_API_KEY?"), env={}, dotenv=False)
    assert config.providers["openai"].api_keys == []


def test_optional_reference_missing_drops_only_that_key() -> None:
    raw = _provider({"key": "env:FIRST?", "weight": 3}, {"key": "env:SECOND", "weight": 2})
    config = load_config(raw, env={"SECOND": CANARY_2}, dotenv=False)
    assert [(k.key.reveal(), k.weight) for k in config.providers["openai"].api_keys] == [(CANARY_2, 2)]


def test_optional_reference_present_resolves() -> None:
    config = load_config(_provider("env:OPENAI_API_KEY?"), env={"OPENAI_API_KEY": CANARY}, dotenv=False)
    (secret,) = _keys(config)
    assert secret.reveal() == CANARY
    assert secret.source == "env:OPENAI_API_KEY"  # the "?" is syntax, not part of the name


def test_optional_missing_file_is_absent(tmp_path: Path) -> None:
    config = load_config(_provider(f"file:{tmp_path / 'nope'}?"), env={}, dotenv=False)
    assert config.providers["openai"].api_keys == []


def test_absent_secret_refuses_to_reveal() -> None:
    """An absent secret must fail loudly where used, never send ``None`` upstream."""
    absent = Secret(None, "env:NOPE")
    assert not absent
    with pytest.raises(MissingSecret, match="env:NOPE"):
        absent.reveal()


def test_unknown_scheme_is_an_inline_value() -> None:
    config = load_config(_provider(CANARY), env={}, dotenv=False)
    (secret,) = _keys(config)
    assert (secret.reveal(), secret.source) == (CANARY, "inline")


# --- values never leak ---------------------------------------------------------------------------


def test_secret_values_never_appear_in_printed_forms(tmp_path: Path) -> None:
    """Configs get logged and printed while debugging; the key must only come out of ``reveal()``."""
    key_file = tmp_path / "gw.key"
    key_file.write_text(CANARY_2, encoding="utf-8")
    raw = {
        "keys": [{"name": "team", "key": f"file:{key_file}"}],
        "providers": {
            "openai": {"kind": "openai", "api_keys": ["env:OPENAI_API_KEY"]},
            "inline": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:1/v1", "api_keys": [CANARY]},
        },
    }
    config = load_config(raw, env={"OPENAI_API_KEY": CANARY}, dotenv=False)
    secret = config.providers["openai"].api_keys[0].key
    team_key = config.keys[0].key
    assert team_key is not None

    shown = [
        repr(config),
        str(config),
        repr(config.providers),
        repr(config.providers["openai"].api_keys),
        str(secret),
        repr(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        f"{team_key}",
        "%s %r" % (secret, secret),  # noqa: UP031 - the logging style, on purpose
        json.dumps(config.redacted()),
        secret.fingerprint(),
    ]
    for text in shown:
        assert CANARY not in text, text
        assert CANARY_2 not in text, text
    assert str(secret) == "Secret('env:OPENAI_API_KEY')"
    assert secret.reveal() == CANARY
    assert team_key.reveal() == CANARY_2


def test_redacted_shows_where_each_secret_comes_from() -> None:
    raw = {
        "keys": [{"name": "team", "key": "env:CCM_KEY_TEAM"}],
        "providers": {"anthropic": {"kind": "anthropic", "api_keys": [
            {"key": "env:ANTHROPIC_API_KEY", "weight": 3}, {"key": "env:ANTHROPIC_API_KEY_2", "weight": 1}]}},
    }
    env = {"CCM_KEY_TEAM": CANARY_2, "ANTHROPIC_API_KEY": CANARY, "ANTHROPIC_API_KEY_2": CANARY + "-2"}
    view = load_config(raw, env=env, dotenv=False).redacted()
    assert view["providers"]["anthropic"]["api_keys"] == [
        {"key": "<secret env:ANTHROPIC_API_KEY>", "weight": 3},
        {"key": "<secret env:ANTHROPIC_API_KEY_2>", "weight": 1},
    ]
    assert view["keys"][0]["key"] == "<secret env:CCM_KEY_TEAM>"
    json.dumps(view)  # plain data: printable as JSON


def test_fingerprint_tells_keys_apart_without_showing_them() -> None:
    a, b = Secret(CANARY, "env:A"), Secret(CANARY_2, "env:B")
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == Secret(CANARY, "env:C").fingerprint()
    assert Secret(None, "env:X").fingerprint() == "absent"


# --- registered sources --------------------------------------------------------------------------


@pytest.fixture
def isolated_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """register_source changes a process-wide table; undo it so other tests see the stock schemes."""
    monkeypatch.setattr(secrets_module, "_SOURCES", dict(secrets_module._SOURCES))


def test_register_source_makes_a_new_scheme_work(isolated_sources: None) -> None:
    vault = {"openai/prod": CANARY}
    calls: list[tuple[str, dict[str, str]]] = []

    def from_vault(name: str, env: Mapping[str, str]) -> str:
        calls.append((name, dict(env)))
        if name not in vault:
            raise MissingSecret(f"vault has no {name}")
        return vault[name]

    register_source("vault", from_vault)
    config = load_config(_provider("vault:openai/prod"), env={"VAULT_ADDR": "http://127.0.0.1:1"}, dotenv=False)
    (secret,) = _keys(config)
    assert (secret.reveal(), secret.source) == (CANARY, "vault:openai/prod")
    assert CANARY not in repr(config)
    assert calls == [("openai/prod", {"VAULT_ADDR": "http://127.0.0.1:1"})]  # the source sees the layered env

    line = _error(_provider("vault:openai/missing"), {})
    assert line.startswith("providers.openai.api_keys[0].key: ") and "openai/missing" in line, line

    optional = load_config(_provider("vault:openai/missing?"), env={}, dotenv=False)
    assert optional.providers["openai"].api_keys == []


def test_without_registration_a_scheme_is_just_an_inline_string(isolated_sources: None) -> None:
    (secret,) = _keys(load_config(_provider("vault:openai/prod"), env={}, dotenv=False))
    assert secret.source == "inline"


# --- aws-sm: against moto's in-process mock ------------------------------------------------------

AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Secrets Manager that lives in this process (moto): no network, no real account."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)  # boto3 reads credentials from os.environ, not our mapping
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=AWS_ENV["AWS_DEFAULT_REGION"])
        client.create_secret(Name="gateway/openai", SecretString=CANARY)
        client.create_secret(Name="gateway/bundle", SecretString=json.dumps({"anthropic": CANARY_2, "n": 1}))
        yield client


def test_aws_sm_plain_and_json_key_resolve(aws: Any) -> None:
    raw = _provider("aws-sm:gateway/openai", {"key": "aws-sm:gateway/bundle#anthropic", "weight": 2})
    config = load_config(raw, env=AWS_ENV, dotenv=False)
    keys = config.providers["openai"].api_keys
    assert [(k.key.reveal(), k.key.source, k.weight) for k in keys] == [
        (CANARY, "aws-sm:gateway/openai", 1),
        (CANARY_2, "aws-sm:gateway/bundle#anthropic", 2),
    ]
    shown = repr(config) + json.dumps(config.redacted())
    assert CANARY not in shown and CANARY_2 not in shown


def test_aws_sm_missing_secret_is_a_config_error_naming_the_field(aws: Any) -> None:
    line = _error(_provider("env:OPENAI_API_KEY", "aws-sm:gateway/ghost"), {**AWS_ENV, "OPENAI_API_KEY": CANARY})
    assert line.startswith("providers.openai.api_keys[1].key: "), line
    assert "gateway/ghost" in line, line
    assert CANARY not in line


def test_aws_sm_missing_json_key_is_a_config_error(aws: Any) -> None:
    line = _error(_provider("aws-sm:gateway/bundle#openai"), AWS_ENV)
    assert line.startswith("providers.openai.api_keys[0].key: "), line
    assert "gateway/bundle" in line and "openai" in line, line
    assert CANARY_2 not in line  # the other JSON values must not be echoed


def test_aws_sm_optional_missing_drops_the_key(aws: Any) -> None:
    config = load_config(_provider("aws-sm:gateway/ghost?"), env=AWS_ENV, dotenv=False)
    assert config.providers["openai"].api_keys == []


def test_secret_error_keeps_the_sources_wording(aws: Any) -> None:
    """The loader lower-cases the first letter of every message to match msgspec's style; a secret
    source's own message must come through intact ("AWS secret …", not "aWS secret …")."""
    line = _error(_provider("aws-sm:gateway/ghost"), AWS_ENV)
    assert "AWS secret 'gateway/ghost' cannot be read" in line, line

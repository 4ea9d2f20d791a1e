"""The config contract (DESIGN.md §5): the documented example loads, errors name the field path and
what was expected, and the layers (file < .env < environment < overrides) stack in that order."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from starlette.applications import Starlette

from ccm_gateway import Config, ConfigError, create_app, load_config

# The DESIGN.md §5 example, verbatim: it must keep loading and its capabilities stay expressible.
DESIGN_EXAMPLE = """\
[server]
host = "127.0.0.1"
port = 8080

[[keys]]                       # gateway keys that clients present
name = "team-a"
key = "env:CCM_KEY_TEAM_A"     # or key_sha256 = "…" (only the hash is kept in memory)
models = ["*"]                 # allow-list of route names / patterns
rpm = 600
tpm = 200000
budget_usd = 50.0
budget_period = "30d"

[providers.openai]
kind = "openai"
api_keys = ["env:OPENAI_API_KEY"]

[providers.anthropic]
kind = "anthropic"
api_keys = [{ key = "env:ANTHROPIC_API_KEY", weight = 3 }, { key = "env:ANTHROPIC_API_KEY_2", weight = 1 }]

[providers.local]
kind = "openai-compatible"
base_url = "http://127.0.0.1:11434/v1"

[[models]]
name = "claude-sonnet"                  # what clients ask for
targets = [{ provider = "anthropic", model = "claude-sonnet-4-5" }]
fallbacks = ["gpt-4.1"]

[[models]]
name = "gpt-4.1"
targets = [{ provider = "openai", model = "gpt-4.1" }]
"""

# Canary values for every variable the example references: none may ever show up in an error.
DESIGN_ENV: dict[str, str] = {
    "OPENAI_API_KEY": "sk-canary-cfg-openai-5d1e9a",
    "ANTHROPIC_API_KEY": "sk-ant-canary-cfg-first-8c2f4b",
    "ANTHROPIC_API_KEY_2": "sk-ant-canary-cfg-second-3a7e0d",
    "CCM_KEY_TEAM_A": "gw-canary-cfg-team-a-6b9c1f",
}

MOCK_ONLY: dict[str, Any] = {
    "providers": {"mock": {"kind": "mock"}},
    "models": [
        {"name": "first", "targets": [{"provider": "mock", "model": "m1"}]},
        {"name": "second", "targets": [{"provider": "mock", "model": "m2"}]},
    ],
}


def _write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _errors(source: Any, env: dict[str, str] | None = None, **kwargs: Any) -> list[str]:
    """The ``path: problem`` lines a bad config produces (fails the test if it loads)."""
    with pytest.raises(ConfigError) as info:
        load_config(source, env=env or {}, dotenv=kwargs.pop("dotenv", False), **kwargs)
    assert info.value.errors, "a ConfigError must carry at least one error line"
    return info.value.errors


def _one_error(source: Any, env: dict[str, str] | None = None, **kwargs: Any) -> str:
    errors = _errors(source, env, **kwargs)
    assert len(errors) == 1, errors
    return errors[0]


# --- the documented example ---------------------------------------------------------------------


def test_design_example_loads_with_every_capability(tmp_path: Path) -> None:
    """The §5 example is the contract users copy: every field in it must land where it says."""
    config = load_config(_write(tmp_path, DESIGN_EXAMPLE), env=DESIGN_ENV, dotenv=False)

    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)

    (team,) = config.keys
    assert team.name == "team-a"
    assert team.key is not None and team.key.reveal() == DESIGN_ENV["CCM_KEY_TEAM_A"]
    assert team.models == ["*"]
    assert (team.rpm, team.tpm, team.budget_usd, team.budget_period) == (600, 200000, 50.0, "30d")

    assert set(config.providers) == {"openai", "anthropic", "local"}
    openai = config.providers["openai"]
    assert openai.kind == "openai"
    assert [(k.key.reveal(), k.weight) for k in openai.api_keys] == [(DESIGN_ENV["OPENAI_API_KEY"], 1)]

    anthropic = config.providers["anthropic"]
    assert [(k.key.reveal(), k.weight) for k in anthropic.api_keys] == [
        (DESIGN_ENV["ANTHROPIC_API_KEY"], 3),
        (DESIGN_ENV["ANTHROPIC_API_KEY_2"], 1),
    ]

    local = config.providers["local"]
    assert (local.kind, local.base_url, local.api_keys) == ("openai-compatible", "http://127.0.0.1:11434/v1", [])

    assert [m.name for m in config.models] == ["claude-sonnet", "gpt-4.1"]
    sonnet, gpt = config.models
    assert [(t.provider, t.model, t.weight) for t in sonnet.targets] == [("anthropic", "claude-sonnet-4-5", 1)]
    assert sonnet.fallbacks == ["gpt-4.1"]
    assert [(t.provider, t.model) for t in gpt.targets] == [("openai", "gpt-4.1")]
    assert gpt.fallbacks == []


def test_default_config_loads_without_any_key() -> None:
    """``make run`` must work on a fresh machine: optional keys that are missing just drop out."""
    config = load_config(None, env={}, dotenv=False)
    assert config == Config()  # no source: pure defaults
    from ccm_gateway import DEFAULT_CONFIG_PATH

    default = load_config(DEFAULT_CONFIG_PATH, env={}, dotenv=False)
    assert {"mock", "openai", "anthropic"} <= set(default.providers)
    assert all(p.api_keys == [] for p in default.providers.values())


# --- errors name the path and what was expected -------------------------------------------------


def test_wrong_type_names_path_expected_type_and_value() -> None:
    """The exact example DESIGN.md promises."""
    raw = {"providers": {"openai": {"kind": "openai", "timeout": {"connect": "fast"}}}}
    assert _one_error(raw) == 'providers.openai.timeout.connect: expected a number, got "fast"'


def test_wrong_type_deep_in_a_list_names_the_indexes() -> None:
    raw = {
        "providers": {"mock": {"kind": "mock"}},
        "models": [
            {"name": "a", "targets": [{"provider": "mock", "model": "x"}]},
            {"name": "b", "targets": [{"provider": "mock", "model": "x", "weight": "heavy"}]},
        ],
    }
    assert _one_error(raw) == 'models[1].targets[0].weight: expected an integer, got "heavy"'


def test_out_of_range_value_names_the_path() -> None:
    raw = {"providers": {"mock": {"kind": "mock", "api_keys": [{"key": "inline-k", "weight": 0}]}}}
    line = _one_error(raw)
    assert line.startswith("providers.mock.api_keys[0].weight: "), line
    assert ">= 1" in line, line


def test_unknown_field_in_server_is_rejected_by_name() -> None:
    """A typo must fail loudly, not be silently ignored (the user would think the port was set)."""
    line = _one_error({"server": {"prot": 9000}})
    assert line.startswith("server: "), line
    assert "unknown field" in line and "prot" in line, line


@pytest.mark.parametrize(
    ("raw", "path", "field"),
    [
        ({"providers": {"openai": {"base_url": "https://example.test/v1"}}}, "providers.openai: ", "kind"),
        ({"providers": {"mock": {"kind": "mock"}}, "models": [{"name": "lonely"}]}, "models[0]: ", "targets"),
    ],
    ids=["provider-kind", "model-targets"],
)
def test_missing_required_field_is_named(raw: dict[str, Any], path: str, field: str) -> None:
    line = _one_error(raw)
    assert line.startswith(path), line
    assert "missing required field" in line and field in line, line


def test_empty_targets_list_is_rejected() -> None:
    line = _one_error({"models": [{"name": "empty", "targets": []}]})
    assert line.startswith("models[0].targets: "), line


def test_target_naming_unknown_provider() -> None:
    raw = {"providers": {"mock": {"kind": "mock"}}, "models": [{"name": "a", "targets": [
        {"provider": "mock", "model": "x"}, {"provider": "opneai", "model": "gpt-4.1"}]}]}
    line = _one_error(raw)
    assert line.startswith('models[0].targets[1].provider: unknown provider "opneai"'), line
    assert "mock" in line  # says what is configured


def test_unknown_provider_kind_lists_the_known_ones() -> None:
    line = _one_error({"providers": {"x": {"kind": "opnai"}}})
    assert line.startswith('providers.x.kind: unknown kind "opnai"'), line
    assert "openai" in line and "anthropic" in line and "openai-compatible" in line, line


def test_openai_compatible_needs_a_base_url() -> None:
    assert _one_error({"providers": {"local": {"kind": "openai-compatible"}}}) == (
        'providers.local.base_url: required for kind "openai-compatible"'
    )


def test_bad_base_url_scheme() -> None:
    line = _one_error({"providers": {"local": {"kind": "openai-compatible", "base_url": "127.0.0.1:11434/v1"}}})
    assert line.startswith("providers.local.base_url: expected an http:// or https:// URL"), line
    assert '"127.0.0.1:11434/v1"' in line


def test_duplicate_model_names() -> None:
    raw = {**MOCK_ONLY, "models": [MOCK_ONLY["models"][0], MOCK_ONLY["models"][0]]}
    assert _one_error(raw) == 'models[1].name: duplicate model name "first"'


def test_fallback_naming_unknown_model() -> None:
    raw = {**MOCK_ONLY, "models": [{**MOCK_ONLY["models"][0], "fallbacks": ["second", "ghost"]},
                                   MOCK_ONLY["models"][1]]}
    assert _one_error(raw) == 'models[0].fallbacks[1]: unknown model "ghost"'


def test_unset_env_reference_names_variable_and_field_but_no_secret(tmp_path: Path) -> None:
    """The error must say which variable to set, and must not echo any value from the environment."""
    env = {k: v for k, v in DESIGN_ENV.items() if k != "ANTHROPIC_API_KEY_2"}
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, DESIGN_EXAMPLE), env=env, dotenv=False)
    assert len(info.value.errors) == 1, info.value.errors
    line = info.value.errors[0]
    assert line.startswith("providers.anthropic.api_keys[1].key: "), line
    assert "ANTHROPIC_API_KEY_2" in line, line
    shown = f"{info.value}\n{info.value!r}\n" + "\n".join(info.value.errors)
    for value in env.values():
        assert value not in shown


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nport = = 1\n", "broken.toml")
    line = _one_error(path)
    assert line.startswith(f"{path}: "), line
    assert "TOML" in line, line


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert _one_error(path) == f"{path}: no such file"


def test_independent_cross_field_problems_are_all_reported_at_once() -> None:
    """One round trip per typo would be miserable: every cross-field problem comes back together."""
    raw = {
        "providers": {
            "good": {"kind": "mock"},
            "weird": {"kind": "zzz"},
            "local": {"kind": "openai-compatible"},
            "ftp": {"kind": "openai", "base_url": "ftp://example.test"},
        },
        "models": [
            {"name": "a", "targets": [{"provider": "nobody", "model": "x"}], "fallbacks": ["ghost"]},
            {"name": "a", "targets": [{"provider": "good", "model": "x"}]},
        ],
    }
    errors = _errors(raw)
    expected_prefixes = [
        'providers.weird.kind: unknown kind "zzz"',
        'providers.local.base_url: required for kind "openai-compatible"',
        "providers.ftp.base_url: expected an http:// or https:// URL",
        'models[0].targets[0].provider: unknown provider "nobody"',
        'models[1].name: duplicate model name "a"',
        'models[0].fallbacks[0]: unknown model "ghost"',
    ]
    for prefix in expected_prefixes:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert len(errors) == len(expected_prefixes), errors


def test_type_errors_in_several_providers_are_all_reported() -> None:
    raw = {"providers": {
        "a": {"kind": "openai", "timeout": {"connect": "fast"}},
        "b": {"kind": "anthropic", "connections": {"limit": "many"}},
    }}
    errors = _errors(raw)
    assert 'providers.a.timeout.connect: expected a number, got "fast"' in errors
    assert 'providers.b.connections.limit: expected an integer, got "many"' in errors


# --- layering and precedence --------------------------------------------------------------------

LAYER_FILE = '[server]\nport = 8001\n'


@pytest.mark.parametrize(
    ("dotenv_port", "env_port", "override_port", "expected"),
    [
        (None, None, None, 8001),
        ("8002", None, None, 8002),
        ("8002", "8003", None, 8003),
        (None, "8003", None, 8003),
        ("8002", "8003", 8004, 8004),
        (None, None, 8004, 8004),
    ],
    ids=["file", "dotenv>file", "env>dotenv", "env>file", "override>all", "override>file"],
)
def test_layer_precedence(
    tmp_path: Path, dotenv_port: str | None, env_port: str | None, override_port: int | None, expected: int
) -> None:
    """file < .env < process environment < programmatic overrides."""
    dotenv = tmp_path / "layers.env"
    dotenv.write_text(f"CCM_SERVER__PORT={dotenv_port}\n" if dotenv_port else "", encoding="utf-8")
    env = {"CCM_SERVER__PORT": env_port} if env_port else {}
    overrides = {"server.port": override_port} if override_port is not None else None
    config = load_config(_write(tmp_path, LAYER_FILE), env=env, dotenv=dotenv, overrides=overrides)
    assert config.server.port == expected


def test_env_values_are_parsed_as_toml_scalars_or_kept_as_strings(tmp_path: Path) -> None:
    """Environment variables are strings; the loader must turn them into the types the schema wants."""
    env = {
        "CCM_SERVER__PORT": "9000",
        "CCM_ROUTING__DETECT_PROVIDER": "true",
        "CCM_PROVIDERS__OPENAI__BASE_URL": "https://proxy.example.test/v1",
        "CCM_PROVIDERS__OPENAI__TIMEOUT__CONNECT": "2.5",
        "CCM_MODELS__0__NAME": "renamed",
        "CCM_MODELS__1__TARGETS__0__WEIGHT": "7",
    }
    raw = {**MOCK_ONLY, "providers": {**MOCK_ONLY["providers"], "openai": {"kind": "openai"}}}
    config = load_config(raw, env=env, dotenv=False)
    assert config.server.port == 9000 and type(config.server.port) is int
    assert config.routing.detect_provider is True
    assert config.providers["openai"].base_url == "https://proxy.example.test/v1"
    assert config.providers["openai"].timeout.connect == 2.5
    assert [m.name for m in config.models] == ["renamed", "second"]
    assert config.models[1].targets[0].weight == 7


def test_env_can_add_a_whole_new_section_value() -> None:
    """An override may create tables the file does not have (a provider configured by env alone)."""
    env = {"CCM_PROVIDERS__LOCAL__KIND": "openai-compatible", "CCM_PROVIDERS__LOCAL__BASE_URL": "http://127.0.0.1:1/v1"}
    config = load_config({}, env=env, dotenv=False)
    assert config.providers["local"].base_url == "http://127.0.0.1:1/v1"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"overrides": {"server.port": "abc"}}, 'server.port: expected an integer, got "abc"'),
        ({"env": {"CCM_SERVER__PORT": "fast"}}, 'server.port: expected an integer, got "fast"'),
        ({"env": {"CCM_ROUTING__ALLOW_DIRECT": "maybe"}}, 'routing.allow_direct: expected a boolean, got "maybe"'),
    ],
    ids=["override", "env-int", "env-bool"],
)
def test_bad_layered_value_gives_a_path_error(kwargs: dict[str, Any], expected: str) -> None:
    assert _one_error({}, **kwargs) == expected


def test_env_list_index_out_of_range_is_an_error_naming_the_variable() -> None:
    line = _one_error(MOCK_ONLY, env={"CCM_MODELS__5__NAME": "x"})
    assert "CCM_MODELS__5__NAME" in line and "5" in line, line


def test_variables_without_double_underscore_are_not_overrides() -> None:
    """``CCM_KEY_TEAM_A`` is a secret holder, not a path; treating it as one would break every config."""
    env = {"CCM_KEY_TEAM_A": "gw-canary-cfg-plain-0", "CCM_DEBUG": "1", "CCM_": "x"}
    assert load_config(MOCK_ONLY, env=env, dotenv=False) == load_config(MOCK_ONLY, env={}, dotenv=False)


def test_process_env_not_dotenv_when_both_set_a_secret(tmp_path: Path) -> None:
    """A stale ``.env`` must never shadow the key a deployment injects into the environment."""
    dotenv = tmp_path / "secrets.env"
    dotenv.write_text("OPENAI_API_KEY=sk-from-dotenv\nCCM_SERVER__HOST=0.0.0.0\n", encoding="utf-8")
    raw = {"providers": {"openai": {"kind": "openai", "api_keys": ["env:OPENAI_API_KEY"]}}}
    config = load_config(raw, env={"OPENAI_API_KEY": "sk-from-env", "CCM_SERVER__HOST": "10.0.0.1"}, dotenv=dotenv)
    assert config.providers["openai"].api_keys[0].key.reveal() == "sk-from-env"
    assert config.server.host == "10.0.0.1"


def test_dotenv_supplies_env_references(tmp_path: Path) -> None:
    dotenv = tmp_path / "secrets.env"
    dotenv.write_text('OPENAI_API_KEY="sk-from-dotenv"\n', encoding="utf-8")
    raw = {"providers": {"openai": {"kind": "openai", "api_keys": ["env:OPENAI_API_KEY"]}}}
    config = load_config(raw, env={}, dotenv=dotenv)
    assert config.providers["openai"].api_keys[0].key.reveal() == "sk-from-dotenv"


def test_dotenv_true_reads_dot_env_in_cwd_and_false_ignores_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("CCM_SERVER__PORT=8555\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config({}, env={}, dotenv=True).server.port == 8555
    assert load_config({}, env={}, dotenv=False).server.port == 8080


def test_overrides_do_not_mutate_the_callers_mapping() -> None:
    """An embedding app may reuse its dict to build several gateways."""
    raw: dict[str, Any] = {"server": {"port": 8001}, **MOCK_ONLY}
    snapshot = repr(raw)
    load_config(raw, env={"CCM_SERVER__HOST": "0.0.0.0"}, overrides={"models.0.name": "x"}, dotenv=False)
    assert repr(raw) == snapshot


# --- create_app accepts every config form ---------------------------------------------------------


@pytest.fixture
def clean_process_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app(dict/path) reads os.environ and ./.env: give it neither stray overrides nor a .env."""
    import os

    for name in list(os.environ):
        if name.startswith("CCM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_create_app_from_dict(clean_process_env: None) -> None:
    app = create_app({**MOCK_ONLY, "server": {"port": 8123}})
    assert isinstance(app, Starlette)
    config = app.state.gateway.config
    assert config.server.port == 8123
    assert [m.name for m in config.models] == ["first", "second"]


def test_create_app_from_config_uses_that_object() -> None:
    config = load_config({**MOCK_ONLY, "server": {"port": 8124}}, env={}, dotenv=False)
    app = create_app(config)
    assert isinstance(app, Starlette)
    assert app.state.gateway.config is config


@pytest.mark.parametrize("as_type", [str, Path, PurePosixPath], ids=["str", "Path", "PurePosixPath"])
def test_create_app_from_any_path_like(clean_process_env: None, tmp_path: Path, as_type: type) -> None:
    """create_app's signature accepts ``str | os.PathLike[str]``: every such path must be read,
    not silently replaced by the embedded default config."""
    path = _write(tmp_path, '[server]\nport = 8125\n[providers.mock]\nkind = "mock"\n')
    app = create_app(as_type(str(path)))
    assert app.state.gateway.config.server.port == 8125

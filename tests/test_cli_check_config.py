"""``ccm-gateway check-config``: the operator's pre-flight check. It must accept good configs, print
them with secrets redacted, and reject bad ones with exit code 2 and the field path on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from .test_config import DESIGN_ENV, DESIGN_EXAMPLE

# Variables the child may inherit; everything else (stray provider keys, CCM_* overrides) is dropped.
_PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR", "VIRTUAL_ENV")


def _run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a clean environment, from ``cwd`` (it reads ``./.env`` like the real thing)."""
    child_env = {k: v for k, v in os.environ.items() if k in _PASS_THROUGH}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ccm_gateway", "check-config", *args],
        cwd=cwd, env=child_env, capture_output=True, text=True, timeout=60, check=False,
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _assert_no_canary(result: subprocess.CompletedProcess[str], canaries: Iterable[str] = ()) -> None:
    for value in [*DESIGN_ENV.values(), *canaries]:
        assert value not in result.stdout, value
        assert value not in result.stderr, value


def test_good_config_prints_redacted_json(tmp_path: Path) -> None:
    result = _run(tmp_path, str(_write(tmp_path, DESIGN_EXAMPLE)), env=DESIGN_ENV)
    assert result.returncode == 0, result.stderr
    _assert_no_canary(result)
    summary = json.loads(result.stdout)
    assert summary["server"]["port"] == 8080
    assert summary["keys"][0]["key"] == "<secret env:CCM_KEY_TEAM_A>"
    assert summary["keys"][0]["models"] == ["*"]
    assert summary["providers"]["openai"]["api_keys"] == [{"key": "<secret env:OPENAI_API_KEY>", "weight": 1}]
    assert summary["providers"]["anthropic"]["api_keys"] == [
        {"key": "<secret env:ANTHROPIC_API_KEY>", "weight": 3},
        {"key": "<secret env:ANTHROPIC_API_KEY_2>", "weight": 1},
    ]
    assert summary["providers"]["local"]["base_url"] == "http://127.0.0.1:11434/v1"
    assert [m["name"] for m in summary["models"]] == ["claude-sonnet", "gpt-4.1"]
    assert summary["models"][0]["fallbacks"] == ["gpt-4.1"]


def test_no_missing_key_note_for_providers_that_need_no_key(tmp_path: Path) -> None:
    """Every key the example needs is set; a keyless openai-compatible server (ollama) is usable, so
    the CLI must not tell the operator it lacks an API key (the gateway itself treats it as available)."""
    result = _run(tmp_path, str(_write(tmp_path, DESIGN_EXAMPLE)), env=DESIGN_ENV)
    assert result.returncode == 0, result.stderr
    assert "no API key" not in result.stderr, result.stderr


def test_bad_config_exits_2_with_the_field_path(tmp_path: Path) -> None:
    bad = DESIGN_EXAMPLE.replace('kind = "openai"\n', 'kind = "openai"\ntimeout = { connect = "fast" }\n', 1)
    assert bad != DESIGN_EXAMPLE
    result = _run(tmp_path, str(_write(tmp_path, bad)), env=DESIGN_ENV)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert 'providers.openai.timeout.connect: expected a number, got "fast"' in result.stderr
    assert result.stdout == ""  # no half-valid summary a script could mistake for success
    _assert_no_canary(result)


def test_unset_secret_exits_2_naming_variable_without_leaking_others(tmp_path: Path) -> None:
    env = {k: v for k, v in DESIGN_ENV.items() if k != "OPENAI_API_KEY"}
    result = _run(tmp_path, str(_write(tmp_path, DESIGN_EXAMPLE)), env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "providers.openai.api_keys[0].key" in result.stderr
    assert "OPENAI_API_KEY" in result.stderr
    _assert_no_canary(result)


def test_missing_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    result = _run(tmp_path, str(path))
    assert result.returncode == 2
    assert f"{path}: no such file" in result.stderr


def test_embedded_default_checks_out_without_keys(tmp_path: Path) -> None:
    """``make run`` on a fresh machine: no argument, no keys anywhere, still a valid config."""
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert {"mock", "openai", "anthropic"} <= set(summary["providers"])
    assert all(p["api_keys"] == [] for p in summary["providers"].values())
    assert "mock" in [m["name"] for m in summary["models"]]


def test_keys_from_dot_env_light_up_providers_redacted(tmp_path: Path) -> None:
    """The default config promises providers light up when their key is in ./.env."""
    canary = DESIGN_ENV["OPENAI_API_KEY"]
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={canary}\n", encoding="utf-8")
    result = _run(tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["providers"]["openai"]["api_keys"] == [{"key": "<secret env:OPENAI_API_KEY>", "weight": 1}]
    assert summary["providers"]["anthropic"]["api_keys"] == []
    _assert_no_canary(result)

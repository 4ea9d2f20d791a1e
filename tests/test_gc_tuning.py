"""The standalone server tunes Python's garbage collector; an app mounted elsewhere does not."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccm_gateway import create_app, load_config
from ccm_gateway.gc_tuning import tune_collector

PROBE = "import gc, ccm_gateway.asgi; print(gc.get_threshold()[0], gc.get_freeze_count() > 0)"


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_tuning_raises_generation_zero_and_freezes_startup_objects(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(12_345)
    assert gc.get_threshold() == (12_345, 10, 10)
    assert gc.get_freeze_count() > 0


def test_zero_keeps_pythons_collector(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    tune_collector(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_create_app_leaves_the_host_process_alone(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    create_app(load_config({"server": {"gc_threshold": 50_000}}, env={}, dotenv=False))
    assert gc.get_threshold() == (700, 10, 10)


def run_probe(config: Path | None) -> str:
    env = {"PATH": "/usr/bin:/bin", **({"CCM_CONFIG": str(config)} if config else {})}
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                          check=True).stdout.split()


def test_the_standalone_entry_point_tunes_it_from_the_config(tmp_path: Path) -> None:
    assert run_probe(None) == ["10000", "True"]  # the default
    config = tmp_path / "gateway.toml"
    config.write_text("[server]\ngc_threshold = 0\n")
    assert run_probe(config) == ["700", "False"]  # Python's own

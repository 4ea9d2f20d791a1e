"""The deploy/ files agree with the gateway and with each other: what an operator relies on when they
``docker compose up`` or ``kubectl apply -k deploy/k8s`` (probes, non-root, secrets, grace periods)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from hypercorn.config import Config as HypercornConfig

from ccm_gateway import cli
from ccm_gateway.config import ConfigError, load_config

from .redis_server import RedisServer
from .servers import free_port, start_gateway_process

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "k8s"
PLACEHOLDER_ENV = {
    "CCM_GATEWAY_KEY": "placeholder-gateway-key",
    "CCM_ADMIN_KEY": "placeholder-admin-key",
    "OPENAI_API_KEY": "sk-placeholder-openai",
    "ANTHROPIC_API_KEY": "sk-ant-placeholder",
    "REDIS_URL": "redis://redis:6379/0",
}


# --- reading the files ------------------------------------------------------------------------------


def k8s(kind: str) -> dict[str, Any]:
    """The one manifest of ``kind`` among the files kustomization.yaml lists."""
    found = [doc for doc in manifests() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def container() -> dict[str, Any]:
    (gateway,) = k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    return gateway


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def dockerfile_runtime() -> list[str]:
    """The instructions of the Dockerfile's last stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    return lines[last_from:]


def instruction(name: str) -> str:
    found = [line[len(name):].strip() for line in dockerfile_runtime() if line.upper().startswith(name + " ")]
    assert found, f"no {name} in the runtime stage"
    return found[-1]


def entrypoint_config_path() -> PurePosixPath:
    argv = json.loads(instruction("ENTRYPOINT"))
    assert argv[:2] == ["ccm-gateway", "serve"]
    return PurePosixPath(argv[argv.index("--config") + 1])


def healthcheck_argv() -> list[str]:
    text = instruction("HEALTHCHECK")
    return json.loads(text[text.index("CMD") + 3:])


def env_references(value: Any) -> set[str]:
    """Names of every ``env:NAME`` / ``env:NAME?`` secret reference in a parsed TOML document."""
    if isinstance(value, dict):
        return set().union(*(env_references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(env_references(v) for v in value))
    if isinstance(value, str) and value.startswith("env:"):
        return {value[4:].rstrip("?")}
    return set()


def example_toml() -> dict[str, Any]:
    return tomllib.loads((DEPLOY / "gateway.toml").read_text())


# --- Kubernetes ---------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = {doc["kind"] for doc in manifests()}
    assert kinds == {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_probes_point_at_ready_and_health_on_the_served_port() -> None:
    gateway = container()
    (port,) = gateway["ports"]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert gateway["startupProbe"]["httpGet"]["path"] == "/health"
    assert port["containerPort"] == example_toml()["server"]["port"]
    (service_port,) = k8s("Service")["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    selector = k8s("Service")["spec"]["selector"]
    labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert k8s("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert k8s("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == k8s("Deployment")["metadata"]["name"]


def test_pod_runs_non_root_with_a_read_only_root_and_writable_ledger_and_tmp() -> None:
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    gateway = container()
    uid = int(instruction("USER").split(":")[0])
    assert uid != 0
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == uid
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    ledger_dir = str(PurePosixPath(example_toml()["ledger"]["path"]).parent)
    assert not mounts[ledger_dir].get("readOnly", False)
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    config_mount = mounts[str(entrypoint_config_path().parent)]
    assert config_mount["readOnly"] is True
    assert volumes[config_mount["name"]]["configMap"]["name"] == k8s("ConfigMap")["metadata"]["name"]


def test_configmap_holds_the_example_config_under_the_entrypoint_file_name() -> None:
    data = k8s("ConfigMap")["data"]
    assert data == {entrypoint_config_path().name: (DEPLOY / "gateway.toml").read_text()}


def test_secret_keys_are_exactly_the_env_vars_the_config_references() -> None:
    referenced = env_references(example_toml())
    secret = k8s("Secret")
    assert set(secret["stringData"]) == referenced
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"]
                   for e in container()["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(from_secret) == referenced
    assert all(ref["name"] == secret["metadata"]["name"] and ref["key"] == name for name, ref in from_secret.items())
    # The env vars the config cannot start without are not optional in the pod either.
    required = {name for name in referenced if f'"env:{name}"' in (DEPLOY / "gateway.toml").read_text()}
    assert required and all(not from_secret[name].get("optional", False) for name in required)


def test_grace_period_outlasts_prestop_and_graceful_timeout() -> None:
    pod = k8s("Deployment")["spec"]["template"]["spec"]
    config = load_config(DEPLOY / "gateway.toml", env=PLACEHOLDER_ENV, dotenv=False)
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + config.server.graceful_timeout
    stop_grace = compose()["services"]["gateway"]["stop_grace_period"]
    assert int(stop_grace.rstrip("s")) > config.server.graceful_timeout


def test_hpa_scales_on_cpu_within_the_redis_outage_share() -> None:
    spec = k8s("HorizontalPodAutoscaler")["spec"]
    assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"]
    assert "cpu" in container()["resources"]["requests"]  # utilisation is measured against the request
    # While Redis is down each pod enforces limit ÷ instances: at most maxReplicas pods never admit more in total.
    assert spec["maxReplicas"] <= example_toml()["state"]["instances"]
    assert k8s("PodDisruptionBudget")["spec"]["minAvailable"] < spec["minReplicas"]


# --- compose ----------------------------------------------------------------------------------------


def test_compose_redis_url_names_the_redis_service_and_the_config_reads_it() -> None:
    services = compose()["services"]
    gateway = services["gateway"]
    url = urlsplit(gateway["environment"]["REDIS_URL"])
    assert url.scheme == "redis" and url.port == 6379
    assert services[url.hostname]["image"].startswith("redis:")
    state = example_toml()["state"]
    assert state["backend"] == "redis" and state["url"].removeprefix("env:").rstrip("?") in gateway["environment"]
    assert gateway["depends_on"] == {url.hostname: {"condition": "service_healthy"}}
    assert "healthcheck" in services[url.hostname] and "healthcheck" in gateway


def test_compose_mounts_config_read_only_and_the_ledger_on_a_named_volume() -> None:
    spec = compose()
    gateway = spec["services"]["gateway"]
    mounts = {m.split(":")[1]: m.split(":") for m in gateway["volumes"]}
    config = mounts[str(entrypoint_config_path())]
    assert (DEPLOY / config[0]).resolve() == (DEPLOY / "gateway.toml").resolve() and config[2] == "ro"
    ledger = mounts[str(PurePosixPath(example_toml()["ledger"]["path"]).parent)]
    assert ledger[0] in spec["volumes"]
    assert gateway["read_only"] is True and "/tmp" in gateway["tmpfs"]
    assert int(gateway["user"].split(":")[0]) == int(instruction("USER").split(":")[0])
    assert gateway["healthcheck"]["test"][:3] == ["CMD", *healthcheck_argv()[:2]]


def test_compose_env_file_example_provides_every_other_reference() -> None:
    example = {line.split("=", 1)[0] for line in (DEPLOY / "env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    environment = set(compose()["services"]["gateway"]["environment"])
    assert example | environment >= env_references(example_toml())


# --- the example config and hypercorn -----------------------------------------------------------------


def test_example_config_loads_with_placeholder_env() -> None:
    config = load_config(DEPLOY / "gateway.toml", env=PLACEHOLDER_ENV, dotenv=False)
    assert config.server.host == "0.0.0.0" and config.auth.enabled is not False and config.keys
    assert config.state.backend == "redis" and config.state.url.reveal() == PLACEHOLDER_ENV["REDIS_URL"]
    assert {name for name, p in config.providers.items() if p.api_keys} == {"openai", "anthropic"}
    # `docker run` without Redis: one override switches to in-memory state.
    alone = {"CCM_GATEWAY_KEY": "placeholder-gateway-key", "CCM_STATE__BACKEND": "memory"}
    assert load_config(DEPLOY / "gateway.toml", env=alone, dotenv=False).state.backend == "memory"
    with pytest.raises(ConfigError) as err:  # the gateway key is required: a clear message, no value
        load_config(DEPLOY / "gateway.toml", env={"REDIS_URL": "redis://redis:6379/0"}, dotenv=False)
    assert "CCM_GATEWAY_KEY" in str(err.value)


def test_hypercorn_toml_equals_what_serve_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: list[HypercornConfig] = []
    monkeypatch.setattr("hypercorn.run.run", lambda hc: captured.append(hc) or 0)  # workers > 1
    monkeypatch.setattr(cli, "serve_here", lambda hc, grace: captured.append(hc) or 0)  # one worker
    for name, value in PLACEHOLDER_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CCM_CONFIG", raising=False)  # serve sets it for its workers; restored afterwards
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    assert cli.main(["serve", "--config", str(DEPLOY / "gateway.toml")]) == 0
    (served,) = captured
    from_file = HypercornConfig.from_toml(DEPLOY / "hypercorn.toml")
    default = HypercornConfig()
    skip = {"errorlog", "accesslog", "application_path", "workers"}  # logger objects; path given on the CLI
    names = {k.lstrip("_") for k in vars(served)} - skip  # ``bind`` is a property over ``_bind``
    changed = {k for k in names if getattr(default, k, object()) != getattr(served, k)}
    assert changed >= {"bind", "graceful_timeout", "keep_alive_timeout"}
    assert {k: getattr(from_file, k) for k in changed} == {k: getattr(served, k) for k in changed}
    assert max(served.workers, 1) == from_file.workers  # serve's 0 = one worker in its own process
    assert from_file.h11_max_incomplete_size == served.h11_max_incomplete_size


# --- the image's healthcheck and the probes against a gateway served as the container serves it ---------


@pytest.fixture
def container_like_gateway() -> Iterator[tuple[str, int]]:
    """deploy/gateway.toml served by ``ccm-gateway serve`` with the pod's environment: placeholder keys,
    a real Redis, the ledger in a temporary directory instead of /data."""
    with RedisServer() as redis_server:
        ledger = Path(tempfile.mkdtemp(prefix="ccm-deploy-")) / "ccm_usage.sqlite3"
        env = {**PLACEHOLDER_ENV, "REDIS_URL": redis_server.url, "CCM_LEDGER__PATH": str(ledger),
               "CCM_SERVER__HOST": "127.0.0.1"}
        proc, base = start_gateway_process("--config", str(DEPLOY / "gateway.toml"), env=env, output=False)
        try:
            yield base, int(urlsplit(base).port or 0)
        finally:
            proc.terminate()
            proc.wait(30)


def test_image_healthcheck_and_k8s_probes_pass_on_a_served_gateway(container_like_gateway: tuple[str, int]) -> None:
    base, port = container_like_gateway
    argv = [sys.executable if healthcheck_argv()[0] == "python" else healthcheck_argv()[0], *healthcheck_argv()[1:]]
    ok = subprocess.run(argv, env={"CCM_SERVER__PORT": str(port)}, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run(argv, env={"CCM_SERVER__PORT": str(free_port())}, capture_output=True, timeout=30)
    assert down.returncode != 0  # the check can fail: nothing listens there
    gateway = container()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        r = httpx.get(base + gateway[probe]["httpGet"]["path"], timeout=10)
        assert r.status_code == 200, (probe, r.text)
    ready = httpx.get(base + "/ready", timeout=10).json()
    assert {"openai", "anthropic"} <= {n for n, p in ready["providers"].items() if p["available"]}
    r = httpx.post(base + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": []}, timeout=10)
    assert r.status_code == 401  # auth is on in the example config

"""Offline validation of the deployment files: docker-compose.yml, the Kustomize overlay, and the
Grafana dashboard. Nothing here needs Docker or a cluster; ``make test`` installs ``kubectl``
(``make deploy-tools``) and the dev dependencies bring check-jsonschema, kubernetes-validate
and yamllint. A missing tool fails these tests: they never skip.
"""

import importlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from proto import metrics
from runtime.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OVERLAY = ROOT / "k8s" / "overlays" / "production"
KUBERNETES_VERSION = "1.30.0"
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 100}, document-start: disable}}"
)


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def tool(name: str) -> Path:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    assert found, f"{name} is missing: run `make venv deploy-tools`"
    return Path(found)


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        ROOT / "docker-compose.yml",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_stack_with_healthchecks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "rabbitmq",
        "redis",
        "postgres",
        "router",
        "offline-store",
        "gateway-1",
        "gateway-2",
    }
    assert services["rabbitmq"]["image"].endswith("-management")
    for name, service in services.items():
        assert "healthcheck" in service, name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy", name
    for gateway in ("gateway-1", "gateway-2"):
        assert services[gateway]["command"] == ["gateway"]
        assert services[gateway]["environment"]["SWITCHBOARD_GATEWAY_ID"] == gateway


def test_dockerfile_runs_as_non_root_from_one_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(
        r"^RUN uv sync --frozen --no-default-groups", dockerfile, re.MULTILINE
    )
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)


def test_dockerfile_copies_every_package_of_the_distribution() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.removesuffix("*") for pattern in patterns}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages == copied
    assert {"proto", "runtime"} <= packages


def test_yaml_files_pass_yamllint() -> None:
    files = [ROOT / "docker-compose.yml", *sorted((ROOT / "k8s").rglob("*.yaml"))]
    result = run(tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, *files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """The overlay rendered by ``kubectl kustomize``."""
    result = run(tool("kubectl"), "kustomize", OVERLAY)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(
    manifest: dict[str, Any], directory: Path
) -> subprocess.CompletedProcess[str]:
    path = directory / f"{manifest['kind']}-{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return run(
        tool("kubernetes-validate"),
        "--strict",
        "-k",
        KUBERNETES_VERSION,
        "--quiet",
        path,
    )


def test_every_rendered_manifest_validates_strictly(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    kinds = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert {
        ("Deployment", "switchboard-gateway"),
        ("Deployment", "switchboard-router"),
        ("Deployment", "switchboard-offline-store"),
        ("Service", "switchboard-gateway"),
        ("HorizontalPodAutoscaler", "switchboard-gateway"),
        ("PodDisruptionBudget", "switchboard-gateway"),
        ("ConfigMap", "switchboard-config"),
        ("Secret", "switchboard-secrets"),
    } <= kinds
    for manifest in manifests:
        result = validate(manifest, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(
    manifests: list[dict[str, Any]], tmp_path: Path
) -> None:
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    assert validate(deployment, tmp_path).returncode != 0


def deployment(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(
        m
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"] == name
    )


def test_gateways_probe_the_metrics_port_and_drain_in_their_grace_period(
    manifests: list[dict[str, Any]],
) -> None:
    config = next(m for m in manifests if m["kind"] == "ConfigMap")["data"]
    shutdown_s = float(config["SWITCHBOARD_SHUTDOWN_TIMEOUT_S"])
    pod = deployment(manifests, "switchboard-gateway")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "metrics",
    }
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/livez",
        "port": "metrics",
    }
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["metrics"] == int(config["SWITCHBOARD_METRICS_PORT"])
    pause_s = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause_s + shutdown_s
    gateway_id = next(
        e for e in container["env"] if e["name"] == "SWITCHBOARD_GATEWAY_ID"
    )
    assert gateway_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for name in ("switchboard-router", "switchboard-offline-store"):
        spec = deployment(manifests, name)["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > shutdown_s
        assert spec["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_gateway_autoscaler_uses_cpu_and_the_connections_metric(
    manifests: list[dict[str, Any]],
) -> None:
    hpa = next(m for m in manifests if m["kind"] == "HorizontalPodAutoscaler")
    scaled_on = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert scaled_on["Resource"]["resource"]["name"] == "cpu"
    assert scaled_on["Pods"]["pods"]["metric"]["name"] == metrics.GATEWAY_CONNECTIONS


# The dashboard


def exported_metric_names() -> set[str]:
    """Every sample name the three services expose (histogram series included): each registers
    its metrics, on import, in the process's registry (``runtime/metrics.py``)."""
    importlib.import_module("gateway.observability")
    importlib.import_module("router.observability")
    importlib.import_module("offline_store.observability")

    found = set()
    for family in REGISTRY.collect():
        found.add(family.name)
        found.update(sample.name for sample in family.samples)
    return found


PROMQL_FUNCTIONS = frozenset(
    {
        "sum",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "max",
        "min",
        "avg",
        "count",
        "topk",
        "le",
        "clamp_min",
        "on",
        "ignoring",
        "or",
        "and",
        "time",
    }
)


def promql_metric_names(expression: str) -> set[str]:
    """The identifiers of an expression that are neither functions, labels nor ranges."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_grouping = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_ranges)
    identifiers = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_grouping))
    return {name for name in identifiers if name not in PROMQL_FUNCTIONS}


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "dashboards" / "switchboard.json").read_text())
    exported = exported_metric_names()
    titles = set()
    used = set()
    for panel in dashboard["panels"]:
        titles.add(panel["title"])
        for target in panel.get("targets", []):
            used |= promql_metric_names(target["expr"])
    assert used, "the dashboard has no queries"
    assert not used - exported, f"not exported by any service: {used - exported}"
    for expected in (
        "Connections",
        "Messages routed",
        "Delivery latency",
        "Offline backlog",
        "Errors",
    ):
        assert any(title.startswith(expected) for title in titles), expected


def test_metric_names_follow_the_conventions() -> None:
    exported = exported_metric_names()
    for name in metrics.ALL_NAMES:
        assert name.startswith(metrics.PREFIX), name
        is_exported = name in exported or f"{name}_count" in exported
        assert is_exported, f"{name} is declared in proto/metrics.py but not exported"
    assert {
        n for n in exported if n.startswith(metrics.PREFIX) and n.endswith("_total")
    }

"""What the deployment tests share: the repository's paths, the external tools they run, the
production overlay rendered by ``kubectl kustomize``, and the PromQL queries of the alerts and
the dashboard. Every tool is required: a missing one fails the tests that need it (``make venv
deploy-tools`` installs them), never skips them.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from proto import env

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = ROOT / "k8s"
OVERLAY = K8S / "overlays" / "production"
MONITORING = K8S / "components" / "monitoring"
DASHBOARD = ROOT / "dashboards" / "switchboard.json"

Manifest = dict[str, Any]

DEPLOYMENTS = ("switchboard-gateway", "switchboard-router", "switchboard-offline-store")
SECRET_NAME = "switchboard-secrets"
SECRET_KEYS = frozenset(
    {env.AMQP_URL, env.REDIS_URL, env.POSTGRES_DSN, env.JWT_SECRET, env.API_KEY}
)
"""The Secret every service reads, and its keys: made outside `kubectl apply -k`."""
PROMQL_WORDS = frozenset(
    {
        *("sum", "max", "min", "avg", "count", "topk"),
        *("rate", "irate", "increase", "delta", "histogram_quantile", "vector", "time"),
        *("by", "without", "on", "ignoring", "group_left", "or", "and", "unless", "le"),
        "clamp_min",
    }
)
"""PromQL's functions, aggregations and keywords: the identifiers of a query that are not
metric names."""
CRD_KINDS = frozenset(
    {
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
    }
)
"""Kinds that a cluster knows only with the Prometheus Operator or KEDA installed: the
overlay's components; kubernetes-validate has no schema for them."""


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


def render(directory: Path) -> tuple[list[Manifest], str]:
    """The manifests ``kubectl kustomize`` renders from a kustomization, and its warnings."""
    result = run(tool("kubectl"), "kustomize", directory)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc], result.stderr


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    return next(
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name
    )


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector (``matchLabels`` only, as these manifests use) selects labels."""
    assert set(selector) <= {"matchLabels"}, selector
    return selector["matchLabels"].items() <= labels.items()


def prometheus_rule_groups() -> list[Manifest]:
    """The rule groups of the PrometheusRule, as ``promtool`` reads them."""
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    groups: list[Manifest] = rule["spec"]["groups"]
    return groups


def config(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = named(manifests, "ConfigMap", "switchboard-config")["data"]
    return data


def promql_metric_names(expression: str) -> set[str]:
    """The identifiers of an expression that are neither functions, labels nor ranges."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    without_grouping = re.sub(
        r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_ranges
    )
    identifiers = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", without_grouping))
    return {name for name in identifiers if name not in PROMQL_WORDS}


def rules() -> list[Manifest]:
    return [rule for group in prometheus_rule_groups() for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def rabbitmq_metrics_read() -> set[str]:
    """The RabbitMQ metrics that the alerts and the dashboard read."""
    expressions = [rule["expr"] for rule in rules()] + dashboard_queries()
    return {
        name
        for expression in expressions
        for name in promql_metric_names(expression)
        if name.startswith("rabbitmq_")
    }

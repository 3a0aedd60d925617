"""What the deployment tests share: the repository's paths, the external tools they run, and the
production overlay rendered by ``kubectl kustomize``. Every tool is required: a missing one
fails the tests that need it (``make venv deploy-tools`` installs them), never skips them.
"""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = ROOT / "k8s"
OVERLAY = K8S / "overlays" / "production"
MONITORING = K8S / "components" / "monitoring"
DASHBOARD = ROOT / "dashboards" / "switchboard.json"

Manifest = dict[str, Any]

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

"""The Kustomize overlay: current fields only, core kinds valid for Kubernetes, no replica
count fixed under an autoscaler, a disruption budget per Deployment, the recommended labels,
the public surface (the WebSocket only), network policies, Secrets kept out of `apply -k`, and
resources that follow bench/CAPACITY.md. The components' CRDs are checked in
test_kubernetes_crds.py.
"""

import re
from pathlib import Path

import pytest
import yaml

from gateway.settings import Settings as GatewaySettings
from proto import env, metrics
from router.settings import Settings as RouterSettings
from tests.deploy.tools import (
    CRD_KINDS,
    DEPLOYMENTS,
    K8S,
    MONITOR_SECRET,
    OVERLAY,
    SECRETS,
    Manifest,
    config,
    named,
    of_kind,
    render,
    run,
    selects,
    tool,
)

KUBERNETES_VERSION = "1.30.0"
RECOMMENDED_LABELS = tuple(
    f"app.kubernetes.io/{key}"
    for key in ("name", "instance", "component", "version", "part-of")
)
FULLY_LABELLED_KINDS = frozenset(
    {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    | (CRD_KINDS - {"TriggerAuthentication"})
)
"""Kinds that carry all five recommended labels (the others: part-of, instance, version)."""
RETIRED_KUSTOMIZE_FIELDS = frozenset(
    {
        "bases",
        "patchesStrategicMerge",
        "patchesJson6902",
        "commonLabels",
        "vars",
        "imageTags",
    }
)
# bench/CAPACITY.md: a gateway process holds ~60 MiB plus 12 KiB per idle connection (11.6
# measured), and about 35,000 connections at the target cluster's size.
GATEWAY_BASE_BYTES = 60 * 2**20
CONNECTION_BYTES = 12 * 2**10
CONNECTIONS_PER_GATEWAY = 35_000


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@pytest.mark.parametrize(
    "path", kustomizations(), ids=lambda p: str(p.relative_to(K8S))
)
def test_kustomizations_use_current_fields_only(path: Path) -> None:
    kustomization = yaml.safe_load(path.read_text())
    assert not RETIRED_KUSTOMIZE_FIELDS & set(kustomization)


def test_overlay_renders_without_warnings() -> None:
    _, warnings = render(OVERLAY)
    assert warnings == ""


def validate(manifest: Manifest, directory: Path) -> str | None:
    """kubernetes-validate's complaint about a manifest; None when it is valid."""
    path = directory / f"{manifest['kind']}-{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    result = run(
        tool("kubernetes-validate"),
        "--strict",
        "-k",
        KUBERNETES_VERSION,
        "--quiet",
        path,
    )
    return None if result.returncode == 0 else result.stdout + result.stderr


def test_every_core_manifest_validates_strictly(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    core = [m for m in manifests if m["kind"] not in CRD_KINDS]
    kinds = {(m["kind"], m["metadata"]["name"]) for m in core}
    assert {
        *(("Deployment", name) for name in DEPLOYMENTS),
        *(("PodDisruptionBudget", name) for name in DEPLOYMENTS),
        ("Service", "switchboard-gateway"),
        ("Service", "switchboard-api"),
        ("HorizontalPodAutoscaler", "switchboard-gateway"),
        ("ConfigMap", "switchboard-config"),
        ("NetworkPolicy", "switchboard-default-deny"),
    } <= kinds
    for manifest in core:
        assert validate(manifest, tmp_path) is None


def test_strict_validation_rejects_an_unknown_field(
    manifests: list[Manifest], tmp_path: Path
) -> None:
    deployment = of_kind(manifests, "Deployment")[0]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    assert validate(deployment, tmp_path) is not None


def pod_spec(manifests: list[Manifest], name: str) -> Manifest:
    spec: Manifest = named(manifests, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def test_autoscalers_own_every_replica_count(manifests: list[Manifest]) -> None:
    owned = {
        hpa["spec"]["scaleTargetRef"]["name"]
        for hpa in of_kind(manifests, "HorizontalPodAutoscaler")
    } | {
        so["spec"]["scaleTargetRef"]["name"]
        for so in of_kind(manifests, "ScaledObject")
    }
    assert owned == set(DEPLOYMENTS)
    for name in DEPLOYMENTS:
        assert "replicas" not in named(manifests, "Deployment", name)["spec"], name


def test_base_alone_runs_two_routers_and_stores_and_leaves_gateways_to_the_hpa() -> (
    None
):
    base, _ = render(K8S / "base")
    assert not CRD_KINDS & {m["kind"] for m in base}
    assert "replicas" not in named(base, "Deployment", "switchboard-gateway")["spec"]
    for name in ("switchboard-router", "switchboard-offline-store"):
        assert named(base, "Deployment", name)["spec"]["replicas"] == 2


def test_every_deployment_has_a_disruption_budget(manifests: list[Manifest]) -> None:
    budgets = of_kind(manifests, "PodDisruptionBudget")
    for name in DEPLOYMENTS:
        deployment = named(manifests, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (budget,) = [b for b in budgets if selects(b["spec"]["selector"], labels)]
        assert budget["spec"] == {**budget["spec"], "maxUnavailable": 1}


def test_workloads_carry_the_recommended_labels(manifests: list[Manifest]) -> None:
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    (image,) = overlay["images"]
    for manifest in manifests:
        labels = manifest["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "switchboard", manifest
        assert labels.get("app.kubernetes.io/version") == image["newTag"], manifest
        if manifest["kind"] in FULLY_LABELLED_KINDS:
            assert set(RECOMMENDED_LABELS) <= set(labels), manifest
    for name in DEPLOYMENTS:
        deployment = named(manifests, "Deployment", name)
        template = deployment["spec"]["template"]["metadata"]["labels"]
        assert set(RECOMMENDED_LABELS) <= set(template), name
        # A selector cannot change once created: only the stable name is in it.
        assert deployment["spec"]["selector"] == {
            "matchLabels": {"app.kubernetes.io/name": name}
        }


def container_ports(manifests: list[Manifest], name: str) -> dict[str, int]:
    (container,) = pod_spec(manifests, name)["containers"]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def test_only_the_websocket_is_public(manifests: list[Manifest]) -> None:
    settings = config(manifests)
    ports = container_ports(manifests, "switchboard-gateway")
    assert ports == {
        "ws": int(settings[env.GATEWAY_PORT]),
        "http": int(settings[env.HTTP_PORT]),
        "metrics": int(settings[env.METRICS_PORT]),
    }
    assert env.HTTP_HOST in settings
    public = named(manifests, "Service", "switchboard-gateway")["spec"]
    assert [port["targetPort"] for port in public["ports"]] == ["ws"]
    api = named(manifests, "Service", "switchboard-api")["spec"]
    assert api["type"] == "ClusterIP"
    assert [port["targetPort"] for port in api["ports"]] == ["http"]
    for service in of_kind(manifests, "Service"):
        targets = {port["targetPort"] for port in service["spec"]["ports"]}
        assert "metrics" not in targets, service["metadata"]["name"]


def allowed_sources(
    manifests: list[Manifest], pod_labels: dict[str, str], port: str
) -> list[list[Manifest] | None]:
    """The ``from`` of each ingress rule that opens a pod's port; None: from anywhere."""
    sources: list[list[Manifest] | None] = []
    for policy in of_kind(manifests, "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], pod_labels):
            continue
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress", []):
            if port in {p["port"] for p in rule["ports"]}:
                sources.append(rule.get("from"))
    return sources


def test_network_policies_open_each_port_to_its_audience_only(
    manifests: list[Manifest],
) -> None:
    deny = named(manifests, "NetworkPolicy", "switchboard-default-deny")["spec"]
    assert deny == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "switchboard"}},
        "policyTypes": ["Ingress"],
    }
    for name in DEPLOYMENTS:
        labels = named(manifests, "Deployment", name)["spec"]["template"]["metadata"][
            "labels"
        ]
        assert selects(deny["podSelector"], labels)
        for port in container_ports(manifests, name):
            sources = allowed_sources(manifests, labels, port)
            if port == "ws":
                assert sources == [None]
            elif port == "http":
                assert sources == [
                    [
                        {
                            "namespaceSelector": {},
                            "podSelector": {
                                "matchLabels": {"switchboard/api-client": "true"}
                            },
                        }
                    ]
                ]
            else:
                assert port == "metrics"
                (only,) = sources
                assert only == [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                        }
                    }
                ]


def test_apply_never_writes_a_secret(manifests: list[Manifest]) -> None:
    assert not of_kind(manifests, "Secret")
    for name in DEPLOYMENTS:
        (container,) = pod_spec(manifests, name)["containers"]
        referenced = [
            source["secretRef"]["name"]
            for source in container["envFrom"]
            if "secretRef" in source
        ]
        assert referenced == [SECRETS[name][0]], name
    examples = list(
        yaml.safe_load_all((K8S / "examples" / "external-secret.yaml").read_text())
    )
    assert {example["kind"] for example in examples} == {"ExternalSecret"}
    made = {
        example["spec"]["target"]["name"]: {
            item["secretKey"] for item in example["spec"]["data"]
        }
        for example in examples
    }
    assert made == dict([*SECRETS.values(), MONITOR_SECRET])


def test_only_gateways_hold_the_jwt_key_and_only_their_own_dependency(
    manifests: list[Manifest],
) -> None:
    holders = {
        variable: {name for name, (_, keys) in SECRETS.items() if variable in keys}
        for variable in (env.JWT_SECRET, env.REDIS_URL, env.POSTGRES_DSN)
    }
    assert holders == {
        env.JWT_SECRET: {"switchboard-gateway"},
        env.REDIS_URL: {"switchboard-router"},
        env.POSTGRES_DSN: {"switchboard-offline-store"},
    }


def quantity_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, quantity
    return int(match[1]) * {"Mi": 2**20, "Gi": 2**30}[match[2]]


def test_resources_follow_the_capacity_model(manifests: list[Manifest]) -> None:
    for name in DEPLOYMENTS:
        (container,) = pod_spec(manifests, name)["containers"]
        resources = container["resources"]
        # One Python process uses one core; a CPU limit would only throttle it.
        assert resources["requests"]["cpu"] == "1", name
        assert "cpu" not in resources.get("limits", {}), name
        requested = quantity_bytes(resources["requests"]["memory"])
        assert requested < quantity_bytes(resources["limits"]["memory"]), name
    hpa = named(manifests, "HorizontalPodAutoscaler", "switchboard-gateway")["spec"]
    (connections,) = [m for m in hpa["metrics"] if m["type"] == "Pods"]
    assert connections["pods"]["metric"]["name"] == metrics.GATEWAY_CONNECTIONS
    target = int(connections["pods"]["target"]["averageValue"])
    assert target <= CONNECTIONS_PER_GATEWAY
    (gateway,) = pod_spec(manifests, "switchboard-gateway")["containers"]
    memory = quantity_bytes(gateway["resources"]["requests"]["memory"])
    assert memory >= GATEWAY_BASE_BYTES + target * CONNECTION_BYTES
    assert hpa["maxReplicas"] * target >= 1_000_000


def test_gateways_probe_the_metrics_port_and_drain_in_their_grace_period(
    manifests: list[Manifest],
) -> None:
    shutdown_s = float(config(manifests)[env.SHUTDOWN_TIMEOUT_S])
    pod = pod_spec(manifests, "switchboard-gateway")
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "metrics",
    }
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/livez",
        "port": "metrics",
    }
    pause_s = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause_s + shutdown_s
    gateway_id = next(e for e in container["env"] if e["name"] == env.GATEWAY_ID)
    assert gateway_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for name in ("switchboard-router", "switchboard-offline-store"):
        spec = pod_spec(manifests, name)
        assert spec["terminationGracePeriodSeconds"] > shutdown_s
        assert spec["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_production_backing_example_runs_a_cluster_and_sets_known_variables() -> (
    None
):
    documents = list(
        yaml.safe_load_all((K8S / "examples" / "production-backing.yaml").read_text())
    )
    by_kind = {document["kind"]: document for document in documents}
    assert set(by_kind) == {"RabbitmqCluster", "ConfigMap"}
    assert by_kind["RabbitmqCluster"]["spec"]["replicas"] == 3
    settings = by_kind["ConfigMap"]["data"]
    known = {
        value
        for name, value in vars(env).items()
        if name.isupper() and isinstance(value, str)
    }
    assert set(settings) <= known, set(settings) - known
    assert settings[env.GATEWAY_QUEUE_TYPE] == settings[env.QUEUE_TYPE] == "quorum"
    gateway = GatewaySettings.from_env(
        {**settings, env.JWT_SECRET: "a-development-secret-of-32-chars!"}
    )
    assert gateway.gateway_queue_type == "quorum"
    assert len(RouterSettings.from_env(settings).redis_sentinels) == 3

"""The overlay's custom resources, checked for structure since no cluster here knows their
CRDs: the PodMonitors scrape every service and label it `service`, the ServiceMonitor scrapes
RabbitMQ's per-object metrics and keeps what the dashboard and the alerts read, and the KEDA
ScaledObjects scale routers and offline stores on the queues they consume. Keys are checked
against the fields of each CRD that these manifests may use, so that a misspelt field (which a
cluster would drop or refuse) fails here.
"""

import re
from typing import Any

from proto import metrics
from proto.names import Names
from tests.deploy.tools import (
    DEPLOYMENTS,
    MONITOR_SECRET,
    Manifest,
    config,
    named,
    of_kind,
    rabbitmq_metrics_read,
    selects,
)

API_VERSIONS = {
    "PodMonitor": "monitoring.coreos.com/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}
# Fields of the CRDs (prometheus-operator's monitoring.coreos.com/v1, KEDA's keda.sh/v1alpha1).
RELABELING = {
    "sourceLabels",
    "separator",
    "targetLabel",
    "regex",
    "replacement",
    "action",
}
SCRAPE_ENDPOINT = {
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
}
MONITOR_SPEC = {"selector", "namespaceSelector", "jobLabel", "podMetricsEndpoints"}
SERVICE_MONITOR_SPEC = {"selector", "namespaceSelector", "jobLabel", "endpoints"}
SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "pollingInterval",
    "cooldownPeriod",
    "advanced",
    "triggers",
}
TRIGGER = {"type", "metadata", "authenticationRef", "metricType"}
RABBITMQ_TRIGGER_METADATA = {"protocol", "mode", "value", "queueName"}


def keys_within(value: dict[str, Any], allowed: set[str], where: str) -> None:
    assert set(value) <= allowed, f"{where}: unknown {set(value) - allowed}"


def test_custom_resources_have_their_api_versions(manifests: list[Manifest]) -> None:
    for kind, api_version in API_VERSIONS.items():
        found = of_kind(manifests, kind)
        assert found, kind
        assert {m["apiVersion"] for m in found} == {api_version}


def test_every_service_has_a_pod_monitor_that_labels_it(
    manifests: list[Manifest],
) -> None:
    monitors = of_kind(manifests, "PodMonitor")
    for name in DEPLOYMENTS:
        template = named(manifests, "Deployment", name)["spec"]["template"]
        (monitor,) = [
            m
            for m in monitors
            if selects(m["spec"]["selector"], template["metadata"]["labels"])
        ]
        keys_within(monitor["spec"], MONITOR_SPEC, name)
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        keys_within(endpoint, SCRAPE_ENDPOINT, name)
        assert endpoint["path"] == "/metrics"
        (container,) = template["spec"]["containers"]
        assert endpoint["port"] in {port["name"] for port in container["ports"]}
        for relabeling in endpoint["relabelings"]:
            keys_within(relabeling, RELABELING, name)
        # The component label becomes `service`: the dashboard's variable and the alerts read
        # it, so they work whatever the scrape job is called, or if every pod shares one.
        assert {
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
            "targetLabel": "service",
        } in endpoint["relabelings"]
        # The shared metrics bring their own `service`, of the same value: kept as it is.
        assert endpoint["honorLabels"] is True
        component = template["metadata"]["labels"]["app.kubernetes.io/component"]
        assert component in metrics.SERVICES.values()
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_rabbitmq_is_scraped_per_object_for_what_switchboard_reads(
    manifests: list[Manifest],
) -> None:
    (monitor,) = of_kind(manifests, "ServiceMonitor")
    keys_within(monitor["spec"], SERVICE_MONITOR_SPEC, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    keys_within(endpoint, SCRAPE_ENDPOINT, "ServiceMonitor")
    assert endpoint["path"] == "/metrics/per-object"
    assert endpoint["port"] == "prometheus"
    (keep,) = endpoint["metricRelabelings"]
    keys_within(keep, RELABELING, "ServiceMonitor")
    assert keep["action"] == "keep"
    assert keep["sourceLabels"] == ["__name__"]
    read = rabbitmq_metrics_read()
    assert read
    for name in read:
        assert re.fullmatch(keep["regex"], name), name


def consumed_queues(manifests: list[Manifest]) -> dict[str, set[str]]:
    """The shared queues each Deployment consumes, named for the ConfigMap's namespace (with
    history, the default, the stores' inbox too)."""
    settings = config(manifests)
    names = Names(settings["SWITCHBOARD_NAMESPACE"])
    inbox = (
        {names.inbox_queue}
        if settings.get("SWITCHBOARD_HISTORY", "on") == "on"
        else set()
    )
    return {
        "switchboard-router": {names.router_queue},
        "switchboard-offline-store": {
            names.offline_queue,
            names.store_control_queue,
            names.store_acks_queue,
            *inbox,
        },
    }


def test_routers_and_stores_scale_on_the_queues_they_consume(
    manifests: list[Manifest],
) -> None:
    (authentication,) = of_kind(manifests, "TriggerAuthentication")
    assert set(authentication["spec"]) == {"secretTargetRef"}
    (host,) = authentication["spec"]["secretTargetRef"]
    assert host == {
        "parameter": "host",
        "name": MONITOR_SECRET[0],
        "key": "SWITCHBOARD_AMQP_URL",
    }
    assert host["key"] in MONITOR_SECRET[1]
    scaled = {
        so["spec"]["scaleTargetRef"]["name"]: so
        for so in of_kind(manifests, "ScaledObject")
    }
    for deployment, queues in consumed_queues(manifests).items():
        spec = scaled[deployment]["spec"]
        keys_within(spec, SCALED_OBJECT_SPEC, deployment)
        assert 2 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
        by_type: dict[str, list[Manifest]] = {}
        for trigger in spec["triggers"]:
            keys_within(trigger, TRIGGER, deployment)
            by_type.setdefault(trigger["type"], []).append(trigger)
        for trigger in by_type["rabbitmq"]:
            keys_within(trigger["metadata"], RABBITMQ_TRIGGER_METADATA, deployment)
            assert trigger["metadata"]["mode"] == "QueueLength"
            assert int(trigger["metadata"]["value"]) > 0
            assert trigger["authenticationRef"] == {
                "name": authentication["metadata"]["name"]
            }
        assert {t["metadata"]["queueName"] for t in by_type["rabbitmq"]} == queues
        (cpu,) = by_type["cpu"]
        assert cpu["metricType"] == "Utilization"
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["policies"] == [
            {"type": "Pods", "value": 1, "periodSeconds": 60}
        ]

"""The alerts and the dashboard: the PrometheusRule passes `promtool check rules`, each alert
fires as tests/deploy/alerts_test.yaml expects (`promtool test rules`), has a runbook, and
every query of the rules and the dashboard parses and reads only metrics that exist: the
services' (proto/metrics.py) or rabbitmq_prometheus's per-object ones.
"""

import importlib
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from proto import metrics
from proto.names import Names
from runtime.metrics import REGISTRY
from tests.deploy.tools import (
    MONITORING,
    dashboard,
    dashboard_queries,
    prometheus_rule_groups,
    promql_metric_names,
    rules,
    run,
    tool,
)

ALERTS_TEST = Path(__file__).with_name("alerts_test.yaml")
RABBITMQ_PER_OBJECT_METRICS = frozenset(
    {
        # https://github.com/rabbitmq/rabbitmq-server/blob/main/deps/rabbitmq_prometheus/metrics.md
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_consumers",
        "rabbitmq_queue_messages_published_total",
        "rabbitmq_channel_messages_delivered_ack_total",
        "rabbitmq_channel_messages_acked_total",
    }
)
PROMETHEUS_METRICS = frozenset({"up"})
EXPECTED_ALERTS = frozenset(
    {
        "SwitchboardDeadLetterQueueNotEmpty",
        "SwitchboardRouterQueueGrowing",
        "SwitchboardStoreQueueGrowing",
        "SwitchboardQueueWithoutConsumers",
        "SwitchboardGatewayHeartbeatsMissing",
        "SwitchboardServiceNotReady",
        "SwitchboardBrokerReconnects",
        "SwitchboardOfflineBacklogGrowing",
        "SwitchboardOfflineRecipientsFull",
        "SwitchboardServerErrors",
        "SwitchboardBrokerUnavailable",
        "SwitchboardClientErrorRatio",
        "SwitchboardTokensRejected",
        "SwitchboardClientsRateLimited",
    }
)


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


def check_rules(groups: list[dict[str, Any]], path: Path) -> str:
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = run(tool("promtool"), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    report = check_rules(prometheus_rule_groups(), tmp_path / "rules.yaml")
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in report


def test_alerts_fire_as_their_unit_tests_expect(tmp_path: Path) -> None:
    groups = prometheus_rule_groups()
    for rule in (rule for group in groups for rule in group["rules"]):
        rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(ALERTS_TEST, tmp_path)
    result = run(tool("promtool"), "test", "rules", tmp_path / ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    assert tested == EXPECTED_ALERTS


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    assert {rule["alert"] for rule in rules()} == EXPECTED_ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
        assert rule["annotations"]["summary"], rule
        assert rule["annotations"]["runbook"], rule


def test_alerts_read_the_queues_of_the_configured_namespace() -> None:
    configmap = yaml.safe_load(
        (MONITORING.parents[1] / "base" / "configmap.yaml").read_text()
    )
    names = Names(configmap["data"]["SWITCHBOARD_NAMESPACE"])
    queue_selectors = [
        re.sub(r"\\\\", r"\\", selector)
        for rule in rules()
        for selector in re.findall(r'queue=~?"([^"]+)"', rule["expr"])
    ]
    shared = {
        names.router_queue,
        names.offline_queue,
        names.store_control_queue,
        names.store_acks_queue,
        names.dead_letter_queue,
    }
    matched = {
        queue for queue in shared for s in queue_selectors if re.fullmatch(s, queue)
    }
    assert matched == shared
    assert not any(re.fullmatch(s, names.gateway_queue("g1")) for s in queue_selectors)


def test_rules_and_dashboard_read_only_metrics_that_exist() -> None:
    known = exported_metric_names() | RABBITMQ_PER_OBJECT_METRICS | PROMETHEUS_METRICS
    for expression in [rule["expr"] for rule in rules()] + dashboard_queries():
        used = promql_metric_names(expression)
        assert used, expression
        assert used <= known, f"{used - known} in {expression}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    variables = {"$service": ".*", "$queue_prefix": "switchboard"}
    recorded = []
    for number, query in enumerate(dashboard_queries()):
        for variable, value in variables.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        recorded.append({"record": f"dashboard:query_{number}", "expr": query})
    check_rules([{"name": "dashboard", "rules": recorded}], tmp_path / "queries.yaml")


def test_dashboard_shows_services_and_queues() -> None:
    titles = {panel["title"] for panel in dashboard()["panels"]}
    for expected in (
        "Connections",
        "Messages routed",
        "Delivery latency",
        "Offline backlog",
        "Errors",
        "Queue ready",
        "Queue unacknowledged",
        "Queue consumers",
        "Queue publish rate",
        "Queue deliver and ack rates",
        "Dead-letter queue",
    ):
        assert any(title.startswith(expected) for title in titles), expected


def test_dashboard_tells_services_apart_by_label_not_by_job() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    service = variables["service"]
    assert service["definition"] == f"label_values({metrics.READY}, service)"
    # `All` matches series without the label too (a Prometheus without the PodMonitors).
    assert service["allValue"] == ".*"
    assert variables["queue_prefix"]["query"] == "switchboard"
    for query in dashboard_queries():
        assert "job" not in query, query
        if "switchboard_" in query:
            assert 'service=~"$service"' in query, query


def test_metric_names_follow_the_conventions() -> None:
    exported = exported_metric_names()
    for name in metrics.ALL_NAMES:
        assert name.startswith(metrics.PREFIX), name
        is_exported = name in exported or f"{name}_count" in exported
        assert is_exported, f"{name} is declared in proto/metrics.py but not exported"
    assert {
        n for n in exported if n.startswith(metrics.PREFIX) and n.endswith("_total")
    }

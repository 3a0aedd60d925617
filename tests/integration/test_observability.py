"""/livez, /readyz and /metrics of every service, as real processes on SWITCHBOARD_METRICS_PORT."""

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proto import env, metrics
from tests.support.stack import Stack, free_port
from tests.support.timing import eventually, scaled

pytestmark = pytest.mark.integration

SHARED_METRICS = (
    metrics.ERRORS_TOTAL,
    metrics.BROKER_RECONNECTS_TOTAL,
    metrics.READY,
    metrics.BUILD_INFO,
    metrics.PUBLISH_CONFIRM_SECONDS,
)
GATEWAY_METRICS = (
    *SHARED_METRICS,
    metrics.CLOSES_TOTAL,
    metrics.HEARTBEATS_TOTAL,
    metrics.GATEWAY_CONNECTIONS,
    metrics.FRAMES_RECEIVED_TOTAL,
    metrics.FRAMES_SENT_TOTAL,
    metrics.DELIVERIES_TOTAL,
    metrics.DELIVERY_LATENCY_SECONDS,
    metrics.GATEWAY_BATCH_WAIT_SECONDS,
    metrics.GATEWAY_PUSH_SECONDS,
    metrics.GATEWAY_CLIENT_ACK_SECONDS,
    metrics.ERRORS_TOTAL,
    metrics.BROKER_RECONNECTS_TOTAL,
    metrics.READY,
)
ROUTER_METRICS = (
    *SHARED_METRICS,
    metrics.REDIS_SECONDS,
    metrics.ROUTER_QUEUE_WAIT_SECONDS,
    metrics.ROUTER_BATCH_SECONDS,
    metrics.MESSAGES_ROUTED_TOTAL,
    metrics.ERRORS_TOTAL,
    metrics.BROKER_RECONNECTS_TOTAL,
    metrics.READY,
)
STORE_METRICS = (
    *SHARED_METRICS,
    metrics.POSTGRES_SECONDS,
    metrics.OFFLINE_INBOX_WAIT_SECONDS,
    metrics.OFFLINE_INBOX_BATCH_SECONDS,
    metrics.OFFLINE_STORED_TOTAL,
    metrics.OFFLINE_REPLAYED_TOTAL,
    metrics.OFFLINE_ACKNOWLEDGED_TOTAL,
    metrics.OFFLINE_BACKLOG_MESSAGES,
    metrics.ERRORS_TOTAL,
    metrics.BROKER_RECONNECTS_TOTAL,
    metrics.READY,
)

SERVICES = {
    "router": "router",
    "store": "offline-store",
    "gw1": "gateway",
    "gw2": "gateway",
}
"""The ``service`` label each process of the test gives its shared metrics."""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http_get(port: int, path: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=scaled(5))
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def http_json(port: int, path: str) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=scaled(5))
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


async def scrape(port: int) -> Samples:
    status, text = await http_get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def exported_names(samples: Samples) -> set[str]:
    """Sample names, with a histogram's ``_bucket``/``_count``/``_sum`` read as the histogram."""
    found = set()
    for name, _ in samples:
        found.add(name)
        for suffix in ("_bucket", "_count", "_sum"):
            if name.endswith(suffix):
                found.add(name.removesuffix(suffix))
    return found


def is_shared(name: str) -> bool:
    return name.startswith(metrics.SHARED_PREFIX) or any(
        name.startswith(shared.removesuffix("_total"))
        for shared in metrics.SHARED_NAMES
    )


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def grows(
    port: int, name: str, before: Samples, by: float = 1, **labels: str
) -> Samples:
    """Wait until a sample grew by ``by`` since ``before``; return the scrape that shows it."""

    async def probe() -> Samples | None:
        now = await scrape(port)
        grown = value(now, name, **labels) - value(before, name, **labels) >= by
        return now if grown else None

    return await eventually(probe, within_s=10)


async def test_every_service_serves_health_and_counts_a_message(stack: Stack) -> None:
    ports = {service: free_port() for service in ("router", "store", "gw1", "gw2")}
    await asyncio.gather(
        stack.start_router(**{env.METRICS_PORT: str(ports["router"])}),
        stack.start_store(**{env.METRICS_PORT: str(ports["store"])}),
    )
    gw1, gw2 = await asyncio.gather(
        stack.start_gateway(**{env.METRICS_PORT: str(ports["gw1"])}),
        stack.start_gateway(**{env.METRICS_PORT: str(ports["gw2"])}),
    )
    for service, port in ports.items():
        assert await http_get(port, "/livez") == (200, '{"live": true}'), service
        status, readiness = await http_json(port, "/readyz")
        assert status == 200, (service, readiness)
        assert readiness["ready"] is True
    assert (await http_json(ports["router"], "/readyz"))[1]["checks"] == {
        "rabbitmq": True,
        "redis": True,
    }
    assert (await http_json(ports["store"], "/readyz"))[1]["checks"] == {
        "postgresql": True,
        "rabbitmq": True,
    }
    expected = {
        "router": ROUTER_METRICS,
        "store": STORE_METRICS,
        "gw1": GATEWAY_METRICS,
        "gw2": GATEWAY_METRICS,
    }
    before = {service: await scrape(port) for service, port in ports.items()}
    for service, metric_names in expected.items():
        missing = set(metric_names) - exported_names(before[service])
        assert not missing, (service, missing)
        # The metrics every service exports under one name carry its service label.
        for name, labels in before[service]:
            if is_shared(name):
                assert dict(labels).get("service") == SERVICES[service], (name, labels)
            else:
                assert "service" not in dict(labels), (name, labels)
        [build] = [
            dict(labels)
            for name, labels in before[service]
            if name == metrics.BUILD_INFO
        ]
        assert build["version"] not in {"", "unknown"}, build
        assert build["python"].count(".") == 2, build

    alice = await stack.connect(gw1, uid="alice")
    bob = await stack.connect(gw2, uid="bob")
    sent = await alice.send_message("bob", {"text": "hi"})
    message = await bob.expect_message(mid=sent["mid"])
    await bob.ack(message["mid"])

    await grows(
        ports["router"], metrics.MESSAGES_ROUTED_TOTAL, before["router"], kind="direct"
    )
    await grows(
        ports["gw1"], metrics.FRAMES_RECEIVED_TOTAL, before["gw1"], frame_type="send"
    )
    await grows(
        ports["gw1"], metrics.FRAMES_SENT_TOTAL, before["gw1"], frame_type="sent"
    )
    await grows(
        ports["gw2"], metrics.FRAMES_SENT_TOTAL, before["gw2"], frame_type="message"
    )
    await grows(ports["gw2"], metrics.DELIVERIES_TOTAL, before["gw2"])
    after = await grows(
        ports["gw2"], f"{metrics.DELIVERY_LATENCY_SECONDS}_count", before["gw2"]
    )
    assert value(after, metrics.GATEWAY_CONNECTIONS) == 1
    # The send's publish, the router's delivery and the gateway's ack were confirmed; the
    # router's lookups went to Redis in a pipeline.
    for port, service in ((ports["gw1"], "gateway"), (ports["router"], "router")):
        await grows(
            port,
            f"{metrics.PUBLISH_CONFIRM_SECONDS}_count",
            before["gw1" if service == "gateway" else "router"],
            service=service,
        )
    await grows(
        ports["router"],
        f"{metrics.REDIS_SECONDS}_count",
        before["router"],
        operation="route",
    )
    await grows(ports["gw1"], metrics.HEARTBEATS_TOTAL, before["gw1"])
    # Each hop of the message was observed: its wait for the sender's gateway's Batch, its
    # age at the router and the stages of its batch there, then (history on, the stack's
    # default) its age at the store and the stages of the inbox batch that numbered it, its
    # push, and the client's ack.
    await grows(
        ports["gw1"], f"{metrics.GATEWAY_BATCH_WAIT_SECONDS}_count", before["gw1"]
    )
    for service, age, batch, stages in (
        (
            "router",
            metrics.ROUTER_QUEUE_WAIT_SECONDS,
            metrics.ROUTER_BATCH_SECONDS,
            metrics.ROUTER_STAGES,
        ),
        (
            "store",
            metrics.OFFLINE_INBOX_WAIT_SECONDS,
            metrics.OFFLINE_INBOX_BATCH_SECONDS,
            metrics.INBOX_STAGES,
        ),
    ):
        await grows(ports[service], f"{age}_count", before[service])
        for stage in stages:
            await grows(ports[service], f"{batch}_count", before[service], stage=stage)
    await grows(ports["gw2"], f"{metrics.GATEWAY_PUSH_SECONDS}_count", before["gw2"])
    await grows(
        ports["gw2"], f"{metrics.GATEWAY_CLIENT_ACK_SECONDS}_count", before["gw2"]
    )

    # A message for a uid that is offline goes to the store, is replayed, then acknowledged.
    # With history on the store keeps it in the transaction of its inbox batch.
    stored = await alice.send_message("carol", {"text": "later"})
    await grows(ports["store"], metrics.OFFLINE_STORED_TOTAL, before["store"])
    await grows(
        ports["store"],
        f"{metrics.POSTGRES_SECONDS}_count",
        before["store"],
        operation="inbox_write",
    )
    carol = await stack.connect(gw2, uid="carol")
    replayed = await carol.expect_message(mid=stored["mid"])
    await grows(ports["store"], metrics.OFFLINE_REPLAYED_TOTAL, before["store"])
    await carol.ack(replayed["mid"])
    await grows(ports["store"], metrics.OFFLINE_ACKNOWLEDGED_TOTAL, before["store"])

    # A frame the gateway rejects counts as an error by its code.
    await alice.send_frame({"type": "nonsense"})
    await alice.expect("error")
    await grows(
        ports["gw1"],
        metrics.ERRORS_TOTAL,
        before["gw1"],
        code="unknown_type",
        service="gateway",
    )

    # A token that is not valid is closed with 4003, counted by its close code.
    intruder = await stack.connect(gw1)
    await intruder.send_frame({"type": "init", "token": "not.a.token"})
    assert (await intruder.expect("error"))["code"] == "invalid_token"
    assert await intruder.wait_closed() == 4003
    await grows(ports["gw1"], metrics.CLOSES_TOTAL, before["gw1"], code="4003")


def open_silent_websocket(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads or answers again.

    The gateway waits for its close handshake (up to its close timeout) while draining, which
    holds the drain open long enough to look at /readyz without any sleep.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        assert chunk, "the gateway closed the connection during the handshake"
        response += chunk
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_draining_gateway_is_not_ready_before_it_exits(stack: Stack) -> None:
    port = free_port()
    await stack.start_router()
    gateway = await stack.start_gateway(
        **{env.METRICS_PORT: str(port), env.INIT_TIMEOUT_S: "60"}
    )
    assert (await http_get(port, "/readyz"))[0] == 200
    sock = await asyncio.to_thread(open_silent_websocket, gateway.port)
    try:
        await gateway.process.wait_for_event("connection_opened")
        gateway.process.process.terminate()  # SIGTERM
        await gateway.process.wait_for_event("shutdown_started")
        status, readiness = await http_json(port, "/readyz")
        assert status == 503, readiness
        assert readiness["draining"] is True
        assert (await http_get(port, "/livez"))[0] == 200
        samples = await scrape(port)
        assert value(samples, metrics.READY, service="gateway") == 0
    finally:
        sock.close()
    assert await gateway.process.wait_exit() == 0

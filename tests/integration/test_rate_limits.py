"""Rate limits that a client cannot bypass: per uid across every gateway (more connections
do not buy more rate), by bytes per connection (large frames do not buy more bandwidth), and
no frame from a connection over the uid's connection cap. Each abuse runs beside an innocent
pair on the same gateways, whose messages arrive in time; every `sent` reaches its recipient.
"""

import asyncio
import time
from collections.abc import Callable

import pytest

from proto import env, metrics
from proto.codes import CloseCode, ErrorCode
from tests.integration.test_observability import scrape, value
from tests.support.clients import Frame, RawClient
from tests.support.stack import Stack, free_port
from tests.support.timing import scaled
from tests.support.tokens import make_token

pytestmark = pytest.mark.integration

INNOCENT_BOUND_S = 2.0
"""The longest an innocent message may take from send to arrival during an abuse."""


async def start_with_metrics(stack: Stack) -> dict[str, int]:
    """A router, a store and two gateways, each serving /metrics on its own port."""
    ports = {name: free_port() for name in ("router", "gw0", "gw1")}
    await asyncio.gather(
        stack.start_router(**{env.METRICS_PORT: str(ports["router"])}),
        stack.start_store(),
    )
    for gateway in ("gw0", "gw1"):  # one after the other: stack.gateways[n] is gw<n>
        await stack.start_gateway(**{env.METRICS_PORT: str(ports[gateway])})
    return ports


async def talk(
    alice: RawClient, bob: RawClient, stop: asyncio.Event, latencies: list[float]
) -> None:
    """alice sends to bob every 200 ms (under every limit of the tests) until ``stop``; each
    message's latency is recorded."""
    n = 0
    while not stop.is_set():
        before = time.monotonic()
        sent = await alice.send_message("bob", f"innocent {n}")
        message = await bob.expect_message(mid=sent["mid"], within_s=10)
        await bob.ack(message["mid"])
        latencies.append(time.monotonic() - before)
        n += 1
        await asyncio.sleep(0.2)  # the pace of a chat, not a synchronisation


async def flood(client: RawClient, frames: int, per_s: float, prefix: str) -> None:
    """Send ``frames`` sends to ``sink`` at ``per_s`` (under the per-connection limit)."""
    for n in range(frames):
        await client.send_frame(
            {"type": "send", "id": f"{prefix}{n}", "to": "sink", "body": n}
        )
        await asyncio.sleep(1 / per_s)  # a pace, not a synchronisation


async def answers(client: RawClient, prefix: str, frames: int) -> list[Frame]:
    """The answer (``sent`` or ``error``) to each of the flood's frames, in order."""
    return [
        await client.expect(answer_to(f"{prefix}{n}"), within_s=10)
        for n in range(frames)
    ]


def answer_to(client_id: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("id") == client_id and f.get("type") in ("sent", "error")


async def test_one_uid_on_many_connections_is_held_to_the_per_uid_rate(
    stack: Stack,
) -> None:
    rate_per_s, burst = 10, 10
    stack.settings.update(
        {
            env.RATE_LIMIT_PER_UID_PER_S: str(rate_per_s),
            env.RATE_LIMIT_PER_UID_BURST: str(burst),
        }
    )
    ports = await start_with_metrics(stack)
    sink = await stack.connect(1, uid="sink")
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    mallory = [await stack.connect(n % 2, uid="mallory") for n in range(4)]
    before = {name: await scrape(port) for name, port in ports.items()}

    # Four connections, each at 20 frames/s (well under its own 50/s): 80/s for one uid.
    frames, per_s = 60, 20.0
    stop, latencies = asyncio.Event(), list[float]()
    talking = asyncio.create_task(talk(alice, bob, stop, latencies))
    started = time.monotonic()
    await asyncio.gather(
        *(flood(c, frames, per_s, f"m{i}-") for i, c in enumerate(mallory))
    )
    replies = [await answers(c, f"m{i}-", frames) for i, c in enumerate(mallory)]
    elapsed_s = time.monotonic() - started
    stop.set()
    await talking

    sent = [r for rs in replies for r in rs if r["type"] == "sent"]
    limited = [
        r for rs in replies for r in rs if r.get("code") == ErrorCode.RATE_LIMITED
    ]
    assert len(sent) + len(limited) == 4 * frames
    # At most a burst per window of burst / rate seconds, plus what was in flight while the
    # gateways learned of the throttle (generously); without the limit, all 240 pass.
    windows = elapsed_s / (burst / rate_per_s) + 1
    bound = burst * windows + 40
    assert len(sent) <= bound, (len(sent), bound, elapsed_s)
    for gateway in (0, 1):
        refused = [
            r
            for i, rs in enumerate(replies)
            if i % 2 == gateway
            for r in rs
            if r.get("code") == ErrorCode.RATE_LIMITED
        ]
        assert refused, f"no connection on gateway {gateway} was throttled"
    # The innocent pair on the same gateways: every message arrived, in time.
    assert latencies
    assert max(latencies) < scaled(INNOCENT_BOUND_S), latencies
    # Whatever was answered sent reaches the sink.
    for receipt in sent:
        message = await sink.expect_message(mid=receipt["mid"], within_s=10)
        await sink.ack(message["mid"])
    assert all(c.close_code is None for c in mallory)

    # The log line and the metric of each rejection.
    await stack.routers[0].wait_for_event("uid_throttled", uid="mallory")
    for n, gateway_process in enumerate(stack.gateways):
        await gateway_process.process.wait_for_event(
            "frame_rejected", code=ErrorCode.RATE_LIMITED, limit="uid", uid="mallory"
        )
        after = await scrape(ports[f"gw{n}"])
        grown = value(after, metrics.RATE_LIMITED_TOTAL, limit="uid") - value(
            before[f"gw{n}"], metrics.RATE_LIMITED_TOTAL, limit="uid"
        )
        assert grown >= 1
    router_after = await scrape(ports["router"])
    assert value(router_after, metrics.UIDS_THROTTLED_TOTAL) > value(
        before["router"], metrics.UIDS_THROTTLED_TOTAL
    )


async def test_the_bytes_limit_refuses_a_large_frame_flood(stack: Stack) -> None:
    per_s, burst = 20_000, 70_000
    stack.settings.update(
        {
            env.RATE_LIMIT_BYTES_PER_S: str(per_s),
            env.RATE_LIMIT_BYTES_BURST: str(burst),
        }
    )
    ports = await start_with_metrics(stack)
    sink = await stack.connect(1, uid="sink")
    alice = await stack.connect(0, uid="alice")
    bob = await stack.connect(1, uid="bob")
    mallory = await stack.connect(0, uid="mallory")
    before = await scrape(ports["gw0"])

    stop, latencies = asyncio.Event(), list[float]()
    talking = asyncio.create_task(talk(alice, bob, stop, latencies))
    big = "x" * 60_000  # under SWITCHBOARD_MAX_FRAME_BYTES, 30 of them at once: 1.8 MB
    frames = 30
    started = time.monotonic()
    for n in range(frames):
        await mallory.send_frame(
            {"type": "send", "id": f"b{n}", "to": "sink", "body": big}
        )
    replies = await answers(mallory, "b", frames)
    elapsed_s = time.monotonic() - started
    # Let the pair talk a little longer while the flood's frames are being answered.
    await asyncio.sleep(0.5)  # more innocent traffic, not a synchronisation
    stop.set()
    await talking

    sent = [r for r in replies if r["type"] == "sent"]
    limited = [r for r in replies if r.get("code") == ErrorCode.RATE_LIMITED]
    assert len(sent) + len(limited) == frames
    bound = (burst + per_s * elapsed_s) / len(big) + 1
    assert 1 <= len(sent) <= bound, (len(sent), bound)
    assert mallory.close_code is None
    assert latencies
    assert max(latencies) < scaled(INNOCENT_BOUND_S), latencies
    for receipt in sent:
        await sink.expect_message(mid=receipt["mid"], within_s=10)

    await stack.gateways[0].process.wait_for_event(
        "frame_rejected", code=ErrorCode.RATE_LIMITED, limit="bytes"
    )
    after = await scrape(ports["gw0"])
    grown = value(after, metrics.RATE_LIMITED_TOTAL, limit="bytes") - value(
        before, metrics.RATE_LIMITED_TOTAL, limit="bytes"
    )
    assert grown == len(limited)


async def test_a_connection_over_the_connection_cap_sends_nothing(stack: Stack) -> None:
    stack.settings[env.MAX_CONNECTIONS_PER_UID] = "2"
    await stack.start(gateways=2)
    await stack.connect(0, uid="ann")
    ann = await stack.connect(1, uid="ann")
    bob = await stack.connect(0, uid="bob")

    # A third connection sends its init and a burst at once, without waiting for ready.
    third = await stack.connect(1)
    await third.send_frame({"type": "init", "token": make_token("ann")})
    for n in range(20):
        await third.send_frame(
            {"type": "send", "id": f"burst{n}", "to": "bob", "body": n}
        )
    error = await third.expect("error")
    assert error["code"] == ErrorCode.TOO_MANY_CONNECTIONS
    assert await third.wait_closed() == CloseCode.TOO_MANY_CONNECTIONS
    assert not [f for f in third.received if f.get("type") in ("ready", "sent")]

    # Published after anything the third connection could have published on that gateway:
    # bob gets it, and nothing of the burst before it.
    marker = await ann.send_message("bob", "marker")
    await bob.expect_message(mid=marker["mid"])
    assert not [
        f
        for f in bob.received
        if f.get("type") == "message"
        and f.get("from") == "ann"
        and f["mid"] != marker["mid"]
    ]

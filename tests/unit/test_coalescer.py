"""gateway.coalescer.Coalescer: envelopes gather in a ``Batch`` while earlier ones wait for
their confirms.

The publish function is a stand-in that records bodies and waits on an event: what is checked
is how batches are carried out (order, the confirm or failure of each envelope), not a broker.
The policy alone, without an event loop, is in test_coalescing.py.
"""

import asyncio

import msgspec
import pytest

from gateway import coalescer as coalescer_module
from gateway.coalescer import Coalescer
from gateway.coalescing import BATCH_MAX_ITEMS, BATCHES_IN_FLIGHT
from proto.envelopes import decode_batch

TIMEOUT_S = 60.0
"""Longer than any test: only the test of the timeout reaches it (with its own)."""


class Confirms:
    """Records each batch published and confirms it when told to, within the time it is given
    (as ``Publisher.publish`` does)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def publish(self, body: bytes, timeout_s: float) -> None:
        self.bodies.append(body)
        async with asyncio.timeout(timeout_s):
            await self.release.wait()
        if self.failure is not None:
            raise self.failure

    def batch_keys(self) -> list[list[str]]:
        return [[item.key for item in decode_batch(b).items] for b in self.bodies]


async def test_envelopes_wait_for_a_free_slot_then_go_together_in_order() -> None:
    confirms = Confirms()
    coalescer = Coalescer(confirms.publish, TIMEOUT_S)
    first = [
        asyncio.create_task(coalescer.publish(f"k{i}", b"{}"))
        for i in range(BATCHES_IN_FLIGHT)
    ]
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(coalescer.publish(f"w{i}", b'{"n": %d}' % i))
        for i in range(5)
    ]
    await asyncio.sleep(0)
    # Every slot is taken by a batch of one; the five others wait for the next batch.
    assert confirms.batch_keys() == [[f"k{i}"] for i in range(BATCHES_IN_FLIGHT)]
    confirms.release.set()
    await asyncio.gather(*first, *waiting)
    assert confirms.batch_keys()[BATCHES_IN_FLIGHT:] == [[f"w{i}" for i in range(5)]]
    bodies = [item.body for item in decode_batch(confirms.bodies[-1]).items]
    assert [msgspec.json.decode(b) for b in bodies] == [{"n": i} for i in range(5)]
    await coalescer.close()


async def test_a_batch_never_holds_more_than_its_limit() -> None:
    confirms = Confirms()
    confirms.release.set()
    coalescer = Coalescer(confirms.publish, TIMEOUT_S)
    await asyncio.gather(
        *(coalescer.publish("k", b"{}") for _ in range(3 * BATCH_MAX_ITEMS))
    )
    assert max(len(keys) for keys in confirms.batch_keys()) <= BATCH_MAX_ITEMS
    assert sum(len(keys) for keys in confirms.batch_keys()) == 3 * BATCH_MAX_ITEMS


async def test_a_failed_batch_fails_each_of_its_envelopes_and_no_other() -> None:
    confirms = Confirms()
    coalescer = Coalescer(confirms.publish, TIMEOUT_S)
    confirms.failure = TimeoutError()
    failing = asyncio.create_task(coalescer.publish("k", b"{}"))
    await asyncio.sleep(0)
    confirms.release.set()
    with pytest.raises(TimeoutError):
        await failing
    confirms.failure = None
    await coalescer.publish("k", b"{}")
    await coalescer.close()


class Clock:
    """Stands in for the coalescer's ``time``: ``monotonic()`` reads ``now``, which the test moves
    (the event loop keeps its own clock)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_envelopes_behind_a_hung_batch_fail_by_their_own_timeout_unpublished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    monkeypatch.setattr(coalescer_module, "time", clock)
    confirms = Confirms()  # not released: the broker does not answer
    coalescer = Coalescer(confirms.publish, timeout_s=5.0)
    hung = asyncio.create_task(coalescer.publish("k", b"{}"))
    await asyncio.sleep(0)
    behind = [asyncio.create_task(coalescer.publish("w", b"{}")) for _ in range(3)]
    await asyncio.sleep(0)
    # The publish timeout passes while they all wait; the first batch's publish fails with it.
    clock.now += 5.0
    confirms.failure = TimeoutError()
    confirms.release.set()
    results = await asyncio.gather(hung, *behind, return_exceptions=True)
    assert all(isinstance(result, TimeoutError) for result in results), results
    # Their time was spent waiting behind the first batch: they fail without being published,
    # rather than waiting a whole timeout more in a batch of their own.
    assert confirms.batch_keys() == [["k"]]
    await coalescer.close()


class Waits:
    """An ``Observer`` that keeps what it is given."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def observe(self, amount: float) -> None:
        self.seconds.append(amount)


async def test_the_wait_of_each_envelope_for_its_batch_is_observed_as_it_leaves() -> (
    None
):
    confirms = Confirms()
    waits = Waits()
    coalescer = Coalescer(confirms.publish, TIMEOUT_S, waits=waits)
    first = asyncio.create_task(coalescer.publish("k", b"{}"))
    await asyncio.sleep(0)
    assert len(waits.seconds) == 1  # alone, at once
    waiting = [asyncio.create_task(coalescer.publish("w", b"{}")) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert len(waits.seconds) == 1  # the three wait for the first batch's confirm
    confirms.release.set()
    await asyncio.gather(first, *waiting)
    assert len(waits.seconds) == 4
    assert waits.seconds[0] < 0.01 <= min(waits.seconds[1:])
    await coalescer.close()

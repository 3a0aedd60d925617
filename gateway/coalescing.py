"""Coalescing envelopes into ``Batch`` envelopes: which wait, and which leave together.

Pure: envelopes come in with a ticket each (whatever their sender waits on); it says when a
``Batch`` may leave and what it holds, already encoded as one body. ``coalescer.py`` publishes
them and answers the tickets.

While a ``Batch`` waits for its confirm, what the connections publish meanwhile gathers in the
next one. A lone envelope leaves at once, alone; under load one broker message and one confirm
carry many envelopes, and ``Batch``es grow with the load (Nagle's algorithm without its delay).
"""

from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from proto.envelopes import Batch, Batched

BATCHES_IN_FLIGHT = 1
"""``Batch`` envelopes waiting for their confirms at once; more envelopes wait for the next one.
One costs a confirm round trip of latency under load and gives the largest ``Batch``es: under a
saturating 1:1 load, 2 and 4 spent 1.5 and 1.8 times the gateway CPU per message."""
BATCH_MAX_ITEMS = 500
BATCH_MAX_BYTES = 1 << 20
"""A ``Batch`` closes at this many envelopes or bytes (or ``SWITCHBOARD_MAX_AMQP_MESSAGE_BYTES``
if smaller), whichever comes first (a frame is at most ``SWITCHBOARD_MAX_FRAME_BYTES``, so one
envelope alone may exceed this, and goes alone)."""
_EMPTY_BATCH_BYTES = len(b'{"items":[]}')

_encode = msgspec.json.Encoder().encode

Ticket = TypeVar("Ticket")


@dataclass(frozen=True, slots=True)
class Coalesced(Generic[Ticket]):
    """Envelopes coalesced into a ``Batch`` that leaves now: its body, and the tickets of its
    envelopes, in order."""

    body: bytes
    tickets: list[Ticket]


@dataclass(frozen=True, slots=True)
class _Waiting(Generic[Ticket]):
    key: str
    body: bytes
    ticket: Ticket


class Coalescing(Generic[Ticket]):
    """The envelopes waiting for a ``Batch``, and the ``Batch`` envelopes in flight.

    Args:
        max_bytes: the largest ``Batch`` body, but for an envelope that alone is larger.
    """

    def __init__(self, max_bytes: int = BATCH_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._waiting: list[_Waiting[Ticket]] = []
        self._in_flight = 0

    def submit(self, key: str, body: bytes, ticket: Ticket) -> Coalesced[Ticket] | None:
        """Queue an envelope; returns the ``Batch`` to publish now, if one may leave."""
        self._waiting.append(_Waiting(key, body, ticket))
        if self._in_flight < BATCHES_IN_FLIGHT:
            return self._seal()
        return None

    def on_sent(self) -> Coalesced[Ticket] | None:
        """A ``Batch`` was confirmed, or failed; returns the next one to publish, if any waits."""
        self._in_flight -= 1
        if self._waiting and self._in_flight < BATCHES_IN_FLIGHT:
            return self._seal()
        return None

    def _seal(self) -> Coalesced[Ticket]:
        """The envelopes that wait, in order, up to a ``Batch``'s limits."""
        size, count = _EMPTY_BATCH_BYTES, 0
        for waiting in self._waiting:
            # As encoded: ["<key>",<body>] and a comma.
            item_size = len(waiting.body) + len(waiting.key) + 6
            if count == BATCH_MAX_ITEMS or (
                count and size + item_size > self._max_bytes
            ):
                break
            size += item_size
            count += 1
        leaving, self._waiting = self._waiting[:count], self._waiting[count:]
        self._in_flight += 1
        body = _encode(
            Batch(items=[Batched(w.key, msgspec.Raw(w.body)) for w in leaving])
        )
        return Coalesced(body, [w.ticket for w in leaving])

"""Ack accounting: what each connection holds unacknowledged, and when an AMQP delivery is done.

Pure: the hub tells it what happens (a delivery is pushed, a client acknowledges, time passes, a
handover is confirmed) with the time as an argument, and it answers with effects for the hub to
carry out: hand a copy to the offline store, acknowledge an AMQP delivery, ask the offline
store for a replay window, and the log lines that go with them. The deliveries themselves are
numbers the hub gives (``delivery_id``); the hub keeps the messages and acknowledges them.
How one delivery's pushes are admitted against each connection's cap is in ``admission.py``.

A delivery from the gateway's queue is acknowledged to RabbitMQ only when every durable copy in
it was acknowledged by its client or handed to the offline store (confirmed). Copies are handed
over when their connection is not here, closes, falls behind, does not acknowledge within
``ack_timeout_s``, or holds ``max_unacked`` unacknowledged messages already: one client that
never acknowledges holds at most that many of the gateway's AMQP deliveries (its prefetch),
never all of them. Many such clients together could still pin the prefetch: past ``max_pinned``
pinned deliveries, the oldest copies are handed over (``Pins``).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from gateway.session import Session
from proto import envelopes
from proto.envelopes import DeliveryItem, Target
from proto.items import RefusedItem


class Held:
    """One AMQP delivery, acknowledged to the broker when its last held copy is released."""

    __slots__ = ("delivery_id", "remaining")

    def __init__(self, delivery_id: int) -> None:
        self.delivery_id = delivery_id
        self.remaining = 0
        """Copies (and dead-letterings) that still hold the delivery."""


@dataclass(slots=True)
class Pins:
    """The gateway's AMQP deliveries that wait for something (a client's ack, a handover).

    Their number must stay below the consumer's prefetch: at the prefetch, RabbitMQ sends the
    gateway nothing more, and every connection on it waits. ``max_unacked`` bounds what one
    connection pins; many connections that never acknowledge could still pin them all, so past
    ``high`` the oldest copies are handed to the offline store (``Ledger._relieve_pressure``).
    """

    high: int
    """Pinned deliveries past which the oldest copies are handed over."""
    low: int
    """What a relief aims for: pinned deliveries, once the handed-over copies are confirmed."""
    pinned: set[Held] = field(default_factory=set)
    freeing: set[Held] = field(default_factory=set)
    """Pinned deliveries whose copies were handed over, not yet confirmed: about to go."""

    @property
    def is_over(self) -> bool:
        return len(self.pinned) - len(self.freeing) > self.high

    def released(self, held: Held) -> None:
        self.pinned.discard(held)
        self.freeing.discard(held)


@dataclass(eq=False, slots=True)
class Account:
    """One connection's unacknowledged messages, and where its replay stands."""

    session: Session
    """The connection's protocol state: its conn_id, and its uid once known."""
    unacked: dict[str, "Unacked"] = field(default_factory=dict)
    """mid -> the message pushed and not yet acknowledged, in the order pushed."""
    replay_from: str = ""
    """The smallest mid the offline store still has to replay here, asked for once the client
    has acknowledged enough (see ``Ledger.continue_replay``); empty: nothing known to remain."""
    overflow_mid: str = ""
    """Set once a live message passed the cap: the largest mid handed over since. Until a
    replay window has brought it, later live messages go to the offline store as well, so that
    they reach the client after the earlier ones, in mid order."""
    replay_floor: str = ""
    """Stored rows from this mid on may not have been pushed here (a window was cut there, or
    a live message was handed over): a replay window starting after it (``Delivery.from_mid``)
    is not pushed, or its rows would overtake that one; empty: none known."""
    is_closing: bool = False
    """The connection is closing (``Connection.request_close``): no more replay windows."""


@dataclass(slots=True, eq=False)
class Unacked:
    """A message pushed to one connection and not yet acknowledged by the client."""

    mid: str
    frame: bytes
    account: Account
    deadline: float
    held: list[Held]
    """The AMQP deliveries this copy holds; empty for a stored message (nothing to hand over)."""
    is_stored: bool = False
    """Replayed from the offline store: its ack goes on to the store, which deletes its row."""


# Effects: what the hub carries out, in the order given.


@dataclass(frozen=True, slots=True)
class HandOver:
    """Publish ``item`` to the offline store; once confirmed, release ``held``."""

    item: DeliveryItem
    held: tuple[Held, ...]


@dataclass(frozen=True, slots=True)
class AckDelivery:
    """Acknowledge this AMQP delivery to the broker: nothing holds it any more."""

    delivery_id: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Dead-letter the delivery's refused items, each alone, then release ``held``."""

    refused: tuple[RefusedItem, ...]
    routing_key: str
    """The routing key the delivery came with, kept on the dead-lettered items."""
    held: Held


@dataclass(frozen=True, slots=True)
class AskReplay:
    """Ask the offline store for the next replay window of this connection."""

    conn_id: str
    request: envelopes.ReplayRequest


@dataclass(frozen=True, slots=True)
class Capped:
    """Live copies for this connection were handed over: it holds too many (``unacked_capped``)."""

    conn_id: str
    count: int
    unacked: int


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Every copy handed over for the cap was replayed: live messages go live again."""

    conn_id: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The client did not acknowledge ``count`` messages in time; they were handed over."""

    conn_id: str
    count: int


@dataclass(frozen=True, slots=True)
class Relieved:
    """Pinned deliveries neared the prefetch: ``copies`` were handed over, for ``deliveries``."""

    pinned: int
    copies: int
    deliveries: int


LedgerEffect = (
    HandOver
    | AckDelivery
    | DeadLetter
    | AskReplay
    | Capped
    | CaughtUp
    | TimedOut
    | Relieved
)


class Ledger:
    """Every connection's unacknowledged messages, and the AMQP deliveries they hold.

    Args:
        gateway_id: this gateway, the target of the replay windows it asks for.
        max_unacked: messages one connection may leave unacknowledged (live and stored).
        ack_timeout_s: how long a client has to acknowledge a message.
        max_pinned: pinned deliveries past which the oldest copies are handed over; below the
            consumer's prefetch.
    """

    def __init__(
        self,
        gateway_id: str,
        max_unacked: int,
        ack_timeout_s: float,
        max_pinned: int = 500,
    ) -> None:
        self._gateway_id = gateway_id
        self._max_unacked = max_unacked
        self._ack_timeout_s = ack_timeout_s
        self._pins = Pins(high=max_pinned, low=max_pinned * 2 // 3)
        self._holding: set[Account] = set()
        """Accounts with unacknowledged messages: the ones the ack-timeout sweep looks at."""

    @property
    def pins(self) -> Pins:
        return self._pins

    def ack_deadline(self, now: float) -> float:
        """When the client's ack is due for a message pushed ``now``."""
        return now + self._ack_timeout_s

    def ack_waits(
        self, account: Account, mids: Iterable[str], now: float
    ) -> list[float]:
        """Seconds from each live message's push (its deadline less the ack timeout) to ``now``,
        among ``mids``; stored ones and others are left out. Ask before ``on_client_ack``."""
        due_now = now + self._ack_timeout_s
        held = (account.unacked.get(mid) for mid in mids)
        return [
            max(0.0, due_now - u.deadline) for u in held if u is not None and u.held
        ]

    def on_client_ack(
        self, account: Account, mids: Iterable[str]
    ) -> tuple[list[str], list[LedgerEffect]]:
        """Release the acknowledged messages held here.

        Returns:
            The mids whose acks go on to the offline store (those not held here, and the stored
            messages replayed here), and the effects: the deliveries to acknowledge, then the
            next replay window to ask for, if the client has acknowledged enough.
        """
        elsewhere = []
        effects: list[LedgerEffect] = []
        for mid in mids:
            unacked = account.unacked.pop(mid, None)
            if unacked is None:
                elsewhere.append(mid)
                continue
            if unacked.is_stored:
                elsewhere.append(mid)
            effects.extend(self.release(unacked.held))
        effects.extend(self.continue_replay(account))
        return elsewhere, effects

    def release(self, held: Iterable[Held]) -> list[AckDelivery]:
        """One copy of each of these deliveries is done (acknowledged, or handed over)."""
        acks = []
        for delivery in held:
            delivery.remaining -= 1
            if delivery.remaining == 0:
                self._pins.released(delivery)
                acks.append(AckDelivery(delivery.delivery_id))
        return acks

    def sweep(self, now: float) -> list[LedgerEffect]:
        """Hand over the messages whose clients did not acknowledge them by ``now``."""
        effects: list[LedgerEffect] = []
        for account in list(self._holding):
            # Dicts keep insertion order and deadlines grow with it: stop at the first live one.
            expired = []
            for unacked in account.unacked.values():
                if unacked.deadline > now:
                    break
                expired.append(unacked)
            for unacked in expired:
                del account.unacked[unacked.mid]
                if unacked.held:  # a stored message's row stays in the store
                    effects.append(_hand_over(unacked, tuple(unacked.held)))
            if expired:
                effects.append(TimedOut(account.session.conn_id, len(expired)))
                # A client that skipped some replayed messages may take the next window.
                effects.extend(self.continue_replay(account))
            if not account.unacked:
                self._holding.discard(account)
        return effects

    def forget(self, account: Account) -> list[HandOver]:
        """A connection closed: hand over what it held (a stored message's row stays)."""
        self._holding.discard(account)
        handovers = [
            _hand_over(unacked, tuple(unacked.held))
            for unacked in account.unacked.values()
            if unacked.held
        ]
        account.unacked.clear()
        return handovers

    def hold(
        self, account: Account, mid: str, frame: bytes, held: Held, deadline: float
    ) -> None:
        """A live copy was pushed: it holds its delivery until the client acknowledges it."""
        existing = account.unacked.get(mid)
        if existing is not None:
            # The same message again (a redelivery): one ack releases both.
            existing.held.append(held)
            return
        account.unacked[mid] = Unacked(mid, frame, account, deadline, [held])
        self._holding.add(account)

    def hold_stored(
        self, account: Account, mid: str, frame: bytes, deadline: float
    ) -> None:
        """A stored message was pushed: it counts against the cap until acknowledged."""
        account.unacked[mid] = Unacked(
            mid, frame, account, deadline, [], is_stored=True
        )
        self._holding.add(account)

    def is_full(self, account: Account, mid: str) -> bool:
        """Whether the connection may take no new message (``mid`` it holds already)."""
        return len(account.unacked) >= self._max_unacked and mid not in account.unacked

    def continue_replay(self, account: Account) -> list[AskReplay]:
        """Ask the offline store for the next replay window, once half the cap is free.

        The window is what the cap leaves free; the request is the connection's own (its uid
        from the verified token, its conn_id), so a client can only ask for its own rows.
        """
        uid = account.session.uid
        if (
            not account.replay_from
            or account.is_closing
            or uid is None
            or len(account.unacked) > self._max_unacked // 2
        ):
            return []
        conn_id = account.session.conn_id
        request = envelopes.ReplayRequest(
            uid=uid,
            targets=[envelopes.ReplayTarget(self._gateway_id, conn_id)],
            from_mid=account.replay_from,
            limit=self._max_unacked - len(account.unacked),
        )
        account.replay_from = ""
        return [AskReplay(conn_id, request)]

    def pin(self, held: Held) -> list[LedgerEffect]:
        """A delivery waits for its copies: relieve the pins if they are over their mark."""
        self._pins.pinned.add(held)
        if self._pins.is_over:
            return self._relieve_pressure()
        return []

    def _relieve_pressure(self) -> list[LedgerEffect]:
        """Hand the oldest copies that clients have not acknowledged to the offline store, so
        that their AMQP deliveries are acknowledged before the prefetch is reached.

        The client keeps what it was sent: a copy handed over stays in its connection's unacked
        messages as a stored one, whose ack goes on to the store (which deletes its row), and
        whose replay (the store announces the new row) is not pushed a second time. The copies
        of one delivery share a deadline, so handing over every copy up to a deadline frees
        whole deliveries.
        """
        pins = self._pins
        to_free = len(pins.pinned) - len(pins.freeing) - pins.low
        oldest = sorted(
            (
                unacked
                for account in self._holding
                for unacked in account.unacked.values()
                if unacked.held
            ),
            key=lambda unacked: unacked.deadline,
        )
        effects: list[LedgerEffect] = []
        touched: set[Held] = set()
        last_deadline = None
        for unacked in oldest:
            if len(touched) >= to_free and unacked.deadline != last_deadline:
                break
            last_deadline = unacked.deadline
            touched.update(unacked.held)
            effects.append(_hand_over(unacked, tuple(unacked.held)))
            unacked.held = []
            unacked.is_stored = True
        pins.freeing |= touched & pins.pinned
        effects.append(Relieved(len(pins.pinned), len(effects), len(touched)))
        return effects


def handover_item(account: Account, frame: bytes, mid: str) -> DeliveryItem:
    """The copy of one connection, for the offline store."""
    return DeliveryItem(
        frame=msgspec.Raw(frame),
        targets=[Target(account.session.uid or "", account.session.conn_id)],
        mid=mid,
        durable=True,
    )


def _hand_over(unacked: Unacked, held: tuple[Held, ...]) -> HandOver:
    return HandOver(handover_item(unacked.account, unacked.frame, unacked.mid), held)

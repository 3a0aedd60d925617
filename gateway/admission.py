"""Admission of one delivery's pushes: which a connection takes now, which wait for the store.

Pure, beside ``acks.py`` (whose ledger holds what is admitted). The hub asks before each push of
a delivery's plan (``fanout.plan_delivery``) and reports how the push went; the effects come
at the end, in order, for the hub to carry out.

A connection holds at most ``max_unacked`` unacknowledged messages, live and stored. A live copy
past that is handed to the offline store instead of pushed; once one was, the connection's later
live messages follow it through the store until a replay window has brought the last of them
(``Account.overflow_mid``): the client gets them in mid order.

Replays from the offline store come in windows: a window that did not hold every stored row
says where the rest starts (``Delivery.next_mid``). A window is pushed in order up to the cap;
the next one starts at the first message not pushed, and is asked for (``gateway.replay``) once
the connection has acknowledged half of what it holds (``Ledger.continue_replay``). Each
window says where the store started reading it (``Delivery.from_mid``): a window that starts
after a stored row still to push here (``Account.replay_floor``) is not pushed, or its rows
would overtake that one; the window asked from that row brings both.
"""

from collections.abc import Sequence

from gateway.acks import (
    Account,
    AckDelivery,
    Capped,
    CaughtUp,
    DeadLetter,
    HandOver,
    Held,
    Ledger,
    LedgerEffect,
    handover_item,
)
from gateway.fanout import Push
from proto.envelopes import DeliveryItem
from proto.items import RefusedItem


class Admission:
    """One AMQP delivery on its way to the connections, accounted push by push.

    For each push of the delivery's plan (``fanout.plan_delivery``), in order, the hub asks
    ``admit``; if admitted, it queues the frame on the connection and says how that went
    (``pushed`` or ``not_pushed``: the client is too far behind). Then ``hand_over`` for each
    copy whose connection is not here, and ``finish`` once, which returns every effect.
    """

    def __init__(
        self, ledger: Ledger, delivery_id: int, now: float, from_mid: str = ""
    ) -> None:
        self._ledger = ledger
        self._from_mid = from_mid
        """Where the store started reading, for a replay window (``Delivery.from_mid``)."""
        self._held = Held(delivery_id)
        self._deadline = ledger.ack_deadline(now)
        """When the client's ack is due for every copy pushed from this delivery."""
        self._effects: list[LedgerEffect] = []
        """Handovers so far, in order; carried out at ``finish``."""
        self._capped: dict[Account, int] = {}
        """Accounts that hold too many unacknowledged: live copies handed over, by count."""
        self._replay_cut: dict[Account, str] = {}
        """Accounts whose part of this replay window was cut: the first mid not pushed."""
        self._replayed_to: dict[Account, str] = {}
        """Accounts this replay window reached: the last mid they have now."""
        self._replayed: dict[Account, None] = {}
        """Accounts with stored messages in this delivery, in the order of their first."""
        self._handed_first: dict[Account, str] = {}
        """Accounts whose live messages were handed over for the cap: the first such mid."""

    def admit(self, account: Account, push: Push) -> bool:
        """Whether to push this frame to its connection now.

        Not: a live copy over the connection's cap (handed over instead), a stored message the
        connection has already, past where its window was cut, or of a window that starts
        after a row still to push here.
        """
        is_full = self._ledger.is_full(account, push.mid)
        if push.is_stored:
            self._replayed.setdefault(account)
            if account in self._replay_cut:
                # A window is pushed in order, up to the first it cannot take.
                return False
            if account.replay_floor and self._from_mid > account.replay_floor:
                # A row before this window waits: the window from there brings both.
                self._replay_cut[account] = account.replay_floor
                return False
            existing = account.unacked.get(push.mid)
            if existing is not None:
                existing.is_stored = True  # the client has it; its ack goes on too
                self._replayed_to[account] = push.mid
                return False
            if is_full:
                self._replay_cut[account] = push.mid
                return False
            self._replayed_to[account] = push.mid
            return True
        if push.awaits_ack and (is_full or account.overflow_mid):
            self._hand_over(handover_item(account, push.frame, push.mid))
            self._capped[account] = self._capped.get(account, 0) + 1
            account.overflow_mid = max(account.overflow_mid, push.mid)
            self._handed_first.setdefault(account, push.mid)
            return False
        return True

    def pushed(self, account: Account, push: Push) -> None:
        """The frame is queued for the client: hold it until the client acknowledges it."""
        if push.awaits_ack:
            self._held.remaining += 1
            self._ledger.hold(account, push.mid, push.frame, self._held, self._deadline)
        elif push.is_stored:
            self._ledger.hold_stored(account, push.mid, push.frame, self._deadline)

    def not_pushed(self, account: Account, push: Push) -> None:
        """The client is too far behind (its connection closes): its copy is handed over."""
        if push.awaits_ack:
            self._hand_over(handover_item(account, push.frame, push.mid))

    def hand_over(self, item: DeliveryItem) -> None:
        """A durable copy whose connection is not here."""
        self._hand_over(item)

    def finish(
        self,
        next_mid: str = "",
        refused: Sequence[RefusedItem] = (),
        routing_key: str = "",
    ) -> list[LedgerEffect]:
        """The delivery was pushed; returns every effect, in order.

        Args:
            next_mid: where the rest of a replay window starts (``Delivery.next_mid``).
            refused: the delivery's items that this gateway refused: it waits for them to be
                dead-lettered too.
            routing_key: the routing key the delivery came with.

        Returns:
            The handovers; ``Capped`` per connection over its cap; the replay windows to ask
            for; ``CaughtUp``; ``DeadLetter``; then ``AckDelivery`` if nothing holds the
            delivery, else what relieves the pins, if they are over their mark.
        """
        effects = self._effects
        for account, count in self._capped.items():
            effects.append(Capped(account.session.conn_id, count, len(account.unacked)))
        if next_mid:
            for account in self._replayed:
                self._replay_cut.setdefault(account, next_mid)
        for account in self._replayed:
            account.replay_floor = floor_after_window(
                self._replay_cut.get(account, ""),
                self._replayed_to.get(account, ""),
                account.overflow_mid,
            )
            if account.overflow_mid and not account.replay_floor:
                # Every message handed over has been replayed: live messages go live again.
                account.overflow_mid = ""
                effects.append(CaughtUp(account.session.conn_id))
        for account, first_mid in self._handed_first.items():
            if not account.replay_floor or first_mid < account.replay_floor:
                account.replay_floor = first_mid
        for account, from_mid in self._replay_cut.items():
            if not account.replay_from or from_mid < account.replay_from:
                account.replay_from = from_mid
            effects.extend(self._ledger.continue_replay(account))
        held = self._held
        if refused:
            held.remaining += 1
            effects.append(DeadLetter(tuple(refused), routing_key, held))
        if held.remaining == 0:
            effects.append(AckDelivery(held.delivery_id))
        else:
            effects.extend(self._ledger.pin(held))
        return effects

    def _hand_over(self, item: DeliveryItem) -> None:
        self._held.remaining += 1
        self._effects.append(HandOver(item, (self._held,)))


def floor_after_window(cut_at: str, last_pushed: str, overflow_mid: str) -> str:
    """Where a connection's stored rows still to push may start, after a replay window.

    Args:
        cut_at: where the window was cut (or skipped), or where the rows it did not hold start
            (``Delivery.next_mid``); "" when it held and pushed every row from its start.
        last_pushed: the last mid of the window the connection has now ("" when none).
        overflow_mid: the largest live mid handed over for the cap (``Connection.overflow_mid``).

    A window that was pushed whole holds every row stored when the store read it: what is
    left are live messages handed over later, all after ``last_pushed``. A window starting after
    that is not pushed before one from ``last_pushed`` on has brought them.
    """
    if cut_at:
        return cut_at
    if overflow_mid > last_pushed:
        return last_pushed
    return ""

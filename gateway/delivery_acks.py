"""Which of a channel's deliveries to acknowledge to RabbitMQ together, where their order allows.

A delivery is finished once every copy of it is settled (``acks.py``): pushed and acknowledged
by its clients, or handed over. Deliveries finish out of order, each waiting for its own
clients, and a ``multiple`` ack acknowledges every delivery of the channel up to a tag: it may
cover only a run of finished deliveries at the front of the channel's outstanding ones.

The hub takes what finished in one turn of its event loop at the end of that turn: the run at
the front leaves as one multiple ack on its last delivery, and each finished delivery behind
one still outstanding as an ack of its own. Held back until the one before it finished, it
would keep a place of the consumer's prefetch for nothing.

Pure: ``ChannelAcks`` knows delivery tags only; ``hub.py`` sends the acks.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Acks:
    """What to acknowledge on one channel now."""

    up_to: int | None
    """Acknowledge with ``multiple`` up to this tag (None: the front delivery is not finished)."""
    singles: list[int]
    """Then each of these alone: finished, behind a delivery still outstanding."""


class ChannelAcks:
    """The deliveries of one channel not yet acknowledged, in delivery order.

    RabbitMQ numbers a channel's deliveries 1, 2, 3...; a channel reopened after a reconnect
    starts again at 1, so a channel is never mixed with another.
    """

    def __init__(self) -> None:
        self._outstanding: dict[int, bool] = {}
        """Tag -> finished, in delivery order (the order of the tags)."""
        self._finished: list[int] = []
        """Finished since the last ``take``."""

    @property
    def is_empty(self) -> bool:
        return not self._outstanding

    def delivered(self, tag: int) -> None:
        self._outstanding[tag] = False

    def settled_elsewhere(self, tag: int) -> None:
        """Rejected on its own: no longer outstanding, and covered by no ack."""
        self._outstanding.pop(tag, None)

    def finish(self, tag: int) -> None:
        """Every copy of this delivery is settled: acknowledge it at the next ``take``."""
        self._outstanding[tag] = True
        self._finished.append(tag)

    def take(self) -> Acks:
        """The acks for what finished since the last ``take``; they are forgotten here."""
        up_to = None
        while self._outstanding:
            front = next(iter(self._outstanding))
            if not self._outstanding[front]:
                break
            del self._outstanding[front]
            up_to = front
        # Those the run at the front took are gone: pop answers False for them.
        singles = [tag for tag in self._finished if self._outstanding.pop(tag, False)]
        self._finished.clear()
        return Acks(up_to, singles)

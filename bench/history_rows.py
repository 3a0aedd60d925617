"""A history of 1:1 messages as the inbox tables hold it, made up for loading by ``COPY``.

The rows are what the offline store's writer would have left (``docs/history.md``, section
4.1): one ``messages`` row per message (the router's frame, without ``seq``), one ``inbox`` row
for its sender and one for its recipient, numbered 1, 2, 3, ... per uid in send order, one
``conversations`` row per uid and peer with its last entry and the count of entries received,
and each uid's head. Mids grow with the messages, as they would have been made, one every
``step_ms`` up to the load.

Two kinds of uids share the tables: a few *askers*, each with a handful of long conversations
(the ones a scenario pages through), and many others, each talking with a few peers. The
messages are interleaved in time, so that each uid's entries spread over the whole table as
they would in production.

Pure: no I/O; the randomness and the mids come in as arguments.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from proto import frames
from proto.mids import MidFactory

MessageRecord = tuple[str, str, str]
"""``messages``: mid, sender, frame."""
InboxRecord = tuple[str, int, str, str, bool]
"""``inbox``: uid, seq, conv, mid, is_own."""
ConversationRecord = tuple[str, str, int, str, int]
"""``conversations``: uid, conv, last_seq, last_mid, received."""
HeadRecord = tuple[str, int]
"""``inbox_heads``: uid, head."""

MESSAGE_COLUMNS = ("mid", "sender", "frame")
INBOX_COLUMNS = ("uid", "seq", "conv", "mid", "is_own")
CONVERSATION_COLUMNS = ("uid", "conv", "last_seq", "last_mid", "received")
HEAD_COLUMNS = ("uid", "head")


@dataclass(frozen=True)
class Shape:
    """How many of what: ``2 * (askers * asker_messages + other_messages)`` inbox rows."""

    askers: int
    peers_per_asker: int
    asker_messages: int
    """Messages each asker sent or received, spread over its peers."""
    uids: int
    """The other uids: the askers' peers are among them."""
    peers_per_uid: int
    """Conversations each other uid starts (it has about twice as many)."""
    other_messages: int

    @property
    def messages(self) -> int:
        return self.askers * self.asker_messages + self.other_messages

    @property
    def inbox_rows(self) -> int:
        return 2 * self.messages


def asker(index: int) -> str:
    return f"a{index}"


def other(index: int) -> str:
    return f"u{index}"


def peer_conversation(peer: str) -> str:
    """The conversation with ``peer`` as the inbox names it (``offline_store/inbox.py``)."""
    return f"u:{peer}"


@dataclass
class Tally:
    """What the rows so far add up to: each uid's head and each conversation's last entry."""

    heads: dict[str, int] = field(default_factory=dict)
    conversations: dict[tuple[str, str], list[int | str]] = field(default_factory=dict)
    """(uid, conv) -> [last_seq, last_mid, received]."""

    def enter(self, uid: str, conv: str, mid: str, is_own: bool) -> InboxRecord:
        seq = self.heads.get(uid, 0) + 1
        self.heads[uid] = seq
        last = self.conversations.setdefault((uid, conv), [0, "", 0])
        last[0] = seq
        last[1] = mid
        if not is_own:
            last[2] = int(last[2]) + 1
        return (uid, seq, conv, mid, is_own)

    def conversation_records(self) -> list[ConversationRecord]:
        return [
            (uid, conv, int(seq), str(mid), int(received))
            for (uid, conv), (seq, mid, received) in self.conversations.items()
        ]

    def head_records(self) -> list[HeadRecord]:
        return list(self.heads.items())


@dataclass
class History:
    """The made-up history: the askers' peers, then the rows, in chunks, and the tally."""

    shape: Shape
    rng: random.Random
    peers: dict[str, list[str]] = field(init=False)
    """Each asker's peers."""
    pairs: list[tuple[str, str]] = field(init=False)
    """The other uids' conversations."""
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        shape = self.shape
        self.peers = {
            asker(a): [
                other(u)
                for u in self.rng.sample(range(shape.uids), shape.peers_per_asker)
            ]
            for a in range(shape.askers)
        }
        self.pairs = []
        for u in range(shape.uids):
            for v in self.rng.sample(range(shape.uids - 1), shape.peers_per_uid):
                self.pairs.append((other(u), other(v if v < u else v + 1)))

    def chunks(
        self, mids: MidFactory, first_ms: int, step_ms: float, size: int
    ) -> Iterator[tuple[list[MessageRecord], list[InboxRecord]]]:
        """The ``messages`` and ``inbox`` rows, ``size`` messages at a time.

        Message ``n`` is made at ``first_ms + n * step_ms``; the askers' messages come at
        even intervals among the others', each between an asker (in turn) and one of its
        peers, in either direction.
        """
        shape = self.shape
        total = shape.messages
        asker_total = shape.askers * shape.asker_messages
        askers = list(self.peers)
        asker_sent = 0
        messages: list[MessageRecord] = []
        entries: list[InboxRecord] = []
        for n in range(total):
            # Spread the askers' messages evenly: message n is an asker's when the share of
            # them so far falls behind.
            is_asker = asker_total * (n + 1) // total > asker_total * n // total
            if is_asker:
                one = askers[asker_sent % len(askers)]
                asker_sent += 1
                peer = self.rng.choice(self.peers[one])
                sender, to = (one, peer) if self.rng.random() < 0.5 else (peer, one)
            else:
                sender, to = self.pairs[self.rng.randrange(len(self.pairs))]
                if self.rng.random() < 0.5:
                    sender, to = to, sender
            ms = first_ms + int(n * step_ms)
            mid = mids.next_mid(ms)
            frame = frames.encode(
                frames.Message(
                    mid=mid,
                    sender=sender,
                    body=msgspec.Raw(b'{"n":%d}' % n),
                    ts=ms,
                    to=to,
                )
            )
            messages.append((mid, sender, frame.decode()))
            entries.append(self.tally.enter(sender, peer_conversation(to), mid, True))
            entries.append(self.tally.enter(to, peer_conversation(sender), mid, False))
            if len(messages) == size:
                yield messages, entries
                messages, entries = [], []
        if messages:
            yield messages, entries

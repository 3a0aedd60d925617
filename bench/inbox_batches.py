"""``InboxBatch`` envelopes as a router publishes them, built ahead for the offline store's queue.

The history scenarios feed ``<ns>.inbox`` straight, without gateways and routers in the way: the
items are the router's own (``router.inbox_items.inbox_item`` from an ``Outgoing``), packed as it
packs them (``inbox_publications``), so that the store reads exactly what it reads in
production. The connections the router would have found in Redis are given here:

* online (a ``gateway_id``): every uid has one connection on that gateway, and the message
  comes from the sender's; the store delivers each copy there and the sender's ``advance``;
* offline (no ``gateway_id``): nobody is connected and the message names no connection, as a
  backend's ``api.send`` does; the store keeps a thin undelivered row per recipient.

Pure: no I/O, no clock; the mids' time and node come in as arguments.
"""

from collections.abc import Iterator, Sequence

import msgspec

from proto.envelopes import Outgoing
from proto.inbox import InboxItem
from proto.mids import MidFactory
from proto.names import Names
from router.inbox_items import inbox_item, inbox_publications
from router.results import PresenceEntry

Pair = tuple[str, str]
"""A sender and its recipient."""


def pairs_of(count: int, prefix: str) -> list[Pair]:
    """``count`` pairs of distinct uids: ``(<prefix>s0, <prefix>r0)``, ..."""
    return [(f"{prefix}s{i}", f"{prefix}r{i}") for i in range(count)]


def connection_of(uid: str) -> str:
    """The conn_id of a uid's one connection, when online."""
    return f"c-{uid}"


def one_to_one_items(
    pairs: Sequence[Pair],
    count: int,
    mids: MidFactory,
    now_ms: int,
    gateway_id: str | None,
) -> Iterator[InboxItem]:
    """``count`` 1:1 messages, each pair in turn, as the router's items.

    Args:
        pairs: who sends to whom; message ``n`` is pair ``n % len(pairs)``'s.
        count: how many messages.
        mids: makes the mids, in send order.
        now_ms: the Unix milliseconds of every message.
        gateway_id: the one gateway every uid is connected to; None: nobody is.
    """
    for n in range(count):
        sender, to = pairs[n % len(pairs)]
        mid = mids.next_mid(now_ms)
        outgoing = Outgoing(
            mid=mid,
            sender=sender,
            client_id=f"b{n}",
            body=msgspec.Raw(b'{"n":%d}' % n),
            ts=now_ms,
            gateway_id=gateway_id or "",
            conn_id=connection_of(sender) if gateway_id else "",
            to=to,
        )
        if gateway_id is None:
            yield inbox_item(outgoing, [(to, ())], ())
            continue
        recipient = PresenceEntry(connection_of(to), gateway_id)
        own = PresenceEntry(connection_of(sender), gateway_id)
        yield inbox_item(outgoing, [(to, (recipient,))], (own,))


def inbox_bodies(
    names: Names, items: Iterator[InboxItem], per_batch: int, max_bytes: int
) -> list[bytes]:
    """The bodies of the ``InboxBatch`` messages carrying the items, ``per_batch`` items each
    (a router batch), split further only past ``max_bytes`` as the router splits them."""
    bodies: list[bytes] = []
    chunk: list[InboxItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == per_batch:
            bodies += (p.body for p in inbox_publications(names, chunk, max_bytes))
            chunk = []
    if chunk:
        bodies += (p.body for p in inbox_publications(names, chunk, max_bytes))
    return bodies

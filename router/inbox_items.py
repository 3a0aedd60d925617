"""With ``SWITCHBOARD_HISTORY`` on, what a router publishes for a 1:1 or group message: one
``InboxItem`` for the offline store (``proto/inbox.py``) instead of deliveries to gateways.

The store writes and numbers the message, then delivers each copy with its ``seq``
(``docs/history.md``, sections 1 and 6.1). The item lists every inbox the message enters:
each recipient's, with the connections the router found in Redis, and the sender's own with
the sender's other connections (not the sending one, which has its ``sent``). A message to
oneself is one entry, for every connection of the uid, as without history. A backend's
``api.send`` from the default sender ``system`` enters no inbox of its sender: ``system`` is not
a user, and one inbox for every notification would serialise every batch on its head.

Rooms, broadcasts and transient sends never come here: they keep their path (``routing.py``).
Pure: no I/O.
"""

from collections.abc import Sequence

from proto.envelopes import Outgoing
from proto.inbox import EntryTarget, InboxBatch, InboxEntry, InboxItem, encode
from proto.items import wrap_items
from proto.names import Names
from proto.topology import store_paths
from router.delivery_items import message_frame, origin_of
from router.publications import Publication
from router.results import PresenceEntry

SYSTEM_SENDER = "system"
"""``api.send``'s default ``from``: a backend, not a user, so it has no inbox."""


def is_inboxed(
    *, to: str | None, group: str | None, transient: bool, history: bool
) -> bool:
    """Whether a message goes to the offline store's inbox rather than to gateways: with
    history on, a durable message to a uid or a group."""
    return history and not transient and (to is not None or group is not None)


def has_own_entry(sender: str, from_client: bool) -> bool:
    """Whether a message enters its sender's inbox: a client's always, a backend's unless it
    is sent as the default ``system``."""
    return from_client or sender != SYSTEM_SENDER


def reads_own(outgoing: Outgoing, from_client: bool, history: bool) -> bool:
    """Whether routing a message reads its sender's connections, for its own entry: an
    inboxed message that enters its sender's inbox, unless it is to the sender itself."""
    return (
        is_inboxed(
            to=outgoing.to,
            group=outgoing.group,
            transient=outgoing.transient,
            history=history,
        )
        and has_own_entry(outgoing.sender, from_client)
        and outgoing.to != outgoing.sender
    )


def inbox_item(
    outgoing: Outgoing,
    recipients: Sequence[tuple[str, Sequence[PresenceEntry]]],
    own: Sequence[PresenceEntry] | None,
) -> InboxItem:
    """The item of one message.

    Args:
        outgoing: the message (a client's ``send`` or a backend's ``api.send``).
        recipients: each recipient uid with its connections on live gateways (a message to
            oneself: the sender, with all its connections).
        own: the sender's connections on live gateways; None when the message does not enter
            the sender's inbox (``has_own_entry``) or is to the sender itself.
    """
    sender = outgoing.sender
    entries = [
        InboxEntry(uid, uid == sender, _targets(connections))
        for uid, connections in recipients
    ]
    if own is not None and outgoing.to != sender:
        sending = (outgoing.gateway_id, outgoing.conn_id)
        others = [c for c in own if (c.gateway_id, c.conn_id) != sending]
        entries.append(InboxEntry(sender, True, _targets(others)))
    return InboxItem(
        mid=outgoing.mid,
        sender=sender,
        frame=message_frame(outgoing),
        entries=entries,
        to=outgoing.to,
        group=outgoing.group,
        origin=origin_of(outgoing),
    )


def _targets(connections: Sequence[PresenceEntry]) -> list[EntryTarget]:
    return [EntryTarget(c.gateway_id, c.conn_id) for c in connections]


def inbox_publications(
    names: Names, items: Sequence[InboxItem], max_bytes: int
) -> list[Publication]:
    """The ``InboxBatch`` messages carrying these items, in order, each at most ``max_bytes``
    (an item larger than that alone); none for no items."""
    if not items:
        return []
    whole = encode(InboxBatch(items=list(items)))
    if len(whole) <= max_bytes:  # the usual case: one message, encoded in one call
        return [_publication(names, items, whole)]
    publications: list[Publication] = []
    chunk: list[bytes] = []
    start, size = 0, len(wrap_items([]))
    for index, item in enumerate(items):
        encoded = encode(item)
        item_bytes = len(encoded) + 1  # its comma
        if chunk and size + item_bytes > max_bytes:
            publications.append(
                _publication(names, items[start:index], wrap_items(chunk))
            )
            start, chunk, size = index, [], len(wrap_items([]))
        chunk.append(encoded)
        size += item_bytes
    publications.append(_publication(names, items[start:], wrap_items(chunk)))
    return publications


def _publication(names: Names, items: Sequence[InboxItem], body: bytes) -> Publication:
    mid = items[0].mid if len(items) == 1 else ""
    inbox = store_paths(names).inbox
    return Publication(inbox.exchange, inbox.routing_key, body, mid)

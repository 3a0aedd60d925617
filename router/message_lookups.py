"""What one message of a batch reads and writes in Redis, and what the results say about it.

A message is a client's ``send`` or the one an ``api.send`` or ``api.broadcast`` makes. Decided
here: the claim of its client id (a retry is a client id that already carries another mid:
``answers.Retried``); what its addressing reads (its recipient's connections, its group's
members and then their connections, its room's counts; a broadcast reads the gateways, once for
the batch); that a client's group message from a non-member is refused (``answers.NotMember``);
that a group message goes to its members but its sender; with history on, the sender's own
connections for its own entry, read last.

Pure: no I/O, no clock (the batch's time comes in as an argument). ``lookups.BatchLookup`` calls
it for each message, among the other envelopes of its batch.
"""

from collections.abc import Iterable

from proto.envelopes import Outgoing
from router.answers import EVERYONE, NOT_MEMBER, MessageAnswer, Recipients, Retried
from router.requests import ClaimClientId, ReadConnections, ReadGroup, ReadRoom, Request
from router.results import (
    Claimed,
    Connections,
    GroupRead,
    Result,
    RoomCounts,
    UidConnections,
)


def message_requests(
    outgoing: Outgoing,
    *,
    from_client: bool,
    claims: bool,
    reads_own: bool,
    at_ms: int,
    dedup_ttl_ms: int,
) -> list[Request]:
    """Claim the client id (if any), and read what the addressing needs.

    A broadcast makes no request of its own: it needs the gateways, which the batch reads once.

    Args:
        outgoing: the message.
        from_client: a client's frame (the sender's membership of a group is checked, its id
            claimed in the uid's keyspace), not a backend's ``api.send``.
        claims: it has a client id to claim.
        reads_own: history on, a 1:1 or group message reads its sender's connections too,
            last (``inbox_items.reads_own``).
        at_ms: the batch's time (Unix ms): the dedup window.
        dedup_ttl_ms: how long a client id keeps the mid of its first frame.
    """
    requests: list[Request] = []
    reads: tuple[str, ...] = ()
    if outgoing.to is not None:
        reads = (outgoing.to, outgoing.sender) if reads_own else (outgoing.to,)
    if claims:
        # A 1:1 message's reads go in its claim: one command for both.
        requests.append(
            ClaimClientId.at(
                outgoing,
                at_ms,
                dedup_ttl_ms,
                from_backend=not from_client,
                reads=reads,
            )
        )
    elif reads:
        requests.append(ReadConnections(reads))
    if outgoing.to is not None:
        return requests
    if outgoing.group is not None:
        member = outgoing.sender if from_client else None
        requests.append(ReadGroup(outgoing.group, member))
    elif outgoing.room is not None:
        requests.append(ReadRoom(outgoing.room))
    return requests


def is_broadcast(outgoing: Outgoing) -> bool:
    """Whether the message is addressed to no uid, group or room: it needs the gateways."""
    return outgoing.to is None and outgoing.group is None and outgoing.room is None


def message_answer(
    outgoing: Outgoing, results: Iterable[Result], *, reads_own: bool
) -> MessageAnswer | ReadConnections:
    """What to do with a message, from the results of its ``message_requests``; the read of
    its members' connections when it is a group message to route to some.

    Raises:
        ValueError: a result that no request of a message makes.
    """
    first_mid: str | None = None
    audience: Result | None = None
    for result in results:
        if isinstance(result, Claimed):
            first_mid = result.first_mid
            if result.connections is not None:
                audience = result.connections  # a 1:1 message's reads
        else:
            audience = result
    if isinstance(audience, GroupRead) and not audience.is_member:
        return NOT_MEMBER
    if first_mid is not None and first_mid != outgoing.mid:
        # Its client id already carries another mid. (The same mid again is a
        # redelivery after a failure: route it.)
        return Retried(first_mid)
    match audience:
        case Connections(by_uid=by_uid):
            return recipients(by_uid, reads_own=reads_own)
        case GroupRead(members=members):
            others = tuple(sorted(m for m in members if m != outgoing.sender))
            if reads_own:
                return ReadConnections((*others, outgoing.sender))
            return ReadConnections(others) if others else Recipients(())
        case RoomCounts():
            return audience
        case None:
            return EVERYONE
        case _:
            raise ValueError(f"unexpected {type(audience).__name__} for a message")


def recipients(by_uid: UidConnections, *, reads_own: bool) -> Recipients:
    """The recipients of a message, its sender's connections apart when they were read
    (last) for its own entry."""
    if not reads_own:
        return Recipients(by_uid)
    *others, (_, own) = by_uid
    return Recipients(tuple(others), own)

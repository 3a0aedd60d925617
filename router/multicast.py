"""What an ``api.send`` to a list of uids (a multicast) reads and writes in Redis, and what the
results say about each of its messages.

A multicast makes one 1:1 message per uid (``inbound.outgoings_of``), each with its own mid. Its
requests go in the first round of its batch, in one pipeline with the others: the claim of each
message's client id when the command has an ``id`` (a retry gets each uid's first mid back,
``answers.Retried``, and is routed by nobody), then ONE read of every recipient's connections
(and, with history on, of its sender's, for its own entries), not one per uid. Routing each
message is then a 1:1 message's (``message_routing.route_multicast``).

Pure: no I/O, no clock (the batch's time comes in as an argument). ``lookups.BatchLookup`` calls
it for each multicast of its batch.
"""

from collections.abc import Sequence

from proto.envelopes import Outgoing
from router.answers import Multicast, Recipients, Retried
from router.inbox_items import reads_own
from router.requests import ClaimClientId, ReadConnections, Request
from router.results import Claimed, Connections, Result, expect


def multicast_requests(
    outgoings: Sequence[Outgoing], *, history: bool, at_ms: int, dedup_ttl_ms: int
) -> list[Request]:
    """Claim each message's client id (if any), then read every recipient's connections at
    once (with the sender's last, when a message enters the sender's inbox).

    Args:
        outgoings: the multicast's messages (``inbound.outgoings_of``), at least one.
        history: ``SWITCHBOARD_HISTORY``.
        at_ms: the batch's time (Unix ms): the dedup window.
        dedup_ttl_ms: how long a client id keeps the mid of its first message.
    """
    requests: list[Request] = []
    for outgoing in outgoings:
        if outgoing.client_id:
            requests.append(
                ClaimClientId.at(outgoing, at_ms, dedup_ttl_ms, from_backend=True)
            )
    uids = tuple(outgoing.to or "" for outgoing in outgoings)
    if _reads_sender(outgoings, history):
        uids = (*uids, outgoings[0].sender)
    requests.append(ReadConnections(uids))
    return requests


def multicast_answer(
    outgoings: Sequence[Outgoing], results: Sequence[Result], *, history: bool
) -> Multicast:
    """What to do with each message of a multicast, from the results of its
    ``multicast_requests``.

    Raises:
        ValueError: the results are not those of the requests.
    """
    *claims, read = results
    by_uid = expect(Connections, read).by_uid
    own = by_uid[-1][1] if _reads_sender(outgoings, history) else None
    first_mids = {
        outgoing.client_id: expect(Claimed, claim).first_mid
        for outgoing, claim in zip(
            [o for o in outgoings if o.client_id], claims, strict=True
        )
    }
    answers: list[Retried | Recipients] = []
    for outgoing, entry in zip(outgoings, by_uid, strict=False):
        first_mid = first_mids.get(outgoing.client_id) if outgoing.client_id else None
        if first_mid is not None and first_mid != outgoing.mid:
            answers.append(Retried(first_mid))
        else:
            # The same mid again is a redelivery after a failure: route it.
            has_own = reads_own(outgoing, False, history)
            answers.append(Recipients((entry,), own if has_own else None))
    return Multicast(tuple(answers))


def _reads_sender(outgoings: Sequence[Outgoing], history: bool) -> bool:
    """Whether any message of the multicast enters its sender's inbox (history on, a sender
    other than ``system``, a recipient other than the sender)."""
    return any(reads_own(outgoing, False, history) for outgoing in outgoings)

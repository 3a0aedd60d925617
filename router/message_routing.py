"""Routing one message of a batch: a client's ``send``, or the one an ``api.send`` or
``api.broadcast`` makes, once its answer (``message_lookups.py``) is known.

Pure, like routing.py, which calls it: a retry is answered with the first mid and routed by
nobody; a mid already routed in this batch (a redelivery) is routed once; a 1:1 or group
message goes to its recipients' gateways (``PlanBuilder.deliver_message``: those without a
connection on a live gateway to the offline store) or, with history on, into the batch's
``InboxBatch`` (``PlanBuilder.enter_inbox``); each message of an ``api.send`` to a list of
uids like a 1:1 one; a room message to the gateways with connections in
the room, a broadcast to every live gateway. A client's ``send`` is answered ``sent`` (or
``not_member``).
"""

from proto import frames
from proto.codes import ErrorCode
from proto.envelopes import Outgoing, SendReply
from router.answers import (
    Everyone,
    MessageAnswer,
    Multicast,
    NotMember,
    Recipients,
    Retried,
)
from router.delivery_items import broadcast_items, room_items
from router.inbound import Call, outgoings_of
from router.inbox_items import is_inboxed
from router.plan import Duplicate, PlanBuilder
from router.results import RoomCounts


def route_outgoing(
    plan: PlanBuilder, outgoing: Outgoing, answer: MessageAnswer
) -> None:
    """A client's message, and the sender's ``sent`` (the first mid, for a retry)."""
    if isinstance(answer, NotMember):
        error = frames.Error(
            code=ErrorCode.NOT_MEMBER,
            message="only members may send to a group",
            id=outgoing.client_id,
        )
        plan.answer(outgoing, error)
        return
    mid = route_once(plan, outgoing, answer)
    if mid is not None:
        plan.answer(outgoing, frames.Sent(id=outgoing.client_id, mid=mid))


def route_multicast(plan: PlanBuilder, call: Call, answer: Multicast) -> None:
    """An ``api.send`` to a list of uids: each message routed as a 1:1 one (its items join
    the batch's one delivery per gateway), and one reply naming each uid's mid (the first
    ones, for a retry)."""
    mids: dict[str, str] = {}
    is_redelivered = False
    for outgoing, message_answer in zip(
        outgoings_of(call), answer.per_message, strict=True
    ):
        mid = route_once(plan, outgoing, message_answer)
        if mid is None:
            is_redelivered = True
        else:
            mids[outgoing.to or ""] = mid
    if not is_redelivered:  # else answered by its first copy in this batch
        plan.reply(call.reply_to, SendReply(mids=mids))


def route_once(
    plan: PlanBuilder,
    outgoing: Outgoing,
    answer: Retried | Recipients | RoomCounts | Everyone,
) -> str | None:
    """Route a message unless it is a retry; return the mid to answer with.

    None: the same mid was routed earlier in this batch (a redelivery), and
    answered then.
    """
    if isinstance(answer, Retried):
        duplicate = Duplicate(outgoing.mid, outgoing.client_id, answer.first_mid)
        plan.duplicates.append(duplicate)
        return answer.first_mid
    if outgoing.mid in plan.routed_mids:
        return None
    plan.routed_mids.add(outgoing.mid)
    match answer:
        case Recipients(by_uid=by_uid, own=own):
            recipients = [(uid, plan.live(held)) for uid, held in by_uid]
            if is_inboxed(
                to=outgoing.to,
                group=outgoing.group,
                transient=outgoing.transient,
                history=plan.history,
            ):
                live_own = None if own is None else plan.live(own)
                plan.enter_inbox(outgoing, recipients, live_own)
            else:
                plan.deliver_message(outgoing, recipients)
        case RoomCounts(counts=counts):
            gateways = [
                gid
                for gid, count in sorted(counts.items())
                if count > 0 and plan.is_live(gid)
            ]
            room = outgoing.room or ""  # a room message: it is set
            for gateway_id, item in room_items(outgoing, room, gateways):
                plan.deliver(gateway_id, item)
        case Everyone():
            for gateway_id, item in broadcast_items(outgoing, plan.live_gateways()):
                plan.deliver(gateway_id, item)
    return outgoing.mid

"""The frames that read or mark the history (``history``, ``read``, ``conversations``): refused
with ``history_off`` while ``SWITCHBOARD_HISTORY`` is off, else published to the offline
stores, which answer the connection with a delivery (``proto/sync.py``).

Pure, like ``session.py``, which calls it: a frame in, the effect (or the refusal) out.
"""

from gateway.effects import Publish
from proto import frames, sync
from proto.codes import ErrorCode
from proto.errors import FrameRejected
from proto.names import KEY_CONVERSATIONS, KEY_HISTORY, KEY_READ

HistoryFrame = frames.HistoryQuery | frames.Read | frames.ConversationsQuery


def history_asked(
    frame: HistoryFrame,
    uid: str,
    conn_id: str,
    gateway_id: str,
    is_history_on: bool,
) -> Publish:
    """The envelope that carries a history frame to the offline stores.

    Raises:
        FrameRejected: ``history_off`` while history is off (the frame cost its rate all the
            same).
    """
    if not is_history_on:
        raise FrameRejected(
            ErrorCode.HISTORY_OFF,
            "this deployment keeps no history (SWITCHBOARD_HISTORY=off)",
            frame.id,
        )
    match frame:
        case frames.HistoryQuery():
            key = KEY_HISTORY
            body = sync.encode(
                sync.HistoryAsked(
                    uid=uid,
                    gateway_id=gateway_id,
                    conn_id=conn_id,
                    client_id=frame.id,
                    peer=frame.peer,
                    group=frame.group,
                    before=frame.before,
                    limit=frame.limit,
                )
            )
        case frames.Read():
            key = KEY_READ
            body = sync.encode(
                sync.ReadAsked(
                    uid=uid,
                    gateway_id=gateway_id,
                    conn_id=conn_id,
                    client_id=frame.id,
                    mid=frame.mid,
                )
            )
        case frames.ConversationsQuery():
            key = KEY_CONVERSATIONS
            body = sync.encode(
                sync.ConversationsAsked(
                    uid=uid,
                    gateway_id=gateway_id,
                    conn_id=conn_id,
                    client_id=frame.id,
                    before=frame.before,
                    limit=frame.limit,
                )
            )
    # The store answers the connection (history, marked, conversations, or an error).
    return Publish(key, body, client_id=frame.id)

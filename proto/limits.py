"""Limits that more than one service applies the same way: what a frame costs against the rate
limits, and who may learn a uid's presence.

Gateways count a client's frames and bytes per connection; routers count each uid's frames
across every gateway. Both weigh a ``presence`` frame by the uids it asks about, with
``frame_cost``, so that asking about many uids costs what asking about them one by one would
cost (in tenths), and neither limit can be bypassed by packing queries. The settings are in
``proto/env.py`` and README.md ("Configuration").
"""

from enum import StrEnum

PRESENCE_UIDS_PER_TOKEN = 10
"""A ``presence`` frame costs one token (one frame) per this many uids it asks about, at least
one: at the most uids a frame may carry (``proto.frames.MAX_PRESENCE_UIDS``), ten frames."""

ACK_FRAME_COST = 0.1
"""What an ``ack`` frame costs against a connection's frame limit: a tenth of a frame. Clients
acknowledge each message they handle, so a connection receives about as many acks as messages;
at full cost a busy room or a large replay would get a client's own acks refused. Acks stay
bounded, by bytes (``SWITCHBOARD_RATE_LIMIT_BYTES_PER_S``) and at ten times the frame rate."""

THROTTLE_MIN_MS = 100
"""The shortest time a router asks gateways to refuse a uid's frames: shorter is not worth a
delivery."""


class PresencePolicy(StrEnum):
    """Who may learn, with a client ``presence`` frame, whether a uid is online
    (``SWITCHBOARD_PRESENCE_POLICY``). Backends (``api.presence``) always may."""

    EVERYONE = "everyone"
    """Any connected user about any uid."""
    SHARED_GROUP = "shared_group"
    """A user about itself and the uids it shares a group with (``api.group.add``); any other
    uid is answered as offline, so that the answer tells a stranger nothing."""
    NOBODY = "nobody"
    """No client: the frame is refused with ``forbidden``."""


def frame_cost(presence_uids: int | None = None) -> int:
    """What a frame costs against a rate limit, in frames.

    Args:
        presence_uids: for a ``presence`` frame, how many uids it asks about; None for any
            other frame.

    Returns:
        1, or for a ``presence`` frame one per ``PRESENCE_UIDS_PER_TOKEN`` uids (rounded up).
    """
    if presence_uids is None:
        return 1
    return max(1, -(-presence_uids // PRESENCE_UIDS_PER_TOKEN))

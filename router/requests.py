"""What the router asks of Redis: typed requests, each of which gets one typed result
(results.py).

Pure: no I/O. This is the seam between the router's decisions and Redis. The decisions
(lookups.py for a batch, routing.py for what follows its confirms, liveness.py and debounce.py
for the periodic work) say what to read and write as ``Request``s; presence.py turns each into
its Redis commands, runs a list of them in one pipeline, in order, and hands back one result
per request, in the same order. Keys, Lua scripts and the shape of Redis replies stay in
presence.py and scripts.py; values such as windows and due times are decided before a request
is made. This is how websockets splits its protocol (bytes in, events out) from the asyncio
layer that does the awaiting.
"""

from dataclasses import dataclass

from proto.envelopes import Outgoing

# Requests made for the envelopes of a batch (lookups.py), in batch order


@dataclass(frozen=True, slots=True)
class OpenConnection:
    """Register a connection and its gateway's heartbeat -> ``Opened``.

    ``max_connections`` is how many the uid may hold across all gateways; 0: no limit
    (a re-announced connection was counted when it first opened)."""

    uid: str
    conn_id: str
    gateway_id: str
    max_connections: int
    seen_ms: int
    """The heartbeat recorded for the gateway (Unix ms)."""


@dataclass(frozen=True, slots=True)
class RemoveConnection:
    """Take a connection out of presence, and out of its rooms -> ``Written``.

    A uid left without a connection is going offline, its ``user.offline`` due at
    ``offline_due_ms`` (debounce.py). Its entry in the going-offline set is written once Redis
    answered the removal (presence.py: a second round trip, only for such a uid)."""

    uid: str
    conn_id: str
    gateway_id: str
    offline_due_ms: int
    rooms: tuple[str, ...] = ()
    """The rooms the connection leaves as well (a closed connection's)."""


@dataclass(frozen=True, slots=True)
class CountInRoom:
    """Count a connection in a room -> ``Written``."""

    conn_id: str
    gateway_id: str
    room: str


@dataclass(frozen=True, slots=True)
class CountOutOfRoom:
    """Count a connection out of a room -> ``Written``."""

    conn_id: str
    gateway_id: str
    room: str


@dataclass(frozen=True, slots=True)
class RecordHeartbeat:
    """Record a gateway's heartbeat, and read whether it was known -> ``HeartbeatRecorded``."""

    gateway_id: str
    seen_ms: int


@dataclass(frozen=True, slots=True)
class ClaimClientId:
    """Claim a client id for a mid in the sender's dedup hashes -> ``Claimed``.

    The hash of ``window`` is read and written, the one of the window before only read; the
    written one expires at ``expire_at_ms``."""

    sender: str
    client_id: str
    mid: str
    window: int
    expire_at_ms: int
    from_backend: bool = False
    """An ``api.send``'s id: backends have a keyspace of their own."""
    reads: tuple[str, ...] = ()
    """Uids whose connections are read in the same command (``Claimed.connections``): a 1:1
    message's recipient, and its sender with history on. Empty: none are read."""

    @classmethod
    def at(
        cls,
        outgoing: Outgoing,
        at_ms: int,
        dedup_ttl_ms: int,
        *,
        from_backend: bool,
        reads: tuple[str, ...] = (),
    ) -> "ClaimClientId":
        """The claim of ``outgoing``'s client id at ``at_ms``: its window is ``at_ms`` in
        ``dedup_ttl_ms`` steps, and it outlives the next window, so that the window after
        still reads it."""
        window = at_ms // dedup_ttl_ms
        return cls(
            outgoing.sender,
            outgoing.client_id,
            outgoing.mid,
            window,
            (window + 2) * dedup_ttl_ms,
            from_backend=from_backend,
            reads=reads,
        )


@dataclass(frozen=True, slots=True)
class ReadConnections:
    """Read the connections of each uid, in order -> ``Connections``."""

    uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadVisibility:
    """Read the asker's groups, and each uid's connections and groups -> ``Visibility``."""

    asker: str
    uids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadGroup:
    """Read a group's members, and whether ``member`` is one of them -> ``GroupRead``."""

    group: str
    member: str | None
    """The uid whose membership is checked (a client sender); None: none is."""


@dataclass(frozen=True, slots=True)
class ReadRoom:
    """Read a room's connections per gateway -> ``RoomCounts``."""

    room: str


@dataclass(frozen=True, slots=True)
class AddCost:
    """Add a uid's cost to its counter of a rate window -> ``Counted``."""

    uid: str
    window: int
    cost: int
    expire_ms: int
    """How long the counter is kept from now."""


@dataclass(frozen=True, slots=True)
class ReadGateways:
    """Read every gateway's last heartbeat -> ``GatewaysRead``."""


@dataclass(frozen=True, slots=True)
class ReadGroupsLoaded:
    """Read whether Redis holds every group member (``<ns>:groups-loaded:{groups}``) ->
    ``GroupsLoaded``."""


# Requests of group membership (groups.py decides them, group_changes.py runs them)


@dataclass(frozen=True, slots=True)
class LockRebuild:
    """Take the lock on asking the offline store for a rebuild, for ``lock_ms`` ->
    ``Locked``."""

    lock_ms: int


@dataclass(frozen=True, slots=True)
class ApplyMembers:
    """Set each ``(uid, version, is_member)`` of ``group`` (and the reverse sets) unless Redis
    holds a version at least as high for that uid -> ``Applied``."""

    group: str
    members: tuple[tuple[str, int, bool], ...]


@dataclass(frozen=True, slots=True)
class CountPage:
    """Count page ``index`` of the rebuild ``rebuild_id`` applied; once all ``count`` are,
    mark the groups loaded and release the rebuild's lock -> ``PagesCounted``."""

    rebuild_id: str
    index: int
    count: int
    expire_ms: int
    """How long the rebuild's count of pages is kept."""


# Requests made once a batch's deliveries are confirmed (plan.Plan)


@dataclass(frozen=True, slots=True)
class MarkKnown:
    """Record that the routers hold a gateway's presence -> ``Written``."""

    gateway_id: str


# Requests of the sweep of a gateway (liveness.py) and of due offline events (debounce.py)


@dataclass(frozen=True, slots=True)
class LockSweep:
    """Take the lock on sweeping a gateway, for ``lock_s`` at most -> ``Locked``."""

    gateway_id: str
    lock_s: int


@dataclass(frozen=True, slots=True)
class UnlockSweep:
    """Release the lock on sweeping a gateway -> ``Written``."""

    gateway_id: str


@dataclass(frozen=True, slots=True)
class ReadGatewayRecord:
    """Read what Redis holds for a gateway -> ``GatewayRecord``."""

    gateway_id: str


@dataclass(frozen=True, slots=True)
class ForgetGateway:
    """Delete a gateway's rooms and its own keys (its connections go with
    ``RemoveConnection``) -> ``Written``."""

    gateway_id: str
    rooms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadDueOffline:
    """Read at most ``limit`` uids whose ``user.offline`` is due by ``due_ms`` -> ``DueUids``."""

    due_ms: int
    limit: int


@dataclass(frozen=True, slots=True)
class ClaimDueOffline:
    """Claim a uid's ``user.offline`` if it is due by ``now_ms`` (its offline-due key, deleted
    by one router only), and count its connections now -> ``DueClaim``."""

    uid: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class DropDueOffline:
    """Take a uid out of the going-offline set, unless its entry moved from ``due_ms`` (a later
    removal wrote it again) -> ``Written``."""

    uid: str
    due_ms: int


Request = (
    OpenConnection
    | RemoveConnection
    | CountInRoom
    | CountOutOfRoom
    | RecordHeartbeat
    | ClaimClientId
    | ReadConnections
    | ReadVisibility
    | ReadGroup
    | ReadRoom
    | AddCost
    | ReadGateways
    | ReadGroupsLoaded
    | LockRebuild
    | ApplyMembers
    | CountPage
    | MarkKnown
    | LockSweep
    | UnlockSweep
    | ReadGatewayRecord
    | ForgetGateway
    | ReadDueOffline
    | ClaimDueOffline
    | DropDueOffline
)
"""Everything the router asks of Redis."""

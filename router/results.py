"""What Redis answers the router: the typed result of each request of requests.py.

Pure: no I/O. presence.py reads the replies of a request's commands into its result;
lookups.py, liveness.py and debounce.py read the results.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from router.requests import (
    AddCost,
    ApplyMembers,
    ClaimClientId,
    ClaimDueOffline,
    CountInRoom,
    CountOutOfRoom,
    CountPage,
    DropDueOffline,
    ForgetGateway,
    LockRebuild,
    LockSweep,
    MarkKnown,
    OpenConnection,
    ReadConnections,
    ReadDueOffline,
    ReadGatewayRecord,
    ReadGateways,
    ReadGroup,
    ReadGroupsLoaded,
    ReadRoom,
    ReadVisibility,
    RecordHeartbeat,
    RemoveConnection,
    Request,
    UnlockSweep,
)


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One connection of a uid: an entry of ``<ns>:presence:{<uid>}`` (conn_id -> gateway_id)."""

    conn_id: str
    gateway_id: str


UidConnections = tuple[tuple[str, tuple[PresenceEntry, ...]], ...]
"""Each uid asked about, in order, with its connections (on any gateway, live or not)."""


@dataclass(frozen=True, slots=True)
class Written:
    """The result of a request that only writes."""


WRITTEN = Written()


@dataclass(frozen=True, slots=True)
class Opened:
    """What registering a connection found."""

    is_first_connection: bool
    """The uid had no other connection (presence was empty)."""
    has_flapped: bool
    """The uid was going offline (debounce), so it never left."""
    is_over_connection_limit: bool
    """The uid holds its most connections already: this one was not registered."""


@dataclass(frozen=True, slots=True)
class HeartbeatRecorded:
    was_known: bool
    """Redis had a record of the gateway (no first heartbeat, no empty restart, no sweep of a
    gateway that lived on)."""


@dataclass(frozen=True, slots=True)
class Connections:
    by_uid: UidConnections


@dataclass(frozen=True, slots=True)
class Claimed:
    first_mid: str | None
    """The mid that claimed the client id first; None: this mid claimed it now."""
    connections: Connections | None = None
    """The connections of the claim's ``reads``, in order; None when it read none."""


@dataclass(frozen=True, slots=True)
class Visibility:
    """What the ``shared_group`` presence policy needs to answer a presence query."""

    asker: str
    asker_groups: frozenset[str]
    by_uid: UidConnections
    groups: tuple[frozenset[str], ...]
    """The groups of each uid of ``by_uid``, in the same order."""


@dataclass(frozen=True, slots=True)
class GroupRead:
    is_member: bool
    """The checked uid is a member; True when none was checked."""
    members: frozenset[str]


@dataclass(frozen=True, slots=True)
class RoomCounts:
    counts: Mapping[str, int]
    """gateway_id -> its connections in the room."""


@dataclass(frozen=True, slots=True)
class Counted:
    uid: str
    count: int
    """The cost of the uid's frames in the window, this batch's included."""


@dataclass(frozen=True, slots=True)
class GatewaysRead:
    last_seen_ms: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class GroupsLoaded:
    is_loaded: bool
    """Redis holds every group member; False: it restarted empty, a rebuild is due."""


@dataclass(frozen=True, slots=True)
class Applied:
    changed: int
    """How many members the change or page changed (the others had a version as high)."""


@dataclass(frozen=True, slots=True)
class PagesCounted:
    applied: int
    """How many distinct pages of the rebuild are applied, this one included."""
    count: int
    """How many pages the rebuild has."""


@dataclass(frozen=True, slots=True)
class Locked:
    is_locked: bool
    """This router holds the lock; False: another one does."""


@dataclass(frozen=True, slots=True)
class GatewayRecord:
    last_seen_ms: int | None
    """Its last heartbeat; None: it is no longer in ``<ns>:gateways``."""
    connections: Mapping[str, str]
    """conn_id -> uid of the connections it holds."""
    rooms: frozenset[str]


@dataclass(frozen=True, slots=True)
class DueUids:
    uids: tuple[str, ...]
    due_ms: tuple[int, ...]
    """When each one's entry in the going-offline set falls due, in the same order."""


@dataclass(frozen=True, slots=True)
class DueClaim:
    was_claimed: bool
    """This router deleted the uid's offline-due key: it announces the uid offline."""
    connection_count: int
    """The connections the uid holds now (read in the same script)."""
    is_pending: bool = False
    """The uid has an offline-due key due later (it left again since its entry was
    written): its entry stays for then."""


Result = (
    Written
    | Opened
    | HeartbeatRecorded
    | Claimed
    | Connections
    | Visibility
    | GroupRead
    | RoomCounts
    | Counted
    | GatewaysRead
    | Locked
    | GatewayRecord
    | DueUids
    | DueClaim
    | GroupsLoaded
    | Applied
    | PagesCounted
)
"""What Redis answered to one ``Request``."""

RESULT_OF: Mapping[type[Request], type[Result]] = {
    OpenConnection: Opened,
    RemoveConnection: Written,
    CountInRoom: Written,
    CountOutOfRoom: Written,
    RecordHeartbeat: HeartbeatRecorded,
    ClaimClientId: Claimed,
    ReadConnections: Connections,
    ReadVisibility: Visibility,
    ReadGroup: GroupRead,
    ReadRoom: RoomCounts,
    AddCost: Counted,
    ReadGateways: GatewaysRead,
    ReadGroupsLoaded: GroupsLoaded,
    LockRebuild: Locked,
    ApplyMembers: Applied,
    CountPage: PagesCounted,
    MarkKnown: Written,
    LockSweep: Locked,
    UnlockSweep: Written,
    ReadGatewayRecord: GatewayRecord,
    ForgetGateway: Written,
    ReadDueOffline: DueUids,
    ClaimDueOffline: DueClaim,
    DropDueOffline: Written,
}
"""The type of the result each request gets back."""


def check_results(requests: Sequence[Request], results: Sequence[Result]) -> None:
    """Check that each request got one result, of its type.

    Raises:
        ValueError: they do not match.
    """
    if len(results) != len(requests):
        raise ValueError("one result per request is needed")
    for request, result in zip(requests, results, strict=True):
        expected = RESULT_OF[type(request)]
        if not isinstance(result, expected):
            raise ValueError(
                f"{type(request).__name__} gets a {expected.__name__},"
                f" not a {type(result).__name__}"
            )


R = TypeVar("R", bound=Result)


def expect(kind: type[R], result: Result) -> R:
    """The result, checked to be of the type its request gets.

    Raises:
        TypeError: it is not (presence.py answered another request).
    """
    if not isinstance(result, kind):
        raise TypeError(f"expected {kind.__name__}, got {type(result).__name__}")
    return result

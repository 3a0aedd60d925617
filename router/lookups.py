"""What routing a batch needs from Redis: the requests of its envelopes, and what their results
say, as one typed answer per envelope.

Pure: no I/O, no clock (the batch's time comes in as an argument). ``BatchLookup`` works like
websockets' protocol object: it hands out the requests of a round (``requests``), takes their
results (``receive``), and once no round is left gives the answers (``answers``) to
routing.py. presence.py runs each round in one pipeline:

1. the requests of every envelope, in batch order, so that each envelope sees the writes of
   the ones before it (a ``send`` after an ``opened`` finds the new connection); then the
   cost of each uid's frames (``limits.UidRate``), and the gateways' heartbeats when a
   broadcast needs them;
2. the connections of the members of the group messages that will be routed (a round with
   no request costs no round trip).

Decided here, once: what each envelope reads and writes, and what a presence query may see.
What a message reads, and what its results say (a retry, a refused group message, its
recipients), is decided in message_lookups.py.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proto.envelopes import (
    ApiBroadcast,
    ApiConnections,
    ApiKick,
    ApiPresence,
    ApiRoomCount,
    ApiSend,
    ConnClosed,
    ConnOpened,
    GatewayStopped,
    Heartbeat,
    Outgoing,
    PresenceAsked,
    RoomJoined,
    RoomLeft,
    Saved,
)
from proto.limits import PresencePolicy
from proto.sync import Receipts
from router.answers import (
    PRESENCE_FORBIDDEN,
    Answer,
    Answers,
)
from router.debounce import offline_due_ms
from router.inbound import Call, Inbound, Refused, outgoing_of, outgoings_of
from router.inbox_items import reads_own
from router.limits import Throttled, UidRate, sees_presence, throttle_for_ms, uid_costs
from router.message_lookups import (
    is_broadcast,
    message_answer,
    message_requests,
    recipients,
)
from router.multicast import multicast_answer, multicast_requests
from router.receipts import receipt_uids
from router.requests import (
    AddCost,
    CountInRoom,
    CountOutOfRoom,
    OpenConnection,
    ReadConnections,
    ReadGateways,
    ReadRoom,
    ReadVisibility,
    RecordHeartbeat,
    RemoveConnection,
    Request,
)
from router.results import (
    Connections,
    Counted,
    GatewaysRead,
    HeartbeatRecorded,
    Opened,
    Result,
    RoomCounts,
    Visibility,
    Written,
    check_results,
    expect,
)


@dataclass(frozen=True, slots=True)
class LookupRules:
    """The settings that shape what a batch reads and writes."""

    dedup_ttl_ms: int
    """How long a client id keeps the mid of its first frame (``SWITCHBOARD_DEDUP_TTL_S``)."""
    debounce_ms: int
    """How long a uid without connections waits for ``user.offline``."""
    max_connections_per_uid: int = 0
    """Connections one uid may hold across all gateways; 0: no limit."""
    presence_policy: PresencePolicy = PresencePolicy.EVERYONE
    uid_rate: UidRate | None = None
    """The rate per uid across gateways; None: no limit."""
    history: bool = False
    """``SWITCHBOARD_HISTORY``: a 1:1 or group message also reads its sender's connections,
    for the sender's own entry (``router/inbox_items.py``)."""


class BatchLookup:
    """The rounds of requests that routing one batch needs, and their answers."""

    def __init__(
        self, batch: Sequence[Inbound], at_ms: int, rules: LookupRules
    ) -> None:
        """Args:
        batch: the decoded envelopes, in the order they were consumed.
        at_ms: the batch's time (Unix ms): heartbeats, dedup and rate windows, due times.
        rules: what the settings say.
        """
        self._batch = batch
        self._at_ms = at_ms
        self._rules = rules
        self._answers: list[Answer] = [None] * len(batch)
        self._messages: dict[int, Outgoing] = {}
        """The messages of the batch, by index (those of ``api.send`` and ``api.broadcast``
        included)."""
        self._multicasts: dict[int, list[Outgoing]] = {}
        """The messages of each ``api.send`` to a list of uids, by index."""
        self._costs = uid_costs(batch) if rules.uid_rate is not None else {}
        self._throttles: dict[int, Throttled] = {}
        self._members: dict[int, ReadConnections] = {}
        """The group messages to route whose members' connections are read next."""
        self._own: set[int] = set()
        """The messages (by index) whose sender's connections are read too (history on):
        last, after the recipients'."""
        self._reads_gateways = False
        """A broadcast needs the gateways: read once for the whole batch."""
        self._rounds_left = 2
        self._requests: list[Request] = []
        """The requests of the current round."""
        self._spans: list[tuple[int, int]] = []
        """Where each envelope's requests are among the first round's (they are
        contiguous), in batch order."""
        self._batch_start = 0
        """Where the first round's requests for the whole batch start."""
        self._first_round()

    @property
    def is_done(self) -> bool:
        """Whether every round was received: ``answers`` may be called."""
        return self._rounds_left == 0

    def requests(self) -> list[Request]:
        """The requests of the current round, to run in one pipeline in this order (none:
        the round needs no round trip, but is received all the same)."""
        return list(self._requests)

    def receive(self, results: Sequence[Result]) -> None:
        """Take the results of the current round's ``requests``, one per request, in order.

        Raises:
            ValueError: every round was received already, or ``results`` does not match
                the requests (one each, of its type: ``results.RESULT_OF``).
        """
        if self.is_done:
            raise ValueError("every round was received already")
        check_results(self._requests, results)
        self._rounds_left -= 1
        if self._rounds_left == 1:
            self._read_first_round(results)
            self._requests = list(self._members.values())
        else:
            for index, result in zip(self._members, results, strict=True):
                by_uid = expect(Connections, result).by_uid
                self._answers[index] = recipients(by_uid, reads_own=index in self._own)
            self._requests = []

    def answers(self) -> Answers:
        """The answers, once every round was received.

        Raises:
            ValueError: a round is left.
        """
        if not self.is_done:
            raise ValueError("a round of requests is left")
        return Answers(tuple(self._answers), dict(self._throttles))

    def _first_round(self) -> None:
        requests, spans = self._requests, self._spans
        for index, envelope in enumerate(self._batch):
            start = len(requests)
            requests += self._requests_of(index, envelope)
            spans.append((start, len(requests)))
        self._batch_start = len(requests)
        rate = self._rules.uid_rate
        if rate is not None:
            window = self._at_ms // rate.window_ms
            for uid, (cost, _) in self._costs.items():
                # Kept one window more, for a batch whose clock is a little behind.
                requests.append(AddCost(uid, window, cost, 2 * rate.window_ms))
        if self._reads_gateways:
            requests.append(ReadGateways())

    def _requests_of(self, index: int, envelope: Inbound) -> list[Request]:
        """What one envelope reads and writes. An envelope answered without a read (a
        refused presence query) gets its answer here."""
        at_ms = self._at_ms
        match envelope:
            case Outgoing():  # first: most envelopes are messages
                self._messages[index] = envelope
                return self._message_requests(
                    index, envelope, from_client=True, claims=True
                )
            case ConnOpened(uid=uid, conn_id=conn_id, gateway_id=gateway_id):
                limit = (
                    0 if envelope.reannounce else self._rules.max_connections_per_uid
                )
                return [OpenConnection(uid, conn_id, gateway_id, limit, at_ms)]
            case ConnClosed(uid=uid, conn_id=conn_id, gateway_id=gateway_id):
                due_ms = offline_due_ms(at_ms, self._rules.debounce_ms)
                rooms = tuple(envelope.rooms)
                return [RemoveConnection(uid, conn_id, gateway_id, due_ms, rooms)]
            case RoomJoined(gateway_id=gateway_id, room=room, conn_id=conn_id):
                return [CountInRoom(conn_id, gateway_id, room)]
            case RoomLeft(gateway_id=gateway_id, room=room, conn_id=conn_id):
                return [CountOutOfRoom(conn_id, gateway_id, room)]
            case PresenceAsked(uid=asker, uids=uids):
                match self._rules.presence_policy:
                    case PresencePolicy.NOBODY:
                        self._answers[index] = PRESENCE_FORBIDDEN
                        return []
                    case PresencePolicy.SHARED_GROUP:
                        return [ReadVisibility(asker, unique(uids))]
                return [ReadConnections(unique(uids))]
            case Heartbeat(gateway_id=gateway_id):
                # Gone with an empty Redis or a sweep: see liveness.should_reannounce. Only
                # read here; recorded by plan.Plan.known once the deliveries are confirmed.
                return [RecordHeartbeat(gateway_id, at_ms)]
            case Saved(uids=uids):
                return [ReadConnections(tuple(saved.uid for saved in uids))]
            case Receipts():
                return [ReadConnections(receipt_uids(envelope))]
            case GatewayStopped() | Refused():
                return []  # a stopped gateway is swept after the publishes
            case Call():
                return self._call_requests(index, envelope)

    def _call_requests(self, index: int, call: Call) -> list[Request]:
        match call.command:
            case ApiSend(to=list()):
                outgoings = self._multicasts[index] = outgoings_of(call)
                return multicast_requests(
                    outgoings,
                    history=self._rules.history,
                    at_ms=self._at_ms,
                    dedup_ttl_ms=self._rules.dedup_ttl_ms,
                )
            case ApiSend(id=client_id):
                return self._backend_message_requests(
                    index, call, client_id is not None
                )
            case ApiBroadcast():
                return self._backend_message_requests(index, call, claims=False)
            case ApiKick(uid=uid) | ApiConnections(uid=uid):
                return [ReadConnections((uid,))]
            case ApiPresence(uids=uids):
                return [ReadConnections(unique(uids))]
            case ApiRoomCount(room=room):
                return [ReadRoom(room)]
            case _:
                raise ValueError(f"no presence requests for {call.name!r}")

    def _backend_message_requests(
        self, index: int, call: Call, claims: bool
    ) -> list[Request]:
        """The requests of the message an ``api.send`` or ``api.broadcast`` makes."""
        outgoing = outgoing_of(call)
        assert outgoing is not None  # a send or a broadcast makes a message
        self._messages[index] = outgoing
        return self._message_requests(index, outgoing, from_client=False, claims=claims)

    def _message_requests(
        self, index: int, outgoing: Outgoing, *, from_client: bool, claims: bool
    ) -> list[Request]:
        """A message's requests (``message_lookups.message_requests``); a broadcast's
        gateways are read once for the whole batch."""
        if reads_own(outgoing, from_client, self._rules.history):
            self._own.add(index)
        if is_broadcast(outgoing):
            self._reads_gateways = True
        return message_requests(
            outgoing,
            from_client=from_client,
            claims=claims,
            reads_own=index in self._own,
            at_ms=self._at_ms,
            dedup_ttl_ms=self._rules.dedup_ttl_ms,
        )

    def _read_first_round(self, results: Sequence[Result]) -> None:
        messages = self._messages
        for index, (start, end) in enumerate(self._spans):
            outgoing = messages.get(index)
            multicast = self._multicasts.get(index)
            if multicast is not None:
                self._answers[index] = multicast_answer(
                    multicast, results[start:end], history=self._rules.history
                )
            elif outgoing is not None:
                answer = message_answer(
                    outgoing, results[start:end], reads_own=index in self._own
                )
                if isinstance(answer, ReadConnections):
                    self._members[index] = answer
                else:
                    self._answers[index] = answer
            elif start != end:
                self._answers[index] = _answer_of(results[start:end])
        for result in results[self._batch_start :]:
            self._read_batch_result(result)

    def _read_batch_result(self, result: Result) -> None:
        match result:
            case Counted(uid=uid, count=count):
                assert self._rules.uid_rate is not None  # costs are added only then
                cost, index = self._costs[uid]
                throttle_ms = throttle_for_ms(
                    count, cost, self._rules.uid_rate, self._at_ms
                )
                if throttle_ms:
                    self._throttles[index] = Throttled(uid, throttle_ms)
            case GatewaysRead():
                pass  # presence.py mirrors them: routing reads liveness from there
            case _:
                raise ValueError(f"unexpected {type(result).__name__} for the batch")


def _answer_of(results: Sequence[Result]) -> Answer:
    """The answer about an envelope that is not a message, from its results."""
    match results:
        case [Visibility() as visibility]:
            return visible_connections(visibility)
        case [Opened() | HeartbeatRecorded() | Connections() | RoomCounts() as answer]:
            return answer
        case [Written()]:
            return None
        case _:
            kinds = ", ".join(type(result).__name__ for result in results)
            raise ValueError(f"unexpected results: {kinds}")


def visible_connections(visibility: Visibility) -> Connections:
    """The connections of the uids the asker may see (``limits.sees_presence``), in order."""
    return Connections(
        tuple(
            (uid, connections)
            for (uid, connections), groups in zip(
                visibility.by_uid, visibility.groups, strict=True
            )
            if sees_presence(visibility.asker, uid, visibility.asker_groups, groups)
        )
    )


def unique(values: Iterable[str]) -> tuple[str, ...]:
    """The values without repeats, in their first order."""
    return tuple(dict.fromkeys(values))

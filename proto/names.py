"""Every name on the wire and in storage, derived from the namespace.

A namespace prefixes every exchange, queue, Redis key and the PostgreSQL schema, so that several
Switchboard stacks (or test runs) share one broker, one Redis and one database without seeing
each other. Services never build a name themselves; they ask a ``Names``.

AMQP topology (RabbitMQ docs: https://www.rabbitmq.com/docs/exchanges)::

    <ns>.inbound        topic   everything that enters: gateway.* from gateways, api.* from
                                backends, store.* from offline stores, router.* from routers
      -> <ns>.router          queue, bound to gateway.opened|closed|send|joined|left|presence|
                              heartbeat|stopped,
                              store.saved and api.#: consumed by every router
      -> <ns>.offline.control queue, bound to router.replay(s) and gateway.replay: offline stores
      -> <ns>.offline.acks    queue, bound to gateway.ack and gateway.acks: offline stores (apart
                              from replays, so that a flood of acks never delays a login)
      -> <ns>.offline.groups  queue, bound to api.group.add|remove|members and router.groups:
                              offline stores (group members live in PostgreSQL)
      -> <ns>.router.groups   queue, bound to store.group and store.groups: every router applies
                              them to Redis (apart from batches that wait for them)
      -> <ns>.inbox           queue, bound to router.inbox (only with SWITCHBOARD_HISTORY on):
                              the 1:1 and group messages routers hand the offline stores to
                              number and keep before they are delivered
      -> <ns>.offline.reads   queue, bound to gateway.read (only with history on): read
                              markers, a write each, apart from the history queries so that
                              neither delays the other
      (with history on, <ns>.router is also bound to store.receipts: the receipts of the
      read markers the offline stores committed, for the routers to deliver)
      -> <ns>.offline.control also bound to router.sync and gateway.sync with history on: the
                              sync windows of connections that sent init with since
      -> <ns>.offline.queries queue (classic; only with SWITCHBOARD_HISTORY on), bound to
                              gateway.history, gateway.conversations, api.history,
                              api.conversations and api.message: offline stores answer them
                              from the inbox (a lost query is asked again by its client)
    <ns>.deliveries     direct  routing key = gateway_id; alternate exchange <ns>.undeliverable
      -> <ns>.gateway.<gateway_id>  one queue per gateway process; deliveries that wait there
                              longer than the orphan TTL are dead-lettered to <ns>.inbound
                              with the key gateway.handover
    <ns>.undeliverable  fanout  deliveries for a gateway whose queue is gone
      -> <ns>.offline         queue consumed by offline stores, which keep it in PostgreSQL;
                              also bound to gateway.handover on <ns>.inbound: the copies a
                              gateway could not push, and its queue's expired deliveries

Redis keys: ``<ns>:presence:{<uid>}`` (hash conn_id -> gateway_id),
``<ns>:gateway:{<gateway_id>}`` (hash conn_id -> uid), ``<ns>:gateways`` (sorted set
gateway_id -> last heartbeat, ms), ``<ns>:dedup:{<uid>}:<window>`` (hash client_id -> mid of the
first frame with that id, per dedup window), ``<ns>:dedup-api:{<from>}:<window>`` (the same for
``api.send``), group members and their versions (``group_key``, ``member_of_key``,
``group_version_key``, ``groups_loaded_key``). The braces are hash tags: every key of one uid,
gateway, room or group is in one Redis Cluster slot (docs/architecture.md, "Presence in Redis").

PostgreSQL: schema ``<ns>``, tables ``<ns>.undelivered``, ``<ns>.groups``, ``<ns>.group_members``;
with history on also ``messages``, ``inbox``, ``inbox_heads`` and ``conversations``
(``docs/history.md``, section 4.1).
"""

import re
from dataclasses import dataclass

DEFAULT_NAMESPACE = "switchboard"
NAMESPACE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""A namespace is a safe SQL identifier, queue prefix and key prefix at once."""

# Routing keys on the inbound exchange. A key names its producer: a deployment's topic permissions
# let a gateway's RabbitMQ user write gateway.* only, so that no frame can pose as an api.* command.
KEY_CONN_OPENED = "gateway.opened"
KEY_CONN_CLOSED = "gateway.closed"
KEY_SEND = "gateway.send"
KEY_ACK = "gateway.ack"
KEY_HEARTBEAT = "gateway.heartbeat"
KEY_GATEWAY_STOPPED = "gateway.stopped"
KEY_ROOM_JOINED = "gateway.joined"
KEY_ROOM_LEFT = "gateway.left"
KEY_PRESENCE = "gateway.presence"
KEY_BATCH = "gateway.batch"
KEY_SAVED = "store.saved"
KEY_REPLAY = "router.replay"
KEY_REPLAY_BATCH = "router.replays"
"""A ``Batch`` of ``router.replay`` envelopes: the replay requests of one router batch (a storm's
logins), in one message and one confirm."""
KEY_ACK_BATCH = "gateway.acks"
"""A ``Batch`` of ``gateway.ack`` envelopes: a gateway's acks of many connections, one confirm."""
KEY_HANDOVER = "gateway.handover"
"""A gateway's ``Delivery`` of the copies it could not push, for the offline stores (bound to
``<ns>.offline``). The broker dead-letters a gateway queue's expired deliveries with this key
too, so that a gateway's user writes no exchange but ``<ns>.inbound`` (its ``gateway.*`` keys)
and the dead-letter exchange."""
KEY_REPLAY_MORE = "gateway.replay"
"""A gateway's ``ReplayRequest`` for the next replay window of one connection."""
# History and sync (docs/history.md), bound with history on.
KEY_SYNC = "router.sync"
"""A router's ``SyncRequest`` for a connection that sent ``init`` with ``since``."""
KEY_SYNC_MORE = "gateway.sync"
"""A gateway's ``SyncRequest`` for the next sync window of one connection, or a gap."""
KEY_HISTORY = "gateway.history"
"""A client's ``history`` frame (``HistoryAsked``), for the offline stores."""
KEY_CONVERSATIONS = "gateway.conversations"
"""A client's ``conversations`` frame (``ConversationsAsked``), for the offline stores."""
KEY_READ = "gateway.read"
"""A client's ``read`` frame (``ReadAsked``), for the offline stores (``<ns>.offline.reads``)."""
KEY_RECEIPTS = "store.receipts"
"""An offline store's ``Receipts``: read markers moved, for the routers to deliver (bound to
``<ns>.router`` with history on)."""
KEY_INBOX = "router.inbox"
"""A router's ``InboxBatch`` (``proto/inbox.py``) for the offline stores (history on)."""
API_KEY_PATTERN = "api.#"
API_KEY_PREFIX = "api."
KEY_GROUP_CHANGED = "store.group"
"""``GroupChanged``: the offline store committed a change of a group's members."""
KEY_GROUPS_REQUEST = "router.groups"
"""``GroupsRequest``: a router asks the offline store for every member row (a rebuild)."""
KEY_GROUPS_PAGE = "store.groups"
"""``GroupsPage``: one page of a rebuild's member rows."""
GROUP_COMMANDS = ("group.add", "group.remove", "group.members")
"""The backend commands the offline store serves (the routers' queue gets them too, through
``api.#``, and leaves them to the store)."""

# Routing keys on the events exchange.
EVENT_USER_ONLINE = "user.online"
EVENT_USER_OFFLINE = "user.offline"
EVENT_MESSAGE_OFFLINE = "message.offline"
EVENT_MESSAGE_REFUSED = "message.refused"

GATEWAY_TO_ROUTER_KEYS = (
    KEY_CONN_OPENED,
    KEY_CONN_CLOSED,
    KEY_SEND,
    KEY_HEARTBEAT,
    KEY_GATEWAY_STOPPED,
    KEY_ROOM_JOINED,
    KEY_ROOM_LEFT,
    KEY_PRESENCE,
)
BATCHABLE_KEYS = frozenset(GATEWAY_TO_ROUTER_KEYS)
"""The gateway's routing keys that may travel inside a ``gateway.batch`` (all bound to the
router's queue, none of them to another queue)."""
ROUTER_BINDINGS = (*GATEWAY_TO_ROUTER_KEYS, KEY_BATCH, KEY_SAVED, API_KEY_PATTERN)
STORE_CONTROL_BINDINGS = (KEY_REPLAY, KEY_REPLAY_BATCH, KEY_REPLAY_MORE)
STORE_ACK_BINDINGS = (KEY_ACK, KEY_ACK_BATCH)
STORE_GROUP_BINDINGS = (
    *(API_KEY_PREFIX + command for command in GROUP_COMMANDS),
    KEY_GROUPS_REQUEST,
)
ROUTER_GROUP_BINDINGS = (KEY_GROUP_CHANGED, KEY_GROUPS_PAGE)
STORE_READ_BINDINGS = (KEY_READ,)
"""Bindings of ``<ns>.offline.reads`` (history on)."""
ROUTER_HISTORY_BINDINGS = (KEY_RECEIPTS,)
"""Bindings the routers' queue gains with history on."""
QUERY_COMMANDS = ("history", "conversations", "message")
"""The backend commands the offline store answers from the inbox (history on; the routers'
queue gets them too, through ``api.#``, and leaves them to the store)."""
STORE_QUERY_BINDINGS = (
    KEY_HISTORY,
    KEY_CONVERSATIONS,
    *(API_KEY_PREFIX + command for command in QUERY_COMMANDS),
)
STORE_SYNC_BINDINGS = (KEY_SYNC, KEY_SYNC_MORE)
"""Bound to ``<ns>.offline.control`` with history on: sync windows, beside the replays."""
RETIRED_STORE_CONTROL_BINDINGS = (KEY_ACK,)
"""Bindings of the control queue that earlier releases declared; the offline store removes them."""

HEADER_REJECTED_REASON = "x-switchboard-rejected-reason"
"""AMQP header of a message a consumer dead-lettered itself: why it was refused. A consumer that
refuses one item of a batch publishes that item alone, as an envelope of the same kind, to the
dead-letter exchange with this header (and the item's routing key); the rest of the batch is
handled. A message refused whole is rejected, and the broker's ``x-death`` header says so."""


GROUPS_TAG = "groups"
"""The hash tag of the keys of a rebuild of the group members, which one script writes
together (``groups_loaded_key``, ``groups_rebuild_key``, ``groups_pages_key``)."""


def api_key(command: str) -> str:
    """The routing key of a backend command: ``api.<command>``."""
    return f"{API_KEY_PREFIX}{command}"


def is_valid_namespace(namespace: str) -> bool:
    """Tell whether ``namespace`` can prefix every name (see ``NAMESPACE_PATTERN``)."""
    return NAMESPACE_PATTERN.fullmatch(namespace) is not None


@dataclass(frozen=True, slots=True)
class Names:
    """The names of one Switchboard namespace.

    Raises:
        ValueError: the namespace does not match ``NAMESPACE_PATTERN``.
    """

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not is_valid_namespace(self.namespace):
            raise ValueError(
                f"namespace must match {NAMESPACE_PATTERN.pattern}, got {self.namespace!r}"
            )

    # AMQP exchanges
    @property
    def inbound_exchange(self) -> str:
        return f"{self.namespace}.inbound"

    @property
    def deliveries_exchange(self) -> str:
        return f"{self.namespace}.deliveries"

    @property
    def undeliverable_exchange(self) -> str:
        return f"{self.namespace}.undeliverable"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    @property
    def dead_letter_queue(self) -> str:
        """Messages rejected as malformed (bad envelopes, bad commands without reply_to)."""
        return f"{self.namespace}.dead-letter"

    # AMQP queues
    @property
    def router_queue(self) -> str:
        return f"{self.namespace}.router"

    @property
    def offline_queue(self) -> str:
        return f"{self.namespace}.offline"

    @property
    def store_control_queue(self) -> str:
        return f"{self.namespace}.offline.control"

    @property
    def store_acks_queue(self) -> str:
        return f"{self.namespace}.offline.acks"

    @property
    def store_queries_queue(self) -> str:
        """History and conversations, frames and backend commands (history on), apart from
        the sync windows of ``<ns>.offline.control`` so that no query waits in front of a
        login. Classic: a lost query is asked again by its client."""
        return f"{self.namespace}.offline.queries"

    @property
    def store_reads_queue(self) -> str:
        """Read markers (``gateway.read``), for the offline stores (history on): a write each,
        in a queue of its own so that a flood of history queries never delays one, nor one
        them."""
        return f"{self.namespace}.offline.reads"

    @property
    def store_groups_queue(self) -> str:
        """Group commands and rebuild requests, for the offline stores."""
        return f"{self.namespace}.offline.groups"

    @property
    def router_groups_queue(self) -> str:
        """Group changes and rebuild pages, for the routers: a queue apart from the routers'
        batches, which may wait for them."""
        return f"{self.namespace}.router.groups"

    @property
    def inbox_queue(self) -> str:
        """The routers' ``InboxBatch`` envelopes, for the offline stores (history on)."""
        return f"{self.namespace}.inbox"

    def gateway_queue(self, gateway_id: str) -> str:
        return f"{self.namespace}.gateway.{gateway_id}"

    # Redis keys. The part in braces is the key's hash tag (Redis Cluster specification,
    # "Hash tags": https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/):
    # on a Redis Cluster only it chooses the slot, so every key of one uid, one gateway, one room
    # or one group is in one slot, and a script or transaction on them runs on one node. An
    # identifier has no brace (proto/rules.py), so the tag is always the whole id. A key that no
    # script or transaction shares with another (<ns>:gateways, <ns>:going-offline) has none.
    def presence_key(self, uid: str) -> str:
        return f"{self.namespace}:presence:{{{uid}}}"

    def offline_due_key(self, uid: str) -> str:
        """When ``uid``'s ``user.offline`` is due (Unix ms): set when its last connection went,
        deleted by its next first connection (a flap) or by the router that announces it."""
        return f"{self.namespace}:offline-due:{{{uid}}}"

    def gateway_key(self, gateway_id: str) -> str:
        return f"{self.namespace}:gateway:{{{gateway_id}}}"

    @property
    def gateways_key(self) -> str:
        return f"{self.namespace}:gateways"

    def dedup_key(self, uid: str, window: int) -> str:
        """Hash client_id -> mid of the ids a uid's clients used in one dedup window.

        A uid has no ``:`` (``proto/rules.py``), so the key names one uid and one window, and
        the client id, a field, is never part of a key: no two (uid, id) pairs can meet.
        """
        return f"{self.namespace}:dedup:{{{uid}}}:{window}"

    def api_dedup_key(self, sender: str, window: int) -> str:
        """Like ``dedup_key``, for ``api.send``'s ids: backends have a keyspace of their own,
        so a user whose ``sub`` is ``system`` (``api.send``'s default ``from``) meets none."""
        return f"{self.namespace}:dedup-api:{{{sender}}}:{window}"

    def gateway_known_key(self, gateway_id: str) -> str:
        """Set by a gateway's heartbeat; missing while the gateway has connections means the
        routers lost its presence (Redis restarted empty, or it was swept) and ask it again."""
        return f"{self.namespace}:gateway:{{{gateway_id}}}:known"

    def sweep_lock_key(self, gateway_id: str) -> str:
        return f"{self.namespace}:sweep:{{{gateway_id}}}"

    def group_key(self, group: str) -> str:
        """Set of the group's member uids."""
        return f"{self.namespace}:group:{{{group}}}"

    def group_version_key(self, group: str) -> str:
        """Hash uid -> the version of the group's change that last added or removed the uid:
        a change or a rebuild page is applied to a member only with a higher version."""
        return f"{self.namespace}:group-version:{{{group}}}"

    @property
    def groups_loaded_key(self) -> str:
        """Set once Redis holds every group member (a rebuild finished, or a first start):
        missing after an empty restart, and routing of group messages waits for it."""
        return f"{self.namespace}:groups-loaded:{{{GROUPS_TAG}}}"

    @property
    def groups_rebuild_key(self) -> str:
        """Held (``SET NX PX``) by the router that asked the offline store for a rebuild."""
        return f"{self.namespace}:groups-rebuild:{{{GROUPS_TAG}}}"

    def groups_pages_key(self, rebuild_id: str) -> str:
        """Set of the page indexes of a rebuild applied so far."""
        return f"{self.namespace}:groups-pages:{{{GROUPS_TAG}}}:{rebuild_id}"

    def room_key(self, room: str) -> str:
        """Hash gateway_id -> number of that gateway's connections in the room."""
        return f"{self.namespace}:room:{{{room}}}"

    def room_members_key(self, room: str, gateway_id: str) -> str:
        """Set of the ids of a gateway's connections in a room. Its size is the gateway's count
        in ``room_key`` (in the room's slot, beside it): a join or leave handled twice (a
        redelivered batch) changes nothing."""
        return f"{self.namespace}:room-members:{{{room}}}:{gateway_id}"

    def gateway_rooms_key(self, gateway_id: str) -> str:
        """Set of ``<room>:<conn_id>``, one per connection of the gateway in a room, to clean
        the rooms when the gateway dies (in the gateway's slot: a join or a leave writes it
        apart from the room's keys, and, one entry per connection, needs no count)."""
        return f"{self.namespace}:gateway:{{{gateway_id}}}:rooms"

    def member_of_key(self, uid: str) -> str:
        """Set of the groups ``uid`` is a member of: the reverse of ``group_key``, kept beside it
        by ``api.group.add`` and ``api.group.remove``, read by the ``shared_group`` presence
        policy."""
        return f"{self.namespace}:member-of:{{{uid}}}"

    def member_of_version_key(self, uid: str) -> str:
        """Hash group -> the version of the change that last added ``uid`` to the group or
        removed it: ``member_of_key`` is written only with a higher version (the group's own
        versions are in another slot)."""
        return f"{self.namespace}:member-of-version:{{{uid}}}"

    def rate_key(self, uid: str, window: int) -> str:
        """The cost of ``uid``'s frames (all gateways) in one window of the per-uid rate limit;
        ``window`` (a number, last) is the window's index since the epoch."""
        return f"{self.namespace}:rate:{{{uid}}}:{window}"

    @property
    def going_offline_key(self) -> str:
        """Sorted set uid -> when its ``user.offline`` may be due (debounce, Unix ms): where the
        routers look for due uids. ``offline_due_key`` says whether one is."""
        return f"{self.namespace}:going-offline"

    @property
    def redis_pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace."""
        return f"{self.namespace}:*"

    # PostgreSQL
    @property
    def schema(self) -> str:
        return self.namespace

    @property
    def schema_migrations_table(self) -> str:
        """The numbered schema migrations applied to the namespace's schema (``switchboard
        migrate``, ``offline_store/migration_plan.py``)."""
        return f"{self.namespace}.schema_migrations"

    @property
    def undelivered_table(self) -> str:
        return f"{self.namespace}.undelivered"

    @property
    def groups_table(self) -> str:
        """A row per group: its version, one more at each change."""
        return f"{self.namespace}.groups"

    @property
    def group_members_table(self) -> str:
        """A row per (group, uid) ever added: a member, or a tombstone kept a day."""
        return f"{self.namespace}.group_members"

    @property
    def messages_table(self) -> str:
        """A message once: its mid, sender and frame (without ``seq``); history on."""
        return f"{self.namespace}.messages"

    @property
    def inbox_table(self) -> str:
        """One row per message per inbox it entered: ``(uid, seq, conv, mid, is_own)``."""
        return f"{self.namespace}.inbox"

    @property
    def inbox_heads_table(self) -> str:
        """The highest ``seq`` of each uid's inbox; its row lock orders the uid's writers."""
        return f"{self.namespace}.inbox_heads"

    @property
    def conversations_table(self) -> str:
        """One row per conversation of a uid: its last entry and the count from others."""
        return f"{self.namespace}.conversations"

    @property
    def receipts_table(self) -> str:
        """Receipt entries (a read marker moved), numbered in the inbox like messages."""
        return f"{self.namespace}.receipts"

    @property
    def conversation_expired_table(self) -> str:
        """Per conversation of a uid, the entries from others that retention deleted."""
        return f"{self.namespace}.conversation_expired"

    @property
    def recent_syncs_table(self) -> str:
        """Connections that started a sync lately: added to messages routed before they
        registered (``docs/history.md``, section 5.2)."""
        return f"{self.namespace}.recent_syncs"

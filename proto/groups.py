"""Envelopes of durable group membership, between the offline store and the routers.

The offline store owns a group's members (PostgreSQL); the routers keep a copy in Redis for
routing, with a version per member, so that changes and rebuild pages applied in any order
leave each member as its highest version says (docs/architecture.md, "Groups").

==========================  ===================  =====================================
routing key / queue          envelope             producer -> consumer
==========================  ===================  =====================================
store.group                  GroupChanged         offline store -> router (<ns>.router.groups)
router.groups                GroupsRequest        router -> offline store (<ns>.offline.groups)
store.groups                 GroupsPage           offline store -> router (<ns>.router.groups)
==========================  ===================  =====================================

``GroupChanged`` carries the AMQP ``reply_to`` and ``correlation_id`` of the ``api.group.add``
or ``api.group.remove`` it comes from: the router that applied it answers the backend there.
"""

from typing import Annotated

import msgspec

from proto.envelopes import Envelope
from proto.rules import Identifier

Version = Annotated[int, msgspec.Meta(ge=1)]
"""A group's version: 1 at its first change, one more at each change after."""


class GroupChanged(Envelope, frozen=True):
    """The offline store committed a change of ``group``: ``uids`` were added (``is_added``)
    or removed, each now at ``version``. Routers apply it to each uid unless Redis holds a
    higher version of that member already."""

    group: Identifier
    uids: list[Identifier]
    is_added: bool
    version: Version


class GroupsRequest(Envelope, frozen=True):
    """A router found Redis without group members (an empty restart): the offline store is
    asked for every member row, tombstones included, as ``GroupsPage`` envelopes."""

    rebuild_id: Identifier
    """Names this rebuild: routers count its pages under it."""


class GroupMember(msgspec.Struct, frozen=True, array_like=True):
    """One row of the store's members, as ``[group, uid, version, is_member]``;
    ``is_member`` false is a tombstone (the uid was removed at ``version``)."""

    group: Identifier
    uid: Identifier
    version: Version
    is_member: bool


class GroupsPage(Envelope, frozen=True):
    """One page of every member row, for the rebuild ``rebuild_id``: page ``index`` of
    ``count`` (at least one page, which may be empty). The router that applies the last of
    them marks the groups loaded."""

    rebuild_id: Identifier
    index: Annotated[int, msgspec.Meta(ge=0)]
    count: Annotated[int, msgspec.Meta(ge=1)]
    members: list[GroupMember]

    def __post_init__(self) -> None:
        if self.index >= self.count:
            raise ValueError("`index` must be below `count` - at `$.index`")


decode_group_changed = msgspec.json.Decoder(GroupChanged).decode
decode_groups_request = msgspec.json.Decoder(GroupsRequest).decode
decode_groups_page = msgspec.json.Decoder(GroupsPage).decode

"""The router's side of durable groups: the queue ``<ns>.router.groups`` in batches, and the
rebuild request after an empty Redis.

* ``GroupChanged`` (``store.group``): the offline store committed a change; it is applied to
  Redis's copy with versions (groups.py), then the backend that asked for it is answered
  ``{"ok": true}`` on the ``reply_to`` the store passed on. A send published after that reply
  finds the member.
* ``GroupsPage`` (``store.groups``): a page of a rebuild, applied the same way and counted, in
  one Redis transaction per page (on a Redis Cluster, counted once its writes are answered);
  the page that completes the rebuild marks the groups loaded.

This queue is consumed apart from the router's batches, which may wait for a rebuild
(``GroupsNotLoaded``): a waiting batch never stands in front of the pages it waits for. A
batch of this queue that fails (Redis or the broker away) is tried again after a backoff, its
messages held; applying it twice changes nothing.
"""

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from aio_pika.abc import AbstractIncomingMessage

from proto.envelopes import OkReply, encode
from proto.errors import BadEnvelope
from proto.groups import (
    GroupChanged,
    GroupsPage,
    GroupsRequest,
    decode_group_changed,
    decode_groups_page,
)
from proto.items import DECODE_ERRORS, reason_of
from proto.metrics import CODE_ENVELOPE_REJECTED
from proto.names import KEY_GROUP_CHANGED, KEY_GROUPS_PAGE, KEY_GROUPS_REQUEST, Names
from router import observability
from router.bus import Bus
from router.groups import (
    REBUILD_LOCK_MS,
    changes_requests,
    is_rebuild_complete,
    page_requests,
)
from router.inbound import ReplyTo
from router.presence import Presence
from router.publications import Publication, reply_publication
from router.requests import LockRebuild
from router.results import Applied, Locked, PagesCounted, Result, expect
from runtime.batch_loop import Backoff, ack_batch, log_batch_failed, requeue, settle

log = structlog.get_logger()

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Decoded:
    """The envelopes of a batch that decoded, and the messages to acknowledge."""

    accepted: list[AbstractIncomingMessage]
    changes: list[tuple[AbstractIncomingMessage, GroupChanged]]
    pages: list[GroupsPage]


class GroupApplier:
    """Applies group changes and rebuild pages to Redis; asks for a rebuild when due."""

    def __init__(
        self,
        names: Names,
        bus: Bus,
        presence: Presence,
        backoff: Backoff,
        expected_failures: tuple[type[Exception], ...],
    ) -> None:
        self._names = names
        self._bus = bus
        self._presence = presence
        self._backoff = backoff
        self._expected_failures = expected_failures

    async def apply_batch(self, batch: list[AbstractIncomingMessage]) -> None:
        """Apply a batch of ``<ns>.router.groups``, answer the changes' backends, ack."""
        decoded = await self._decode(batch)
        if not decoded.accepted:
            return
        while True:
            try:
                await self._apply(decoded)
            except Exception as exc:
                log_batch_failed(
                    exc, self._expected_failures, messages=len(decoded.accepted)
                )
                if await self._backoff.wait():
                    continue  # the same batch again, its messages held
                await requeue(decoded.accepted)
                return
            break
        self._backoff.reset()
        await ack_batch(decoded.accepted)

    async def ask_rebuild(self) -> None:
        """Ask the offline store for every member row, unless another router did lately
        (the rebuild lock, ``groups.REBUILD_LOCK_MS``)."""
        [locked] = await self._presence.execute(
            [LockRebuild(REBUILD_LOCK_MS)], operation="groups"
        )
        if not expect(Locked, locked).is_locked:
            return
        rebuild_id = secrets.token_hex(8)
        body = GroupsRequest(rebuild_id=rebuild_id)
        await self._bus.publish(
            Publication(
                self._names.inbound_exchange,
                KEY_GROUPS_REQUEST,
                encode(body),
            )
        )
        log.info("groups_rebuild_asked", rebuild_id=rebuild_id)

    async def _decode(self, batch: list[AbstractIncomingMessage]) -> _Decoded:
        decoded = _Decoded([], [], [])
        for message in batch:
            routing_key = message.routing_key or ""
            try:
                if routing_key == KEY_GROUP_CHANGED:
                    changed = _decode_envelope(decode_group_changed, message.body)
                    decoded.changes.append((message, changed))
                elif routing_key == KEY_GROUPS_PAGE:
                    decoded.pages.append(
                        _decode_envelope(decode_groups_page, message.body)
                    )
                else:
                    raise BadEnvelope("unknown routing key")
            except BadEnvelope as exc:
                log.info(
                    "envelope_rejected", routing_key=routing_key, reason=exc.reason
                )
                observability.count_error(CODE_ENVELOPE_REJECTED)
                await settle(message.reject(requeue=False))
                continue
            decoded.accepted.append(message)
        return decoded

    async def _apply(self, decoded: _Decoded) -> None:
        """The batch's changes together, each page with its count in a transaction of its
        own, then the replies to the changes' backends."""
        changes = changes_requests([change for _, change in decoded.changes])
        await self._presence.execute(changes, operation="groups")
        for page in decoded.pages:
            *applied, counted = await self._apply_page(page)
            pages = expect(PagesCounted, counted)
            log.info(
                "groups_page_applied",
                rebuild_id=page.rebuild_id,
                index=page.index,
                count=page.count,
                members=len(page.members),
                changed=sum(expect(Applied, result).changed for result in applied),
            )
            if is_rebuild_complete(pages.applied, pages.count):
                log.info("groups_loaded", rebuild_id=page.rebuild_id)
        replies = [
            reply_publication(
                ReplyTo(message.reply_to, message.correlation_id or ""), OkReply()
            )
            for message, _ in decoded.changes
            if message.reply_to
        ]
        await self._bus.publish_all(replies)
        for _, change in decoded.changes:
            log.info(
                "group_change_applied",
                group=change.group,
                uids=len(change.uids),
                version=change.version,
            )

    async def _apply_page(self, page: GroupsPage) -> list[Result]:
        """A page's writes and its count: in one transaction on one server (scripts.COUNT_PAGE
        says why); on a Redis Cluster, which has none across slots, the count once the
        writes are answered, so that a page is never counted before its members are in."""
        requests = page_requests(page)
        if not self._presence.is_cluster:
            return await self._presence.execute(
                requests, transaction=True, operation="groups"
            )
        *writes, count = requests
        applied = await self._presence.execute(writes, operation="groups")
        return [*applied, *await self._presence.execute([count], operation="groups")]


def _decode_envelope(decode: Callable[[bytes], T], body: bytes) -> T:
    """Decode an envelope strictly.

    Raises:
        BadEnvelope: the body breaks its schema (the reason carries the JSON path).
    """
    try:
        return decode(body)
    except DECODE_ERRORS as exc:
        raise BadEnvelope(reason_of(exc)) from None

"""The offline store's group server: the queue ``<ns>.offline.groups`` in batches.

Group members live in PostgreSQL (``group_store.py``); the routers keep a versioned copy in
Redis (docs/architecture.md, "Groups"). For each message of a batch, in order:

* ``api.group.add`` / ``api.group.remove``: one transaction bumps the group's version and
  writes each uid with it; then ``GroupChanged`` goes to the routers with the command's
  ``reply_to`` and ``correlation_id``, and the router that applies it answers the backend;
* ``api.group.members``: the members, read from PostgreSQL, answered here;
* ``router.groups`` (``GroupsRequest``): every member row, tombstones included, in pages
  (``group_pages.py``); of several requests in a batch only the last is served.

A command that cannot be served is answered with its error (or dead-lettered without a
``reply_to``), alone: the rest of the batch is served. A message is acknowledged once its effect
is committed and its publishes confirmed; when PostgreSQL or the broker fails, what is left of
the batch is tried again after a backoff, its messages held. A change tried again gets a new
version: the routers apply the highest, and the members end the same.
"""

from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractIncomingMessage

from offline_store.bus import Bus
from offline_store.consumers import reject
from offline_store.group_commands import (
    ChangeMembers,
    ListMembers,
    decode_group_command,
    members_reply,
)
from offline_store.group_pages import page_body, page_rows, requests_to_serve
from offline_store.group_store import GroupStore
from offline_store.store import EXPECTED_FAILURES
from proto import envelopes
from proto.commands import RefusedCommand, error_reply
from proto.errors import BadEnvelope
from proto.groups import GroupChanged, GroupsRequest, decode_groups_request
from proto.items import DECODE_ERRORS, reason_of
from proto.names import KEY_GROUPS_REQUEST
from runtime.batch_loop import Backoff, log_batch_failed, requeue, settle
from runtime.metrics import count_error

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Work:
    """One message of a batch and what to do for it."""

    message: AbstractIncomingMessage
    command: ChangeMembers | ListMembers | RefusedCommand | GroupsRequest | None
    """None: a request that another one of the batch stands for (acknowledged only)."""


class GroupServer:
    """Serves the group commands and the rebuild requests of ``<ns>.offline.groups``."""

    def __init__(
        self,
        groups: GroupStore,
        bus: Bus,
        max_command_bytes: int,
        max_message_bytes: int,
        backoff: Backoff,
    ) -> None:
        self._groups = groups
        self._bus = bus
        self._max_command_bytes = max_command_bytes
        self._max_message_bytes = max_message_bytes
        self._backoff = backoff

    async def serve_batch(self, batch: list[AbstractIncomingMessage]) -> None:
        work = await self._decode(batch)
        while work:
            try:
                while work:
                    await self._serve(work[0])
                    await settle(work[0].message.ack())
                    work.pop(0)
            except Exception as exc:
                log_batch_failed(exc, EXPECTED_FAILURES, messages=len(work))
                if await self._backoff.wait():
                    continue  # what is left of the batch again, its messages held
                await requeue([w.message for w in work])
                return
        self._backoff.reset()

    async def _decode(self, batch: list[AbstractIncomingMessage]) -> list[Work]:
        """Each message's work, in order; one that can never be served is dead-lettered."""
        work: list[Work] = []
        requests: list[tuple[int, GroupsRequest]] = []
        for message in batch:
            routing_key = message.routing_key or ""
            if routing_key == KEY_GROUPS_REQUEST:
                try:
                    request = decode_groups_request(message.body)
                except DECODE_ERRORS as exc:
                    await reject(message, BadEnvelope(reason_of(exc)))
                    continue
                requests.append((len(work), request))
                work.append(Work(message, None))
                continue
            command = decode_group_command(
                routing_key, message.body, self._max_command_bytes
            )
            if isinstance(command, RefusedCommand):
                log.info(
                    "command_rejected",
                    routing_key=routing_key,
                    code=command.code,
                    reason=command.reason,
                    replied=bool(message.reply_to),
                )
                count_error(command.code)
                if not message.reply_to:
                    await settle(message.reject(requeue=False))
                    continue
            work.append(Work(message, command))
        for index, request in requests_to_serve(requests):
            work[index] = Work(work[index].message, request)
        return work

    async def _serve(self, work: Work) -> None:
        message = work.message
        reply_to = message.reply_to or ""
        correlation_id = message.correlation_id or ""
        match work.command:
            case ChangeMembers(group=group, uids=uids, is_added=is_added):
                version = await self._groups.change_members(group, uids, is_added)
                changed = GroupChanged(
                    group=group, uids=list(uids), is_added=is_added, version=version
                )
                await self._bus.publish_group_changed(
                    envelopes.encode(changed), reply_to, correlation_id
                )
                log.info(
                    "group_changed",
                    group=group,
                    uids=len(uids),
                    is_added=is_added,
                    version=version,
                )
            case ListMembers(group=group):
                members = await self._groups.members(group)
                body = members_reply(members, self._max_message_bytes)
                if reply_to:
                    await self._bus.publish_reply(reply_to, correlation_id, body)
                log.info("group_members_listed", group=group, uids=len(members))
            case RefusedCommand() as refused:
                await self._bus.publish_reply(
                    reply_to, correlation_id, error_reply(refused)
                )
            case GroupsRequest() as request:
                await self._page(request)
            case None:
                pass  # another request of the batch is served for it

    async def _page(self, request: GroupsRequest) -> None:
        """Publish every member row in pages, each confirmed before the next is read."""
        pages = rows = 0
        per_page = page_rows(self._max_message_bytes)
        async for count, members in self._groups.read_pages(per_page):
            body = page_body(request, pages, count, members)
            await self._bus.publish_groups_page(body)
            pages += 1
            rows += len(members)
        log.info(
            "groups_paged", rebuild_id=request.rebuild_id, pages=pages, members=rows
        )

"""How the offline store answers a ``GroupsRequest``: every member row, tombstones included,
in pages that each fit one AMQP message, numbered ``index`` of ``count``.

Pure: no I/O. ``group_store.py`` reads the rows in one snapshot (so that the count read first
holds for every page), ``groups.py`` publishes the pages. Routers count the pages they apply
under the request's ``rebuild_id``; the one that applies the last marks the groups loaded
(``router/group_changes.py``). Of several requests in one batch only the last is served: each
asks for the same rows, and the routers wait for any rebuild to finish, not for theirs.
"""

from collections.abc import Sequence
from typing import TypeVar

from proto import envelopes
from proto.groups import GroupMember, GroupsPage, GroupsRequest
from proto.rules import MAX_ID_LENGTH

PAGE_OVERHEAD_BYTES = 512
"""What a page's envelope holds beside its rows (keys, the rebuild id, the numbers)."""
MEMBER_MAX_BYTES = 2 * MAX_ID_LENGTH + 40
"""The most bytes one row takes in a page: ``["group","uid",version,false],``."""
T = TypeVar("T")

MAX_PAGE_ROWS = 10_000
"""Rows per page at most, whatever the message size: a page is applied in one Redis
transaction, which should stay short."""


def page_rows(max_message_bytes: int) -> int:
    """How many rows a page holds so that any page fits ``max_message_bytes``."""
    fitting = (max_message_bytes - PAGE_OVERHEAD_BYTES) // MEMBER_MAX_BYTES
    return max(1, min(MAX_PAGE_ROWS, fitting))


def page_count(rows: int, rows_per_page: int) -> int:
    """How many pages ``rows`` rows make: at least one, so that a rebuild of no rows ends too."""
    return max(1, -(-rows // rows_per_page))


def page_body(
    request: GroupsRequest, index: int, count: int, members: list[GroupMember]
) -> bytes:
    """One page, encoded."""
    page = GroupsPage(
        rebuild_id=request.rebuild_id, index=index, count=count, members=members
    )
    return envelopes.encode(page)


def requests_to_serve(requests: Sequence[T]) -> list[T]:
    """Of a batch's requests (``GroupsRequest``s, or anything standing for them), the one to
    serve: the last (none for none)."""
    return list(requests[-1:])

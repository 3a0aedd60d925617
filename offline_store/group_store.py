"""PostgreSQL: the groups of one namespace, their members and the statements run on them.

``<ns>.groups`` holds each group's version, one more at each change; ``<ns>.group_members`` a
row per (group, uid) ever changed, with the version of the change that last touched it and
whether the uid is a member. A removed member stays as a tombstone (``is_member`` false) for
``TOMBSTONE_TTL_S``, so that a router applying an older change late cannot bring it back: a
rebuild page carries the tombstone's higher version. What to run is decided in
group_commands.py and group_pages.py; this module only runs SQL.
"""

from collections.abc import AsyncIterator, Sequence

import asyncpg

from offline_store.group_pages import page_count
from offline_store.latency import postgres_call
from offline_store.store import quote_identifier, quoted_table
from proto.groups import GroupMember
from proto.names import Names

TOMBSTONE_TTL_S = 24 * 3600.0
"""How long a removed member's row is kept: longer than any change waits in a queue."""


class GroupStore:
    """The group tables of one namespace."""

    def __init__(self, pool: asyncpg.Pool, names: Names) -> None:
        self._pool = pool
        self._names = names
        groups = quoted_table(names.groups_table)
        members = quoted_table(names.group_members_table)
        tombstones = quote_identifier(
            names.group_members_table.partition(".")[2] + "_tombstones"
        )
        self._create_sql = (
            f"CREATE TABLE IF NOT EXISTS {groups} ("
            ' grp text COLLATE "C" PRIMARY KEY,'
            " version bigint NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {members} ("
            ' grp text COLLATE "C" NOT NULL,'
            ' uid text COLLATE "C" NOT NULL,'
            " is_member boolean NOT NULL,"
            " version bigint NOT NULL,"
            " changed timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (grp, uid))",
            f"CREATE INDEX IF NOT EXISTS {tombstones}"
            f" ON {members} (changed) WHERE NOT is_member",
        )
        # The group's row stays locked until commit: changes of one group are numbered, and
        # committed, one after the other, whatever the number of stores.
        self._version_sql = (
            f"INSERT INTO {groups} (grp, version) VALUES ($1, 1)"
            f" ON CONFLICT (grp) DO UPDATE SET version = {groups}.version + 1"
            " RETURNING version"
        )
        self._upsert_sql = (
            f"INSERT INTO {members} (grp, uid, is_member, version)"
            " SELECT $1, uid, $3, $2 FROM unnest($4::text[]) AS u(uid)"
            " ON CONFLICT (grp, uid) DO UPDATE SET is_member = EXCLUDED.is_member,"
            " version = EXCLUDED.version, changed = now()"
        )
        self._members_sql = (
            f"SELECT uid FROM {members} WHERE grp = $1 AND is_member ORDER BY uid"
        )
        self._count_sql = f"SELECT count(*) FROM {members}"
        self._page_sql = (
            f"SELECT grp, uid, version, is_member FROM {members}"
            " WHERE (grp, uid) > ($1, $2) ORDER BY grp, uid LIMIT $3"
        )
        self._sweep_sql = (
            f"DELETE FROM {members} AS m USING ("
            f" SELECT grp, uid FROM {members}"
            " WHERE NOT is_member AND changed < now() - make_interval(secs => $1)"
            " LIMIT $2 FOR UPDATE SKIP LOCKED) AS old"
            " WHERE m.grp = old.grp AND m.uid = old.uid AND NOT m.is_member"
        )

    async def create_tables(self) -> None:
        """Create the group tables unless they exist (under the lock that serialises the
        offline stores' ``CREATE ... IF NOT EXISTS``)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                self._names.undelivered_table,
            )
            for statement in self._create_sql:
                await connection.execute(statement)

    @postgres_call("groups")
    async def change_members(
        self, group: str, uids: Sequence[str], is_member: bool
    ) -> int:
        """Add (``is_member``) or remove ``uids`` (each once) in one transaction; return the
        group's new version, which every row touched now carries."""
        async with self._pool.acquire() as connection, connection.transaction():
            version: int = await connection.fetchval(self._version_sql, group)
            if uids:
                await connection.execute(
                    self._upsert_sql, group, version, is_member, list(uids)
                )
        return version

    @postgres_call("groups")
    async def members(self, group: str) -> list[str]:
        """The members of ``group``, sorted (byte order)."""
        records = await self._pool.fetch(self._members_sql, group)
        return [record["uid"] for record in records]

    async def read_pages(
        self, rows_per_page: int
    ) -> AsyncIterator[tuple[int, list[GroupMember]]]:
        """Every member row, tombstones included, ``rows_per_page`` at a time in (group, uid)
        order, each page with the count of pages: read in one snapshot (REPEATABLE READ), so
        that the count read first holds for every page. At least one page, maybe empty."""
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows: int = await connection.fetchval(self._count_sql)
            count = page_count(rows, rows_per_page)
            after = ("", "")
            for _ in range(count):
                records = await connection.fetch(self._page_sql, *after, rows_per_page)
                page = [
                    GroupMember(r["grp"], r["uid"], r["version"], r["is_member"])
                    for r in records
                ]
                if page:
                    after = (page[-1].group, page[-1].uid)
                yield count, page

    @postgres_call("groups")
    async def delete_tombstones(self, limit: int) -> int:
        """Delete up to ``limit`` tombstones older than ``TOMBSTONE_TTL_S``; return how many."""
        status = await self._pool.execute(self._sweep_sql, TOMBSTONE_TTL_S, limit)
        return int(status.rpartition(" ")[2])  # "DELETE <count>"

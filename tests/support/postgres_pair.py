"""A PostgreSQL primary and its streaming standby, on free loopback ports of their own.

Started and removed by the test that uses them, as the ``postgres`` user, in a temporary
directory; the machine's PostgreSQL on 5432 is not touched. Commits wait for the standby
(``synchronous_standby_names``), as a managed PostgreSQL with a synchronous replica does: a
promoted standby has every commit its primary acknowledged. ``switch`` crashes the primary
(``pg_ctl stop -m immediate``) and promotes the standby; the store's DSN names both hosts with
``target_session_attrs=read-write``, so it finds the new primary by itself.
"""

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import asyncpg

from proto import env
from tests.support.stack import free_port

PG_USER = "postgres"
PROMOTED_WITHIN_S = "30"
"""Seconds ``pg_ctl promote`` waits for the standby to take writes."""


def pg_bin(program: str) -> str:
    (version,) = os.listdir("/etc/postgresql")
    return f"/usr/lib/postgresql/{version}/bin/{program}"


class PostgresPair:
    """A primary (first port) and a synchronous standby (second port)."""

    def __init__(self) -> None:
        # /tmp itself is world-writable; the directory below it is handed to postgres.
        self._directory = Path(tempfile.mkdtemp(prefix="pgpair-"))
        shutil.chown(self._directory, PG_USER, PG_USER)
        self.ports = [free_port(), free_port()]
        self._data = [self._directory / "primary", self._directory / "standby"]
        self._running: list[Path] = []

    def dsn(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return (
            f"postgresql://{PG_USER}@{hosts}/postgres?target_session_attrs=read-write"
        )

    def settings(self) -> dict[str, str]:
        return {env.POSTGRES_DSN: self.dsn()}

    async def start(self) -> None:
        primary, standby = self._data
        primary_port, standby_port = self.ports
        await _as_postgres(
            pg_bin("initdb"), "-D", str(primary), "--auth=trust", "-U", PG_USER
        )
        self._configure(primary, primary_port)
        await self._pg_ctl(primary, "start")
        await _as_postgres(
            pg_bin("pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary_port),
            "-U",
            PG_USER,
            "-D",
            str(standby),
            "-R",  # standby.signal and primary_conninfo
            "-X",
            "stream",
        )
        self._configure(standby, standby_port)
        await self._pg_ctl(standby, "start")
        # Only now, so that the standby's copy does not wait for a standby of its own once
        # promoted: commits on the primary wait until the standby has them.
        await self._execute(
            primary_port, "ALTER SYSTEM SET synchronous_standby_names = '*'"
        )
        await self._execute(primary_port, "SELECT pg_reload_conf()")

    async def switch(self) -> None:
        """Crash the primary, promote the standby; return once it takes writes."""
        primary, standby = self._data
        await _as_postgres(
            pg_bin("pg_ctl"), "-D", str(primary), "stop", "-m", "immediate"
        )
        self._running.remove(primary)
        # -w: returns once the standby has left recovery and takes writes.
        await _as_postgres(
            pg_bin("pg_ctl"),
            "-D",
            str(standby),
            "promote",
            "-w",
            "-t",
            PROMOTED_WITHIN_S,
        )

    async def close(self) -> None:
        for data in self._running:
            with contextlib.suppress(RuntimeError):  # already gone: the files go anyway
                await _as_postgres(
                    pg_bin("pg_ctl"), "-D", str(data), "stop", "-m", "immediate"
                )
        self._running.clear()
        shutil.rmtree(self._directory, ignore_errors=True)

    def _configure(self, data: Path, port: int) -> None:
        with (data / "postgresql.conf").open("a") as config:
            config.write(
                f"port = {port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{data}'\n"
                "fsync = off\n"  # a test cluster: no crash of the machine to survive
                "max_connections = 50\n"
            )

    async def _pg_ctl(self, data: Path, action: str) -> None:
        log = data.parent / f"{data.name}.log"
        await _as_postgres(
            pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", action
        )
        self._running.append(data)

    async def _execute(self, port: int, statement: str) -> None:
        connection = await asyncpg.connect(host="127.0.0.1", port=port, user=PG_USER)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()


async def _as_postgres(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "runuser",
        "-u",
        PG_USER,
        "--",
        *command,
        cwd="/tmp",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {process.returncode}: {output!r}"
        )

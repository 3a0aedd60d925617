"""``switchboard`` / ``python -m switchboard``: carry out what ``cli.parse`` read.

Exit codes: those of the service it runs (``runtime/startup.py``); otherwise 0 on success, 1 when
a backend command failed or was answered with an error, or PostgreSQL could not be reached or a
migration failed, 2 for bad arguments or settings, or a database the release's migrations do not
match.
"""

import asyncio
import json
import os
import runpy
import sys
import time
from collections.abc import Sequence
from importlib import metadata

from proto import env
from proto.errors import SettingsError
from switchboard import backend
from switchboard.cli import (
    Migrate,
    MintToken,
    RunService,
    SendCommand,
    ShowTopology,
    parse,
    render_topology,
)
from switchboard.dev_token import make_token

DISTRIBUTION = "switchboard"


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    request = parse(sys.argv[1:] if argv is None else argv, os.environ, version())
    if isinstance(request, RunService):
        # As `python -m <module>`: its __main__ exits with the service's exit code.
        sys.argv = [request.module]
        runpy.run_module(request.module, run_name="__main__", alter_sys=True)
        return 0
    if isinstance(request, MintToken):
        try:
            # Development tokens: the Makefile's public secret is what they are signed with.
            secret = env.secret(os.environ, env.JWT_SECRET, allow_placeholder=True)
        except SettingsError as error:
            print(f"switchboard token: {error}", file=sys.stderr)
            return 2
        print(make_token(request.uid, secret, time.time(), request.ttl_s))
        return 0
    if isinstance(request, Migrate):
        return migrate()
    if isinstance(request, ShowTopology):
        print("\n".join(render_topology(request)))
        return 0
    return send(request)


def migrate() -> int:
    # Imported here: only this subcommand needs the offline store (and asyncpg).
    import asyncpg

    from offline_store import migrator
    from offline_store.migration_plan import MigrationsInvalid
    from offline_store.settings import Settings
    from proto.errors import DependencyUnavailable
    from proto.logs import configure_logging

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        print(f"switchboard migrate: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        applied = asyncio.run(migrator.run(settings))
    except DependencyUnavailable as error:
        print(f"switchboard migrate: {error}", file=sys.stderr)
        return 1
    except MigrationsInvalid as error:
        print(f"switchboard migrate: {error}", file=sys.stderr)
        return 2
    except asyncpg.PostgresError as error:
        print(f"switchboard migrate: a migration failed: {error}", file=sys.stderr)
        return 1
    schema = settings.names.schema
    if not applied:
        print(f"switchboard migrate: the schema {schema} is up to date")
    for migration in applied:
        print(f"switchboard migrate: applied {migration.number:04d}_{migration.name}")
    return 0


def send(request: SendCommand) -> int:
    try:
        reply = asyncio.run(
            backend.call(
                request.amqp_url,
                request.namespace,
                request.routing_key,
                request.body,
                request.timeout_s,
            )
        )
    except backend.CommandFailed as error:
        print(f"switchboard {request.command}: {error}", file=sys.stderr)
        return 1
    print(reply.decode(errors="replace"))
    try:
        answer = json.loads(reply)
    except ValueError:
        return 1
    return 1 if isinstance(answer, dict) and "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())

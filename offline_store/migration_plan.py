"""Which numbered schema migrations to apply: the files of a release against what a database
has applied.

Pure: no I/O. ``migrator.py`` reads the files and the ``<ns>.schema_migrations`` table and applies
what ``pending`` returns. A migration is ``NNNN_name.sql`` (``0001_add_receipts_index.sql``):
numbers start at 1 and leave no gap, so that two branches that each add the next number conflict
in review rather than in a database. The tables themselves are still created by the stores at
startup (``CREATE ... IF NOT EXISTS``); migrations change what exists. A store checks at startup
that none of the release's migrations is pending (``startup_problem``).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass

FILENAME = re.compile(r"(?P<number>\d{4})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql")


class MigrationsInvalid(ValueError):
    """The release's files or the database's record cannot be reconciled: the reason."""


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    sql: str


def parse(files: Mapping[str, str]) -> tuple[Migration, ...]:
    """The migrations in ``files`` (file name -> SQL), in order.

    Raises:
        MigrationsInvalid: a name is not ``NNNN_name.sql``, a file is empty, or the numbers are
            not 1, 2, 3, ... without a gap or a repeat.
    """
    migrations = []
    for filename, sql in files.items():
        match = FILENAME.fullmatch(filename)
        if match is None:
            raise MigrationsInvalid(
                f"{filename}: a migration is named NNNN_name.sql (four digits, lower case)"
            )
        if not sql.strip():
            raise MigrationsInvalid(f"{filename} is empty")
        migrations.append(Migration(int(match["number"]), match["name"], sql))
    migrations.sort(key=lambda migration: migration.number)
    numbers = [migration.number for migration in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise MigrationsInvalid(
            f"migration numbers must run 1, 2, 3, ... without a gap or a repeat: {numbers}"
        )
    return tuple(migrations)


@dataclass(frozen=True, slots=True)
class SchemaState:
    """A database's migrations against a release's."""

    pending: tuple[Migration, ...]
    """The release's migrations the database lacks, in order."""
    newer: tuple[int, ...]
    """The numbers of migrations the database has and the release does not know: a newer
    release migrated it."""


def compare(
    migrations: tuple[Migration, ...], applied: Mapping[int, str]
) -> SchemaState:
    """What the database lacks and what it has beyond the release, given ``applied``
    (number -> name).

    Raises:
        MigrationsInvalid: a migration was applied under another name (the files changed
            after it was applied).
    """
    known = {migration.number: migration for migration in migrations}
    for number, name in sorted(applied.items()):
        migration = known.get(number)
        if migration is not None and migration.name != name:
            raise MigrationsInvalid(
                f"migration {number} was applied as {name!r}, this release calls it "
                f"{migration.name!r}: a released migration must never change"
            )
    return SchemaState(
        pending=tuple(m for m in migrations if m.number not in applied),
        newer=tuple(number for number in sorted(applied) if number not in known),
    )


def pending(
    migrations: tuple[Migration, ...], applied: Mapping[int, str]
) -> tuple[Migration, ...]:
    """The migrations still to apply, in order, given ``applied`` (number -> name).

    Raises:
        MigrationsInvalid: the database has a migration this release does not know (a newer
            release migrated it: deploy that one), or one of another name (the files changed
            after it was applied).
    """
    state = compare(migrations, applied)
    if state.newer:
        number = state.newer[0]
        raise MigrationsInvalid(
            f"the database has migration {number} ({applied[number]}), which this release "
            "does not know: a newer release migrated it"
        )
    return state.pending


def startup_problem(state: SchemaState) -> str | None:
    """Why a store of this release must not start on a database in ``state``, or None.

    Migrations it lacks: the release's code may read what they add. Migrations from a newer
    release do not stop it: a migration expands first and contracts a release later
    (docs/operations.md, "Schema migrations"), so an older store works on a newer schema,
    which is what a rollback needs.
    """
    if not state.pending:
        return None
    missing = ", ".join(f"{m.number:04d}_{m.name}" for m in state.pending)
    return f"the database lacks the migrations {missing}"

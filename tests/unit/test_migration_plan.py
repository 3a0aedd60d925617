"""Which schema migrations are pending: the release's files against the database's record."""

import pytest

from offline_store.migration_plan import (
    Migration,
    MigrationsInvalid,
    SchemaState,
    compare,
    parse,
    pending,
    startup_problem,
)
from offline_store.migrator import load

FILES = {
    "0002_add_column.sql": "ALTER TABLE undelivered ADD COLUMN x int;",
    "0001_first_index.sql": "CREATE INDEX i ON undelivered (ts);",
}
FIRST = Migration(1, "first_index", FILES["0001_first_index.sql"])
SECOND = Migration(2, "add_column", FILES["0002_add_column.sql"])


def test_files_are_parsed_in_number_order() -> None:
    assert parse(FILES) == (FIRST, SECOND)
    assert parse({}) == ()


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"1_first.sql": "SELECT 1"}, "NNNN_name.sql"),
        ({"0001_First.sql": "SELECT 1"}, "NNNN_name.sql"),
        ({"0001_first.sql.bak": "SELECT 1"}, "NNNN_name.sql"),
        ({"0001_first.sql": "  \n"}, "empty"),
        ({"0002_second.sql": "SELECT 1"}, "without a gap"),
        (
            {"0001_first.sql": "SELECT 1", "0003_third.sql": "SELECT 1"},
            "without a gap",
        ),
        ({"0001_first.sql": "SELECT 1", "0001_again.sql": "SELECT 1"}, "repeat"),
    ],
)
def test_bad_files_are_refused(files: dict[str, str], reason: str) -> None:
    with pytest.raises(MigrationsInvalid, match=reason):
        parse(files)


def test_pending_are_those_not_applied_in_order() -> None:
    migrations = (FIRST, SECOND)
    assert pending(migrations, {}) == (FIRST, SECOND)
    assert pending(migrations, {1: "first_index"}) == (SECOND,)
    assert pending(migrations, {1: "first_index", 2: "add_column"}) == ()


def test_a_database_a_newer_release_migrated_is_refused() -> None:
    with pytest.raises(MigrationsInvalid, match="newer release"):
        pending((FIRST,), {1: "first_index", 2: "add_column"})


def test_a_released_migration_that_changed_name_is_refused() -> None:
    with pytest.raises(MigrationsInvalid, match="must never change"):
        pending((FIRST, SECOND), {1: "renamed"})


def test_the_release_ships_valid_migrations() -> None:
    load()  # raises on a bad file name, an empty file or a gap


def test_a_store_starts_once_nothing_is_pending() -> None:
    state = compare((FIRST, SECOND), {1: "first_index", 2: "add_column"})
    assert state == SchemaState(pending=(), newer=())
    assert startup_problem(state) is None


def test_a_store_refuses_a_database_that_lacks_a_migration() -> None:
    state = compare((FIRST, SECOND), {1: "first_index"})
    assert state.pending == (SECOND,)
    assert startup_problem(state) == "the database lacks the migrations 0002_add_column"


def test_a_store_runs_on_a_database_a_newer_release_migrated() -> None:
    state = compare((FIRST,), {1: "first_index", 2: "add_column", 3: "more"})
    assert state == SchemaState(pending=(), newer=(2, 3))
    assert startup_problem(state) is None


def test_a_store_refuses_a_migration_applied_under_another_name() -> None:
    with pytest.raises(MigrationsInvalid, match="must never change"):
        compare((FIRST,), {1: "renamed"})

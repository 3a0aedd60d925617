"""bench/cpu.py: the CPU each role used between two samples, per message."""

from bench.cpu import POSTGRES, Sample, per_message, traced_dsn, used


def test_cpu_used_by_role_and_by_the_backends_that_lived_through() -> None:
    before = Sample({"gateways": 1.0, "router": 2.0, "store": 0.5}, {10: 1.0, 11: 4.0})
    after = Sample({"gateways": 2.5, "router": 2.5, "store": 0.5}, {10: 1.5, 12: 0.25})
    spent = used(before, after)
    # Backend 11 closed meanwhile: not counted; 12 opened: counted whole.
    assert spent == {"gateways": 1.5, "router": 0.5, "store": 0.0, POSTGRES: 0.75}
    assert per_message(spent, 10_000) == (
        "gateways 150, router 50, PostgreSQL 75 us CPU/msg"
    )


def test_the_application_name_joins_the_dsn_query() -> None:
    assert (
        traced_dsn("postgresql://h/db", "b1") == "postgresql://h/db?application_name=b1"
    )
    assert (
        traced_dsn("postgresql://h/db?sslmode=disable", "b1")
        == "postgresql://h/db?sslmode=disable&application_name=b1"
    )

"""What `dockyard doctor` says of the database's connections (the figures themselves, read from a real
PostgreSQL, are tests/api/test_workspaces.py::test_doctor_reports_the_databases_connections)."""

from __future__ import annotations

from dockyard.store.db import Connections


def test_a_pool_larger_than_postgresql_admits_is_named() -> None:
    # Debian's PostgreSQL: 100 less 3 for superusers; a 2-core server's pool: 40 + 64 workers + 10.
    assert Connections("postgresql", 114, admitted=97, in_use=5).warning == (
        "one server process may open 114 connections and PostgreSQL admits 97: raise its max_connections "
        "or lower DOCKYARD_PROVISIONER_WORKERS (every replica's pool counts)"
    )


def test_nine_in_ten_open_is_named_and_below_it_nothing() -> None:
    assert Connections("postgresql", 60, admitted=97, in_use=88).warning == (
        "88 of the 97 connections PostgreSQL admits are open"
    )
    assert Connections("postgresql", 60, admitted=97, in_use=87).warning == ""


def test_sqlite_has_no_connection_limit_to_name() -> None:
    assert Connections("sqlite", 114).warning == ""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dockyard.accounts import tokens
from dockyard.outbound import DEFAULT_POLICY
from dockyard.store.db import make_engine, normalize_url
from dockyard.store.migrate import migrate
from dockyard.templates import service
from dockyard.templates.devcontainer import oci
from tests import pg
from tests.fakes import FakeRuntime
from tests.harness import Harness, make_harness

pytest_plugins = ["tests.docker_fixtures", "tests.live", "tests.oci_registry"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=["sqlite", "postgres"],
        default=os.environ.get("DOCKYARD_TEST_DB", "sqlite"),
        help="Database the server under test uses (PostgreSQL is started by the test session).",
    )
    parser.addoption("--update-golden", action="store_true", help="Rewrite CLI golden files.")


@pytest.fixture(scope="session")
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--db"))


@pytest.fixture(scope="session")
def postgres_template(db_kind: str) -> Iterator[str | None]:
    """On PostgreSQL: a cluster and a migrated template database that each test copies."""
    if db_kind != "postgres":
        yield None
        return
    with pg.cluster() as url:
        admin = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE dockyard_template"))
        engine = make_engine(url.rsplit("/", 1)[0] + "/dockyard_template")
        migrate(engine)
        engine.dispose()
        admin.dispose()
        yield url


@pytest.fixture
def database_url(tmp_path: Path, postgres_template: str | None) -> Iterator[str]:
    if postgres_template is None:
        yield f"sqlite:///{tmp_path / 'dockyard.db'}"
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(postgres_template), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE dockyard_template'))
    yield postgres_template.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    # Process-wide caches must not carry one test's tokens or versions into another.
    tokens.cache.clear()
    service._version_cache.clear()
    service.catalog.invalidate()
    yield
    tokens.cache.clear()


@pytest.fixture(autouse=True)
def _oci_outbound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each server sets the ranges its feature fetches keep out of for the whole process (as it sets their
    cache): a test's server that denies loopback must not refuse the next test's fetch from a loopback registry."""
    monkeypatch.setattr(oci, "_outbound", DEFAULT_POLICY)


@pytest.fixture
def h(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    harness = make_harness(tmp_path, database_url)
    yield harness
    harness.close()


@pytest.fixture
def ah(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    """A harness whose workspaces run the real agent as local processes, so commands reach a shell."""
    harness = make_harness(tmp_path, database_url, runtime=FakeRuntime(agents=True))
    yield harness
    harness.close()

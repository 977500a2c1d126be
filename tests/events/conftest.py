from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from dockyard.events import MemoryPubsub, PostgresPubsub, Pubsub
from dockyard.store.db import libpq_url


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
def pubsub_factory(request: pytest.FixtureRequest, db_kind: str) -> Iterator[Callable[[], Pubsub]]:
    """Makes pubsubs of one kind on one database (each PostgreSQL one is its own pair of sessions, as in
    another process); all are closed after the test."""
    made: list[Pubsub] = []
    if request.param == "postgres":
        if db_kind != "postgres":
            pytest.skip("PostgreSQL pubsub: run with --db postgres")
        url = libpq_url(request.getfixturevalue("database_url"))
        assert url is not None

        def make() -> Pubsub:
            pubsub = PostgresPubsub(url)
            made.append(pubsub)
            return pubsub
    else:
        shared = MemoryPubsub()
        made.append(shared)

        def make() -> Pubsub:
            return shared  # one process: the twin is shared by everything in it

    yield make
    for pubsub in made:
        pubsub.close()


@pytest.fixture
def postgres_pubsubs(db_kind: str, request: pytest.FixtureRequest) -> Iterator[Callable[[], PostgresPubsub]]:
    if db_kind != "postgres":
        pytest.skip("PostgreSQL pubsub: run with --db postgres")
    url = libpq_url(request.getfixturevalue("database_url"))
    assert url is not None
    made: list[PostgresPubsub] = []

    def make() -> PostgresPubsub:
        made.append(PostgresPubsub(url))
        return made[-1]

    yield make
    for pubsub in made:
        pubsub.close()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)

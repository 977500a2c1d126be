"""One suite for both pubsubs: the in-memory twin and PostgreSQL LISTEN/NOTIFY (with --db postgres)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, text

from dockyard.events import MAX_PAYLOAD, Fanout, PostgresPubsub, Pubsub, Waiter
from dockyard.store.db import normalize_url
from tests.events.conftest import eventually


class Inbox:
    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.lost = 0
        self._lock = threading.Lock()

    def __call__(self, payload: bytes) -> None:
        with self._lock:
            self.items.append(payload)

    def on_lost(self) -> None:
        self.lost += 1


def test_messages_arrive_in_order_per_channel(pubsub_factory: Callable[[], Pubsub]) -> None:
    publisher, subscriber = pubsub_factory(), pubsub_factory()
    inbox, other = Inbox(), Inbox()
    subscriber.subscribe("t_orders", inbox)
    subscriber.subscribe("t_other", other)
    sent = [f"m{i}".encode() for i in range(300)]
    for payload in sent:
        publisher.publish("t_orders", payload)
    publisher.publish("t_other", "elsewhere")
    eventually(lambda: len(inbox.items) == len(sent) and other.items == [b"elsewhere"])
    assert inbox.items == sent


def test_every_subscriber_gets_every_message(pubsub_factory: Callable[[], Pubsub]) -> None:
    publisher = pubsub_factory()
    first, second, third = Inbox(), Inbox(), Inbox()
    a, b = pubsub_factory(), pubsub_factory()
    a.subscribe("t_fan", first)
    a.subscribe("t_fan", second)
    b.subscribe("t_fan", third)
    publisher.publish("t_fan", b"one")
    publisher.publish("t_fan", "two")
    eventually(lambda: all(len(i.items) == 2 for i in (first, second, third)))
    assert first.items == second.items == third.items == [b"one", b"two"]


def test_a_cancelled_subscription_receives_nothing_more(pubsub_factory: Callable[[], Pubsub]) -> None:
    publisher, subscriber = pubsub_factory(), pubsub_factory()
    kept, cancelled = Inbox(), Inbox()
    subscriber.subscribe("t_cancel", kept)
    subscription = subscriber.subscribe("t_cancel", cancelled)
    publisher.publish("t_cancel", "before")
    eventually(lambda: kept.items == [b"before"] and cancelled.items == [b"before"])
    subscription.cancel()
    subscription.cancel()  # idempotent
    publisher.publish("t_cancel", "after")
    eventually(lambda: kept.items == [b"before", b"after"])
    time.sleep(0.1)
    assert cancelled.items == [b"before"]


def test_a_channel_with_no_subscribers_left_is_quiet(pubsub_factory: Callable[[], Pubsub]) -> None:
    publisher, subscriber = pubsub_factory(), pubsub_factory()
    inbox = Inbox()
    with subscriber.subscribe("t_gone", inbox):
        publisher.publish("t_gone", "one")
        eventually(lambda: inbox.items == [b"one"])
    publisher.publish("t_gone", "two")
    again = Inbox()
    subscriber.subscribe("t_gone", again)
    publisher.publish("t_gone", "three")
    # "two" may or may not reach the new subscriber (it was in flight while the channel was re-subscribed).
    eventually(lambda: again.items[-1:] == [b"three"])
    assert inbox.items == [b"one"]


def test_payloads_are_short_text(pubsub_factory: Callable[[], Pubsub]) -> None:
    pubsub = pubsub_factory()
    inbox = Inbox()
    pubsub.subscribe("t_sizes", inbox)
    largest = "é" * (MAX_PAYLOAD // 2) + "x"
    pubsub.publish("t_sizes", largest)
    with pytest.raises(ValueError, match=r"payload of 8000 bytes: at most 7999; send ids, not documents"):
        pubsub.publish("t_sizes", "é" * 4000)
    with pytest.raises(ValueError, match="NUL"):
        pubsub.publish("t_sizes", b"a\x00b")
    with pytest.raises(ValueError, match="not UTF-8"):
        pubsub.publish("t_sizes", b"\xff")
    with pytest.raises(ValueError, match="channel 'Bad-Name'"):
        pubsub.publish("Bad-Name", "x")
    pubsub.publish("t_sizes", "last")
    eventually(lambda: len(inbox.items) == 2)
    assert inbox.items == [largest.encode(), b"last"]


def test_a_failing_listener_does_not_stop_the_others(pubsub_factory: Callable[[], Pubsub]) -> None:
    publisher, subscriber = pubsub_factory(), pubsub_factory()
    inbox = Inbox()

    def broken(payload: bytes) -> None:
        raise RuntimeError("listener bug")

    subscriber.subscribe("t_broken", broken)
    subscriber.subscribe("t_broken", inbox)
    publisher.publish("t_broken", "one")
    publisher.publish("t_broken", "two")
    eventually(lambda: inbox.items == [b"one", b"two"])


def test_async_waiters_wake_by_key(pubsub_factory: Callable[[], Pubsub]) -> None:
    publisher, subscriber = pubsub_factory(), pubsub_factory()
    fanout = Fanout(subscriber, "t_keys")

    async def scenario() -> tuple[bool, bool, float]:
        waiter, bystander = Waiter(), Waiter()
        waiter.watch(fanout, "ws-1")
        bystander.watch(fanout, "ws-2")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, publisher.publish, "t_keys", "ws-1")
        woke = await waiter.wait(5.0)
        elapsed = time.perf_counter() - started
        other = await bystander.wait(0.2)
        waiter.close()
        bystander.close()
        return woke, other, elapsed

    woke, other, elapsed = asyncio.run(scenario())
    assert woke
    assert not other
    assert elapsed < 1.0
    fanout.close()


@pytest.mark.postgres
def test_postgres_listener_reconnects_after_its_session_is_killed(
    postgres_pubsubs: Callable[[], PostgresPubsub], database_url: str
) -> None:
    publisher, subscriber = postgres_pubsubs(), postgres_pubsubs()
    inbox = Inbox()
    subscriber.subscribe("t_reconnect", inbox, on_lost=inbox.on_lost)
    publisher.publish("t_reconnect", "before")
    eventually(lambda: inbox.items == [b"before"])
    killed = subscriber.listener_pid
    assert killed is not None
    admin = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed}).scalar() is True
    admin.dispose()
    # The subscriber notices, reconnects, listens again and tells the subscriber that it may have missed some.
    eventually(lambda: inbox.lost == 1 and subscriber.listener_pid not in (None, killed), timeout=10)
    publisher.publish("t_reconnect", "after")
    eventually(lambda: inbox.items == [b"before", b"after"])
    assert inbox.lost == 1


@pytest.mark.postgres
def test_postgres_publisher_survives_its_session_being_killed(
    postgres_pubsubs: Callable[[], PostgresPubsub], database_url: str
) -> None:
    publisher, subscriber = postgres_pubsubs(), postgres_pubsubs()
    inbox = Inbox()
    subscriber.subscribe("t_republish", inbox)
    publisher.publish("t_republish", "one")
    eventually(lambda: inbox.items == [b"one"])
    admin = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        # Every session but the subscriber's and this one: the publisher's among them.
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid NOT IN (pg_backend_pid(), :keep)"
            ),
            {"keep": subscriber.listener_pid},
        )
    admin.dispose()
    publisher.publish("t_republish", "two")
    eventually(lambda: inbox.items == [b"one", b"two"])

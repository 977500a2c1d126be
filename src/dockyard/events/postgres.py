"""The PostgreSQL pubsub: LISTEN on one dedicated connection, NOTIFY from another, both owned by threads.

- The listener thread holds the only LISTEN connection of this process and fans notifications out to local
  subscribers, so a thousand waiting requests cost the database one session, not a thousand. A channel is
  LISTENed while it has a local subscriber.
- `publish` only queues: a publisher thread sends the queue in batches (one statement per batch), so a caller
  never waits on the network and notifications leave in publish order. Identical notifications in one batch
  are folded into one by PostgreSQL, which suits "something changed" messages.
- A dropped listener connection (a database restart, `pg_terminate_backend`) is re-made with backoff; every
  subscriber then gets `on_lost()`, since whatever was sent meanwhile is gone.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import select
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from dockyard import logs as logging
from dockyard.events.memory import deliver
from dockyard.events.pubsub import Listener, LostListener, Subscription, check_channel, encode

log = logging.get(__name__)

MAX_BACKOFF = 5.0
# A quiet listener connection is checked this often, so a half-open one is noticed and re-made.
PING_INTERVAL = 10.0
# How long `subscribe` waits for a LISTEN on a new channel to be in place before returning anyway.
SUBSCRIBE_WAIT = 5.0
BATCH = 100
# Notifications queued while the database is unreachable are dropped past this many (subscribers re-check).
MAX_QUEUED = 100_000


class PostgresPubsub:
    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        """`url` is a libpq URL (`postgresql://user@host:port/db`); see `store.db.libpq_url`."""
        self._url = url
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._listeners: dict[str, dict[int, tuple[Listener, LostListener | None]]] = {}
        self._ids = itertools.count()
        self._listening: set[str] = set()
        self._connected = False
        self._closed = False
        self._listener_pid: int | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._outbox: collections.deque[tuple[str, str]] = collections.deque()
        self._outbox_ready = threading.Condition()
        self._listener_thread = threading.Thread(target=self._listen_loop, name="pubsub-listen", daemon=True)
        self._publisher_thread = threading.Thread(
            target=self._publish_loop, name="pubsub-notify", daemon=True
        )
        self._listener_thread.start()
        self._publisher_thread.start()

    # --- the contract ----------------------------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes | str) -> None:
        check_channel(channel)
        text = encode(payload).decode()
        with self._outbox_ready:
            if self._closed:
                return
            if len(self._outbox) >= MAX_QUEUED:
                self._outbox.popleft()
            self._outbox.append((channel, text))
            self._outbox_ready.notify()

    def subscribe(
        self, channel: str, listener: Listener, *, on_lost: LostListener | None = None
    ) -> Subscription:
        check_channel(channel)
        key = next(self._ids)
        deadline = time.monotonic() + SUBSCRIBE_WAIT
        with self._changed:
            self._listeners.setdefault(channel, {})[key] = (listener, on_lost)
            if channel not in self._listening:
                self._wake()
                # Delivery is guaranteed only once the LISTEN is in place: a caller that subscribes, reads
                # the state, then waits must not miss a change made between the read and the LISTEN.
                while channel not in self._listening and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.warning(
                            "pubsub not listening yet; subscriber relies on re-checks", channel=channel
                        )
                        break
                    self._changed.wait(remaining)

        def cancel() -> None:
            with self._lock:
                listeners = self._listeners.get(channel, {})
                listeners.pop(key, None)
                if not listeners:
                    self._listeners.pop(channel, None)

        return Subscription(cancel)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        with self._outbox_ready:
            self._outbox_ready.notify_all()
        self._wake()
        self._listener_thread.join(10)
        self._publisher_thread.join(10)
        os.close(self._wake_read)
        os.close(self._wake_write)

    # --- for tests and diagnostics ---------------------------------------------------------------------------

    @property
    def listener_pid(self) -> int | None:
        """The backend pid of the LISTEN connection (None while disconnected)."""
        return self._listener_pid

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._changed.wait(remaining)
            return True

    # --- listening -------------------------------------------------------------------------------------------

    def _wake(self) -> None:
        # A full pipe means a wake-up is pending anyway; a closed one, that the pubsub is shutting down.
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=max(1, int(self._connect_timeout)))

    def _listen_loop(self) -> None:
        backoff = 0.1
        reconnect = False
        while not self._closed:
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                log.warning("pubsub cannot connect; retrying", error=str(exc).strip(), retry_in=backoff)
                self._sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            backoff = 0.1
            try:
                self._serve(conn, reconnect=reconnect)
            except psycopg.Error as exc:
                if not self._closed:
                    log.warning("pubsub listener connection lost; reconnecting", error=str(exc).strip())
            finally:
                with self._changed:
                    self._connected = False
                    self._listening = set()
                    self._listener_pid = None
                conn.close()
            reconnect = True

    def _sleep(self, seconds: float) -> None:
        with self._changed:
            if not self._closed:
                self._changed.wait(seconds)

    def _serve(self, conn: psycopg.Connection[Any], *, reconnect: bool) -> None:
        self._sync(conn)
        with self._changed:
            self._connected = True
            self._listener_pid = conn.info.backend_pid
            self._changed.notify_all()
        if reconnect:
            log.info("pubsub listener reconnected", channels=sorted(self._listening))
            self._announce_lost()
        idle_since = time.monotonic()
        while not self._closed:
            self._sync(conn)
            timeout = max(0.0, idle_since + PING_INTERVAL - time.monotonic())
            ready, _, _ = select.select([conn.fileno(), self._wake_read], [], [], timeout)
            if self._wake_read in ready:
                self._drain_wake_pipe()
            if conn.fileno() in ready:
                idle_since = time.monotonic()
                self._dispatch(conn)
            elif not ready:
                idle_since = time.monotonic()
                conn.execute("SELECT 1")
                self._dispatch(conn)

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass

    def _sync(self, conn: psycopg.Connection[Any]) -> None:
        """LISTEN to channels that gained their first subscriber.

        A channel is never UNLISTENed: there are a handful of them (events/channels.py), and dropping one when
        its last subscriber leaves races a subscriber that comes back at once (it would see the channel still
        listened to, then lose what is published before the LISTEN is made again).
        """
        with self._lock:
            wanted = self._listening | set(self._listeners)
        for channel in sorted(wanted - self._listening):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        if wanted != self._listening:
            with self._changed:
                self._listening = wanted
                self._changed.notify_all()
            # Notifications that arrived while a command ran wait in the connection's backlog.
            self._dispatch(conn)

    def _dispatch(self, conn: psycopg.Connection[Any]) -> None:
        for notify in conn.notifies(timeout=0):
            with self._lock:
                listeners = [entry[0] for entry in self._listeners.get(notify.channel, {}).values()]
            data = notify.payload.encode()
            for listener in listeners:
                deliver(listener, notify.channel, data)

    def _announce_lost(self) -> None:
        with self._lock:
            lost = [
                (channel, entry[1])
                for channel, entries in self._listeners.items()
                for entry in entries.values()
                if entry[1] is not None
            ]
        for channel, on_lost in lost:
            assert on_lost is not None
            deliver(on_lost, channel)

    # --- publishing ------------------------------------------------------------------------------------------

    def _publish_loop(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        backoff = 0.1
        while True:
            with self._outbox_ready:
                while not self._outbox and not self._closed:
                    self._outbox_ready.wait()
                if self._closed and not self._outbox:
                    break
                batch = [self._outbox.popleft() for _ in range(min(BATCH, len(self._outbox)))]
            statement = sql.SQL("SELECT {}").format(
                sql.SQL(", ").join(sql.SQL("pg_notify(%s, %s)") for _ in batch)
            )
            params = [value for pair in batch for value in pair]
            # Two tries: the connection may have been closed (a database restart) since the last batch, and
            # a fresh one then succeeds. Past that the batch is dropped; subscribers' re-checks cover it.
            for attempt in (1, 2):
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                    conn.execute(statement, params)
                    backoff = 0.1
                    break
                except psycopg.Error as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    if attempt == 2:
                        log.warning("pubsub cannot notify", error=str(exc).strip(), dropped=len(batch))
                        self._sleep(backoff)
                        backoff = min(MAX_BACKOFF, backoff * 2)
        if conn is not None:
            conn.close()

"""The in-memory pubsub: one process, for SQLite deployments and tests."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from dockyard import logs as logging
from dockyard.events.pubsub import (
    Listener,
    LostListener,
    Subscription,
    check_channel,
    encode,
)

log = logging.get(__name__)


class MemoryPubsub:
    """Delivers on the publisher's thread, in publish order per channel (one delivery lock for all)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Reentrant: a listener may publish (a cache that re-announces), and must not deadlock doing so.
        self._delivering = threading.RLock()
        self._listeners: dict[str, dict[int, Listener]] = {}
        self._ids = itertools.count()
        self._closed = False

    def publish(self, channel: str, payload: bytes | str) -> None:
        check_channel(channel)
        data = encode(payload)
        with self._delivering:
            with self._lock:
                if self._closed:
                    return
                listeners = list(self._listeners.get(channel, {}).values())
            for listener in listeners:
                deliver(listener, channel, data)

    def subscribe(
        self, channel: str, listener: Listener, *, on_lost: LostListener | None = None
    ) -> Subscription:
        # Nothing is ever lost in one process, so `on_lost` is never called.
        check_channel(channel)
        key = next(self._ids)
        with self._lock:
            self._listeners.setdefault(channel, {})[key] = listener

        def cancel() -> None:
            with self._lock:
                listeners = self._listeners.get(channel, {})
                listeners.pop(key, None)
                if not listeners:
                    self._listeners.pop(channel, None)

        return Subscription(cancel)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._listeners.clear()


def deliver(listener: Callable[..., None], channel: str, *args: bytes) -> None:
    """Call a subscriber's listener (or its `on_lost`, with no arguments)."""
    try:
        listener(*args)
    except Exception:
        # A subscriber's bug must not fail the publisher (a worker finishing a build) or starve the other
        # subscribers; the traceback is logged for whoever owns that subscriber.
        log.exception("pubsub listener failed", channel=channel)

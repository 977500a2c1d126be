"""Waiting for an event from async code: many waiters in a process share one subscription per channel."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable

from dockyard.events.pubsub import Pubsub, Subscription


class Fanout:
    """One subscription to a channel whose payloads are keys (ids), dispatched to the wakers of that key.

    Keyed dispatch costs one dictionary lookup per message however many requests wait, and the channel is
    subscribed once, when the process starts, so a waiter never waits for a LISTEN round trip.
    """

    def __init__(self, pubsub: Pubsub, channel: str) -> None:
        self._lock = threading.Lock()
        self._wakers: dict[str, dict[int, Callable[[], None]]] = {}
        self._ids = itertools.count()
        self._subscription = pubsub.subscribe(channel, self._deliver, on_lost=self._wake_all)

    def watch(self, key: str, wake: Callable[[], None]) -> Subscription:
        """Call `wake()` (on a pubsub thread) whenever `key` is published, until cancelled."""
        token = next(self._ids)
        with self._lock:
            self._wakers.setdefault(key, {})[token] = wake

        def cancel() -> None:
            with self._lock:
                wakers = self._wakers.get(key, {})
                wakers.pop(token, None)
                if not wakers:
                    self._wakers.pop(key, None)

        return Subscription(cancel)

    def _deliver(self, payload: bytes) -> None:
        with self._lock:
            wakers = list(self._wakers.get(payload.decode(), {}).values())
        for wake in wakers:
            wake()

    def _wake_all(self) -> None:
        # Messages may have been lost: every waiter re-reads what it waits for.
        with self._lock:
            wakers = [wake for entries in self._wakers.values() for wake in entries.values()]
        for wake in wakers:
            wake()

    def close(self) -> None:
        self._subscription.cancel()


class Waiter:
    """An async waiter woken by any of the keys it watches; create it on the event loop that waits.

    Watch first, then read the state, then `wait`: a change between the read and the wait is not missed,
    because the waiter is already set by then.
    """

    def __init__(self, *, recheck: float = 1.0) -> None:
        """`recheck`: how long its owner should wait at most before re-reading anyway (see `Bus.recheck`)."""
        self.recheck = recheck
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._subscriptions: list[Subscription] = []

    def watch(self, fanout: Fanout, key: str) -> None:
        self._subscriptions.append(fanout.watch(key, self.wake))

    def wake(self) -> None:
        """Thread-safe."""
        # The waiter may have gone and its loop closed; nothing is owed to it then.
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """True when woken (the wake is consumed), False after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.cancel()
        self._subscriptions.clear()

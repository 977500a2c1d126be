"""Abuse limits for authentication: failed password logins and failed SSH authentications.

Three counters of recent failures (a sliding window, 15 minutes by default), after the way GitLab and
Coder separate them:

- per (account, source): the strict one. Past a few failures each further attempt is delayed (doubling up
  to a couple of seconds), and past `pair_limit` that source is refused for that account until old
  failures leave the window. A correct password resets it.
- per source, whatever the account: refuses an address that sprays many accounts (`source_limit`).
- per account, from every source: never refuses, only delays. Refusing here would let anyone lock a user
  out by failing on purpose from anywhere; delaying slows a distributed guesser while the real user, from
  an address that has not failed, still gets in (a little slower during an attack).

The state lives in this process (a later change moves it to the shared database or pubsub); everything
goes through `AuthLimiter`, so that change stays inside this module. Memory is bounded: keys whose
failures have all left the window are pruned, and past `max_keys` the oldest keys are dropped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW = 15 * 60.0


@dataclass(frozen=True)
class Verdict:
    """What to do with one attempt: refuse it (`retry_after` > 0 seconds), or answer after `delay` seconds.
    `announce` is true for the first refusal of a block, the one worth an audit row."""

    retry_after: float = 0.0
    delay: float = 0.0
    announce: bool = False
    reason: str = ""

    @property
    def refused(self) -> bool:
        return self.retry_after > 0


ALLOWED = Verdict()


class AuthLimiter:
    def __init__(
        self,
        *,
        window: float = WINDOW,
        pair_slow_after: int = 3,
        pair_limit: int = 10,
        source_limit: int = 50,
        account_slow_after: int = 20,
        base_delay: float = 0.25,
        max_delay: float = 2.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.pair_slow_after = pair_slow_after
        self.pair_limit = pair_limit
        self.source_limit = source_limit
        self.account_slow_after = account_slow_after
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[tuple[str, ...], deque[float]] = OrderedDict()
        self._announced: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def check(self, *, source: str, account: str | None = None) -> Verdict:
        """Before verifying a credential: may this source try (this account) now?"""
        now = self._clock()
        with self._lock:
            source_key = ("source", source)
            retry = self._blocked_for(source_key, self.source_limit, now)
            if retry:
                return self._refusal(source_key, retry, f"too many failed logins from {source}")
            if account is None:
                return ALLOWED
            pair_key = ("pair", account, source)
            retry = self._blocked_for(pair_key, self.pair_limit, now)
            if retry:
                return self._refusal(pair_key, retry, f"too many failed logins for {account} from {source}")
            delay = max(
                self._delay(self._count(pair_key, now), self.pair_slow_after),
                self._delay(self._count(("account", account), now), self.account_slow_after),
            )
            return Verdict(delay=delay) if delay else ALLOWED

    def failed(self, *, source: str, account: str | None = None, count: int = 1) -> None:
        now = self._clock()
        keys: list[tuple[str, ...]] = [("source", source)]
        if account is not None:
            keys += [("pair", account, source), ("account", account)]
        with self._lock:
            for key in keys:
                times = self._failures.pop(key, None) or deque()
                times.extend([now] * count)
                # Only the newest failures matter for any limit; older ones are dropped as they come.
                while len(times) > max(self.pair_limit, self.source_limit, self.account_slow_after + 8):
                    times.popleft()
                self._failures[key] = times
            self._prune(now)

    def succeeded(self, *, source: str, account: str) -> None:
        """A correct credential clears that source's failures for the account (not the source's or the
        account's totals: one right password does not excuse a spray)."""
        with self._lock:
            key = ("pair", account, source)
            self._failures.pop(key, None)
            self._announced.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()
            self._announced.clear()

    # --- inside the lock ------------------------------------------------------------------------------------

    def _recent(self, key: tuple[str, ...], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def _count(self, key: tuple[str, ...], now: float) -> int:
        return len(self._recent(key, now))

    def _blocked_for(self, key: tuple[str, ...], limit: int, now: float) -> float:
        """Seconds until fewer than `limit` failures are left in the window; 0 when that is already so."""
        times = self._recent(key, now)
        if len(times) < limit:
            self._announced.discard(key)
            return 0.0
        return max(times[len(times) - limit] + self.window - now, 1.0)

    def _refusal(self, key: tuple[str, ...], retry: float, reason: str) -> Verdict:
        announce = key not in self._announced
        self._announced.add(key)
        return Verdict(retry_after=retry, announce=announce, reason=reason)

    def _delay(self, failures: int, after: int) -> float:
        if failures < after:
            return 0.0
        return float(min(self.max_delay, self.base_delay * 2 ** (failures - after)))

    def _prune(self, now: float) -> None:
        if len(self._failures) <= self.max_keys:
            return
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= now - self.window]:
            del self._failures[key]
            self._announced.discard(key)
        while len(self._failures) > self.max_keys:
            key, _ = self._failures.popitem(last=False)
            self._announced.discard(key)

"""The pubsub contract shared by the PostgreSQL implementation and its in-memory twin.

A channel carries short text payloads (ids, not documents: PostgreSQL caps a notification at 8000 bytes) to
every subscriber of that channel in every process on the same database. Delivery is at most once and in
publish order per publisher; a subscriber that may have missed messages (its connection dropped) is told so
through `on_lost`, and re-reads what it cares about instead. Whoever waits on an event therefore also keeps a
slow re-check of its own: notifications make waits short, they are not the only way a wait ends.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

# PostgreSQL's limit for a NOTIFY payload: shorter than 8000 bytes (in the database's encoding, UTF-8 here).
MAX_PAYLOAD = 7999
# Quoted identifiers allow more, but plain names keep the channels readable in pg_stat_activity and logs.
_CHANNEL = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

Listener = Callable[[bytes], None]
LostListener = Callable[[], None]


class Subscription:
    """The handle `subscribe` returns: `cancel()` stops delivery (idempotent); also a context manager."""

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel: Callable[[], None] | None = cancel
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            cancel, self._cancel = self._cancel, None
        if cancel is not None:
            cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cancel()


class Pubsub(Protocol):
    def publish(self, channel: str, payload: bytes | str) -> None:
        """Send `payload` to every subscriber of `channel`; never blocks on the network."""

    def subscribe(
        self, channel: str, listener: Listener, *, on_lost: LostListener | None = None
    ) -> Subscription:
        """Call `listener(payload)` for each message from now on (on a thread of the pubsub's: keep it short
        and thread-safe), and `on_lost()` after messages may have been missed. Returns once delivery is
        guaranteed for messages published after the call."""

    def close(self) -> None:
        """Stop delivering and release connections; later calls to `publish` are ignored."""


def check_channel(channel: str) -> str:
    if not _CHANNEL.match(channel):
        raise ValueError(f"channel {channel!r}: use lowercase letters, digits and _ (at most 63)")
    return channel


def encode(payload: bytes | str) -> bytes:
    """The payload as UTF-8 bytes, refused (ValueError) where PostgreSQL would refuse it, so that code tested
    against the in-memory twin does not fail only in production."""
    data = payload.encode() if isinstance(payload, str) else bytes(payload)
    if len(data) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(data)} bytes: at most {MAX_PAYLOAD}; send ids, not documents")
    if b"\x00" in data:
        raise ValueError("payload contains a NUL byte")
    try:
        data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError("payload is not UTF-8 text") from exc
    return data

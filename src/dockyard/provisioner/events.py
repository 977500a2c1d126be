"""Telling waiting API requests that a workspace changed, without each of them polling the database.

Workers in this process call `changed(workspace_id)`; `wait_for_change` wakes the waiting coroutines on their
event loop. Builds run by another process are seen by the waiters' fallback poll instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

_lock = threading.Lock()
_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)


def changed(workspace_id: str) -> None:
    with _lock:
        waiters = list(_waiters.get(workspace_id, ()))
    for loop, event in waiters:
        # The waiter may have gone and its loop closed; nothing is owed to it then.
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


async def wait_for_change(workspace_id: str, timeout: float) -> None:
    """Return when the workspace changes or after `timeout` seconds, whichever is first."""
    event = asyncio.Event()
    entry = (asyncio.get_running_loop(), event)
    with _lock:
        _waiters[workspace_id].add(entry)
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
    finally:
        with _lock:
            _waiters[workspace_id].discard(entry)
            if not _waiters[workspace_id]:
                del _waiters[workspace_id]

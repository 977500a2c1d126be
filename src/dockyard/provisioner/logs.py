"""Build logs: appended by workers and agents, read (and followed) by the API.

Every append wakes the followers of that build's log in this process at once (`provisioner.events`, under the key
`log_key(build_id)`); followers in other processes see new lines at their fallback poll.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.provisioner import events
from dockyard.store.models import BuildLog
from dockyard.store.types import utcnow

MAX_LINE = 4000
# What a failed build tells its user: one line, short enough to read in `dockyard show`.
MAX_REASON = 500

# An absolute path of two or more parts on the server (or in a URL's path): data dir, socket, package files.
_SERVER_PATH = re.compile(r"(?<![\w.~-])/(?:[\w.@+-]+/)+([\w.@+-]*)")


def public_reason(text: str) -> str:
    """A failure's reason as a build log and the API may show it: one line, with no server paths.

    Errors that reach users name what went wrong; where on the server it happened is for the server log,
    which keeps the full text under the build id.
    """
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = _SERVER_PATH.sub(lambda m: "…/" + m.group(1) if m.group(1) else "…", first)
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


def log_key(build_id: str) -> str:
    """The events key a build's log changes under (workspace changes use the bare workspace id)."""
    return f"build-log:{build_id}"


def append(sessions: sessionmaker[Session], build_id: str, stage: str, output: str) -> None:
    lines = [line[:MAX_LINE] for line in output.splitlines() if line.strip()] or ([output] if output else [])
    if not lines:
        return
    with sessions() as db:
        now = utcnow()
        db.add_all(BuildLog(build_id=build_id, time=now, stage=stage, output=line) for line in lines)
        db.commit()
    events.changed(log_key(build_id))


def append_with(db: Session, build_id: str, stage: str, output: str) -> None:
    db.add(BuildLog(build_id=build_id, time=utcnow(), stage=stage, output=output[:MAX_LINE]))
    db.commit()
    events.changed(log_key(build_id))


def read(db: Session, build_id: str, *, after: int = 0, limit: int = 5000) -> list[BuildLog]:
    return list(
        db.scalars(
            select(BuildLog)
            .where(BuildLog.build_id == build_id, BuildLog.id > after)
            .order_by(BuildLog.id)
            .limit(limit)
        )
    )


class Wakeup:
    """Listens for changes under several event keys at once, from before a read until `wait` returns.

    Started before the follower reads, so that a line appended between its read and its wait still wakes it:
    waiting only after an empty read would lose that line until the fallback poll.
    """

    def __init__(self, keys: Sequence[str], *, timeout: float) -> None:
        self._tasks = [asyncio.create_task(events.wait_for_change(key, timeout)) for key in keys]

    async def __aenter__(self) -> Wakeup:
        # One turn of the loop lets every listener register before the caller reads.
        await asyncio.sleep(0)
        return self

    async def wait(self) -> None:
        """Return at the first change under any key, or when the timeout given at the start has passed."""
        await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

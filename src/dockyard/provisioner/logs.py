"""Build logs: appended by workers and agents, read (and followed) by the API.

Every append publishes on the build-log channel (`provisioner.events.log_appended`), which wakes the followers of
that build's log on every replica at once.
"""

from __future__ import annotations

import re

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


def append(sessions: sessionmaker[Session], build_id: str, stage: str, output: str) -> None:
    lines = [line[:MAX_LINE] for line in output.splitlines() if line.strip()] or ([output] if output else [])
    if not lines:
        return
    with sessions() as db:
        now = utcnow()
        db.add_all(BuildLog(build_id=build_id, time=now, stage=stage, output=line) for line in lines)
        db.commit()
    events.log_appended(sessions, build_id)


def append_with(db: Session, build_id: str, stage: str, output: str) -> None:
    db.add(BuildLog(build_id=build_id, time=utcnow(), stage=stage, output=output[:MAX_LINE]))
    db.commit()
    events.log_appended(db, build_id)


def read(db: Session, build_id: str, *, after: int = 0, limit: int = 5000) -> list[BuildLog]:
    return list(
        db.scalars(
            select(BuildLog)
            .where(BuildLog.build_id == build_id, BuildLog.id > after)
            .order_by(BuildLog.id)
            .limit(limit)
        )
    )

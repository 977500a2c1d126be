"""Build logs: appended by workers, read (and followed) by the API."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard.provisioner import events
from dockyard.store.models import BuildLog
from dockyard.store.types import utcnow

MAX_LINE = 4000


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

"""The warm network pool's rows: claimed by workspace creates, filled by `warmpool.pool`."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from dockyard.store.models import WarmNetwork

# "open" networks have egress, "internal" ones only the egress proxy (runtimes.base.network_class).
CLASSES = ("open", "internal")
CLAIM_ATTEMPTS = 3


def claim(db: Session, network_class: str | None) -> str | None:
    """Take a warm network of this class in the caller's transaction: the id the new workspace must carry.

    None when the pool has none, or the workspace takes no network (class None). A rollback of the caller's
    transaction puts the network back.
    """
    if network_class is None:
        return None
    query = (
        select(WarmNetwork.id)
        .where(WarmNetwork.network_class == network_class, WarmNetwork.ready.is_(True))
        .order_by(WarmNetwork.created_at)
        .limit(1)
    )
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    # Creates arriving together all see the same oldest row. On SQLite only one DELETE still finds it; the
    # others wait for its commit, and by then hold the write lock themselves, so their second look succeeds.
    for _ in range(CLAIM_ATTEMPTS):
        warm_id = db.scalar(query)
        if warm_id is None:
            return None
        deleted = db.execute(delete(WarmNetwork).where(WarmNetwork.id == warm_id))
        if deleted.rowcount == 1:  # type: ignore[attr-defined]
            return warm_id
    return None


def counts(db: Session) -> dict[str, int]:
    rows = db.execute(select(WarmNetwork.network_class, func.count()).group_by(WarmNetwork.network_class))
    found = Counter({network_class: count for network_class, count in rows})
    return {network_class: found[network_class] for network_class in CLASSES}


def ids(db: Session) -> set[str]:
    return set(db.scalars(select(WarmNetwork.id)))

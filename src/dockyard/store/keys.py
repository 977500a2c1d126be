"""Deployment keys: secrets generated once, stored in the database so that every replica shares them."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.store.models import DeploymentKey


def get_or_create(db: Session, name: str, generate: Callable[[], str]) -> str:
    """The key called `name`, generated and stored on first use; two replicas racing agree on one value."""
    existing = db.get(DeploymentKey, name)
    if existing is not None:
        return existing.value
    value = generate()
    db.add(DeploymentKey(name=name, value=value))
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        stored = db.get(DeploymentKey, name)
        assert stored is not None
        return stored.value
    return value

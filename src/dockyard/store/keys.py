"""Deployment keys: secrets generated once, stored in the database so that every replica shares them."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.store.models import DeploymentKey

DEPLOYMENT_ID = "deployment-id"

# Keys never change once stored, and every agent connection and build reads one: they are kept per database.
_known: dict[tuple[str, str], str] = {}


def get_or_create(db: Session, name: str, generate: Callable[[], str]) -> str:
    """The key called `name`, generated and stored on first use; two replicas racing agree on one value."""
    cache_key = (db.get_bind().engine.url.render_as_string(hide_password=True), name)
    known = _known.get(cache_key)
    if known is not None:
        return known
    existing = db.get(DeploymentKey, name)
    if existing is not None:
        value = existing.value
    else:
        value = generate()
        db.add(DeploymentKey(name=name, value=value))
        try:
            db.commit()
        except IntegrityError:
            db.rollback()
            stored = db.get(DeploymentKey, name)
            assert stored is not None
            value = stored.value
    _known[cache_key] = value
    return value


def deployment_id(db: Session) -> str:
    """This deployment's id, made at first start: every resource the runtime makes on an engine carries it."""
    return get_or_create(db, DEPLOYMENT_ID, lambda: uuid.uuid4().hex)

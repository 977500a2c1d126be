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


class DeploymentIdMismatch(Exception):
    """The configured deployment id is not the one this database was first started with."""


def deployment_id(db: Session, *, configured: str = "") -> str:
    """This deployment's id, made at first start: every resource the runtime makes on an engine carries it.

    `configured` (--deployment-id) is the id to make when there is none yet, so that manifests written ahead
    can label Dockyard's own pods with it; a database that already has another id is refused rather than
    having its resources orphaned.
    """
    value = get_or_create(db, DEPLOYMENT_ID, lambda: configured or uuid.uuid4().hex)
    if configured and value != configured:
        raise DeploymentIdMismatch(
            f"the deployment id is {configured!r}, but this database belongs to deployment {value!r}; "
            f"start with --deployment-id {value} (or without the option)"
        )
    return value

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.api.deps import DbSession, RuntimeDep, scoped
from dockyard.lifecycle import reconcile
from dockyard.runtimes.base import HostIsolation, Runtime, RuntimeFailure
from dockyard.store import audit
from dockyard.store import db as store
from dockyard.warmpool import store as warmnetworks
from dockyard_sdk import models as wire
from dockyard_sdk.models import Scope

router = APIRouter(prefix="/api/v2/doctor", tags=["doctor"])


def _firewall(isolation: HostIsolation) -> wire.HostFirewallReport:
    return wire.HostFirewallReport(
        ok=isolation.ok,
        error=isolation.error,
        missing=list(isolation.missing),
        stale=list(isolation.stale),
    )


def _database(db: Session) -> wire.DatabaseReport:
    seen = store.connections(db)
    return wire.DatabaseReport(**dataclasses.asdict(seen), warning=seen.warning)


def _report(db: Session, runtime: Runtime) -> wire.DoctorReport:
    warm = warmnetworks.counts(db)
    database = _database(db)
    deployment = runtime.deployment or ""
    try:
        runtime.ping()
        orphans = reconcile.orphans(db, runtime)
        drifted = reconcile.observe_drift(db, runtime)
        isolation = runtime.host_isolation()
    except RuntimeFailure as exc:
        return wire.DoctorReport(
            runtime=runtime.name,
            runtime_ok=False,
            runtime_error=exc.message,
            deployment=deployment,
            orphans=[],
            drifted=[],
            warm_networks=warm,
            database=database,
        )
    return wire.DoctorReport(
        runtime=runtime.name,
        runtime_ok=True,
        deployment=deployment,
        orphans=[
            wire.OrphanedResource(kind=o.kind, name=o.name, workspace_id=o.workspace_id) for o in orphans
        ],
        drifted=drifted,
        warm_networks=warm,
        host_firewall=_firewall(isolation),
        shared_bridge=runtime.capabilities().bridged_egress,
        database=database,
    )


@router.get("")
def doctor(
    db: DbSession, runtime: RuntimeDep, actor: Annotated[Actor, scoped(Scope.DEPLOYMENT_ADMIN)]
) -> wire.DoctorReport:
    """Checks the runtime and the host firewall, and lists drifted workspaces and orphaned resources
    (labelled with this deployment's id, but no workspace). Other deployments' resources are never listed."""
    return _report(db, runtime)


@router.post("/prune")
def prune(
    db: DbSession, runtime: RuntimeDep, actor: Annotated[Actor, scoped(Scope.DEPLOYMENT_ADMIN)]
) -> wire.DoctorReport:
    """Removes this deployment's orphaned resources and repairs the host firewall's rules, then reports what
    is left and what was done."""
    removed = []
    for resource in reconcile.orphans(db, runtime):
        runtime.remove_resource(resource)
        removed.append(
            wire.OrphanedResource(kind=resource.kind, name=resource.name, workspace_id=resource.workspace_id)
        )
        audit.record(
            db,
            actor,
            "runtime.prune",
            resource_type=resource.kind,
            resource_id=resource.workspace_id,
            resource_name=resource.name,
        )
    db.commit()
    repaired = runtime.repair_host_isolation()
    if repaired.missing or repaired.stale:
        audit.record(
            db,
            actor,
            "runtime.firewall_repair",
            resource_type="host_firewall",
            resource_id=runtime.deployment or "",
            detail={"missing": list(repaired.missing), "stale": list(repaired.stale)},
        )
        db.commit()
    report = _report(db, runtime)
    report.removed = removed
    report.repaired = _firewall(repaired)
    return report

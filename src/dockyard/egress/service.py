"""Starting the egress proxy of a control-plane process from its settings, and reading its log for the API."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from dockyard.config import Settings
from dockyard.egress import log as egress_log
from dockyard.egress.gateway import EgressGateway
from dockyard.egress.log import EgressLog
from dockyard.store.models import Workspace
from dockyard_sdk import models as wire


@dataclass
class Egress:
    gateway: EgressGateway
    log: EgressLog

    def stop(self) -> None:
        self.gateway.stop()
        self.log.stop()


def start(sessions: sessionmaker[Session], settings: Settings) -> Egress:
    record = EgressLog(sessions)
    gateway = EgressGateway(
        record.record,
        hosts=settings.egress_hosts,
        # Whatever an allowed name resolves to, the proxy never dials another workspace for it.
        forbidden=(settings.workspace_subnets,) if settings.workspace_subnets else (),
        proxy_port=settings.egress_proxy_port,
        dns_port=settings.egress_dns_port,
        intercept_port=settings.egress_intercept_port,
    )
    return Egress(gateway, record)


def events(db: Session, workspace: Workspace, *, limit: int, offset: int) -> wire.EgressEventList:
    """A page of the workspace's connection log, newest first (the caller has checked it may read it)."""
    rows, count = egress_log.search(db, workspace.id, limit=limit, offset=offset)
    return wire.EgressEventList(
        events=[
            wire.EgressEvent(
                id=row.id,
                time=row.time,
                protocol=row.protocol,
                host=row.host,
                port=row.port,
                decision=row.decision,
                reason=row.reason,
            )
            for row in rows
        ],
        count=count,
    )

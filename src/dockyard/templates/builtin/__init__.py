"""Templates shipped with Dockyard, installed on first start."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.templates import archive, service

ROOT = Path(__file__).parent
NAMES = ("base", "ai-agent-sandbox", "code-server", "desktop")


def install(db: Session, actor: Actor) -> None:
    for name in NAMES:
        service.create(db, actor, archive.from_directory(ROOT / name), message="built-in")

"""The leader-run loop that keeps every preset's warm pool at its size (warmpool/prebuilds.py has the rows).

Members are ordinary workspaces made through the one builder (`builds.create_build`, reason `prebuild`, no
actor, so no quota counts them), owned by the system user. The loop makes what is missing only while no user
build is queued or running, and the queue takes user builds before pool builds, so refilling never slows a
user's create down. Members of a version that is no longer active, of a preset that was removed, beyond a
preset's size, or whose start failed are deleted; a preset whose members keep failing is retried with backoff.
"""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.provisioner import builds
from dockyard.provisioner.plans import render_for
from dockyard.runtimes.base import network_class
from dockyard.store.models import Template, TemplateVersion, Workspace, WorkspaceBuild
from dockyard.templates import service as templates
from dockyard.warmpool import prebuilds
from dockyard.warmpool import store as warmnetworks
from dockyard_sdk import models as wire

log = logging.get(__name__)

# The pools of this process (one per application), woken by a claim so they refill at once.
_pools: weakref.WeakSet[PrebuildPool] = weakref.WeakSet()
BUSY_RETRY = 1.0
MAX_BACKOFF = 300.0


def wake() -> None:
    """A member was claimed: refill now rather than at the next interval."""
    for pool in list(_pools):
        pool.wakeup.set()


def _user_builds_in_flight(db: Session) -> bool:
    busy = (wire.BuildStatus.PENDING, wire.BuildStatus.RUNNING)
    return (
        db.scalar(
            select(WorkspaceBuild.id)
            .where(WorkspaceBuild.status.in_(busy), WorkspaceBuild.reason != wire.BuildReason.PREBUILD.value)
            .limit(1)
        )
        is not None
    )


class PrebuildPool:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        # Per preset: consecutive failed members, and when the next attempt may be made.
        self._failures: Counter[str] = Counter()
        self._retry_at: dict[str, float] = {}
        self.waiting = False
        # The loop and a test (or `doctor`) may fill at once; two passes together would both make the missing.
        self._lock = threading.Lock()
        self.wakeup = threading.Event()
        _pools.add(self)

    def fill(self) -> int:
        """One pass: remove what is outdated, failed or extra, then make what is missing (unless a user build
        is in flight). Returns how many members were queued for making or removal."""
        with self._lock, self.sessions() as db:
            presets = {p.key: p for p in prebuilds.desired(db)}
            members = prebuilds.members(db)
            changed = 0
            alive: Counter[str] = Counter()
            for member in members:
                key = member.workspace.prebuild_preset or ""
                state = member.state
                if state == "removing":
                    continue
                if state == "failed":
                    self._failed(key)
                    changed += self._remove(db, member.workspace, why="its start failed")
                elif key not in presets:
                    if state != "building":  # an outdated member still starting is removed once it ends
                        changed += self._remove(db, member.workspace, why="its version is no longer active")
                elif alive[key] >= presets[key].instances:
                    changed += self._remove(db, member.workspace, why="the preset has fewer instances now")
                else:
                    alive[key] += 1
                    if state == "ready":
                        self._failures.pop(key, None)
            self.waiting = False
            for key, preset in presets.items():
                missing = preset.instances - alive[key]
                if missing <= 0 or time.monotonic() < self._retry_at.get(key, 0.0):
                    continue
                if _user_builds_in_flight(db):
                    self.waiting = True
                    break
                for _ in range(missing):
                    self._make(db, preset)
                    changed += 1
            prebuilds.status(db, presets.values())
            return changed

    def _failed(self, key: str) -> None:
        self._failures[key] += 1
        delay = min(MAX_BACKOFF, 2.0 ** self._failures[key])
        self._retry_at[key] = time.monotonic() + delay
        log.warning("a prebuild failed to start; retrying later", preset=key, retry_in=delay)

    def _make(self, db: Session, preset: prebuilds.Preset) -> None:
        owner = prebuilds.system_user(db)
        template = db.get(Template, preset.template_id)
        version = db.get(TemplateVersion, preset.version_id)
        assert template is not None
        assert version is not None
        workspace = Workspace(
            organization_id=preset.organization_id,
            owner_id=owner.id,
            template_id=template.id,
            template_version_id=version.id,
            name=f"{template.name[:24].rstrip('-')}-{secrets.token_hex(3)}",
            parameters=preset.values,
            prebuild_preset=preset.key,
        )
        manifest = templates.version_to_wire(version).manifest
        rendered = render_for(manifest, preset.values, workspace=workspace, owner=owner)
        workspace.cpu_millis = round(float(rendered.resources.cpu) * 1000)
        workspace.memory_bytes = rendered.resources.memory_bytes
        # Members take warm networks like any create: the pool of networks is part of this pool.
        warm_id = warmnetworks.claim(db, network_class(rendered.network.egress.value))
        if warm_id is not None:
            workspace.id = warm_id
        db.add(workspace)
        db.flush()
        builds.create_build(
            db,
            workspace,
            wire.Transition.START,
            actor=None,
            reason=wire.BuildReason.PREBUILD,
            template_version_id=version.id,
            parameters=preset.values,
        )
        log.info("prebuild queued", template=template.name, preset=preset.key, workspace=workspace.id)

    def _remove(self, db: Session, workspace: Workspace, *, why: str) -> int:
        try:
            builds.create_build(
                db, workspace, wire.Transition.DELETE, actor=None, reason=wire.BuildReason.PREBUILD
            )
        except Conflict:
            db.rollback()  # a build of it is in progress; the next pass tries again
            return 0
        log.info("prebuild removed", workspace=workspace.id, reason=why)
        return 1

    def run(
        self, stop: threading.Event, interval: float, *, leading: Callable[[], bool] = lambda: True
    ) -> None:
        """Fill every `interval` seconds, at once after a claim, and every second while user builds hold
        the refill back; only while `leading()`."""
        wait = 0.0
        while not stop.is_set():
            if self.wakeup.wait(wait):
                self.wakeup.clear()
            if stop.is_set():
                return
            if not leading():
                wait = interval
                continue
            try:
                self.fill()
            except Exception:
                log.exception("prebuild pass failed")
            wait = BUSY_RETRY if self.waiting else interval

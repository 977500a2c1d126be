"""A lifecycle pass survives an error in one row and carries on with the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from dockyard.provisioner import builds
from dockyard.store.models import TemplateVersion, Workspace, WorkspaceBuild
from dockyard.templates import service
from dockyard_sdk import models as m
from tests.harness import Harness


def _expire(h: Harness, *workspace_ids: str) -> None:
    with h.app.state.sessions() as db:
        for workspace_id in workspace_ids:
            db.get(Workspace, workspace_id).deadline = datetime.now(UTC) - timedelta(seconds=1)
        db.commit()


def test_a_ttl_pass_outlives_a_lost_build_number_race(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    first, victim, last = (h.workspace(name=n) for n in ("ttl-a", "ttl-b", "ttl-c"))
    _expire(h, first.id, victim.id, last.id)
    real_latest = builds.latest_or_none

    def racing(db: Session, workspace: Workspace) -> WorkspaceBuild | None:
        # Another replica queues the victim's next build between this pass's read and its insert: the
        # pass's build then collides on (workspace_id, number) in the database itself.
        current = real_latest(db, workspace)
        if workspace.id == victim.id and current is not None:
            with h.app.state.sessions() as other:
                other.add(
                    WorkspaceBuild(
                        workspace_id=victim.id,
                        number=current.number + 1,
                        transition="stop",
                        status="canceled",
                        reason="initiator",
                        template_version_id=current.template_version_id,
                        parameters={},
                        timings={},
                        created_at=datetime.now(UTC),
                    )
                )
                other.commit()
        return current

    monkeypatch.setattr(builds, "latest_or_none", racing)
    h.app.state.background.tick()
    monkeypatch.undo()
    for ws in (first, last):
        done = h.await_build(ws.id)
        assert (done.status, done.latest_build.reason, done.latest_build.number) == (
            m.WorkspaceStatus.STOPPED,
            m.BuildReason.TTL,
            2,
        )
    raced = h.admin.get_workspace(victim.id)
    # Only the racing build: the pass's own insert was rolled back, and the deadline stays for the next pass.
    assert [b.reason for b in h.admin.list_builds(victim.id)] == [m.BuildReason.INITIATOR] * 2
    assert raced.latest_build.number == 2
    h.app.state.background.tick()
    retried = h.await_build(victim.id)
    assert (retried.latest_build.number, retried.latest_build.reason) == (3, m.BuildReason.TTL)


def test_a_ttl_pass_outlives_a_version_that_no_longer_parses(h: Harness) -> None:
    h.template(name="broken")
    h.template(name="fine")
    broken = h.workspace(template="broken", name="ttl-broken")
    fine = h.workspace(template="fine", name="ttl-fine")
    _expire(h, broken.id, fine.id)
    with h.app.state.sessions() as db:
        version = db.get(TemplateVersion, broken.latest_build.template_version_id)
        version.manifest = {**version.manifest, "lifetime": {"on_ttl": "explode"}}
        db.commit()
    service._version_cache.clear()
    h.app.state.background.tick()
    done = h.await_build(fine.id)
    assert (done.status, done.latest_build.reason) == (m.WorkspaceStatus.STOPPED, m.BuildReason.TTL)
    untouched = h.admin.get_workspace(broken.id)
    assert (untouched.status, untouched.latest_build.number) == (m.WorkspaceStatus.RUNNING, 1)


def test_drift_is_recorded_for_every_workspace_despite_one_failing(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.lifecycle import reconcile
    from tests.fakes import FakeRuntime

    a, b = h.workspace(name="drift-a"), h.workspace(name="drift-b")
    fake = h.runtime
    assert isinstance(fake, FakeRuntime)
    fake.containers.pop(a.id)
    fake.containers.pop(b.id)
    real = reconcile._record_drift

    def failing(db: Session, workspace: Workspace, *args: object, **kwargs: object) -> bool:
        if workspace.id == a.id:
            raise RuntimeError("one bad row")
        return real(db, workspace, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reconcile, "_record_drift", failing)
    h.app.state.background.tick()
    assert h.admin.get_workspace(b.id).status == m.WorkspaceStatus.FAILED
    assert h.admin.get_workspace(a.id).status == m.WorkspaceStatus.RUNNING

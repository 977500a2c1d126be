from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness, manifest_yaml, tar_gz


def _error(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


def _fake(h: Harness) -> FakeRuntime:
    assert isinstance(h.runtime, FakeRuntime)
    return h.runtime


def test_create_returns_at_once_then_runs(h: Harness) -> None:
    h.template(name="tmpl")
    created = h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1"))
    assert created.status in (
        m.WorkspaceStatus.PENDING,
        m.WorkspaceStatus.STARTING,
        m.WorkspaceStatus.RUNNING,
    )
    assert created.latest_build.number == 1
    done = h.await_build(created.id)
    assert (done.status, done.latest_build.status) == (m.WorkspaceStatus.RUNNING, m.BuildStatus.SUCCEEDED)
    assert set(done.latest_build.timings) >= {"queue", "image", "container", "total"}
    assert done.latest_build.initiator == "admin"
    assert done.parameters == {"branch": "main", "ttl_hours": 4}
    assert done.ttl_ms == 4 * 3600 * 1000
    assert done.deadline is not None
    plan = _fake(h).plans[done.id]
    assert (plan.name, plan.owner, plan.image, plan.resources.cpu) == (
        "ws1",
        "admin",
        "dockyard/base:bookworm",
        2.0,
    )
    lines = [line.output for line in h.admin.build_logs(done.latest_build.id)]
    assert lines[-1] == "workspace ws1 is running at 10.0.0.2"
    assert [a.action for a in h.admin.audit(resource="ws1").audit_logs] == ["workspace.create"]


def test_both_request_shapes_from_design(h: Harness) -> None:
    from dockyard.templates import builtin

    h.admin.create_template(
        tar_gz({"dockyard.yaml": (builtin.ROOT / "ai-agent-sandbox" / "dockyard.yaml").read_text()})
    )
    first = h.admin.http.post(
        "/api/v2/workspaces",
        json={
            "template_id": "ai-agent-sandbox",
            "name": "agent-task-4821",
            "rich_parameters": {"repo": "https://git.example/r.git", "branch": "main", "ttl_hours": "4"},
        },
    )
    assert first.status_code == 201, first.text
    assert first.json()["name"] == "agent-task-4821"
    assert first.json()["ttl_ms"] == 4 * 3600 * 1000
    second = h.admin.http.post(
        "/api/v2/workspaces",
        json={
            "template": "ai-agent-sandbox",
            "ttl": "4h",
            "parameters": {
                "repo": "https://git.example/r.git",
                "task": "fix the bug",
                "agent": "claude-code",
            },
        },
    )
    assert second.status_code == 201, second.text
    body = second.json()
    assert body["name"].startswith("ai-agent-sandbox-")
    assert body["parameters"]["agent"] == "claude-code"
    version = h.admin.get_template("ai-agent-sandbox").active_version_id
    coder = h.admin.http.post(
        "/api/v2/workspaces",
        json={
            "template_version_id": version,
            "name": "coder-shape",
            "rich_parameter_values": [{"name": "task", "value": "x"}],
            "ttl_ms": 3_600_000,
        },
    )
    assert coder.status_code == 201, coder.text
    assert coder.json()["ttl_ms"] == 3_600_000


def test_create_validation_errors(h: Harness) -> None:
    h.template(name="tmpl")
    error = _error(lambda: h.admin.create_workspace(m.CreateWorkspaceRequest(template="nope")))
    assert (error.status_code, error.message) == (404, "Template 'nope' not found.")
    error = _error(
        lambda: h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", template_version_id="v9"))
    )
    assert (error.status_code, error.message) == (404, "Version 'v9' of template 'tmpl' not found.")
    error = _error(
        lambda: h.admin.create_workspace(
            m.CreateWorkspaceRequest(template="tmpl", parameters={"ttl_hours": 30, "colour": 1})
        )
    )
    assert error.status_code == 422
    assert [(v.field, v.detail) for v in error.validations] == [
        ("colour", "is not a parameter of template 'tmpl' (known: branch, ttl_hours)"),
        ("ttl_hours", "30 is above the maximum 24"),
    ]
    response = h.admin.http.post("/api/v2/workspaces", json={"name": "x"})
    assert response.status_code == 422
    assert response.json()["validations"][0]["detail"] == "give template (id or name) or template_version_id"
    response = h.admin.http.post("/api/v2/workspaces", json={"template": "tmpl", "name": "Bad_Name"})
    assert response.status_code == 422
    assert response.json()["validations"][0]["field"] == "name"
    assert h.admin.list_workspaces().count == 0


def test_duplicate_name_is_409(h: Harness) -> None:
    h.workspace(name="ws1")
    error = _error(lambda: h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1")))
    assert (error.status_code, error.message) == (409, "You already have a workspace named 'ws1'.")
    assert h.admin.list_workspaces().count == 1


def test_more_than_the_host_has_is_422(h: Harness) -> None:
    h.template(name="big", resources={"cpu": 64, "memory": "1Ti"})
    error = _error(lambda: h.admin.create_workspace(m.CreateWorkspaceRequest(template="big")))
    assert error.status_code == 422
    assert [(v.field, v.detail) for v in error.validations] == [
        ("resources.cpu", "64 CPUs is more than the host has (8)"),
        ("resources.memory", "1024.0 GiB is more than the host has (32.0 GiB)"),
    ]


def test_stop_start_delete_and_invalid_transitions(h: Harness) -> None:
    ws = h.workspace(name="ws1")
    error = _error(lambda: h.admin.start_workspace("ws1"))
    assert (error.status_code, error.message) == (409, "Workspace 'ws1' is already running.")
    h.admin.stop_workspace("ws1")
    assert h.await_build("ws1").status == m.WorkspaceStatus.STOPPED
    assert h.await_build("ws1").deadline is None
    assert _error(lambda: h.admin.stop_workspace("ws1")).status_code == 409
    h.admin.start_workspace("ws1")
    assert h.await_build("ws1").status == m.WorkspaceStatus.RUNNING
    build = h.admin.delete_workspace("ws1")
    assert build.transition == m.Transition.DELETE
    deleted = h.await_build(ws.id)
    assert deleted.status == m.WorkspaceStatus.DELETED
    error = _error(lambda: h.admin.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.START)))
    assert (error.status_code, error.message) == (409, "Workspace 'ws1' is deleted.")
    assert _error(lambda: h.admin.get_workspace("ws1")).status_code == 404
    assert [b.transition for b in h.admin.list_builds(ws.id)] == ["delete", "start", "stop", "start"]
    assert ws.id not in _fake(h).containers
    # The name is free again.
    assert h.workspace(name="ws1").status == m.WorkspaceStatus.RUNNING


def test_second_transition_while_one_runs_is_409_and_cancel(h: Harness) -> None:
    h.template(name="tmpl")
    fake = _fake(h)
    fake.gate.clear()
    try:
        created = h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1"))
        error = _error(lambda: h.admin.stop_workspace("ws1"))
        assert error.status_code == 409
        assert error.message.startswith("Workspace 'ws1' has a build in progress (#1 start, ")
        cancel = h.admin.cancel_build(created.latest_build.id)
        assert cancel.status in (m.BuildStatus.CANCELED, m.BuildStatus.CANCELING)
    finally:
        fake.gate.set()
    final = h.await_build("ws1")
    assert final.latest_build.status in (m.BuildStatus.CANCELED, m.BuildStatus.SUCCEEDED)
    if final.latest_build.status == m.BuildStatus.CANCELED:
        assert final.status == m.WorkspaceStatus.CANCELED


def test_runtime_down_fails_build_with_engine_message_then_recovers(h: Harness) -> None:
    h.template(name="tmpl")
    fake = _fake(h)
    fake.down = True
    failed = h.await_build(h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1")).id)
    assert failed.status == m.WorkspaceStatus.FAILED
    assert failed.status_reason == "Fake engine unreachable at fake://: connection refused"
    assert h.admin.health().status == "ok"
    fake.down = False
    h.admin.start_workspace("ws1")
    assert h.await_build("ws1").status == m.WorkspaceStatus.RUNNING


def test_missing_image_fails_with_log(h: Harness) -> None:
    h.template(name="noimg", image="registry.example/none:1")
    ws = h.await_build(h.admin.create_workspace(m.CreateWorkspaceRequest(template="noimg")).id)
    assert ws.status == m.WorkspaceStatus.FAILED
    assert "registry.example/none:1 is not available locally" in ws.status_reason
    assert (
        "registry.example/none:1 is not available locally"
        in h.admin.build_logs(ws.latest_build.id)[-1].output
    )


def test_drift_is_reported_and_cleared(h: Harness) -> None:
    ws = h.workspace(name="ws1")
    fake = _fake(h)
    fake.containers.pop(ws.id)
    h.app.state.background.tick()
    drifted = h.admin.get_workspace("ws1")
    assert (drifted.status, drifted.status_reason) == (
        m.WorkspaceStatus.FAILED,
        "the container was removed outside Dockyard",
    )
    h.admin.start_workspace("ws1")
    assert h.await_build("ws1").status == m.WorkspaceStatus.RUNNING
    from dockyard.runtimes.base import ContainerState

    fake.containers[ws.id] = ContainerState.OOM_KILLED
    h.app.state.background.tick()
    assert h.admin.get_workspace("ws1").status_reason == "the container was killed for running out of memory"


def test_ttl_deletes_agent_sandboxes(h: Harness) -> None:
    h.template(name="sandbox", lifetime={"ttl": "1h", "on_ttl": "delete"})
    ws = h.await_build(h.admin.create_workspace(m.CreateWorkspaceRequest(template="sandbox", name="s1")).id)
    from datetime import UTC, datetime, timedelta

    from dockyard.store.models import Workspace

    with h.app.state.sessions() as db:
        row = db.get(Workspace, ws.id)
        row.deadline = datetime.now(UTC) - timedelta(seconds=1)
        db.commit()
    h.app.state.background.tick()
    done = h.await_build(ws.id)
    assert (done.status, done.latest_build.reason) == (m.WorkspaceStatus.DELETED, m.BuildReason.TTL)


def test_update_parameters_and_version(h: Harness) -> None:
    params = [
        {"name": "size", "type": "string", "default": "s", "mutable": True},
        {"name": "region", "type": "string", "default": "eu"},
    ]
    h.template(name="tmpl", parameters=params, startup_script="true", lifetime={})
    h.workspace(name="ws1")
    error = _error(
        lambda: h.admin.update_workspace("ws1", m.UpdateWorkspaceRequest(parameters={"region": "us"}))
    )
    assert (error.status_code, error.validations[0].detail) == (422, "is immutable and cannot be changed")
    h.admin.create_template_version(
        "tmpl",
        tar_gz(
            {
                "dockyard.yaml": manifest_yaml(
                    name="tmpl", description="v2", parameters=params, startup_script="true", lifetime={}
                )
            }
        ),
    )
    assert h.admin.get_workspace("ws1").outdated is True
    updated = h.admin.update_workspace(
        "ws1", m.UpdateWorkspaceRequest(parameters={"size": "l"}, template_version_id="active")
    )
    assert (updated.parameters["size"], updated.template_version_name) == ("l", "v2")
    h.admin.stop_workspace("ws1")
    h.await_build("ws1")
    h.admin.start_workspace("ws1")
    ws = h.await_build("ws1")
    assert (ws.latest_build.template_version_name, ws.outdated) == ("v2", False)


def test_visibility_and_scopes(h: Harness) -> None:
    h.template(name="tmpl")
    alice = h.user("alice")
    bob = h.user("bob")
    mine = alice.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1"))
    h.await_build(mine.id)
    assert _error(lambda: bob.get_workspace(mine.id)).status_code == 404
    assert _error(lambda: bob.stop_workspace(mine.id)).status_code == 404
    assert bob.list_workspaces().count == 0
    assert h.admin.get_workspace("alice/ws1").id == mine.id
    assert h.admin.get_user_workspace("alice", "ws1").id == mine.id
    reader = h.user("alice", scopes=[m.Scope.WORKSPACE_READ])
    assert reader.get_workspace("ws1").id == mine.id
    error = _error(lambda: reader.stop_workspace("ws1"))
    assert (error.status_code, error.message) == (403, "This token lacks the scope workspace:operate.")
    operator = h.user("alice", scopes=[m.Scope.WORKSPACE_READ, m.Scope.WORKSPACE_OPERATE])
    error = _error(lambda: operator.delete_workspace("ws1"))
    assert (error.status_code, error.message) == (403, "This token lacks the scope workspace:delete.")
    limited = h.user("alice", allow_list=["workspace:other"])
    assert _error(lambda: limited.get_workspace("ws1")).status_code == 404


def test_list_filters(h: Harness) -> None:
    h.workspace(name="a1")
    h.workspace(name="b1")
    h.admin.stop_workspace("b1")
    h.await_build("b1")
    assert [w.name for w in h.admin.list_workspaces(status=m.WorkspaceStatus.STOPPED).workspaces] == ["b1"]
    assert [w.name for w in h.admin.list_workspaces(name="a").workspaces] == ["a1"]
    assert h.admin.list_workspaces(template="tmpl", owner="admin").count == 2
    page = h.admin.list_workspaces(limit=1)
    assert (len(page.workspaces), page.count) == (1, 2)


def test_logs_follow_and_watch(h: Harness) -> None:
    ws = h.workspace(name="ws1")
    lines = list(h.admin.follow_build_logs(ws.latest_build.id))
    assert lines[-1].output == "workspace ws1 is running at 10.0.0.2"
    h.admin.stop_workspace("ws1")
    seen = []
    for event in h.admin.watch_workspace("ws1"):
        seen.append(event.status)
        if event.status == m.WorkspaceStatus.STOPPED:
            break
    assert seen[-1] == m.WorkspaceStatus.STOPPED


def test_log_follow_is_woken_by_new_lines_and_ends_with_the_build(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower gets each line and the end as they happen: with the fallback poll at a minute, only the
    in-process wakeups can deliver them within seconds."""
    from dockyard.events import bus
    from dockyard.provisioner import logs

    for name in ("RECHECK_MEMORY", "RECHECK_ALONE", "RECHECK_POSTGRES"):
        monkeypatch.setattr(bus, name, 60.0)
    assert h.app.state.bus.recheck == 60.0
    fake = _fake(h)
    h.template()
    fake.gate.clear()  # the build waits in its first runtime call
    ws = h.admin.create_workspace(m.CreateWorkspaceRequest(name="ws1", template="tmpl"))
    build_id = ws.latest_build.id
    got: queue.Queue[tuple[float, str | None]] = queue.Queue()

    def follow() -> None:
        for line in h.client(h.admin.token).follow_build_logs(build_id):
            got.put((time.monotonic(), line.output))
        got.put((time.monotonic(), None))

    threading.Thread(target=follow, daemon=True).start()
    # The lines the build wrote so far arrive first; then the stream waits.
    time.sleep(1.0)
    while not got.empty():
        assert got.get()[1] is not None
    appended = time.monotonic()
    logs.append(h.app.state.sessions, build_id, "test", "a line from the test")
    arrived, text = got.get(timeout=10)
    assert text == "a line from the test"
    assert arrived - appended < 5
    released = time.monotonic()
    fake.gate.set()
    outputs = []
    while (item := got.get(timeout=10))[1] is not None:
        outputs.append(item[1])
    assert item[0] - released < 5
    assert outputs[-1] == "workspace ws1 is running at 10.0.0.2"
    assert h.admin.get_build(build_id).status == m.BuildStatus.SUCCEEDED


def test_doctor_reports_and_prunes_orphans(h: Harness) -> None:
    h.workspace(name="ws1")
    fake = _fake(h)
    fake.volumes.add("ghost")
    report = h.admin.doctor()
    assert report.runtime_ok
    assert [(o.kind, o.workspace_id) for o in report.orphans] == [("volume", "ghost")]
    pruned = h.admin.prune()
    assert pruned.orphans == []
    assert [(r.kind, r.name) for r in pruned.removed] == [("volume", "dockyard-home-ghost")]
    assert "ghost" not in fake.volumes
    member = h.user("alice")
    assert _error(member.doctor).status_code == 403


def test_doctor_reports_the_databases_connections(h: Harness) -> None:
    """On PostgreSQL (the suite's second pass) the figures are the server's own settings and activity."""
    from sqlalchemy import text

    from dockyard.provisioner.sizing import worker_count
    from dockyard.store.db import MAX_OVERFLOW

    database = h.admin.doctor().database
    assert database is not None
    # The pool holds the request threads' 40 and one per worker, and may overflow by MAX_OVERFLOW.
    assert database.pool_limit == 40 + worker_count(h.settings.provisioner_workers) + MAX_OVERFLOW
    if database.backend == "sqlite":
        assert (database.admitted, database.in_use, database.warning) == (None, None, "")
        return
    assert database.backend == "postgresql"
    with h.app.state.sessions() as db:
        most = int(db.scalar(text("SHOW max_connections")))
        reserved = int(db.scalar(text("SHOW superuser_reserved_connections")))
    assert database.admitted == most - reserved
    assert database.in_use is not None
    assert 1 <= database.in_use <= database.admitted
    if database.pool_limit > database.admitted:
        assert database.warning.startswith(f"one server process may open {database.pool_limit} connections")


def test_build_left_running_by_a_dead_worker_is_resumed(h: Harness) -> None:
    """A build whose worker stopped heartbeating goes back on the queue and finishes."""
    from datetime import UTC, datetime, timedelta

    from dockyard.store.models import WorkspaceBuild

    ws = h.workspace(name="ws1")
    h.admin.stop_workspace("ws1")
    h.await_build("ws1")
    with h.app.state.sessions() as db:
        # What a crashed server leaves behind: a claimed start whose worker no longer reports.
        build = WorkspaceBuild(
            workspace_id=ws.id,
            number=3,
            transition="start",
            status="running",
            template_version_id=ws.template_version_id,
            parameters=ws.parameters,
            timings={},
            attempts=1,
            worker="gone",
            started_at=datetime.now(UTC) - timedelta(minutes=5),
            heartbeat_at=datetime.now(UTC) - timedelta(minutes=5),
        )
        db.add(build)
        db.commit()
    assert h.admin.get_workspace("ws1").status == m.WorkspaceStatus.STARTING
    h.app.state.background.tick()
    resumed = h.await_build("ws1")
    assert (resumed.latest_build.number, resumed.status) == (3, m.WorkspaceStatus.RUNNING)
    with h.app.state.sessions() as db:
        row = db.get(WorkspaceBuild, resumed.latest_build.id)
        assert row is not None
        assert row.attempts == 2


def test_build_that_keeps_losing_its_worker_fails(h: Harness) -> None:
    from datetime import UTC, datetime, timedelta

    from dockyard.store.models import WorkspaceBuild

    ws = h.workspace(name="ws1")
    h.admin.stop_workspace("ws1")
    h.await_build("ws1")
    with h.app.state.sessions() as db:
        db.add(
            WorkspaceBuild(
                workspace_id=ws.id,
                number=3,
                transition="start",
                status="running",
                template_version_id=ws.template_version_id,
                parameters={},
                timings={},
                attempts=3,
                heartbeat_at=datetime.now(UTC) - timedelta(minutes=5),
            )
        )
        db.commit()
    h.app.state.background.tick()
    failed = h.admin.get_workspace("ws1")
    assert (failed.status, failed.status_reason) == (
        m.WorkspaceStatus.FAILED,
        "the provisioner stopped responding 3 times; giving up",
    )


def test_waiting_clients_do_not_hold_database_connections(h: Harness) -> None:
    """More long polls than the pool has connections, while builds still get theirs."""
    from concurrent.futures import ThreadPoolExecutor

    h.template(name="tmpl")
    fake = _fake(h)
    fake.gate.clear()
    created = [
        h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name=f"w{i}")) for i in range(3)
    ]
    pool_size = h.app.state.engine.pool.size() + h.app.state.engine.pool._max_overflow
    with ThreadPoolExecutor(pool_size + 5) as waiters:
        futures = [waiters.submit(h.await_build, created[i % 3].id) for i in range(pool_size + 5)]
        import time

        time.sleep(1)
        fake.gate.set()
        results = [f.result(timeout=60) for f in futures]
    assert {r.status for r in results} == {m.WorkspaceStatus.RUNNING}

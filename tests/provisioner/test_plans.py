"""A start build's plan: rendered once by the worker, stored on the build, read by a retry and by the welcome."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dockyard.provisioner import plans
from dockyard.provisioner.worker import Worker
from dockyard.runtimes.plan import (
    AgentLink,
    AgentPlan,
    Egress,
    Home,
    LinkKind,
    NetworkPolicy,
    Resources,
    WorkspacePlan,
)
from dockyard.store.models import WorkspaceBuild
from dockyard.tunnel import state
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness

SRC = Path(__file__).resolve().parents[2] / "src" / "dockyard"


def _stored(h: Harness, build_id: str) -> dict[str, object] | None:
    with h.app.state.sessions() as db:
        build = db.get(WorkspaceBuild, build_id)
        assert build is not None
        return build.plan


def test_the_worker_stores_the_rendered_plan_on_the_build(h: Harness) -> None:
    h.template(
        name="planned",
        resources={"cpu": 1.5, "memory": "1Gi", "pids": 300},
        env={"GREETING": "hi {{ workspace.name }}"},
        network={"egress": "none"},
        startup_script="echo {{ workspace.name }} > ~/name",
        shutdown_script="echo bye",
        startup_timeout="2m",
    )
    ws = h.workspace(template="planned", name="plan-a")
    assert ws.status == m.WorkspaceStatus.RUNNING
    owner = h.admin.me()
    stored = _stored(h, ws.latest_build.id)
    assert stored is not None

    plan = WorkspacePlan.from_stored(stored)

    assert plan == WorkspacePlan(
        workspace_id=ws.id,
        name="plan-a",
        owner="admin",
        owner_id=owner.id,
        template="planned",
        build_id=ws.latest_build.id,
        content_hash=plan.content_hash,
        image="dockyard/base:bookworm",
        resources=Resources(cpu=1.5, memory_bytes=2**30, pids=300),
        home=Home(user="dev"),
        network=NetworkPolicy(egress=Egress.NONE),
        env={
            "GREETING": "hi plan-a",
            "DOCKYARD_WORKSPACE_NAME": "plan-a",
            "DOCKYARD_WORKSPACE_OWNER": "admin",
        },
        agent=AgentPlan(
            link=AgentLink(kind=LinkKind.UNIX_SOCKET),
            startup_script="echo plan-a > ~/name",
            startup_timeout_seconds=120.0,
            shutdown_script="echo bye",
        ),
    )
    assert len(plan.content_hash) == 64
    # What the runtime ran is the stored plan with the image ensure_image returned.
    assert isinstance(h.runtime, FakeRuntime)
    assert h.runtime.plans[ws.id] == plan
    # The welcome reads the same plan; nothing renders the template again.
    assert state.welcome(h.app.state.sessions, ws.id) == {
        "startup_script": "echo plan-a > ~/name",
        "startup_timeout": 120.0,
        "shutdown_script": "echo bye",
        "apps": [],
        "git": None,
    }
    stop = h.admin.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.STOP))
    h.await_build(ws.id)
    assert _stored(h, stop.id) is None


def test_a_retried_build_runs_the_plan_its_first_attempt_stored(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = h.workspace(name="plan-b")
    with h.app.state.sessions() as db:
        build = db.get(WorkspaceBuild, ws.latest_build.id)
        assert build is not None
        assert build.plan is not None
        # What the first attempt decided stands, even if the template would render differently now.
        build.plan = {**build.plan, "env": {"FROM_THE_STORED_PLAN": "1"}}
        db.commit()

    def no_render(*args: object, **kwargs: object) -> WorkspacePlan:
        raise AssertionError("rendered again")

    monkeypatch.setattr(plans, "make_plan", no_render)
    runner = Worker(h.app.state.sessions, h.runtime, agents=h.app.state.background.agents)
    runner.execute(ws.latest_build.id)

    assert isinstance(h.runtime, FakeRuntime)
    assert h.runtime.plans[ws.id].env == {"FROM_THE_STORED_PLAN": "1"}


def test_a_build_from_before_plans_welcomes_its_agent_without_scripts(h: Harness) -> None:
    ws = h.workspace(name="plan-c")
    with h.app.state.sessions() as db:
        build = db.get(WorkspaceBuild, ws.latest_build.id)
        assert build is not None
        build.plan = None
        db.commit()

    assert state.welcome(h.app.state.sessions, ws.id) == {
        "startup_script": "",
        "startup_timeout": 600.0,
        "shutdown_script": "",
        "apps": [],
        "git": None,
    }


def test_a_plan_the_runtime_cannot_run_fails_its_build_with_the_reason(h: Harness) -> None:
    h.template(name="gpu", resources={"gpu": 1})
    ws = h.workspace(template="gpu", name="plan-d")

    assert (ws.status, ws.latest_build.status) == (m.WorkspaceStatus.FAILED, m.BuildStatus.FAILED)
    assert ws.latest_build.error == "The template asks for 1 GPU(s); this runtime has none."
    assert isinstance(h.runtime, FakeRuntime)
    assert ws.id not in h.runtime.containers
    assert "ensure_image" not in h.runtime.calls


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (SRC / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # The tunnel imports provisioner services; the provisioner reaches the tunnel only through AgentDoor.
        ("provisioner", "dockyard.tunnel"),
        # Runtimes sit below the services.
        ("runtimes", "dockyard.provisioner"),
        ("runtimes", "dockyard.tunnel"),
    ],
)
def test_imports_point_one_way(package: str, forbidden: str) -> None:
    assert sorted(m for m in _imports(package) if m == forbidden or m.startswith(forbidden + ".")) == []

"""The workspace data layer: a page costs a constant number of statements, `readable(actor)` and `status_is`
give the same answers as the Python rules they replace (`Actor.allows_workspace`, `derive`)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.orm import Session

from dockyard.accounts.actor import Actor
from dockyard.store.models import User, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.tunnel import state as agent_state
from dockyard.workspaces import service as workspaces
from dockyard.workspaces.status import ACTIVE_BUILD_STATUSES, derive
from dockyard_sdk import models as m
from tests.harness import Harness, make_harness


@pytest.fixture
def h(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    """A server with no provisioner workers: the rows these tests write include pending builds that no worker
    may pick up."""
    harness = make_harness(tmp_path, database_url, workers=0)
    yield harness
    harness.close()


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    """Statements this thread sends (the server's workers and loops share the engine and are left out)."""
    me = threading.get_ident()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def _seed(h: Harness, count: int, *, template: str = "tmpl", owner: str = "admin") -> list[str]:
    """`count` workspaces straight into the store, in every build state a list shows, half with an agent row
    and each with builds by the owner: creating them through the API would run a build each."""
    created = h.admin.get_template(template)
    transitions = [
        ("start", "succeeded"),
        ("stop", "succeeded"),
        ("start", "failed"),
        ("start", "pending"),
        ("stop", "running"),
    ]
    ids = []
    with h.app.state.sessions() as db:
        user = db.scalar(select(User).where(User.username == owner))
        assert user is not None
        assert created.active_version_id is not None
        # Numbered across the whole table, so names are unique and the same in every run.
        first = db.scalar(select(func.count()).select_from(Workspace)) or 0
        for i in range(count):
            workspace = Workspace(
                organization_id=user.organization_id,
                owner_id=user.id,
                template_id=created.id,
                template_version_id=created.active_version_id,
                name=f"{template[:8]}-{owner[:8]}-{first + i}",
                parameters={},
            )
            db.add(workspace)
            db.flush()
            transition, status = transitions[i % len(transitions)]
            for number in (1, 2):
                db.add(
                    WorkspaceBuild(
                        workspace_id=workspace.id,
                        number=number,
                        transition="start" if number == 1 else transition,
                        status="succeeded" if number == 1 else status,
                        initiator_id=user.id,
                        template_version_id=created.active_version_id,
                        parameters={},
                        timings={},
                    )
                )
            if i % 2:
                db.add(WorkspaceAgent(workspace_id=workspace.id, stats={}, ports=[], connection="connected"))
            ids.append(workspace.id)
        db.commit()
    return ids


def _set_latest_build(
    db: Session, workspace_id: str, transition: m.Transition, status: m.BuildStatus
) -> None:
    """Make a `_seed`ed workspace's latest build (its second) this transition in this status."""
    db.execute(
        update(WorkspaceBuild)
        .where(WorkspaceBuild.workspace_id == workspace_id, WorkspaceBuild.number == 2)
        .values(transition=transition.value, status=status.value)
    )


def _page_statements(h: Harness, actor: Actor, **search: Any) -> tuple[int, list[m.Workspace]]:
    with h.app.state.read_sessions() as db, counting(h.app.state.engine) as statements:
        rows, _ = workspaces.search(db, actor, **search)
        listed = workspaces.to_wire_many(db, rows)
    return len(statements), listed


def _owner(h: Harness) -> Actor:
    with h.app.state.read_sessions() as db:
        me = db.scalar(select(User).where(User.username == "admin"))
        assert me is not None
        return Actor(
            user_id=me.id,
            username=me.username,
            role=m.Role.OWNER,
            organization_id=me.organization_id,
            scopes=frozenset({m.Scope.ALL}),
        )


def test_a_page_costs_the_same_statements_for_10_and_200_workspaces(h: Harness) -> None:
    h.template(name="tmpl")
    actor = _owner(h)
    _seed(h, 10)
    small_all, listed = _page_statements(h, actor, limit=1000)
    small_page, _ = _page_statements(h, actor, limit=5, offset=5)
    small_status, _ = _page_statements(h, actor, status=m.WorkspaceStatus.STOPPED, limit=1)
    assert len(listed) == 10
    _seed(h, 190)
    large_all, listed = _page_statements(h, actor, limit=1000)
    large_page, page = _page_statements(h, actor, limit=5, offset=5)
    large_status, _ = _page_statements(h, actor, status=m.WorkspaceStatus.STOPPED, limit=1)
    assert len(listed) == 200
    assert len(page) == 5
    # The page (workspaces, latest builds, owners and templates joined), version numbers, initiators,
    # agents; a page that is not the whole list adds the count.
    assert (small_all, large_all) == (4, 4)
    assert (small_page, large_page) == (5, 5)
    assert (small_status, large_status) == (5, 5)
    # Batching changed nothing in what a workspace says: the single converter agrees on every field.
    with h.app.state.read_sessions() as db:
        one_by_one = [workspaces.to_wire(db, workspaces.load_id(db, w.id)) for w in listed]
    assert [w.model_dump() for w in one_by_one] == [w.model_dump() for w in listed]
    agents = [w for w in listed if w.agent is not None]
    assert len(agents) == 100
    assert all(w.latest_build.initiator == "admin" for w in listed)
    assert {w.template_version_name for w in listed} == {"v1"}


def test_the_api_lists_a_page_with_its_count(h: Harness) -> None:
    h.template(name="tmpl")
    _seed(h, 30)
    page = h.admin.list_workspaces(limit=10, offset=25)
    assert page.count == 30
    assert len(page.workspaces) == 5
    everything = h.admin.list_workspaces(limit=1000).workspaces
    assert [w.id for w in page.workspaces] == [w.id for w in everything[25:]]
    stopped = h.admin.list_workspaces(status=m.WorkspaceStatus.STOPPED, limit=2)
    assert stopped.count == 6
    assert [w.status for w in stopped.workspaces] == [m.WorkspaceStatus.STOPPED] * 2
    # `_` in a name filter is a character, not a LIKE wildcard.
    assert h.admin.list_workspaces(name="tmpl_").count == 0


def _actors(h: Harness, users: dict[str, User]) -> list[Actor]:
    lists = [
        [],
        ["template:alpha"],
        ["workspace:alpha-alice-0"],
        ["template:beta", "workspace:alpha-bob-4"],
        ["workspace:beta"],  # names a template as a workspace: covers nothing of beta's
        ["template:alpha-alice-0"],  # names a workspace as a template
        ["template:nosuch"],
    ]
    actors = []
    for user, role in itertools.product(users.values(), (m.Role.OWNER, m.Role.MEMBER)):
        for allow_list in lists:
            actors.append(
                Actor(
                    user_id=user.id,
                    username=user.username,
                    role=role,
                    organization_id=user.organization_id,
                    scopes=frozenset({m.Scope.ALL}),
                    allow_list=frozenset(allow_list),
                )
            )
    return actors


def test_readable_in_sql_agrees_with_the_actor_rules(h: Harness) -> None:
    h.user("alice")
    h.user("bob")
    for name in ("alpha", "beta"):
        h.template(name=name)
        for owner in ("alice", "bob"):
            _seed(h, 3, template=name, owner=owner)
    with h.app.state.read_sessions() as db:
        users = {u.username: u for u in db.scalars(select(User).where(User.username.in_(["alice", "bob"])))}
        everything = list(db.scalars(select(Workspace)))
        template_id = next(w.template_id for w in everything if w.template.name == "alpha")
        by_id = [
            *_actors(h, users),
            Actor(
                user_id=users["bob"].id,
                username="bob",
                role=m.Role.MEMBER,
                organization_id=users["bob"].organization_id,
                scopes=frozenset({m.Scope.ALL}),
                allow_list=frozenset({f"template:{template_id}", f"workspace:{everything[0].id}"}),
            ),
        ]
        for actor in by_id:
            expected = {
                w.id
                for w in everything
                if (actor.is_owner or w.owner_id == actor.user_id)
                and actor.allows_workspace(
                    w.id, w.name, template_id=w.template_id, template_name=w.template.name
                )
            }
            found = set(db.scalars(select(Workspace.id).where(workspaces.readable(actor))))
            assert found == expected, (actor.role, actor.username, sorted(actor.allow_list))
        bob = Actor(
            user_id=users["bob"].id,
            username="bob",
            role=m.Role.MEMBER,
            organization_id=users["bob"].organization_id,
            scopes=frozenset({m.Scope.ALL}),
            allow_list=frozenset({"template:beta", "workspace:alpha-bob-4", "workspace:alpha-alice-0"}),
        )
        names = set(db.scalars(select(Workspace.name).where(workspaces.readable(bob))))
        assert names == {"alpha-bob-4", "beta-bob-9", "beta-bob-10", "beta-bob-11"}
        # The filter is not vacuous: the ladder runs from nothing to everything.
        sizes = {len(set(db.scalars(select(Workspace.id).where(workspaces.readable(a))))) for a in by_id}
        assert 0 in sizes
        assert len(everything) in sizes
        assert len(sizes) > 3


def test_an_allow_listed_token_lists_and_gets_only_what_it_names(h: Harness) -> None:
    h.template(name="alpha")
    h.template(name="beta")
    alpha = _seed(h, 2, template="alpha")
    beta = _seed(h, 2, template="beta")
    scoped = h.user("admin", allow_list=["template:alpha"])
    listed = scoped.list_workspaces()
    assert listed.count == 2
    assert {w.id for w in listed.workspaces} == set(alpha)
    assert scoped.get_workspace(alpha[0]).id == alpha[0]
    refused = h.http().get(
        f"/api/v2/workspaces/{beta[0]}", headers={"Authorization": f"Bearer {scoped.token}"}
    )
    assert refused.status_code == 404
    assert refused.json()["message"] == f"Workspace {beta[0]!r} not found."
    assert h.admin.list_workspaces().count == 4


def test_status_in_sql_agrees_with_derive(h: Harness) -> None:
    h.template(name="tmpl")
    combos = list(itertools.product(m.Transition, m.BuildStatus, (None, "", "container_missing")))
    ids = _seed(h, len(combos))
    with h.app.state.sessions() as db:
        for workspace_id, (transition, status, drift) in zip(ids, combos, strict=True):
            _set_latest_build(db, workspace_id, transition, status)
            db.execute(
                update(Workspace)
                .where(Workspace.id == workspace_id)
                .values(drift_state=drift, drift_reason=drift, drift_at=utcnow() if drift else None)
            )
        db.commit()
    with h.app.state.read_sessions() as db:
        loaded = [workspaces.load_id(db, i) for i in ids]
        for wanted in m.WorkspaceStatus:
            expected = {r.workspace.id for r in loaded if derive(r.workspace, r.build)[0] == wanted}
            rows, count = workspaces.search(db, _owner(h), status=wanted, limit=1000, include_deleted=True)
            assert {r.workspace.id for r in rows} == expected, wanted
            assert count == len(expected)
        # Every status occurs among the combinations, so each clause was checked against rows it must find.
        assert {derive(r.workspace, r.build)[0] for r in loaded} == set(m.WorkspaceStatus)


def test_a_long_poll_settles_exactly_when_the_wire_form_says_so(h: Harness) -> None:
    """`settled` (what a waiting `GET ?wait=` asks at each wakeup) against the rule it replaced, read from the
    workspace's wire form, over every transition, build status and agent lifecycle."""
    h.template(name="tmpl")
    lifecycles = (None, *m.AgentLifecycle)
    combos = list(itertools.product(m.Transition, m.BuildStatus, lifecycles))
    ids = _seed(h, len(combos))
    with h.app.state.sessions() as db:
        for workspace_id, (transition, status, lifecycle) in zip(ids, combos, strict=True):
            _set_latest_build(db, workspace_id, transition, status)
            agent = db.get(WorkspaceAgent, workspace_id)
            if lifecycle is None and agent is not None:
                db.delete(agent)
            elif lifecycle is not None:
                if agent is None:
                    agent = WorkspaceAgent(
                        workspace_id=workspace_id, stats={}, ports=[], connection="connected"
                    )
                    db.add(agent)
                agent.lifecycle = lifecycle.value
        db.commit()
    with h.app.state.read_sessions() as db:
        for workspace_id in ids:
            current = workspaces.to_wire(db, workspaces.load_id(db, workspace_id))
            done = current.latest_build.status not in ACTIVE_BUILD_STATUSES
            ready = done
            if done and current.status == m.WorkspaceStatus.RUNNING:
                ready = current.agent is not None and current.agent.lifecycle in agent_state.SETTLED
            assert workspaces.settled(db, workspace_id, ready=False) == done, current
            assert workspaces.settled(db, workspace_id, ready=True) == ready, current

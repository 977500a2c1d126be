"""The apps of many workspaces at once (the health checker's question every second): the same answer as one
workspace at a time, in one statement once each build's apps are known."""

from __future__ import annotations

from dockyard.apps import access
from dockyard.store.models import Workspace
from tests.harness import Harness
from tests.workspaces.test_queries import counting

APPS = [
    {"slug": "web", "port": 8000, "healthcheck": {"path": "/", "interval": "1s", "threshold": 2}},
    {"slug": "plain", "port": 8001},
]


def test_apps_of_many_answers_as_apps_of_and_in_one_statement_once_known(h: Harness) -> None:
    h.template(name="with-apps", apps=APPS)
    h.template(name="bare")
    with_apps = [h.workspace("with-apps", name=f"a{i}") for i in range(3)]
    bare = h.workspace("bare", name="b0")
    restarted = with_apps[0]
    h.admin.stop_workspace(restarted.id)
    h.await_build(restarted.id)
    h.admin.start_workspace(restarted.id)  # the latest start build is the one that counts
    h.await_build(restarted.id)
    ids = [w.id for w in [*with_apps, bare]] + ["no-such-workspace"]
    engine = h.app.state.engine
    sessions = h.app.state.read_sessions

    with sessions() as db:
        one_by_one = {i: access.apps_of(db, w) for i in ids if (w := db.get(Workspace, i)) is not None}
        many = access.apps_of_many(db, ids)
        with counting(engine) as statements:
            again = access.apps_of_many(db, ids)
        nothing = access.apps_of_many(db, [])

    assert many == again == one_by_one
    assert [app.slug for app in many[restarted.id]] == ["web", "plain"]
    assert many[bare.id] == ()
    assert "no-such-workspace" not in many
    assert len(statements) == 1
    assert nothing == {}

"""Typed allow-lists: an entry names its kind, so a token limited to a template never covers a workspace that
merely shares its name; the migration types entries made before."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic import command

from dockyard.store.db import make_engine
from dockyard.store.migrate import alembic_config
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness


def _error(call: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    return info.value


@pytest.fixture
def estate(h: Harness) -> Harness:
    """Alice's workspaces: `box` from the `ai-agent-sandbox` template, and one *named* `ai-agent-sandbox` made
    from the `other` template."""
    h.template(name="ai-agent-sandbox")
    h.template(name="other")
    alice = h.user("alice")
    for template, name in (("ai-agent-sandbox", "box"), ("other", "ai-agent-sandbox")):
        created = alice.create_workspace(m.CreateWorkspaceRequest(template=template, name=name))
        h.await_build(created.id)
    return h


def test_a_template_entry_never_covers_a_workspace_of_that_name(estate: Harness) -> None:
    limited = estate.user("alice", allow_list=["template:ai-agent-sandbox"])
    assert [w.name for w in limited.list_workspaces().workspaces] == ["box"]
    assert limited.get_workspace("box").template_name == "ai-agent-sandbox"
    error = _error(lambda: limited.get_workspace("ai-agent-sandbox"))
    assert (error.status_code, error.message) == (404, "Workspace 'ai-agent-sandbox' not found.")
    error = _error(lambda: limited.stop_workspace("ai-agent-sandbox"))
    assert error.status_code == 404
    assert [t.name for t in limited.list_templates()] == ["ai-agent-sandbox"]
    # Nothing changed for the workspace it could not see.
    assert estate.admin.get_workspace("alice/ai-agent-sandbox").status == m.WorkspaceStatus.RUNNING


def test_a_workspace_entry_covers_that_workspace_only(estate: Harness) -> None:
    limited = estate.user("alice", allow_list=["workspace:ai-agent-sandbox"])
    assert [w.name for w in limited.list_workspaces().workspaces] == ["ai-agent-sandbox"]
    assert _error(lambda: limited.get_workspace("box")).status_code == 404
    # It names no template, so it may not read or use one.
    error = _error(lambda: limited.get_template("ai-agent-sandbox"))
    assert (error.status_code, error.message) == (
        403,
        "This token is not allowed to use template 'ai-agent-sandbox'.",
    )
    error = _error(
        lambda: limited.create_workspace(m.CreateWorkspaceRequest(template="ai-agent-sandbox", name="new"))
    )
    assert error.status_code == 403
    assert [w.name for w in estate.admin.list_workspaces().workspaces if w.name == "new"] == []
    # Ids work as well as names.
    box = estate.admin.get_workspace("alice/box")
    by_id = estate.user("alice", allow_list=[f"workspace:{box.id}"])
    assert [w.name for w in by_id.list_workspaces().workspaces] == ["box"]


def test_entries_without_a_kind_are_refused(h: Harness) -> None:
    response = h.admin.http.post(
        "/api/v2/users/me/tokens", json={"name": "untyped", "allow_list": ["ai-agent-sandbox"]}
    )
    assert response.status_code == 422
    assert response.json()["validations"] == [
        {
            "field": "allow_list",
            "detail": "'ai-agent-sandbox' must name its kind: template:NAME or workspace:NAME (or an id)",
        }
    ]
    assert [t.name for t in h.admin.list_tokens()] == ["admin"]


def _allow_lists(engine: sa.Engine) -> dict[str, list[str]]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, allow_list FROM api_tokens")).all()
    return {name: json.loads(entries) if isinstance(entries, str) else entries for name, entries in rows}


def test_migration_types_existing_entries(estate: Harness) -> None:
    box = estate.admin.get_workspace("alice/box")
    estate.admin.create_token(
        m.CreateTokenRequest(
            name="narrow", allow_list=["template:ai-agent-sandbox", f"workspace:{box.id}", "workspace:dev"]
        )
    )
    engine = make_engine(estate.settings.resolved_database_url)
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        # As a token made before entries had kinds stored them.
        assert _allow_lists(engine)["narrow"] == sorted(["ai-agent-sandbox", box.id, "dev"])
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0005")
        lists = _allow_lists(engine)
    finally:
        engine.dispose()
    # Names become template entries (what they meant for templates before); a workspace's id can only mean
    # that workspace.
    assert lists["narrow"] == sorted(["template:ai-agent-sandbox", f"workspace:{box.id}", "template:dev"])
    assert lists["admin"] == []

"""A create from the dashboard's form that claims a warm pool member runs the owner's part in it, as an API
create does (both go through `tunnel.claims.create_workspace`); real agents, as local processes."""

from __future__ import annotations

import time

import pytest

from dockyard.warmpool.prebuild_pool import PrebuildPool
from dockyard_sdk import models as m
from tests.harness import Harness, tar_gz
from tests.web.test_pages import _csrf, _logged_in

pytestmark = pytest.mark.timeout(120)

MANIFEST = """
name: pooled
image: dockyard/base:bookworm
env:
  GREETING: "hello {{ owner.username }}"
prebuilds:
  - {parameters: {}, instances: 1}
"""


def test_a_dashboard_create_that_claims_a_member_runs_the_owners_part(ah: Harness) -> None:
    h = ah
    template = h.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST}))
    pool = h.app.state.background.prebuild_pool
    assert isinstance(pool, PrebuildPool)
    deadline = time.monotonic() + 60
    while True:
        pool.fill()
        [preset] = h.admin.prebuilds("pooled").presets
        if preset.ready == 1:
            break
        assert time.monotonic() < deadline, preset
        time.sleep(0.2)

    http = _logged_in(h, "alice")
    form = http.get("/workspaces/new", params={"template": "pooled"})
    assert form.status_code == 200, form.text
    response = http.post(
        "/workspaces/new",
        data={"template": template.id, "name": "mine", "csrf_token": _csrf(form.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text

    alice = h.user("alice")
    ws = alice.get_workspace("mine")
    assert response.headers["location"] == f"/workspaces/{ws.id}"
    assert ws.latest_build.reason == m.BuildReason.CLAIM
    ready = alice.get_workspace(ws.id, wait="ready", timeout=30)
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY
    # The owner's environment reached the agent at the claim: a session started now has it.
    result = alice.exec(ws.id, m.ExecRequest(command='echo "$DOCKYARD_WORKSPACE_OWNER $GREETING"'))
    assert (result.exit_code, result.stdout) == (0, "alice hello alice\n")

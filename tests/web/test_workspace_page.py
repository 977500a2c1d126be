"""The workspace page over HTTP: live stats, the parameters form, restart and update to the active version."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from dockyard.tunnel import state
from dockyard_sdk import models as m
from tests.harness import Harness, manifest_yaml, tar_gz
from tests.web.test_pages import _csrf, _logged_in

PARAMETERS = [
    {
        "name": "branch",
        "type": "string",
        "default": "main",
        "mutable": True,
        "validation": {"regex": "^[a-z]+$"},
    },
    {"name": "cores", "type": "number", "default": 2, "mutable": True, "validation": {"min": 1, "max": 8}},
    {"name": "region", "type": "string", "default": "eu"},
]


def _until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_page_shows_stats_connect_and_only_mutable_parameters(wh: Harness) -> None:
    http = _logged_in(wh)
    alice = wh.user("alice")
    wh.template(name="py", parameters=PARAMETERS, lifetime={})
    created = wh.await_build(
        alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="demo")).id, client=alice
    )
    page = http.get(f"/workspaces/{created.id}")
    assert page.status_code == 200
    assert 'value="dockyard config-ssh"' in page.text
    assert 'value="ssh dockyard.demo"' in page.text
    assert 'name="p.branch"' in page.text
    assert 'name="p.cores"' in page.text
    assert 'name="p.region"' not in page.text  # immutable: shown, not offered for change
    assert re.search(r"<dt><code>region</code></dt><dd>eu</dd>", page.text)
    assert f'hx-get="/workspaces/{created.id}/stats"' in page.text
    assert "Waiting for the agent's first report." in page.text

    # What the hub records from an agent's report is what the fragment shows.
    message = {
        "cpu_cores": 0.25,
        "memory_bytes": 512 * 2**20,
        "memory_limit_bytes": 4 * 2**30,
        "pids_current": 7,
        "pids_limit": 1024,
        "disk_used_bytes": 3 * 2**20,
        "disk_total_bytes": 10 * 2**30,
        "ports": [{"port": 8000, "address": "127.0.0.1"}],
    }
    state.stats(wh.app.state.sessions, created.id, message)
    fragment = http.get(f"/workspaces/{created.id}/stats")
    assert fragment.status_code == 200
    assert '<dd data-stat="cpu">0.25 cores</dd>' in fragment.text
    assert "512 MiB of 4 GiB" in fragment.text
    assert '<dd data-stat="pids">7 of 1024</dd>' in fragment.text
    assert "3 MiB of 10 GiB (shared disk)" in fragment.text
    assert "/@alice/demo/ports/8000/" in fragment.text
    assert "<html" not in fragment.text  # a fragment, not a page

    # Someone else's workspace: the fragment and the forms are 404s, and nothing changes.
    bob = _logged_in(wh, "bob")
    token = _csrf(bob.get("/templates").text)
    assert bob.get(f"/workspaces/{created.id}/stats").status_code == 404
    for action in ("restart", "update", "parameters"):
        response = bob.post(f"/workspaces/{created.id}/{action}", data={"csrf_token": token, "p.branch": "x"})
        assert response.status_code == 404, action
    after = alice.get_workspace(created.id)
    assert (after.latest_build.number, after.parameters["branch"]) == (1, "main")


def test_parameters_restart_and_update_to_the_active_version(wh: Harness) -> None:
    http = _logged_in(wh)
    alice = wh.user("alice")
    wh.template(name="py", parameters=PARAMETERS, lifetime={})
    created = wh.await_build(
        alice.create_workspace(m.CreateWorkspaceRequest(template="py", name="demo")).id, client=alice
    )
    url = f"/workspaces/{created.id}"
    token = _csrf(http.get(url).text)

    # Without the CSRF token: refused by the cross-site middleware, nothing queued.
    assert http.post(f"{url}/restart", data={"csrf_token": "forged"}).status_code == 403
    assert alice.get_workspace(created.id).latest_build.number == 1

    # Invalid values: the API's messages at the fields, what was typed kept, nothing stored.
    refused = http.post(f"{url}/parameters", data={"csrf_token": token, "p.branch": "Bad!", "p.cores": "30"})
    assert refused.status_code == 422
    assert (
        '<small id="p-cores-error" class="error field-error">30 is above the maximum 8</small>'
        in refused.text
    )
    assert "&#39;Bad!&#39; does not match ^[a-z]+$" in refused.text
    assert 'value="Bad!"' in refused.text
    assert 'aria-invalid="true"' in refused.text
    assert "Invalid parameters." in refused.text
    unchanged = alice.get_workspace(created.id)
    assert (unchanged.parameters, unchanged.latest_build.number) == (created.parameters, 1)

    # Valid: stored for the next start, no build.
    saved = http.post(
        f"{url}/parameters",
        data={"csrf_token": token, "p.branch": "dev", "p.cores": "4"},
        follow_redirects=False,
    )
    assert (saved.status_code, saved.headers["location"]) == (303, f"{url}?saved=parameters")
    assert "Parameters saved." in http.get(saved.headers["location"]).text
    stored = alice.get_workspace(created.id)
    assert stored.parameters == {"branch": "dev", "cores": 4, "region": "eu"}
    assert stored.latest_build.number == 1

    # "Restart now": a stop, then (once it finished) a start that applies them.
    applied = http.post(
        f"{url}/parameters",
        data={"csrf_token": token, "p.branch": "feature", "p.cores": "4", "apply": "true"},
        follow_redirects=False,
    )
    assert applied.status_code == 303
    _until(lambda: alice.get_workspace(created.id).latest_build.number == 3)
    restarted = wh.await_build(created.id, client=alice)
    assert restarted.status == m.WorkspaceStatus.RUNNING
    assert restarted.latest_build.transition == m.Transition.START
    assert restarted.parameters["branch"] == "feature"

    # A new version makes the page offer the update; it restarts onto the active version.
    wh.admin.create_template_version(
        "py",
        tar_gz(
            {"dockyard.yaml": manifest_yaml(name="py", description="v2", parameters=PARAMETERS, lifetime={})}
        ),
    )
    page = http.get(url).text
    assert "Update to the active version" in page
    assert http.post(f"{url}/update", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    _until(lambda: alice.get_workspace(created.id).latest_build.number == 5)
    updated = wh.await_build(created.id, client=alice)
    assert (updated.status, updated.template_version_name, updated.outdated) == (
        m.WorkspaceStatus.RUNNING,
        "v2",
        False,
    )

    # Restart of a stopped workspace is a start.
    alice.stop_workspace(created.id)
    wh.await_build(created.id, client=alice)
    assert http.post(f"{url}/restart", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    final = wh.await_build(created.id, client=alice)
    assert (final.latest_build.number, final.latest_build.transition, final.status) == (
        7,
        m.Transition.START,
        m.WorkspaceStatus.RUNNING,
    )

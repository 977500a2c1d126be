from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from pydantic import TypeAdapter

from dockyard.cli import config, render, workspaces
from dockyard.runtimes import images
from dockyard.runtimes.base import ImageBuildFailed, LogSink
from dockyard.tunnel import state as agent_state
from dockyard_sdk import ApiError, Client, ConnectionFailed
from dockyard_sdk import models as m
from tests.cli.conftest import Cli, Golden
from tests.fakes import FakeRuntime
from tests.harness import Harness, manifest_yaml, tar_gz


def _fake(h: Harness) -> FakeRuntime:
    assert isinstance(h.runtime, FakeRuntime)
    return h.runtime


@pytest.fixture(autouse=True)
def _log_followers_end(h: Harness) -> Iterator[None]:
    # `--wait` follows the build log in a thread that ends with the build; it must end before the server does.
    yield
    _fake(h).gate.set()
    for thread in threading.enumerate():
        if thread.name.startswith("dockyard-build-logs-"):
            thread.join(10)
            assert not thread.is_alive()


def _release_later(h: Harness, seconds: float = 1.0) -> threading.Timer:
    """Hold builds at their first runtime step, and let them go after `seconds`."""
    fake = _fake(h)
    fake.gate.clear()
    timer = threading.Timer(seconds, fake.gate.set)
    timer.start()
    return timer


def _names(h: Harness) -> list[str]:
    return [w.name for w in h.admin.list_workspaces().workspaces]


def _with_client(cli: Cli, monkeypatch: pytest.MonkeyPatch, **methods: Any) -> None:
    """Make the CLI's clients use `methods` in place of the SDK's."""

    def factory(url: str, token: str | None) -> Client:
        client = cli.client(url, token)
        for name, method in methods.items():
            monkeypatch.setattr(client, name, method)
        return client

    monkeypatch.setattr(config, "client_factory", factory)


# --- create ----------------------------------------------------------------------------------------------------


def test_create_waits_showing_progress_and_ends_running(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    _release_later(h)

    result = logged_in.ok("create", "ws1", "--template", "tmpl")

    ws = h.admin.get_workspace("ws1")
    assert (ws.status, ws.latest_build.status) == (m.WorkspaceStatus.RUNNING, m.BuildStatus.SUCCEEDED)
    lines = result.stderr.splitlines()
    assert lines[0] == "Creating workspace ws1 from tmpl v1 (build #1)"
    assert "ws1: starting" in lines
    logged = [line[9:] for line in lines if line[:2].isdigit()]
    assert logged == [
        f"container | started container dockyard-ws-{ws.id}",
        "container | workspace ws1 is running at 10.0.0.2",
        # The template's startup script (`echo {{ parameters.branch }}`), run by the agent.
        "startup_script | main",
    ]
    running = next(i for i, line in enumerate(lines) if line.endswith("workspace ws1 is running at 10.0.0.2"))
    assert lines.index("ws1: starting") < running
    # `create` waits for the agent too: the last word is the startup script's.
    assert lines[-1].startswith("Workspace ws1 is ready (startup script took ")
    assert "STATUS     running" in result.stdout.splitlines()


def test_create_no_wait_returns_at_once(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    _fake(h).gate.clear()

    result = logged_in.ok("create", "ws1", "--template", "tmpl", "--no-wait", "-o", "json")

    created = m.Workspace.model_validate_json(result.stdout)
    assert created.status in (m.WorkspaceStatus.PENDING, m.WorkspaceStatus.STARTING)
    assert result.stderr == (
        "Creating workspace ws1 from tmpl v1 (build #1)\n"
        "Follow its progress with `dockyard logs ws1 --follow`\n"
    )
    _fake(h).gate.set()
    assert h.await_build(created.id).status == m.WorkspaceStatus.RUNNING


def test_create_without_a_name_lets_the_server_pick_one(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    created = m.Workspace.model_validate_json(logged_in.ok("create", "-t", "tmpl", "-o", "json").stdout)
    assert created.name.startswith("tmpl-")
    assert created.status == m.WorkspaceStatus.RUNNING
    assert _names(h) == [created.name]


def test_create_passes_parameters_ttl_and_version(logged_in: Cli, h: Harness, tmp_path: Path) -> None:
    h.template(name="tmpl")
    h.admin.create_template_version("tmpl", tar_gz({"dockyard.yaml": manifest_yaml(description="v2")}))
    # Strings as written: YAML would read 1.10 as the number 1.1; the server types it as the string it is.
    params = tmp_path / "params.yaml"
    params.write_text("branch: 1.10\nttl_hours: 2\n")

    logged_in.ok(
        "create", "ws1", "--template", "tmpl", "--param-file", str(params), "--param", "ttl_hours=3",
        "--ttl", "90m", "--version", "v1",
    )  # fmt: skip

    ws = h.admin.get_workspace("ws1")
    assert ws.parameters == {"branch": "1.10", "ttl_hours": 3}
    assert (ws.ttl_ms, ws.template_version_name, ws.outdated) == (90 * 60 * 1000, "v1", True)


def test_create_parameter_errors_name_each_field(logged_in: Cli, h: Harness, golden: Golden) -> None:
    h.template(name="tmpl")
    golden(
        "workspaces_create_invalid_parameters", logged_in,
        "create", "ws1", "--template", "tmpl", "--param", "ttl_hours=30", "--param", "colour=blue",
    )  # fmt: skip
    assert h.admin.list_workspaces().count == 0


def test_create_checks_options_before_sending(logged_in: Cli, h: Harness, tmp_path: Path) -> None:
    result = logged_in("create", "Bad_Name", "--template", "tmpl", "--ttl", "10s")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: Invalid request.\n"
        "  NAME: 'Bad_Name' is not a valid name: use 1-32 characters from a-z, 0-9 and '-', "
        "not starting or ending with '-'\n"
        "  --ttl: must be at least 1m\n"
    )
    result = logged_in("create", "--template", "tmpl", "--param", "branch", "--param", "=x")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: Invalid request.\n  --param: 'branch' is not KEY=VALUE\n  --param: '=x' is not KEY=VALUE\n"
    )
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    result = logged_in("create", "--template", "tmpl", "--param-file", str(listed))
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: {listed} must map parameter names to values\nhint: e.g. `branch: main`\n",
    )
    assert len(logged_in.connections) == 1  # the login's
    assert h.admin.list_workspaces().count == 0


def test_failed_build_shows_the_log_and_the_reason(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    _fake(h).fail_start = "boom: no space left on device"

    result = logged_in("create", "ws1", "--template", "tmpl")

    assert (result.exit_code, result.stdout) == (1, "")
    lines = result.stderr.splitlines()
    assert [line[9:] for line in lines if line[:2].isdigit()] == [
        "container | boom: no space left on device",
        "error     | boom: no space left on device",
    ]
    assert lines[-3:] == [
        "error: build #1 (start) of ws1 failed",
        "  boom: no space left on device",
        "hint: see its whole log with `dockyard logs ws1 --build 1`",
    ]
    assert h.admin.get_workspace("ws1").status == m.WorkspaceStatus.FAILED


def test_failed_build_prints_the_log_tail_when_streaming_broke(
    logged_in: Cli, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(build: str, *, after: int = 0) -> Iterator[m.BuildLogLine]:
        raise ConnectionFailed("Cannot reach Dockyard at http://testserver: reset")

    _with_client(logged_in, monkeypatch, follow_build_logs=broken)
    h.template(name="tmpl")
    _fake(h).down = True

    result = logged_in("create", "ws1", "--template", "tmpl")

    assert result.exit_code == 1
    reason = "Fake engine unreachable at fake://: connection refused"
    lines = result.stderr.splitlines()
    assert "warning: cannot follow the build log: Cannot reach Dockyard at http://testserver: reset" in lines
    tail = lines.index("Last lines of build #1's log:")
    assert [line[9:] for line in lines[tail + 1 : -3]] == [f"error     | {reason}"]
    assert lines[-3:-1] == ["error: build #1 (start) of ws1 failed", f"  {reason}"]


def test_ctrl_c_stops_waiting_but_not_the_build(
    logged_in: Cli, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> NoReturn:
        raise KeyboardInterrupt

    _with_client(logged_in, monkeypatch, get_workspace=interrupted)
    h.template(name="tmpl")

    result = logged_in("create", "ws1", "--template", "tmpl")

    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == (
        "Stopped waiting; build #1 goes on: follow it with `dockyard logs ws1 --follow`, "
        "or cancel it with `dockyard cancel ws1`."
    )
    assert h.await_build("ws1").status == m.WorkspaceStatus.RUNNING


def test_wait_times_out(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    _fake(h).gate.clear()

    result = logged_in("create", "ws1", "--template", "tmpl", "--timeout", "1s")

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-2:] == [
        "error: timed out after 1s waiting for ws1 (still starting)",
        "hint: build #1 goes on: follow it with `dockyard logs ws1 --follow`, "
        "or cancel it with `dockyard cancel ws1`",
    ]
    _fake(h).gate.set()
    assert h.await_build("ws1").status == m.WorkspaceStatus.RUNNING
    bad = logged_in("start", "ws1", "--timeout", "soon")
    assert bad.exit_code == 2
    assert "'soon' is not a duration" in bad.stderr


# --- list, show ------------------------------------------------------------------------------------------------


def _fleet(h: Harness) -> None:
    """Three of admin's workspaces (one stopped, one on an old version) and one of alice's."""
    h.workspace(name="old")
    h.admin.create_template_version("tmpl", tar_gz({"dockyard.yaml": manifest_yaml(description="v2")}))
    h.workspace(name="idle")
    h.admin.stop_workspace("idle")
    h.await_build("idle")
    h.workspace(name="busy", ttl_hours=2)
    alice = h.user("alice")
    h.await_build(
        alice.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="hers")).id, client=alice
    )


def test_list_table(logged_in: Cli, h: Harness, golden: Golden) -> None:
    _fleet(h)
    golden("workspaces_list", logged_in, "list")
    everyone = logged_in.ok("list", "--all").stdout.splitlines()
    assert everyone[0].split() == ["NAME", "OWNER", "TEMPLATE", "STATUS", "TASK", "LAST", "BUILD", "TTL"]
    assert [line.split()[:2] for line in everyone[1:]] == [
        ["hers", "alice"], ["busy", "admin"], ["idle", "admin"], ["old", "admin"],
    ]  # fmt: skip


def test_list_json_and_filters(logged_in: Cli, h: Harness) -> None:
    _fleet(h)
    listed = m.WorkspaceList.model_validate_json(logged_in.ok("list", "-o", "json").stdout)
    assert listed == h.admin.list_workspaces(owner="me")
    stopped = logged_in.ok("list", "--all", "--status", "stopped", "-o", "json").stdout
    assert [w.name for w in m.WorkspaceList.model_validate_json(stopped).workspaces] == ["idle"]
    none = logged_in.ok("list", "--template", "other")
    assert (none.stdout, none.stderr) == ("", "No workspaces match.\n")


def test_list_empty(logged_in: Cli) -> None:
    result = logged_in.ok("list")
    assert (result.stdout, result.stderr) == (
        "",
        "No workspaces yet; create one with `dockyard create --template TEMPLATE`.\n",
    )


def test_show(logged_in: Cli, h: Harness, golden: Golden) -> None:
    ws = h.workspace(name="ws1", branch="dev")
    timings = render.timings_text(ws.latest_build)
    golden("workspaces_show", logged_in, "show", "ws1", replace={timings: "<TIMINGS>"})
    shown = m.Workspace.model_validate_json(logged_in.ok("show", "ws1", "-o", "json").stdout)
    # The agent's part (last seen, stats) moves on between the two reads.
    assert shown.model_copy(update={"agent": None}) == h.admin.get_workspace("ws1").model_copy(
        update={"agent": None}
    )


def test_show_reports_usage_against_the_limits(logged_in: Cli, h: Harness, golden: Golden) -> None:
    ws = h.workspace(name="ws1", branch="dev")
    report = {
        "cpu_cores": 0.5,
        "memory_bytes": 300 * 2**20,
        "memory_limit_bytes": 4 * 2**30,
        "oom_kills": 2,
        "pids_current": 17,
        "pids_limit": 1024,
        "pids_limit_hits": 1,
        "disk_used_bytes": 1536 * 2**20,
        "disk_total_bytes": 9 * 2**30,
        "disk_limit_bytes": 10 * 2**30,
    }
    agent_state.stats(h.app.state.sessions, ws.id, report)
    timings = render.timings_text(ws.latest_build)
    golden("workspaces_show_usage", logged_in, "show", "ws1", replace={timings: "<TIMINGS>"})
    shown = h.admin.get_workspace("ws1")
    assert shown.status_reason == (
        "memory limit hit (2 processes killed out of memory); process limit 1024 hit (1 fork refused)"
    )
    assert shown.agent is not None
    assert shown.agent.stats == m.AgentStats(**report)


def test_show_failed_workspace_gives_the_reason(logged_in: Cli, h: Harness) -> None:
    _fake(h).fail_start = "boom"
    h.workspace(name="ws1")
    lines = logged_in.ok("show", "ws1").stdout.splitlines()
    assert "STATUS     failed" in lines
    assert "REASON     boom" in lines
    assert "ERROR         boom" in lines


def test_show_someone_elses_by_owner_and_name(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    alice = h.user("alice")
    hers = h.await_build(alice.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1")).id)
    shown = m.Workspace.model_validate_json(logged_in.ok("show", "alice/ws1", "-o", "json").stdout)
    assert shown.id == hers.id
    logged_in.ok("stop", "alice/ws1")
    assert h.admin.get_workspace(hers.id).status == m.WorkspaceStatus.STOPPED
    missing = logged_in("show", "ws1")
    assert (missing.exit_code, missing.stderr) == (1, "error: Workspace 'ws1' not found.\n")


# --- start, stop, restart, delete ------------------------------------------------------------------------------


def test_stop_and_start(logged_in: Cli, h: Harness) -> None:
    h.workspace(name="ws1")

    stopped = logged_in.ok("stop", "ws1")
    assert stopped.stdout == ""
    assert stopped.stderr.splitlines()[0] == "Stopping ws1 (build #2)"
    assert stopped.stderr.splitlines()[-1].startswith("Workspace ws1 is stopped (build #2 took ")
    assert h.admin.get_workspace("ws1").status == m.WorkspaceStatus.STOPPED

    started = m.Workspace.model_validate_json(logged_in.ok("start", "ws1", "-o", "json").stdout)
    assert (started.status, started.latest_build.number) == (m.WorkspaceStatus.RUNNING, 3)

    again = logged_in("start", "ws1")
    assert (again.exit_code, again.stderr) == (1, "error: Workspace 'ws1' is already running.\n")


def test_stop_no_wait(logged_in: Cli, h: Harness) -> None:
    h.workspace(name="ws1")
    _fake(h).gate.clear()
    result = logged_in.ok("stop", "ws1", "--no-wait")
    assert result.stderr == "Stopping ws1 (build #2)\nFollow its progress with `dockyard logs ws1 --follow`\n"
    _fake(h).gate.set()
    assert h.await_build("ws1").status == m.WorkspaceStatus.STOPPED


def test_restart(logged_in: Cli, h: Harness) -> None:
    ws = h.workspace(name="ws1")

    result = logged_in.ok("restart", "ws1")

    messages = [
        line for line in result.stderr.splitlines() if line.startswith(("Stopping", "Starting", "Workspace"))
    ]
    assert messages[0] == "Stopping ws1 (build #2)"
    assert messages[1].startswith("Workspace ws1 is stopped (build #2 took ")
    assert messages[2] == "Starting ws1 (build #3)"
    assert messages[3].startswith("Workspace ws1 is running (build #3 took ")
    assert [b.transition for b in h.admin.list_builds(ws.id)] == ["start", "stop", "start"]
    assert h.admin.get_workspace("ws1").status == m.WorkspaceStatus.RUNNING
    # A stopped workspace is only started.
    logged_in.ok("stop", "ws1")
    assert logged_in.ok("restart", "ws1").stderr.startswith("Starting ws1 (build #5)\n")


def test_delete_needs_yes_without_a_terminal(logged_in: Cli, h: Harness) -> None:
    h.workspace(name="ws1")

    refused = logged_in("delete", "ws1")

    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: not deleting ws1 without confirmation\nhint: pass --yes to delete it\n",
    )
    assert _names(h) == ["ws1"]
    deleted = logged_in.ok("delete", "ws1", "--yes")
    assert deleted.stderr.splitlines()[-1].startswith("Workspace ws1 is deleted (build #2 took ")
    assert _names(h) == []


def test_delete_asks_on_a_terminal(logged_in: Cli, h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspaces, "_can_prompt", lambda: True)
    ws = h.workspace(name="ws1")

    declined = logged_in("delete", "ws1", input="n\n")

    assert declined.exit_code == 1
    assert declined.stderr.startswith("Delete workspace admin/ws1 and its home volume? [y/N]:")
    assert _names(h) == ["ws1"]
    logged_in.ok("delete", "ws1", "--no-wait", input="y\n")
    assert h.await_build(ws.id).status == m.WorkspaceStatus.DELETED


# --- update ----------------------------------------------------------------------------------------------------

_SIZED: dict[str, Any] = {
    "parameters": [
        {"name": "size", "type": "string", "default": "s", "mutable": True},
        {"name": "region", "type": "string", "default": "eu"},
    ],
    "startup_script": "true",
    "lifetime": {},
}


def test_update_applies_at_the_next_start(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl", **_SIZED)
    h.workspace(name="ws1")
    h.admin.create_template_version(
        "tmpl", tar_gz({"dockyard.yaml": manifest_yaml(description="v2", **_SIZED)})
    )

    result = logged_in.ok("update", "ws1", "--param", "size=l", "--version", "active", "--ttl", "2h")

    assert result.stderr == (
        "Updated ws1: size=l, template version v2, TTL 2h\n"
        "The changes apply at its next start: run `dockyard restart ws1`, or pass --restart to update\n"
    )
    ws = h.admin.get_workspace("ws1")
    assert (ws.parameters["size"], ws.template_version_name, ws.ttl_ms) == ("l", "v2", 2 * 3600 * 1000)
    assert (ws.latest_build.number, ws.latest_build.template_version_name) == (1, "v1")

    restarted = m.Workspace.model_validate_json(
        logged_in.ok("update", "ws1", "--restart", "-o", "json").stdout
    )
    assert (restarted.latest_build.number, restarted.latest_build.template_version_name) == (3, "v2")
    assert (restarted.status, restarted.outdated) == (m.WorkspaceStatus.RUNNING, False)


def test_update_errors(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl", **_SIZED)
    h.workspace(name="ws1")

    nothing = logged_in("update", "ws1")
    immutable = logged_in("update", "ws1", "--param", "region=us", "--restart")

    assert (nothing.exit_code, nothing.stderr) == (
        1,
        "error: nothing to update\nhint: give --param, --param-file, --version or --ttl\n",
    )
    assert (immutable.exit_code, immutable.stderr) == (
        1,
        "error: Invalid parameters.\n  region: is immutable and cannot be changed\n",
    )
    ws = h.admin.get_workspace("ws1")
    assert (ws.parameters, ws.latest_build.number) == ({"size": "s", "region": "eu"}, 1)


# --- logs, builds, cancel --------------------------------------------------------------------------------------


def test_logs(logged_in: Cli, h: Harness) -> None:
    ws = h.workspace(name="ws1")
    h.admin.stop_workspace("ws1")
    h.await_build("ws1")
    first = h.admin.build_logs(ws.latest_build.id)

    result = logged_in.ok("logs", "ws1", "--build", "1")

    assert result.stdout.splitlines() == [
        f"{line.time:%H:%M:%S} {line.stage:<9} | {line.output}" for line in first
    ]
    # The agent's startup-script lines may come before or after the worker's last line.
    assert any(
        line.endswith(" container | workspace ws1 is running at 10.0.0.2")
        for line in result.stdout.splitlines()
    )
    latest = logged_in.ok("logs", "ws1")
    assert (latest.stdout, latest.stderr) == ("", "Build #2 has no log lines yet.\n")
    missing = logged_in("logs", "ws1", "--build", "9")
    assert (missing.exit_code, missing.stderr) == (
        1,
        "error: ws1 has no build #9\nhint: list its builds with `dockyard builds ws1`\n",
    )


def test_logs_follow_streams_until_the_build_ends(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    _fake(h).gate.clear()
    h.admin.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1"))
    _release_later(h, 0.5)

    result = logged_in.ok("logs", "ws1", "--follow")

    # The agent's startup-script lines may follow in the same log.
    assert "container | workspace ws1 is running at 10.0.0.2" in [
        line[9:] for line in result.stdout.splitlines()
    ]
    assert result.stderr == "Build #1 (start) succeeded\n"
    assert h.admin.get_workspace("ws1").status == m.WorkspaceStatus.RUNNING


_BUILDS = TypeAdapter(list[m.WorkspaceBuild])


def test_builds(logged_in: Cli, h: Harness) -> None:
    ws = h.workspace(name="ws1")
    logged_in.ok("stop", "ws1")

    table = logged_in.ok("builds", "ws1").stdout.splitlines()
    listed = _BUILDS.validate_json(logged_in.ok("builds", "ws1", "-o", "json").stdout)

    assert table[0].split() == [
        "BUILD", "TRANSITION", "STATUS", "REASON", "INITIATOR", "VERSION", "CREATED", "DURATION", "ERROR",
    ]  # fmt: skip
    assert [line.split()[:6] for line in table[1:]] == [
        ["#2", "stop", "succeeded", "initiator", "admin", "v1"],
        ["#1", "start", "succeeded", "initiator", "admin", "v1"],
    ]
    assert listed == h.admin.list_builds(ws.id)


def test_cancel(logged_in: Cli, h: Harness) -> None:
    h.template(name="tmpl")
    _fake(h).gate.clear()
    logged_in.ok("create", "ws1", "--template", "tmpl", "--no-wait")

    result = logged_in.ok("cancel", "ws1")

    assert result.stderr in (
        "Canceled build #1 (start)\n",
        "Canceling build #1 (start); it stops at its next step\n",
    )
    _fake(h).gate.set()
    assert h.await_build("ws1").latest_build.status in (m.BuildStatus.CANCELED, m.BuildStatus.SUCCEEDED)
    idle = logged_in("cancel", "ws1")
    assert idle.exit_code == 1
    assert idle.stderr.startswith("error: ws1 has no build in progress\n  its latest build, #1 (start), ")


# --- doctor, images --------------------------------------------------------------------------------------------


def test_doctor_reports_and_prunes_orphans(logged_in: Cli, h: Harness) -> None:
    h.workspace(name="ws1")
    _fake(h).volumes.add("ghost")

    report = logged_in.ok("doctor")
    pruned = logged_in.ok("doctor", "--prune", "-o", "json")

    deployment = _fake(h).deployment
    assert deployment
    # The database's line counts live connections on PostgreSQL: checked for its shape.
    database = re.search(r"^DATABASE {7}(.*)\n", report.stdout, re.MULTILINE)
    assert database is not None
    assert re.fullmatch(
        r"(sqlite|postgresql, \d+ of \d+ connections open), this server's pool up to \d+", database[1]
    )
    assert report.stdout.replace(database[0], "") == (
        "RUNTIME        fake: ok\n"
        "DRIFTED        none\n"
        "ORPHANS        1\n"
        "EGRESS ALL     a network each\n"
        "WARM NETWORKS  open 0, internal 0\n"
        "HOST FIREWALL  ok\n"
        f"DEPLOYMENT     {deployment}\n"
        "\n"
        "KIND    NAME                 WORKSPACE ID\n"
        "volume  dockyard-home-ghost  ghost\n"
    )
    assert report.stderr.endswith("Found 1 orphaned resource; remove them with `dockyard doctor --prune`\n")
    assert pruned.stderr == "Removed 1 orphaned resource\n  volume dockyard-home-ghost\n"
    after = m.DoctorReport.model_validate_json(pruned.stdout)
    assert [(r.kind, r.name) for r in after.removed] == [("volume", "dockyard-home-ghost")]
    unchanged = {"removed": [], "repaired": None, "database": None}
    assert after.model_copy(update=unchanged) == h.admin.doctor().model_copy(update={"database": None})
    assert "ghost" not in _fake(h).volumes


def test_doctor_fails_while_workspace_networks_lack_host_rules(logged_in: Cli, h: Harness) -> None:
    ws = h.workspace(name="ws1")
    _fake(h).unisolated.add(ws.id)

    report = logged_in("doctor")
    repaired = logged_in("doctor", "--prune")
    after = logged_in("doctor")

    assert report.exit_code == 1
    assert "HOST FIREWALL  1 missing\n" in report.stdout
    assert report.stderr == (
        "error: 1 workspace network can reach the host: their firewall rules are missing; add them with "
        "`dockyard doctor --prune`\n"
    )
    assert repaired.exit_code == 0, repaired.stderr
    assert repaired.stderr == (
        f"Removed 0 orphaned resources\nRepaired the host firewall\n  added rules for dockyard-ws-{ws.id}\n"
    )
    assert (after.exit_code, after.stderr) == (0, "")
    assert "HOST FIREWALL  ok\n" in after.stdout
    [audit] = h.admin.audit(action="runtime.firewall_repair").audit_logs
    assert audit.detail == {"missing": [f"dockyard-ws-{ws.id}"], "stale": []}


def test_doctor_fails_when_the_runtime_is_down(logged_in: Cli, h: Harness) -> None:
    _fake(h).down = True
    result = logged_in("doctor")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == "RUNTIME        fake: unavailable"
    assert result.stderr == (
        "error: the fake runtime is unavailable\n  Fake engine unreachable at fake://: connection refused\n"
    )


def test_doctor_is_for_owners(cli: Cli, h: Harness) -> None:
    alice = h.user("alice")
    assert alice.token is not None
    cli.login(alice.token)
    result = cli("doctor", "--prune")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert result.stderr.endswith("hint: Your role or your token's scopes do not allow this.\n")
    with pytest.raises(ApiError):
        alice.prune()


def test_images_build_base(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, bool]] = []

    def build(tag: str = images.BASE_IMAGE, *, log: LogSink, force: bool = False, **kwargs: Any) -> None:
        calls.append((tag, force))
        log(f"Importing rootfs.tar as {tag}")
        log(f"Image {tag} is ready")

    monkeypatch.setattr(images, "build_base_image", build)

    default = cli("images", "build-base")
    tagged = cli("images", "build-base", "--force", "--tag", "dockyard/base:test")

    assert (default.exit_code, default.stdout, default.stderr) == (
        0,
        "",
        "Importing rootfs.tar as dockyard/base:bookworm\nImage dockyard/base:bookworm is ready\n",
    )
    assert tagged.exit_code == 0
    assert calls == [("dockyard/base:bookworm", False), ("dockyard/base:test", True)]


def test_images_build_base_failure_is_one_error(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def build(tag: str, *, log: LogSink, force: bool = False) -> None:
        raise ImageBuildFailed("mmdebstrap failed with exit code 1.", detail="E: cannot reach the mirror")

    monkeypatch.setattr(images, "build_base_image", build)
    result = cli("images", "build-base")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: mmdebstrap failed with exit code 1.\n  E: cannot reach the mirror\n",
    )


def test_images_build_names_a_recipe_and_reports_failures_as_one_error(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dockyard.runtimes import recipes

    calls: list[tuple[str, bool]] = []

    def build(name: str, *, log: LogSink, force: bool = False) -> str:
        calls.append((name, force))
        if name == "desktop":
            raise ImageBuildFailed("the image build failed: apt-get exited 100", detail="E: no mirror")
        log(f"Image {recipes.RECIPES[name].tag} already exists")
        return recipes.RECIPES[name].tag

    monkeypatch.setattr(recipes, "build_image", build)
    unknown = cli("images", "build", "vscode")
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "error: unknown image recipe 'vscode'\n  the recipes are code-server, desktop\n",
    )
    assert calls == []
    built = cli("images", "build", "code-server", "--force")
    assert (built.exit_code, built.stderr) == (0, "Image dockyard/code-server:bookworm already exists\n")
    failed = cli("images", "build", "desktop")
    assert (failed.exit_code, failed.stderr) == (
        1,
        "error: the image build failed: apt-get exited 100\n  E: no mirror\n",
    )
    assert calls == [("code-server", True), ("desktop", False)]

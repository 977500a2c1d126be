"""Task status: `dockyard-agent report` inside a workspace (the real agent as a local process), the API for
orchestrators, the SDK's wait without polling, and bad reports refused with the reason."""

from __future__ import annotations

import threading
import time

import pytest

from dockyard_sdk import Client, ValidationError
from dockyard_sdk import models as m
from tests.harness import Harness
from tests.sdk.inprocess import in_process

pytestmark = pytest.mark.timeout(90)


def _client(h: Harness) -> Client:
    h.template(name="tmpl", startup_script="true")
    return in_process(h.client(h.admin.token), h.lifespan)


def _until(check: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_dockyard_agent_report_inside_the_workspace_sets_the_task(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl", name="task-ws") as ws:
        assert ws.task is None
        done = ws.exec(
            'dockyard-agent report done "Fixed the flaky test" --link pr=https://git.example/org/app/pull/7'
        )
        assert (done.exit_code, done.stderr) == (0, "")
        _until(lambda: ws.refresh().task is not None)
        task = ws.task
        assert task is not None
        assert (task.state, task.summary, task.source) == (m.TaskState.DONE, "Fixed the flaky test", "agent")
        assert [(link.name, link.url) for link in task.links] == [
            ("pr", "https://git.example/org/app/pull/7")
        ]

        bad = ws.exec("dockyard-agent report finished")
        assert bad.exit_code == 2
        assert "state must be one of working, idle, waiting_input, done, failed" in bad.stderr
        link = ws.exec("dockyard-agent report working --link pr=ftp://x")
        assert link.exit_code == 2
        assert "the URL must start with http:// or https://" in link.stderr
        usage = ws.exec("dockyard-agent report")
        assert usage.exit_code == 2
        assert "usage: dockyard-agent report STATE" in usage.stderr
        # The refused reports changed nothing.
        assert ws.refresh().task == task


def test_orchestrators_report_and_wait_without_polling(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl", name="waited") as ws:
        ws.report_task("working", "cloning")
        assert ws.task is not None
        assert (ws.task.state, ws.task.source) == (m.TaskState.WORKING, "api")

        def finish() -> None:
            time.sleep(0.5)
            ws.exec("dockyard-agent report done 'all green'")

        reporter = threading.Thread(target=finish)
        reporter.start()
        started = time.monotonic()
        final = client.get(ws.id).wait_for_task(timeout=30)
        # The report lands before the command's own reply: let that finish before the workspace goes.
        reporter.join(30)
        assert (final.state, final.summary) == (m.TaskState.DONE, "all green")
        assert time.monotonic() - started < 10
        listed = client.list(name="waited")
        assert listed[0].task is not None
        assert listed[0].task.state == m.TaskState.DONE
        audit = ah.admin.audit(action="workspace.task").audit_logs
        # Newest first; the report made inside the workspace (with its agent token) is audited as the agent's.
        assert [(row.resource_name, row.detail["state"], row.username) for row in audit] == [
            ("waited", "done", "agent"),
            ("waited", "working", "admin"),
        ]


def test_bad_reports_name_the_field(ah: Harness) -> None:
    client = _client(ah)
    with client.create("tmpl", name="bad-reports") as ws:
        response = client.http.post(f"/api/v2/workspaces/{ws.id}/task", json={"state": "finished"})
        assert response.status_code == 422
        assert [v["field"] for v in response.json()["validations"]] == ["state"]
        with pytest.raises(ValidationError) as info:
            client.report_task(
                ws.id,
                m.TaskReport.model_construct(state=m.TaskState.DONE, summary="x" * 3000, links=[]),
            )
        assert [v.field for v in info.value.validations] == ["summary"]
        with pytest.raises(ValueError, match="invalid task report"):
            ws.report_task("done", links={"pr": "not a url"})
        assert ws.refresh().task is None

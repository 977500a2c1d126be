"""What a failed build tells its user: one line, no traceback, no server path; the server log has the rest."""

from __future__ import annotations

import pytest
import structlog

from dockyard.provisioner.logs import public_reason
from dockyard.runtimes.base import LogSink, Observation, RuntimeFailure
from dockyard.runtimes.plan import WorkspacePlan
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.harness import Harness


def _crash(plan: WorkspacePlan, log: LogSink, **_: object) -> Observation:
    log("creating the container")
    # What a bug looks like: an exception that is no Dockyard error, naming a file on the server.
    open("/var/lib/dockyard-missing/agent/agent.py").close()
    raise AssertionError("unreachable")


def test_an_internal_error_shows_one_line_and_logs_the_traceback_server_side(h: Harness) -> None:
    assert isinstance(h.runtime, FakeRuntime)
    h.runtime.start = _crash  # type: ignore[method-assign]

    with structlog.testing.capture_logs() as captured:
        ws = h.workspace(name="crash")

    build = ws.latest_build
    assert (ws.status, build.status) == (m.WorkspaceStatus.FAILED, m.BuildStatus.FAILED)
    reason = (
        "internal error while starting the container (FileNotFoundError); "
        f"the server log has the details under build {build.id}"
    )
    assert build.error == reason
    lines = h.admin.build_logs(build.id)
    assert [(line.stage, line.output) for line in lines[-2:]] == [
        ("container", "creating the container"),
        ("error", reason),
    ]
    everything = "\n".join(line.output for line in lines)
    for leak in ("Traceback", 'File "', "dockyard-missing", "/src/dockyard", str(h.data_dir), ".py"):
        assert leak not in everything
    # The server log keeps what the user does not see (the traceback), under the build's id.
    assert [e for e in captured if e["event"] == "build crashed"] == [
        {
            "event": "build crashed",
            "build": build.id,
            "stage": "container",
            "exc_info": True,
            "log_level": "error",
        }
    ]


def test_a_runtime_error_keeps_its_reason_without_server_paths(h: Harness) -> None:
    assert isinstance(h.runtime, FakeRuntime)

    def fail(plan: WorkspacePlan, log: LogSink, **_: object) -> Observation:
        raise RuntimeFailure(
            "Docker engine error: error mounting /var/lib/dockyard/agent to rootfs at /run/dockyard",
            detail="see /var/log/dockyard/server.log\nsecond line",
        )

    h.runtime.start = fail  # type: ignore[method-assign]

    ws = h.workspace(name="mount")

    expected = "Docker engine error: error mounting …/agent to rootfs at …/dockyard (see …/server.log"
    assert ws.latest_build.error == expected
    assert h.admin.build_logs(ws.latest_build.id)[-1].output == expected


@pytest.mark.parametrize(
    ("text", "public"),
    [
        ("Image not found: dockyard/base:bookworm", "Image not found: dockyard/base:bookworm"),
        (
            "unreachable at unix:///var/run/docker.sock: refused",
            "unreachable at unix://…/docker.sock: refused",
        ),
        ("failed at /srv/x/\nTraceback (most recent call last):", "failed at …"),
        ("x" * 600, "x" * 499 + "…"),
    ],
)
def test_public_reason(text: str, public: str) -> None:
    assert public_reason(text) == public

"""An engine that does not answer: every call raises RuntimeUnavailable naming the engine. Needs no engine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dockyard.runtimes.base import RuntimeUnavailable
from dockyard.runtimes.docker import DockerRuntime
from tests.plans import workspace_plan


@pytest.fixture
def silent_socket(tmp_path: Path) -> str:
    """A unix socket file nobody listens on: connections are refused."""
    path = tmp_path / "docker.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    return f"unix://{path}"


def test_a_missing_socket_from_docker_host_is_runtime_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/nonexistent.sock")
    runtime = DockerRuntime()

    with pytest.raises(RuntimeUnavailable) as failure:
        runtime.ping()

    assert failure.value.message == (
        "Docker engine unreachable at unix:///tmp/nonexistent.sock: No such file or directory"
    )
    assert failure.value.status_code == 503


def test_every_call_is_runtime_unavailable_when_nothing_listens(silent_socket: str) -> None:
    runtime = DockerRuntime(silent_socket, deployment="d1")
    spec = workspace_plan(
        workspace_id="w1", name="w", owner="o", owner_id="1", template="t", build_id="b", image="i"
    )
    calls = {
        "ping": runtime.ping,
        "capacity": runtime.capacity,
        "start": lambda: runtime.start(spec, lambda line: None),
        "stop": lambda: runtime.stop("w1", lambda line: None),
        "delete": lambda: runtime.delete("w1", lambda line: None),
        "observe": lambda: runtime.observe("w1"),
        "observe_all": runtime.observe_all,
        "managed_resources": runtime.managed_resources,
    }
    messages = {}
    for name, call in calls.items():
        with pytest.raises(RuntimeUnavailable) as failure:
            call()
        messages[name] = failure.value.message

    expected = f"Docker engine unreachable at {silent_socket}: Connection refused"
    assert messages == dict.fromkeys(calls, expected)

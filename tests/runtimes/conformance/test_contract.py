"""The runtime contract, checked the same way against every registered runtime (subjects.py).

Create with a plan, running, the agent reaching its link, stop keeping the home, start again, delete leaving
nothing labelled; limits as planned; and capabilities that are honest: what a runtime says it can do, it does,
and what it says it cannot, it refuses before making anything.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.runtimes.base import ContainerState, RuntimeFailure
from dockyard.runtimes.plan import AgentLink, AgentPlan, Capabilities, Egress, LinkKind
from tests.runtimes.conformance.subjects import SUBJECTS, Subject, hub_socket

# Docker-backed subjects need the engine; the marker lets `-m "not docker"` runs leave them out.
_MARKS = {"docker": [pytest.mark.docker], "kubernetes": [pytest.mark.kubernetes]}


@pytest.fixture(params=[pytest.param(name, marks=_MARKS.get(name, [])) for name in SUBJECTS])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    with SUBJECTS[request.param](request, tmp_path) as made:
        yield made


def _hello(listener: socket.socket) -> dict[str, object]:
    """The first frame an agent sends on its link."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(30)
        head = conn.recv(5, socket.MSG_WAITALL)
        _, size = struct.unpack(">BI", head)
        message: dict[str, object] = json.loads(conn.recv(size, socket.MSG_WAITALL))
    return message


def _log() -> list[str]:
    return []


def test_the_lifecycle_of_a_plan(subject: Subject) -> None:
    runtime = subject.runtime
    plan = subject.plan(agent=AgentPlan(link=AgentLink(kind=LinkKind.UNIX_SOCKET)))
    workspace_id = plan.workspace_id
    listener = hub_socket(subject.links, workspace_id, uid=plan.home.uid)
    log = _log()

    observation = runtime.start(plan, log.append)

    assert (observation.workspace_id, observation.state) == (workspace_id, ContainerState.RUNNING)
    assert runtime.observe(workspace_id).state is ContainerState.RUNNING
    assert runtime.observe_all()[workspace_id].state is ContainerState.RUNNING
    hello = _hello(listener)
    assert (hello["type"], hello["token"]) == ("hello", f"dya_{workspace_id}_test")
    # The home is the user's and outlives a stop.
    subject.run(workspace_id, ["sh", "-c", 'echo kept > "$HOME/kept.txt"'])

    runtime.stop(workspace_id, log.append)
    # An agent that ends cleanly on SIGTERM may read as EXITED (code 0) where the engine cannot tell who
    # stopped it (runtimes/docker/states.py); either way it is down and still there.
    assert runtime.observe(workspace_id).state in (ContainerState.STOPPED, ContainerState.EXITED)
    assert subject.labelled(workspace_id) != []

    assert runtime.start(plan, log.append).state is ContainerState.RUNNING
    assert _hello(listener)["type"] == "hello"
    assert subject.run(workspace_id, ["sh", "-c", 'cat "$HOME/kept.txt"']) == "kept\n"

    runtime.delete(workspace_id, log.append)
    runtime.delete(workspace_id, log.append)
    runtime.stop(workspace_id, log.append)
    assert runtime.observe(workspace_id).state is ContainerState.MISSING
    assert workspace_id not in runtime.observe_all()
    assert [r for r in runtime.managed_resources() if r.workspace_id == workspace_id] == []
    assert subject.labelled(workspace_id) == []
    listener.close()


def test_a_changed_plan_replaces_the_workspace_and_keeps_the_home(subject: Subject) -> None:
    plan = subject.plan(command=["sleep", "infinity"])
    subject.runtime.start(plan, _log().append)
    subject.run(plan.workspace_id, ["sh", "-c", 'echo kept > "$HOME/kept.txt"'])
    subject.runtime.stop(plan.workspace_id, _log().append)

    changed = plan.model_copy(update={"env": {"NEW": "1"}, "build_id": "build-2"})
    assert subject.runtime.start(changed, _log().append).state is ContainerState.RUNNING

    assert subject.run(plan.workspace_id, ["sh", "-c", 'cat "$HOME/kept.txt"']) == "kept\n"


def test_limits_are_what_the_plan_says(subject: Subject) -> None:
    plan = subject.plan(command=["sleep", "infinity"], cpu=0.5, memory_bytes=192 * 2**20, pids=200)

    subject.runtime.start(plan, _log().append)

    applied = subject.limits(plan.workspace_id)
    assert (applied.cpu, applied.memory_bytes) == (0.5, 192 * 2**20)
    if "pids" not in subject.gaps:
        assert applied.pids == 200


def test_capabilities_are_honest(subject: Subject) -> None:
    capabilities = subject.runtime.capabilities()
    assert isinstance(capabilities, Capabilities)
    assert LinkKind.UNIX_SOCKET in capabilities.agent_links  # bound by the subject
    for egress in Egress:
        plan = subject.plan(command=["sleep", "infinity"], egress=egress)
        if egress not in capabilities.egress:
            with pytest.raises(RuntimeFailure, match="cannot enforce egress"):
                subject.runtime.start(plan, _log().append)
            assert subject.labelled(plan.workspace_id) == []
            continue
        subject.runtime.start(plan, _log().append)
        assert subject.routes_out(plan.workspace_id) is (egress == Egress.ALL), egress
        subject.runtime.delete(plan.workspace_id, _log().append)
    if not capabilities.gpu:
        plan = subject.plan(command=["sleep", "infinity"], gpu=1)
        with pytest.raises(RuntimeFailure, match="GPU"):
            subject.runtime.start(plan, _log().append)
        assert subject.labelled(plan.workspace_id) == []


def test_an_agent_link_the_runtime_cannot_give_is_refused(subject: Subject) -> None:
    capabilities = subject.runtime.capabilities()
    missing = [kind for kind in LinkKind if kind not in capabilities.agent_links]
    if not missing:
        pytest.skip("this runtime gives every kind of agent link")
    plan = subject.plan(agent=AgentPlan(link=AgentLink(kind=missing[0], url="https://dockyard.invalid")))

    with pytest.raises(RuntimeFailure, match=f"cannot give an agent a {missing[0].value} link"):
        subject.runtime.start(plan, _log().append)
    assert subject.labelled(plan.workspace_id) == []


def test_networks_made_ahead_are_found_by_the_start(subject: Subject) -> None:
    if not subject.runtime.capabilities().prepared_networks:
        pytest.skip("this runtime makes no networks ahead of workspaces")
    plan = subject.plan(command=["sleep", "infinity"], egress=Egress.NONE)

    subject.runtime.prepare_network(plan.workspace_id, "internal", _log().append)
    assert [r.kind for r in subject.runtime.managed_resources() if r.workspace_id == plan.workspace_id] == [
        "network"
    ]
    assert subject.runtime.start(plan, _log().append).state is ContainerState.RUNNING
    assert subject.routes_out(plan.workspace_id) is False

    subject.runtime.delete(plan.workspace_id, _log().append)
    assert subject.labelled(plan.workspace_id) == []

"""A dev container template with a warm pool on the real engine: the pool member runs onCreate and
updateContent (they prepare the content), the claim runs postCreate and postStart for the owner, in the same
container, each hook once."""

from __future__ import annotations

import json
import time

import docker
import pytest
from sqlalchemy import select

from dockyard.runtimes.docker.naming import container_name
from dockyard.store.models import DevcontainerStep, Workspace
from dockyard.warmpool.prebuild_pool import PrebuildPool
from dockyard_sdk import models as m
from tests.harness import Harness, tar_gz

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

CONFIG = {
    "image": "dockyard/base:bookworm",
    "onCreateCommand": "echo oncreate >> /tmp/hooks.log",
    "updateContentCommand": ["sh", "-c", "echo updatecontent >> /tmp/hooks.log"],
    "postCreateCommand": 'echo "postcreate $DOCKYARD_WORKSPACE_OWNER" >> /tmp/hooks.log',
    "postStartCommand": "echo poststart >> /tmp/hooks.log",
}
FILES = {
    "dockyard.yaml": "name: dcpool\ndevcontainer: .devcontainer/devcontainer.json\n"
    "prebuilds:\n  - {parameters: {}, instances: 1}\n",
    ".devcontainer/devcontainer.json": json.dumps(CONFIG),
}


def _member(h: Harness, timeout: float = 120) -> str:
    pool = h.app.state.background.prebuild_pool
    assert isinstance(pool, PrebuildPool)
    deadline = time.monotonic() + timeout
    while True:
        pool.fill()
        [preset] = h.admin.prebuilds("dcpool").presets
        if preset.ready == 1:
            with h.app.state.sessions() as db:
                return db.scalars(select(Workspace.id).where(Workspace.prebuild_preset.is_not(None))).one()
        assert time.monotonic() < deadline, preset
        time.sleep(0.3)


def _hooks_log(client: docker.DockerClient, workspace_id: str) -> list[str]:
    result = client.containers.get(container_name(workspace_id)).exec_run(["cat", "/tmp/hooks.log"])
    return result.output.decode().split()


def _steps(h: Harness, workspace_id: str) -> list[str]:
    with h.app.state.sessions() as db:
        rows = db.scalars(
            select(DevcontainerStep.hook)
            .where(DevcontainerStep.workspace_id == workspace_id, DevcontainerStep.status == "succeeded")
            .order_by(DevcontainerStep.id)
        )
        return list(rows)


def test_the_pool_prepares_the_content_and_the_claim_runs_the_owners_hooks(
    dh: Harness, docker_client: docker.DockerClient
) -> None:
    h = dh
    h.admin.create_template(tar_gz(FILES))
    member = _member(h)
    container = docker_client.containers.get(container_name(member)).id
    assert _hooks_log(docker_client, member) == ["oncreate", "updatecontent"]
    assert _steps(h, member) == ["onCreateCommand", "updateContentCommand"]

    alice = h.user("alice")
    claimed = alice.create_workspace(m.CreateWorkspaceRequest(template="dcpool", name="mine"))
    assert claimed.id == member
    assert claimed.latest_build.reason == m.BuildReason.CLAIM
    ready = alice.get_workspace(claimed.id, wait="ready", timeout=60)
    assert ready.agent is not None
    assert ready.agent.lifecycle == m.AgentLifecycle.READY

    # postStart runs after readiness (waitFor is updateContentCommand by default): wait for its line.
    deadline = time.monotonic() + 60
    while "poststart" not in _hooks_log(docker_client, member):
        assert time.monotonic() < deadline, _hooks_log(docker_client, member)
        time.sleep(0.3)
    # The same container; the create hooks ran once, in the pool; the owner's ran after the claim, as them.
    assert docker_client.containers.get(container_name(member)).id == container
    assert _hooks_log(docker_client, member) == [
        "oncreate",
        "updatecontent",
        "postcreate",
        "alice",
        "poststart",
    ]
    assert _steps(h, member) == [
        "onCreateCommand",
        "updateContentCommand",
        "postCreateCommand",
        "postStartCommand",
    ]

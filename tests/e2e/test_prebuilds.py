"""Warm workspace pools on the real Docker engine: fill, claim (same container, agent untouched, the owner's env),
a cold miss, refill, replacement on a new version, quotas, and concurrent claims."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest

from dockyard.runtimes.docker.naming import container_name
from dockyard.warmpool.prebuild_pool import PrebuildPool
from dockyard_sdk import ApiError, Client
from dockyard_sdk import models as m
from tests.harness import Harness, tar_gz

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

MANIFEST = """
name: pooled
image: dockyard/base:bookworm
resources: {cpu: 1, memory: 512Mi}
parameters:
  - {name: size, type: string, default: small}
env:
  GREETING: "hello {{ owner.username }}"
startup_script: |
  echo "{{ workspace.name }} %s" >> /tmp/started
prebuilds:
  - {parameters: {size: small}, instances: 2}
"""


def _await_pool(h: Harness, *, version: int, ready: int, timeout: float = 90) -> m.PrebuildList:
    pool = h.app.state.background.prebuild_pool
    assert isinstance(pool, PrebuildPool)
    deadline = time.monotonic() + timeout
    while True:
        pool.fill()
        listed = h.admin.prebuilds("pooled")
        [preset] = listed.presets
        if preset.version == version and preset.ready == ready and listed.outdated == 0:
            return listed
        assert time.monotonic() < deadline, listed
        time.sleep(0.3)


def _member_ids(h: Harness) -> set[str]:
    from sqlalchemy import select

    from dockyard.store.models import Workspace

    with h.app.state.sessions() as db:
        return set(
            db.scalars(
                select(Workspace.id).where(
                    Workspace.prebuild_preset.is_not(None), Workspace.deleted.is_(False)
                )
            )
        )


def _create(client: Client, name: str, **parameters: str) -> m.Workspace:
    return client.create_workspace(
        m.CreateWorkspaceRequest(template="pooled", name=name, parameters=parameters)
    )


def test_a_pool_fills_is_claimed_refills_and_follows_the_active_version(
    dh: Harness, docker_client: docker.DockerClient
) -> None:
    h = dh
    h.admin.create_template(tar_gz({"dockyard.yaml": MANIFEST % "v1"}))
    listed = _await_pool(h, version=1, ready=2)
    assert listed.presets[0].parameters == {"size": "small"}
    assert listed.presets[0].images == ["dockyard/base:bookworm"]
    members = _member_ids(h)
    assert len(members) == 2
    containers = {i: docker_client.containers.get(container_name(i)).id for i in members}
    # Pool members are nobody's workspaces yet.
    assert h.admin.list_workspaces().count == 0

    alice = h.user("alice")
    h.admin.set_user_quota("alice", m.QuotaLimits(max_workspaces=2))
    before = {i: h.admin.get_workspace(i).agent for i in members}

    # Two creates at once claim two different members, each at once ready.
    with ThreadPoolExecutor(2) as pool:
        claimed = list(pool.map(lambda name: _create(alice, name), ["a1", "a2"]))
    assert {ws.id for ws in claimed} == members
    for ws in claimed:
        assert ws.owner_name == "alice"
        assert ws.status == m.WorkspaceStatus.RUNNING
        assert ws.agent is not None
        assert ws.agent.lifecycle == m.AgentLifecycle.READY
        assert ws.latest_build.reason == m.BuildReason.CLAIM
        assert set(ws.latest_build.timings) >= {"claim", "ready"}
        # Same container, and the agent kept its connection (no re-dial, no second startup).
        assert docker_client.containers.get(container_name(ws.id)).id == containers[ws.id]
        agent = before[ws.id]
        assert agent is not None
        assert ws.agent.first_connected_at == agent.first_connected_at
        assert ws.agent.last_connected_at == agent.last_connected_at
    a1 = next(ws for ws in claimed if ws.name == "a1")

    # A session opened right after the claim survives what follows (the pool refilling included).
    survived: list[m.ExecResult] = []
    session = threading.Thread(
        target=lambda: survived.append(
            alice.exec(a1.id, m.ExecRequest(command="sleep 2; echo survived", timeout=30))
        )
    )
    session.start()
    result = alice.exec(
        a1.id,
        m.ExecRequest(
            command='echo "$DOCKYARD_WORKSPACE_OWNER $DOCKYARD_WORKSPACE_NAME $GREETING"; wc -l < /tmp/started'
        ),
    )
    assert result.stdout.split("\n")[:2] == ["alice a1 hello alice", "1"], result

    # Members never counted against alice's quota; the two she claimed do.
    with pytest.raises(ApiError) as refused:
        _create(alice, "a3")
    assert refused.value.status_code == 429
    assert [v.field for v in refused.value.validations] == ["max_workspaces"]
    assert {ws.name for ws in alice.list_workspaces().workspaces} == {"a1", "a2"}

    # Other values than the preset's: a cold start, not a claim.
    cold = h.admin.get_workspace(_create(h.admin, "big", size="large").id, wait="ready", timeout=60)
    assert cold.id not in members
    assert cold.latest_build.reason == m.BuildReason.INITIATOR
    assert "ready" in h.admin.get_workspace(cold.id).latest_build.timings

    session.join(30)
    assert [r.stdout for r in survived] == ["survived\n"]

    # The claims woke the pool, which makes two new members.
    _await_pool(h, version=1, ready=2)
    refilled = _member_ids(h)
    assert refilled.isdisjoint(members)

    # A new active version replaces the members; claimed workspaces stay as they are.
    h.admin.create_template_version("pooled", tar_gz({"dockyard.yaml": MANIFEST % "v2"}))
    listed = _await_pool(h, version=2, ready=2)
    assert _member_ids(h).isdisjoint(refilled)
    assert h.admin.get_workspace(a1.id).status == m.WorkspaceStatus.RUNNING

    # A claim is held to the claimant's quota too, and a refused one leaves the member in the pool.
    with pytest.raises(ApiError) as refused:
        _create(alice, "a4")
    assert refused.value.status_code == 429
    assert [v.field for v in refused.value.validations] == ["max_workspaces"]
    assert h.admin.prebuilds("pooled").presets[0].ready == 2

    metrics = h.http().get("/metrics").text
    assert 'dockyard_prebuild_claims_total{template="pooled"} 2.0' in metrics
    assert 'dockyard_workspace_ready_seconds_count{path="pool_claim",template="pooled"} 2.0' in metrics
    assert 'dockyard_workspace_ready_seconds_count{path="cold",template="pooled"} 1.0' in metrics
    assert 'dockyard_prebuild_pool_size{preset="' in metrics

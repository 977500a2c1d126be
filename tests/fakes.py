"""A runtime that keeps workspaces in memory, for tests that are about Dockyard rather than Docker.

It implements the same interface as the Docker runtime (as httpx's MockTransport does for transports), and
lets a test fail or slow down any step. With `agents=True` a "started workspace" is the real agent running
as a local process (its home a temporary folder), so the exec, files and terminal paths can be tested
end to end without Docker; the Docker tests cover the same paths in containers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.runtimes.base import (
    ContainerState,
    HostCapacity,
    HostIsolation,
    ImageNotFound,
    ImageSpec,
    LogSink,
    ManagedResource,
    Observation,
    RuntimeFailure,
    RuntimeUnavailable,
)
from dockyard.runtimes.plan import LINK_MOUNT, Capabilities, Egress, LinkKind, WorkspacePlan


@dataclass
class FakeRuntime:
    name: str = "fake"
    images: set[str] = field(default_factory=lambda: {"dockyard/base:bookworm"})
    containers: dict[str, ContainerState] = field(default_factory=dict)
    plans: dict[str, WorkspacePlan] = field(default_factory=dict)
    volumes: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    network_classes: dict[str, str] = field(default_factory=dict)
    down: bool = False
    delay: float = 0.0
    fail_start: str | None = None
    cpus: float = 8
    memory_bytes: int = 32 * 2**30
    calls: list[str] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    agents: bool = False
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    homes: dict[str, str] = field(default_factory=dict)
    deployment: str | None = None
    # Networks whose host rules a test removed (as a firewall reload would).
    unisolated: set[str] = field(default_factory=set)
    # (program folder, links root) once bound: what a `unix_socket` agent link needs.
    agent_folders: tuple[Path, Path] | None = None
    gpu: bool = False
    # The environment each workspace's agent process was given.
    agent_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # What agent_addresses answers per workspace; None: the fake cannot tell (token-only network agents).
    addresses: dict[str, frozenset[str]] | None = None

    def bind_deployment(self, deployment: str) -> None:
        self.deployment = deployment

    def bind_agent(self, program_dir: Path, links_dir: Path) -> None:
        self.agent_folders = (program_dir, links_dir)

    def bind_egress(self, proxy: Any) -> None:
        self.egress_proxy = proxy

    def capabilities(self) -> Capabilities:
        return Capabilities(
            agent_links=frozenset({LinkKind.UNIX_SOCKET, LinkKind.NETWORK})
            if self.agent_folders
            else frozenset(),
            egress=frozenset({Egress.NONE, Egress.ALL}),
            gpu=self.gpu,
            resume_keeps_root=True,
            host_isolation=True,
            prepared_networks=True,
        )

    def host_isolation(self) -> HostIsolation:
        self._enter("host_isolation", gated=False)
        missing = sorted(f"dockyard-ws-{w}" for w in self.unisolated & self.networks)
        return HostIsolation(True, missing=tuple(missing))

    def repair_host_isolation(self) -> HostIsolation:
        report = self.host_isolation()
        self.unisolated.clear()
        return report

    def __post_init__(self) -> None:
        self.gate.set()

    def _enter(self, call: str, *, gated: bool = True) -> None:
        self.calls.append(call)
        if self.down:
            raise RuntimeUnavailable("Fake engine unreachable at fake://: connection refused")
        if gated:
            # Tests hold builds mid-flight by clearing the gate.
            self.gate.wait(30)
            if self.delay:
                time.sleep(self.delay)

    def ping(self) -> None:
        self._enter("ping", gated=False)

    def capacity(self) -> HostCapacity:
        self._enter("capacity", gated=False)
        return HostCapacity(self.cpus, self.memory_bytes)

    def ensure_image(self, spec: ImageSpec, log: LogSink) -> str:
        self._enter("ensure_image")
        if spec.dockerfile:
            log("Step 1/1 : FROM dockyard/base:bookworm")
            return f"dockyard/template-{spec.template}:{spec.content_hash[:16]}"
        assert spec.image is not None
        if spec.image not in self.images:
            raise ImageNotFound(f"image {spec.image} is not available locally and could not be pulled")
        return spec.image

    def start(
        self, plan: WorkspacePlan, log: LogSink, *, started: threading.Event | None = None
    ) -> Observation:
        self._enter("start")
        if self.fail_start:
            log(self.fail_start)
            raise RuntimeUnavailable(self.fail_start)
        refusal = self.capabilities().refusal(plan)
        if refusal:
            raise RuntimeFailure(refusal)
        self.networks.add(plan.workspace_id)
        self.volumes.add(plan.workspace_id)
        self.containers[plan.workspace_id] = ContainerState.RUNNING
        self.plans[plan.workspace_id] = plan
        if self.agents and plan.command is not None:
            self._run_command(plan)
        elif self.agents and plan.agent is not None:
            self._run_agent(plan)
        log(f"started container dockyard-ws-{plan.workspace_id}")
        return Observation(plan.workspace_id, ContainerState.RUNNING, address="10.0.0.2")

    def _run_agent(self, plan: WorkspacePlan) -> None:
        assert self.agent_folders is not None, "bind_agent() first"
        self._end_agent(plan.workspace_id)
        program, links = self.agent_folders
        link = links / plan.workspace_id
        home = self._home(plan.workspace_id)
        # The host's paths where a container would see LINK_MOUNT and the agent's folder.
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "LANG")},
            **plan.env,
            "HOME": home,
            # The agent's task socket folder goes with the home, even after a kill.
            "TMPDIR": home,
            "DOCKYARD_AGENT_TOKEN_FILE": str(link / "token"),
        }
        assert plan.agent is not None
        if plan.agent.link.kind == LinkKind.NETWORK:
            assert plan.agent.link.url
            env["DOCKYARD_URL"] = plan.agent.link.url
        else:
            env["DOCKYARD_AGENT_SOCKET"] = str(link / "hub.sock")
        self.agent_env[plan.workspace_id] = env
        assert plan.workload()[-1].startswith(str(Path(LINK_MOUNT).parent))
        script = str(program / Path(plan.workload()[-1]).name)
        self.processes[plan.workspace_id] = subprocess.Popen([sys.executable, script], env=env, cwd=home)

    def _run_command(self, plan: WorkspacePlan) -> None:
        self._end_agent(plan.workspace_id)
        home = self._home(plan.workspace_id)
        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}, **plan.env, "HOME": home}
        self.processes[plan.workspace_id] = subprocess.Popen(list(plan.workload()), env=env, cwd=home)

    def _home(self, workspace_id: str) -> str:
        # Not setdefault: its default is made (a folder) even when the workspace has its home.
        if workspace_id not in self.homes:
            self.homes[workspace_id] = tempfile.mkdtemp(prefix="dy-home-")
        return self.homes[workspace_id]

    def _end_agent(self, workspace_id: str) -> None:
        process = self.processes.pop(workspace_id, None)
        if process is not None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for workspace_id in list(self.processes):
            self._end_agent(workspace_id)
        for home in self.homes.values():
            shutil.rmtree(home, ignore_errors=True)

    def stop(self, workspace_id: str, log: LogSink) -> None:
        self._enter("stop")
        self._end_agent(workspace_id)
        if workspace_id in self.containers:
            self.containers[workspace_id] = ContainerState.STOPPED

    def delete(self, workspace_id: str, log: LogSink) -> None:
        self._enter("delete")
        self._end_agent(workspace_id)
        shutil.rmtree(self.homes.pop(workspace_id, ""), ignore_errors=True)
        self.containers.pop(workspace_id, None)
        self.volumes.discard(workspace_id)
        self.networks.discard(workspace_id)
        self.network_classes.pop(workspace_id, None)

    def prepare_network(self, workspace_id: str, network_class: str, log: LogSink) -> None:
        self._enter("prepare_network", gated=False)
        self.networks.add(workspace_id)
        self.network_classes[workspace_id] = network_class

    def observe(self, workspace_id: str) -> Observation:
        return Observation(workspace_id, self.containers.get(workspace_id, ContainerState.MISSING))

    def agent_addresses(self, workspace_id: str) -> frozenset[str] | None:
        # Agents of the fake run on the host; a test sets addresses to make it tell (and check) where from.
        return self.addresses.get(workspace_id) if self.addresses is not None else None

    def observe_all(self) -> dict[str, Observation]:
        if self.down:
            raise RuntimeUnavailable("Fake engine unreachable at fake://: connection refused")
        return {w: Observation(w, s) for w, s in self.containers.items()}

    def managed_resources(self) -> list[ManagedResource]:
        return (
            [ManagedResource("container", f"dockyard-ws-{w}", w) for w in self.containers]
            + [ManagedResource("volume", f"dockyard-home-{w}", w) for w in self.volumes]
            + [ManagedResource("network", f"dockyard-ws-{w}", w) for w in self.networks]
        )

    def remove_resource(self, resource: ManagedResource) -> None:
        if resource.kind == "container":
            self.containers.pop(resource.workspace_id, None)
        elif resource.kind == "volume":
            self.volumes.discard(resource.workspace_id)
        else:
            self.networks.discard(resource.workspace_id)

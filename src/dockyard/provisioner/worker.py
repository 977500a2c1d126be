"""Provisioner workers: claim a queued build, turn it into runtime calls, record logs, timings and outcome."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.errors import DockyardError
from dockyard.provisioner import events, logs, queue
from dockyard.provisioner.workspaces import render_for
from dockyard.runtimes.base import BindMount, Canceled, ImageSpec, Observation, Runtime, WorkspaceSpec
from dockyard.store.models import TemplateArchive, TemplateVersion, User, Workspace, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.templates import service as templates
from dockyard.tunnel import links as agent_links
from dockyard.tunnel import state as agent_state
from dockyard.tunnel import tokens as tunnel_tokens
from dockyard.tunnel.install import agent_command
from dockyard.tunnel.links import AgentLinks
from dockyard_sdk.models import BuildStatus, Transition
from dockyard_sdk.units import parse_size

log = logging.get(__name__)

HEARTBEAT_INTERVAL = 5.0
# How a build's stage reads in "internal error while …".
_DOING = {
    "queue": "preparing the build",
    "render": "rendering the template",
    "image": "preparing the image",
    "container": "starting the container",
    "stop": "stopping the workspace",
    "delete": "deleting the workspace",
}
# Where the agent's folder appears inside every workspace (docs/AGENT_PROTOCOL.md).
AGENT_MOUNT = "/run/dockyard"


class BuildContext:
    """What a running build can do: log a line, check for cancellation, time a phase."""

    def __init__(self, sessions: sessionmaker[Session], build_id: str) -> None:
        self.sessions = sessions
        self.build_id = build_id
        self.stage = "queue"
        self.timings: dict[str, float] = {}
        self._checked = time.monotonic()

    def log(self, line: str) -> None:
        logs.append(self.sessions, self.build_id, self.stage, line)
        # Runtime calls cannot be interrupted, but they log as they go: a cancel takes effect at the next
        # line (checked at most once a second), which stops long image builds and pulls.
        if time.monotonic() - self._checked > 1.0:
            self._checked = time.monotonic()
            self.checkpoint()

    def checkpoint(self) -> None:
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, self.build_id)
            if build is not None and build.cancel_requested:
                raise Canceled("The build was canceled.")

    def phase(self, name: str, work: Callable[[], object]) -> object:
        self.checkpoint()
        self.stage = name
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.timings[name] = round(time.perf_counter() - started, 4)


class Worker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtime: Runtime,
        *,
        name: str | None = None,
        agent_dir: Path | None = None,
        links: AgentLinks | None = None,
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        # None only where no agent can run (unit tests with a fake runtime): the workspace then just sleeps.
        self.agent_dir = agent_dir
        self.links = links
        self.name = name or f"{socket.gethostname()}:{threading.get_ident()}"
        self._current: str | None = None

    # --- loop ------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, poll_interval: float = 1.0) -> None:
        seen = 0
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(stop,), daemon=True, name=f"{self.name}-hb"
        )
        heartbeat.start()
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:
                log.exception("provisioner loop failed", worker=self.name)
                worked = False
            if not worked:
                seen = queue.wakeup.wait(poll_interval, seen)

    def run_once(self) -> bool:
        with self.sessions() as db:
            build = queue.claim(db, self.name)
            if build is None:
                return False
            build_id = build.id
        self._current = build_id
        try:
            self.execute(build_id)
        finally:
            self._current = None
        return True

    def _heartbeat(self, stop: threading.Event) -> None:
        # A heartbeat lets the reconciler tell a slow build from one whose worker died.
        while not stop.wait(HEARTBEAT_INTERVAL):
            current = self._current
            if current is None:
                continue
            try:
                with self.sessions() as db:
                    db.execute(
                        update(WorkspaceBuild)
                        .where(WorkspaceBuild.id == current)
                        .values(heartbeat_at=utcnow())
                    )
                    db.commit()
            except Exception:
                log.exception("heartbeat failed", build=current)

    # --- one build -------------------------------------------------------------------------------------------

    def execute(self, build_id: str) -> None:
        ctx = BuildContext(self.sessions, build_id)
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, build_id)
            assert build is not None
            assert build.started_at is not None
            ctx.timings["queue"] = round((build.started_at - build.created_at).total_seconds(), 4)
            transition = Transition(build.transition)
        status, error = BuildStatus.SUCCEEDED, ""
        try:
            if transition == Transition.START:
                self._start(ctx)
            elif transition == Transition.STOP:
                ctx.phase("stop", lambda: self.runtime.stop(self._workspace_id(build_id), ctx.log))
            else:
                ctx.phase("delete", lambda: self._delete(self._workspace_id(build_id), ctx))
        except Canceled as exc:
            status, error = BuildStatus.CANCELED, logs.public_reason(exc.message)
        except DockyardError as exc:
            full = exc.message + (f" ({exc.detail})" if exc.detail else "")
            log.warning("build failed", build=build_id, stage=ctx.stage, error=full)
            status, error = BuildStatus.FAILED, logs.public_reason(full)
        except Exception as exc:
            # A bug, not the user's doing: the traceback (with server paths) goes to the server log under the
            # build id; the user gets one line that says where it stopped and where to look.
            log.exception("build crashed", build=build_id, stage=ctx.stage)
            status, error = (
                BuildStatus.FAILED,
                f"internal error while {_DOING.get(ctx.stage, ctx.stage)} ({exc.__class__.__name__}); "
                f"the server log has the details under build {build_id}",
            )
        if error:
            ctx.stage = "error" if status == BuildStatus.FAILED else "cancel"
            ctx.log(error)
        self._finish(build_id, transition, status, error, ctx.timings)

    def _workspace_id(self, build_id: str) -> str:
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, build_id)
            assert build is not None
            return build.workspace_id

    def _delete(self, workspace_id: str, ctx: BuildContext) -> None:
        self.runtime.delete(workspace_id, ctx.log)
        # Only once the container is gone: its agent has no further use for the link.
        if self.links is not None:
            self.links.remove(workspace_id)

    def _start(self, ctx: BuildContext) -> None:
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, ctx.build_id)
            assert build is not None
            workspace = db.get(Workspace, build.workspace_id)
            version = db.get(TemplateVersion, build.template_version_id)
            assert workspace is not None
            assert version is not None
            owner = db.get(User, workspace.owner_id)
            assert owner is not None
            manifest = templates.version_to_wire(version).manifest
            ctx.stage = "render"
            rendered = render_for(manifest, build.parameters, workspace=workspace, owner=owner)
            archive = b""
            if rendered.build is not None:
                stored = db.get(TemplateArchive, version.content_hash)
                archive = stored.data if stored is not None else b""
            image_spec = ImageSpec(
                template=workspace.template.name,
                content_hash=version.content_hash,
                image=rendered.image,
                dockerfile=rendered.build.dockerfile if rendered.build else None,
                context=rendered.build.context if rendered.build else ".",
                build_args=rendered.build.args if rendered.build else {},
                archive=archive,
            )
            agent_token = tunnel_tokens.issue(tunnel_tokens.load_key(db), workspace.id)
            agent_state.reset(db, workspace.id, build.id)
            names = (
                workspace.id,
                workspace.name,
                owner.username,
                owner.id,
                workspace.template.name,
                build.id,
            )
        image = ctx.phase("image", lambda: self.runtime.ensure_image(image_spec, ctx.log))
        assert isinstance(image, str)
        env = {
            **rendered.env,
            "DOCKYARD_WORKSPACE_NAME": names[1],
            "DOCKYARD_WORKSPACE_OWNER": names[2],
        }
        agent: dict[str, Any] = {}
        if self.agent_dir is not None and self.links is not None:
            # The token travels in a file of the workspace's private link, never in the container's
            # environment, which `docker inspect` shows to anyone with access to the engine.
            env["DOCKYARD_AGENT_SOCKET"] = f"{agent_links.MOUNT}/{agent_links.SOCKET_NAME}"
            env["DOCKYARD_AGENT_TOKEN_FILE"] = f"{agent_links.MOUNT}/{agent_links.TOKEN_NAME}"
            agent = {
                "command": agent_command(f"{AGENT_MOUNT}/agent.py"),
                "mounts": (
                    BindMount(str(self.agent_dir), AGENT_MOUNT),
                    BindMount(str(self.links.folder(names[0])), agent_links.MOUNT),
                ),
            }
        spec = WorkspaceSpec(
            workspace_id=names[0],
            name=names[1],
            owner=names[2],
            owner_id=names[3],
            template=names[4],
            build_id=names[5],
            image=image,
            user=rendered.user,
            cpu=float(rendered.resources.cpu),
            memory_bytes=parse_size(rendered.resources.memory),
            pids=rendered.resources.pids,
            disk_bytes=parse_size(rendered.resources.disk) if rendered.resources.disk is not None else None,
            gpu=int(rendered.resources.gpu),
            sudo=rendered.sudo,
            egress=rendered.network.egress.value,
            egress_allow=tuple(rendered.network.allow),
            kubernetes_pod=dict(rendered.kubernetes.pod) if rendered.kubernetes is not None else {},
            env=env,
            **agent,
        )
        if self.links is not None and agent:
            self.links.prepare(spec.workspace_id, token=agent_token, uid=spec.uid)
        observation = ctx.phase("container", lambda: self.runtime.start(spec, ctx.log))
        assert isinstance(observation, Observation)
        ctx.timings.update({f"container.{step}": seconds for step, seconds in observation.timings.items()})
        ctx.stage = "container"
        where = f" at {observation.address}" if observation.address else ""
        ctx.log(f"workspace {names[1]} is running{where}")

    def _finish(
        self,
        build_id: str,
        transition: Transition,
        status: BuildStatus,
        error: str,
        timings: dict[str, float],
    ) -> None:
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, build_id)
            assert build is not None
            now = utcnow()
            build.status = status
            build.error = error
            build.completed_at = now
            if build.started_at is not None:
                timings["total"] = round((now - build.created_at).total_seconds(), 4)
            build.timings = timings
            if transition == Transition.DELETE and status == BuildStatus.SUCCEEDED:
                workspace = db.get(Workspace, build.workspace_id)
                if workspace is not None:
                    workspace.deleted = True
                    workspace.deadline = None
            db.commit()
            workspace_id = build.workspace_id
        events.changed(self.sessions, workspace_id)
        log.info(
            "build finished",
            build=build_id,
            transition=transition.value,
            status=status.value,
            seconds=timings.get("total"),
        )


def stale_after() -> timedelta:
    return timedelta(seconds=HEARTBEAT_INTERVAL * 12)

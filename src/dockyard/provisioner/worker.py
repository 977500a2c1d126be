"""Provisioner workers: claim a queued build, turn it into runtime calls, record logs, timings and outcome."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.errors import DockyardError
from dockyard.events import bus_of
from dockyard.gitauth.broker import repo_origin
from dockyard.gitauth.credentials import secret_for
from dockyard.gitauth.mirrors import Mirrors
from dockyard.provisioner import agents, devcontainer_image, events, logs, plans, queue
from dockyard.runtimes.base import Canceled, ImageSpec, Observation, Runtime, RuntimeFailure
from dockyard.runtimes.plan import (
    GIT_MIRROR_MOUNT,
    AgentLink,
    Egress,
    ExtraMount,
    LinkKind,
    WorkspacePlan,
)
from dockyard.store.models import (
    TemplateArchive,
    TemplateVersion,
    User,
    Workspace,
    WorkspaceAgent,
    WorkspaceBuild,
)
from dockyard.store.types import utcnow
from dockyard.templates import devcontainers
from dockyard.templates import service as templates
from dockyard.templates.archive import TemplateFiles
from dockyard.templates.devcontainer.plan import Plan as DevcontainerPlan
from dockyard_sdk.models import AgentConnection, BuildStatus, Transition

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


class AgentDoor(Protocol):
    """How a workspace's agent gets its way in before the runtime starts it (tunnel/door.py).

    Passed in, so the provisioner never imports the tunnel (which imports the provisioner's services).
    """

    def link(self, capabilities: frozenset[LinkKind], *, egress: Egress) -> AgentLink | None:
        """The link this deployment gives an agent on a runtime that offers these kinds, in a workspace with
        this egress; None for none."""

    def open(self, workspace_id: str, *, kind: LinkKind, uid: int) -> None:
        """Make the link ready (its credentials included) for the workspace's next start."""

    def close(self, workspace_id: str) -> None:
        """The workspace is gone: remove what `open` made."""


class BuildContext:
    """What a running build can do: log a line, check for cancellation, time a phase."""

    def __init__(self, sessions: sessionmaker[Session], build_id: str) -> None:
        self.sessions = sessions
        self.build_id = build_id
        self.stage = "queue"
        self.timings: dict[str, float] = {}
        # The image the start ran (a build's tag): recorded on the stored plan, e.g. for a pool member.
        self.image: str | None = None
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
        agents: AgentDoor | None = None,
        mirrors: Mirrors | None = None,
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        # None only where no agent can run (unit tests with a fake runtime): the workspace then just sleeps.
        self.agents = agents
        # None: every workspace clones its repository over the network.
        self.mirrors = mirrors
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
                # Jittered, so that many idle workers spread their looks at the queue instead of all polling
                # in the same instant; a build queued in this process wakes them at once anyway.
                seen = queue.wakeup.wait(poll_interval * random.uniform(0.5, 1.5), seen)

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
        self._finish(build_id, transition, status, error, ctx.timings, image=ctx.image)

    def _workspace_id(self, build_id: str) -> str:
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, build_id)
            assert build is not None
            return build.workspace_id

    def _delete(self, workspace_id: str, ctx: BuildContext) -> None:
        self.runtime.delete(workspace_id, ctx.log)
        # Only once the workspace is gone: its agent has no further use for the link.
        if self.agents is not None:
            self.agents.close(workspace_id)

    def _start(self, ctx: BuildContext) -> None:
        capabilities = self.runtime.capabilities()
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, ctx.build_id)
            assert build is not None
            if build.plan:
                # A retried build runs the plan its first attempt made.
                plan = WorkspacePlan.from_stored(build.plan)
            else:
                ctx.stage = "render"
                plan = self._render(db, build, capabilities.agent_links)
                if capabilities.git_mirrors:
                    plan = self._ask_mirror(db, build, plan)
                build.plan = plan.stored()
                db.commit()
            archive = b""
            version = db.get(TemplateVersion, build.template_version_id)
            assert version is not None
            devcontainer = devcontainers.plan_for(db, version)
            files = templates.files_of(db, version) if devcontainer is not None else None
            if plan.build is not None:
                stored = db.get(TemplateArchive, plan.content_hash)
                archive = stored.data if stored is not None else b""
            agents.reset(db, plan.workspace_id, build.id)
            mirrored = self._mirror_host(plan) if capabilities.git_mirrors else None
            credential = secret_for(db, plan.owner_id, mirrored) if mirrored else None
        if mirrored:
            plan = self._mirror(plan, credential)
        refusal = capabilities.refusal(plan)
        if refusal:
            raise RuntimeFailure(refusal)
        if devcontainer is not None:
            assert files is not None
            image = self._devcontainer_image(ctx, devcontainer, files, template=plan.template)
        else:
            built = ctx.phase(
                "image", lambda: self.runtime.ensure_image(ImageSpec.of(plan, archive), ctx.log)
            )
            assert isinstance(built, str)
            image = built
        plan = plan.model_copy(update={"image": image})
        ctx.image = image
        if self.agents is not None and plan.agent is not None:
            self.agents.open(plan.workspace_id, kind=plan.agent.link.kind, uid=plan.home.uid)
        with self._agent_heard(plan.workspace_id, ctx.build_id, linked=plan.agent is not None) as heard:
            observation = ctx.phase("container", lambda: self.runtime.start(plan, ctx.log, started=heard))
        assert isinstance(observation, Observation)
        ctx.timings.update({f"container.{step}": seconds for step, seconds in observation.timings.items()})
        ctx.stage = "container"
        where = f" at {observation.address}" if observation.address else ""
        ctx.log(f"workspace {plan.name} is running{where}")

    @contextmanager
    def _agent_heard(
        self, workspace_id: str, build_id: str, *, linked: bool
    ) -> Iterator[threading.Event | None]:
        """An event set once this build's agent has connected: proof from inside that the workspace runs,
        which a runtime that hears of its own start late (Kubernetes) may take instead of its own report.

        Woken by the workspace's events (the hub publishes a connection from any replica); None without an
        agent or a bus, and the runtime then waits for its own report alone."""
        bus = bus_of(self.sessions)
        if bus is None or self.agents is None or not linked:
            yield None
            return
        heard = threading.Event()

        def look() -> None:
            if heard.is_set():
                return
            with self.sessions() as db:
                row = db.get(WorkspaceAgent, workspace_id)
                if (
                    row is not None
                    and row.build_id == build_id
                    and row.connection == AgentConnection.CONNECTED
                ):
                    heard.set()

        subscription = bus.workspaces.watch(workspace_id, look)
        try:
            yield heard
        finally:
            subscription.cancel()

    def _ask_mirror(self, db: Session, build: WorkspaceBuild, plan: WorkspacePlan) -> WorkspacePlan:
        """The plan with its clone asking for the server's mirror of the repository, where one can serve it."""
        git = plan.agent.git if plan.agent is not None else None
        workspace = db.get(Workspace, build.workspace_id)
        if (
            self.mirrors is None
            or git is None
            or not git.mirror
            or git.error
            or repo_origin(git.repo) is None
            # A warm pool member clones after its claim, with its owner's credential (tunnel/claims.py).
            or (workspace is not None and workspace.prebuild_preset is not None)
        ):
            return plan
        assert plan.agent is not None
        git = git.model_copy(update={"mirror_after": time.time()})
        return plan.model_copy(update={"agent": plan.agent.model_copy(update={"git": git})})

    def _mirror_host(self, plan: WorkspacePlan) -> str | None:
        """The repository's host when the plan's clone asks for a mirror this worker keeps."""
        git = plan.agent.git if plan.agent is not None else None
        origin = repo_origin(git.repo) if git is not None and git.mirror_after else None
        return origin[1] if origin is not None and self.mirrors is not None else None

    def _mirror(self, plan: WorkspacePlan, credential: tuple[str, str] | None) -> WorkspacePlan:
        """Start the mirror's fetch for this start and mount the mirror; the agent waits for the fetch."""
        assert self.mirrors is not None
        git = plan.agent.git if plan.agent is not None else None
        assert git is not None
        folder = self.mirrors.folder(plan.owner_id, git.repo)
        self.mirrors.refresh(folder, git.repo, after=git.mirror_after, credential=credential)
        mount = ExtraMount(target=GIT_MIRROR_MOUNT, host_path=str(folder), read_only=True)
        return plan.model_copy(update={"mounts": (*plan.mounts, mount)})

    def _devcontainer_image(
        self, ctx: BuildContext, devcontainer: DevcontainerPlan, files: TemplateFiles, *, template: str
    ) -> str:
        """The configuration's own image, then Dockyard's layer over it (features, the repository's files)."""
        base_spec = devcontainer_image.base_spec(devcontainer, files, template=template)
        base = ctx.phase("image", lambda: self.runtime.ensure_image(base_spec, ctx.log))
        assert isinstance(base, str)
        layer = devcontainer_image.layer_spec(devcontainer, files, template=template, base_image=base)
        image = ctx.phase("image.devcontainer", lambda: self.runtime.ensure_image(layer, ctx.log))
        assert isinstance(image, str)
        return image

    def _render(self, db: Session, build: WorkspaceBuild, offered: frozenset[LinkKind]) -> WorkspacePlan:
        workspace = db.get(Workspace, build.workspace_id)
        version = db.get(TemplateVersion, build.template_version_id)
        assert workspace is not None
        assert version is not None
        owner = db.get(User, workspace.owner_id)
        assert owner is not None
        agents = self.agents
        devcontainer = devcontainers.plan_for(db, version)
        return plans.make_plan(
            build,
            workspace=workspace,
            owner=owner,
            version=version,
            link=(lambda egress: agents.link(offered, egress=egress)) if agents is not None else None,
            devcontainer=devcontainer,
        )

    def _finish(
        self,
        build_id: str,
        transition: Transition,
        status: BuildStatus,
        error: str,
        timings: dict[str, float],
        *,
        image: str | None = None,
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
            # Dev container hooks may have added theirs already (the agent can be ready before this commit).
            build.timings = {**(build.timings or {}), **timings}
            if image and build.plan and build.plan.get("image") != image:
                build.plan = {**build.plan, "image": image}
            if transition == Transition.DELETE and status == BuildStatus.SUCCEEDED:
                workspace = db.get(Workspace, build.workspace_id)
                if workspace is not None:
                    workspace.deleted = True
                    workspace.deadline = None
            elif transition == Transition.START and status == BuildStatus.SUCCEEDED:
                # The TTL counts from when the workspace runs, as Coder's deadline does: counted from the create,
                # 200 agents queued on a busy host lost their workspaces to a one-minute TTL before they ran.
                workspace = db.get(Workspace, build.workspace_id)
                if workspace is not None and workspace.ttl_seconds:
                    workspace.deadline = now + timedelta(seconds=workspace.ttl_seconds)
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

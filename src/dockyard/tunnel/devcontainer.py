"""Dev container lifecycle hooks, run by the control plane through the workspace's agent.

When the agent of a dev container workspace reports `ready` (its startup script is done), the hub hands the
workspace to `LifecycleHooks`: the hooks run in the specification's order as exec streams, in the workspace
folder with `remoteEnv`. The agent counts as `ready` once the `waitFor` hook has finished; later hooks go on
in the background, their output in the build log. A failing hook stops the ones after it and turns the agent
`start_error`, with the hook's name and output in the build log. Each run is a `devcontainer_steps` row:
create hooks are skipped once they succeeded in the workspace, start hooks once they succeeded for the start
build, so neither a re-dial, a server restart, a stop/start nor a recreated container runs one twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.errors import DockyardError
from dockyard.provisioner import events, logs
from dockyard.store.models import DevcontainerStep, TemplateVersion, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard.store.types import utcnow
from dockyard.templates import devcontainers
from dockyard.templates.devcontainer import variables
from dockyard.templates.devcontainer.plan import RUN_HOOKS, Plan, Step
from dockyard.tunnel import extensions, state
from dockyard.tunnel.hub import AgentHub
from dockyard.tunnel.streams import exec_collect
from dockyard_sdk import models as wire

log = logging.get(__name__)
STAGE = "devcontainer"
# A hook may install a toolchain; the build's own timeout is an hour too.
HOOK_TIMEOUT = 3600.0
OUTPUT_KEPT = 64 * 1024


# A warm pool member runs these before its claim (they prepare the content, not the user's session); the
# claim runs the rest, the specification's "post" hooks.
POOL_HOOKS = ("onCreateCommand", "updateContentCommand")


@dataclass(frozen=True)
class _Work:
    build_id: str
    plan: Plan
    done: frozenset[str]
    pooled: bool = False


class LifecycleHooks:
    def __init__(self, hub: AgentHub, sessions: sessionmaker[Session]) -> None:
        self.hub = hub
        self.sessions = sessions
        self._running: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def agent_ready(self, workspace_id: str) -> bool:
        """Called when an agent reports `ready`; True when the hooks decide readiness instead."""
        work = await asyncio.to_thread(self._work, workspace_id)
        if work is None:
            return False
        # Per start build: a re-dial during a run must not start a second one, but a new start must not wait
        # for the previous container's run (which fails on its own once that agent is gone).
        key = (workspace_id, work.build_id)
        if key not in self._running:
            self._running.add(key)
            task = asyncio.ensure_future(self._run(workspace_id, work))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _t: self._running.discard(key))
        return True

    def _work(self, workspace_id: str) -> _Work | None:
        with self.sessions() as db:
            agent = db.get(WorkspaceAgent, workspace_id)
            build = db.get(WorkspaceBuild, agent.build_id) if agent and agent.build_id else None
            version = db.get(TemplateVersion, build.template_version_id) if build is not None else None
            if build is None or version is None:
                return None
            plan = devcontainers.plan_for(db, version)
            if plan is None:
                return None
            rows = db.execute(
                select(DevcontainerStep.hook, DevcontainerStep.build_id).where(
                    DevcontainerStep.workspace_id == workspace_id, DevcontainerStep.status == "succeeded"
                )
            ).all()
            done = {hook for hook, by in rows if Step(hook, None).once or by == build.id}
            workspace = db.get(Workspace, workspace_id)
            pooled = workspace is not None and workspace.prebuild_preset is not None
            return _Work(build.id, plan, frozenset(done), pooled)

    async def _run(self, workspace_id: str, work: _Work) -> None:
        try:
            plan = await self._with_container_env(workspace_id, work.plan)
        except (DockyardError, ConnectionError, OSError) as exc:
            log.info("dev container hooks interrupted", workspace=workspace_id, error=str(exc))
            return
        work = replace(work, plan=plan)
        wait_index = RUN_HOOKS.index(plan.wait_for) if plan.wait_for in RUN_HOOKS else 0
        ready = False
        try:
            for step in plan.steps:
                if work.pooled and step.hook not in POOL_HOOKS:
                    break  # the member is ready for a claim, which runs the rest for its owner
                if not await asyncio.to_thread(self._current, workspace_id, work.build_id):
                    return  # a newer start took over the workspace; its own run does the rest
                if not ready and RUN_HOOKS.index(step.hook) > wait_index:
                    ready = await self._ready(workspace_id, work.build_id)
                if step.hook in work.done:
                    continue
                exit_code = await self._step(workspace_id, work, step)
                if exit_code != 0:
                    await asyncio.to_thread(
                        state.lifecycle, self.sessions, workspace_id, "start_error", exit_code
                    )
                    events.changed(self.sessions, workspace_id)
                    return
            if not ready:
                await self._ready(workspace_id, work.build_id)
            if plan.extensions:
                await self._extensions(workspace_id, work)
        except DockyardError as exc:
            # The agent went away (a stop) or refused the stream; the next connection's `ready` resumes here.
            log.info("dev container hooks interrupted", workspace=workspace_id, error=exc.message)
        except (ConnectionError, OSError) as exc:
            log.info("dev container hooks interrupted", workspace=workspace_id, error=str(exc))

    async def _with_container_env(self, workspace_id: str, plan: Plan) -> Plan:
        """The plan with `${containerEnv:VAR}` (in remoteEnv and the hooks) resolved from the running
        container's environment, as the specification resolves it once the container exists."""
        if "${containerEnv:" not in json.dumps([plan.remote_env, [s.command for s in plan.steps]]):
            return plan
        result = await exec_collect(
            self.hub, workspace_id, wire.ExecRequest(command=["env", "-0"], timeout=60, encoding="utf-8")
        )
        env = dict(entry.split("=", 1) for entry in result.stdout.split("\0") if "=" in entry)
        # Through JSON: the array forms are tuples in the plan, and only lists are walked.
        wanted = json.loads(
            json.dumps({"remote_env": plan.remote_env, "steps": [[s.hook, s.command] for s in plan.steps]})
        )
        resolved = variables.substitute_container_env(env, wanted)
        return replace(
            plan,
            remote_env=resolved["remote_env"],
            steps=tuple(Step(hook, command) for hook, command in resolved["steps"]),
        )

    async def _ready(self, workspace_id: str, build_id: str) -> bool:
        await asyncio.to_thread(
            logs.append, self.sessions, build_id, STAGE, "the workspace is ready (waitFor)"
        )
        await asyncio.to_thread(state.lifecycle, self.sessions, workspace_id, "ready", None)
        events.changed(self.sessions, workspace_id)
        return True

    async def _extensions(self, workspace_id: str, work: _Work) -> None:
        """Install `customizations.vscode.extensions` into the browser IDE, after the hooks (which may be what
        installs it) and after readiness (a marketplace may be slow); every start, as installing is idempotent
        and a recreated container may have lost them."""
        say = await _say(self.sessions, work.build_id)
        await say(f"installing {len(work.plan.extensions)} VS Code extension(s) into the browser IDE")
        started = time.perf_counter()
        result = await exec_collect(
            self.hub,
            workspace_id,
            extensions.request(
                work.plan.extensions, cwd=work.plan.workspace_folder, env=dict(work.plan.remote_env)
            ),
        )
        for line in (result.stdout + result.stderr).splitlines():
            if line.strip():
                await say(line)
        seconds = round(time.perf_counter() - started, 4)
        await asyncio.to_thread(self._timing, work.build_id, "extensions", seconds)

    def _timing(self, build_id: str, name: str, seconds: float) -> None:
        with self.sessions() as db:
            build = db.get(WorkspaceBuild, build_id)
            if build is not None:
                build.timings = {**(build.timings or {}), f"devcontainer.{name}": seconds}
                db.commit()

    async def _step(self, workspace_id: str, work: _Work, step: Step) -> int:
        row_id = await asyncio.to_thread(self._begin, workspace_id, work.build_id, step.hook)
        say = await _say(self.sessions, work.build_id)
        await say(f"running {step.hook}")
        started = time.perf_counter()
        commands: dict[str, Any] = step.command if isinstance(step.command, dict) else {"": step.command}
        # The object form's named commands run in parallel; the hook fails if any of them fails.
        results = await asyncio.gather(
            *(self._exec(workspace_id, work.plan, command) for command in commands.values())
        )
        seconds = round(time.perf_counter() - started, 4)
        output = ""
        exit_code = 0
        for name, (code, text) in zip(commands, results, strict=True):
            prefix = f"[{name}] " if name else ""
            if text:
                await say("\n".join(prefix + line for line in text.rstrip("\n").splitlines()))
            output += text
            if code != 0 and exit_code == 0:
                exit_code = code if code is not None else -1
                if name:
                    await say(f"{step.hook} command {name!r} failed with exit code {code}")
        if exit_code:
            await say(f"{step.hook} failed with exit code {exit_code}; the later hooks were skipped")
        else:
            await say(f"{step.hook} finished in {seconds:g} s")
        await asyncio.to_thread(
            self._end, row_id, work.build_id, step.hook, exit_code=exit_code, output=output, seconds=seconds
        )
        return exit_code

    async def _exec(self, workspace_id: str, plan: Plan, command: Any) -> tuple[int | None, str]:
        request = wire.ExecRequest(
            command=list(command) if isinstance(command, list | tuple) else command,
            cwd=plan.workspace_folder,
            env=dict(plan.remote_env),
            timeout=HOOK_TIMEOUT,
            max_output_bytes=OUTPUT_KEPT,
        )
        result = await exec_collect(self.hub, workspace_id, request)
        return result.exit_code, result.stdout + result.stderr

    def _current(self, workspace_id: str, build_id: str) -> bool:
        with self.sessions() as db:
            agent = db.get(WorkspaceAgent, workspace_id)
            return agent is not None and agent.build_id == build_id

    def _begin(self, workspace_id: str, build_id: str, hook: str) -> int:
        with self.sessions() as db:
            row = DevcontainerStep(
                workspace_id=workspace_id, build_id=build_id, hook=hook, status="running", output=""
            )
            db.add(row)
            db.commit()
            return row.id

    def _end(
        self, row_id: int, build_id: str, hook: str, *, exit_code: int, output: str, seconds: float
    ) -> None:
        with self.sessions() as db:
            row = db.get(DevcontainerStep, row_id)
            if row is not None:
                row.status = "succeeded" if exit_code == 0 else "failed"
                row.exit_code = exit_code
                row.output = output[-OUTPUT_KEPT:]
                row.finished_at = utcnow()
            build = db.get(WorkspaceBuild, build_id)
            if build is not None:
                build.timings = {**(build.timings or {}), f"devcontainer.{hook}": seconds}
            db.commit()


async def _say(sessions: sessionmaker[Session], build_id: str) -> Any:
    async def say(text: str) -> None:
        await asyncio.to_thread(logs.append, sessions, build_id, STAGE, text)

    return say

"""App health checks, run by the control plane process that holds the workspace's agent connection.

Every app with a `healthcheck` is requested (`GET path` through the tunnel) every `interval`: an answer below
500 is a pass; `threshold` failures in a row make it `unhealthy`, one pass makes it `healthy`; before its first
pass it is `initializing`. Apps without a healthcheck read `disabled`. Results are kept in this process (the one
the agent is connected to); docs/WEB.md says what a replica that does not hold the agent shows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpcore
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs
from dockyard.apps import access, upstream
from dockyard.errors import DockyardError
from dockyard.tunnel.hub import AgentHub
from dockyard_sdk.manifest import App
from dockyard_sdk.units import parse_duration

log = logs.get(__name__)
TICK = 1.0
CHECK_TIMEOUT = 5.0


@dataclass
class Health:
    state: str = "initializing"
    detail: str = ""
    failures: int = 0
    checked_at: float = 0.0
    due: float = field(default=0.0)


class HealthChecker:
    def __init__(self, sessions: sessionmaker[Session], hub: AgentHub) -> None:
        self.sessions = sessions
        self.hub = hub
        self.results: dict[tuple[str, str], Health] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def health(self, workspace_id: str, app: App) -> Health:
        if app.healthcheck is None:
            return Health("disabled")
        return self.results.get(
            (workspace_id, app.slug),
            Health("initializing" if self.hub.connected(workspace_id) else "unknown"),
        )

    def _apps(self, workspace_ids: list[str]) -> list[tuple[str, App]]:
        with self.sessions() as db:
            apps = access.apps_of_many(db, workspace_ids)
        return [(w, app) for w, found in apps.items() for app in found if app.healthcheck is not None]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.pass_once()
            except Exception:
                log.exception("app health pass failed")

    async def pass_once(self) -> None:
        live = self.hub.connected_workspaces()
        self.results = {k: v for k, v in self.results.items() if k[0] in live}
        if not live:
            return
        now = time.monotonic()
        checks = []
        for workspace_id, app in await asyncio.to_thread(self._apps, sorted(live)):
            result = self.results.setdefault((workspace_id, app.slug), Health())
            if result.due <= now:
                assert app.healthcheck is not None
                result.due = now + parse_duration(app.healthcheck.interval).total_seconds()
                checks.append(self._check(workspace_id, app, result))
        await asyncio.gather(*checks)

    async def _check(self, workspace_id: str, app: App, result: Health) -> None:
        assert app.healthcheck is not None
        pool = upstream.pool(self.hub, workspace_id, app.port)
        problem = ""
        try:
            response = await asyncio.wait_for(
                pool.request("GET", f"http://127.0.0.1:{app.port}{app.healthcheck.path}"), CHECK_TIMEOUT
            )
            if response.status >= 500:
                problem = f"GET {app.healthcheck.path} answered {response.status}"
        except (
            httpcore.ConnectError,
            httpcore.ReadError,
            httpcore.WriteError,
            httpcore.RemoteProtocolError,
        ) as exc:
            problem = str(exc) or type(exc).__name__
        except DockyardError as exc:
            problem = exc.detail or exc.message
        except TimeoutError:
            problem = f"no answer within {CHECK_TIMEOUT:.0f} s"
        finally:
            await pool.aclose()
        result.checked_at = time.time()
        if not problem:
            result.state, result.detail, result.failures = "healthy", "", 0
            return
        result.failures += 1
        result.detail = problem
        if result.failures >= app.healthcheck.threshold:
            result.state = "unhealthy"

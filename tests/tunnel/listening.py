"""A harness whose application also listens on a real TCP port, on the harness's own event loop (where the
hub lives), as `dockyard server` serves everything on one loop. Agents dial it over the network and replicas
relay to it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from dockyard.tunnel.hub import AgentHub
from tests.fakes import FakeRuntime
from tests.harness import Harness, make_harness
from tests.live import free_port


@dataclass
class Listening:
    harness: Harness
    server: uvicorn.Server
    url: str

    @property
    def hub(self) -> AgentHub:
        hub = self.harness.app.state.hub
        assert isinstance(hub, AgentHub)
        return hub

    def close(self) -> None:
        self.server.should_exit = True
        time.sleep(0.3)
        self.harness.close()


def listening_harness(
    tmp_path: Path, database_url: str, *, agents: bool = True, workers: int = 2, agent_url: str | None = None
) -> Listening:
    """`agent_url` defaults to this harness's own URL (agents connect to it)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    harness = make_harness(
        tmp_path,
        database_url,
        runtime=FakeRuntime(agents=agents),
        workers=workers,
        agent_url=url if agent_url is None else agent_url,
        relay_url=url,
    )
    server = uvicorn.Server(
        uvicorn.Config(harness.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    harness.lifespan.portal.start_task_soon(server.serve)
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return Listening(harness, server, url)

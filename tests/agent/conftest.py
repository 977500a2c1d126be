from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.agent.fakeplane import AgentEnv


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[AgentEnv]:
    env = AgentEnv(tmp_path)
    try:
        yield env
    finally:
        await env.close()
    # Whatever a test did, the agent must not have crashed a stream or tripped over asyncio on the way.
    stderr = env.stderr() if env.stderr_path.exists() else ""
    if env.expect_errors:
        return
    assert "Traceback" not in stderr, stderr
    assert "Warning" not in stderr, stderr
    assert all(line.startswith("dockyard-agent: ") for line in stderr.splitlines()), stderr

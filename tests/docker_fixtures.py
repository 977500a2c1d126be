"""Session fixtures for tests that need the real Docker engine and the base image.

Tests using them skip, with the reason, when no engine answers at DOCKER_HOST (or the default socket).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from dockyard.runtimes.base import RuntimeUnavailable
from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.images import BASE_IMAGE, build_base_image

# Every workspace id a test session makes starts with this, so leftovers can be found and swept.
SESSION_PREFIX = f"t{uuid.uuid4().hex[:6]}"
# The session's runtime is a deployment of its own: it lists and sweeps nothing another server on the shared
# engine made (other test sessions, benchmarks, a real deployment).
SESSION_DEPLOYMENT = f"test-{SESSION_PREFIX}"


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerRuntime]:
    runtime = DockerRuntime(deployment=SESSION_DEPLOYMENT)
    try:
        runtime.ping()
    except RuntimeUnavailable as exc:
        runtime.close()
        # scripts/test.sh starts an engine and sets this, so that in CI a missing engine fails the run
        # instead of quietly skipping every Docker test; a developer without Docker gets skips.
        if os.environ.get("DOCKYARD_REQUIRE_DOCKER"):
            pytest.fail(f"no Docker engine, but DOCKYARD_REQUIRE_DOCKER is set: {exc.message}")
        pytest.skip(f"no Docker engine: {exc.message}")
    yield runtime
    for resource in runtime.managed_resources():
        if resource.workspace_id.startswith(SESSION_PREFIX):
            runtime.remove_resource(resource)
    # Host rules of networks that tests removed behind the runtime's back.
    runtime.repair_host_isolation()
    runtime.close()


@pytest.fixture(scope="session")
def base_image(engine: DockerRuntime) -> str:
    # About 45 s the first time on this machine; later sessions reuse the image or the cached root filesystem.
    build_base_image(BASE_IMAGE, log=lambda line: None)
    return BASE_IMAGE

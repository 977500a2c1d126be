"""How many engine calls a workspace start makes, and which (issue 15, burst throughput).

Every call waits for the engine, which in a burst serves dozens of starts at once; a call added to the start
(a redundant inspect, a lookup made twice) costs a burst of N workspaces N calls. The start of a new workspace
on a network made ahead of it (a warm network) is counted against the real engine.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard.runtimes.base import ContainerState
from dockyard.runtimes.docker import DockerRuntime
from tests.runtimes.conftest import SpecFactory

pytestmark = pytest.mark.docker


@pytest.fixture
def engine_calls(runtime: DockerRuntime) -> Iterator[list[str]]:
    """Every request the runtime's client sends from now on, as "METHOD /path" without the API version."""
    calls: list[str] = []
    lock = threading.Lock()
    api = runtime.client.api
    send = api.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = re.sub(r"^.*?/v[0-9.]+", "", url)
        with lock:
            calls.append(f"{method} {path}")
        return send(method, url, *args, **kwargs)

    api.request = counted  # type: ignore[method-assign]
    yield calls
    api.request = send  # type: ignore[method-assign]


def test_a_new_workspace_on_a_prepared_network_starts_in_nine_engine_calls(
    runtime: DockerRuntime, new_spec: SpecFactory, log: list[str], engine_calls: list[str]
) -> None:
    spec = new_spec(files={"/opt/dockyard/agent.txt": b"agent\n"})
    runtime.prepare_network(spec.workspace_id, "open", log.append)
    runtime.capacity()  # asked once per process (the CPU limit's cap), not per start
    engine_calls.clear()

    observation = runtime.start(spec, log.append)

    assert observation.state is ContainerState.RUNNING
    ws = spec.workspace_id
    # The network's lookup runs on a thread of its own, beside the volume and the image and container lookups.
    assert sorted(re.sub(r"[?].*", "", call) for call in engine_calls) == sorted(
        [
            "GET /networks",  # the prepared network, by name
            "POST /volumes/create",  # the home volume (the engine returns an existing one as it is)
            f"GET /images/{spec.image}/json",  # the image id, for the configuration hash
            f"GET /containers/dockyard-ws-{ws}/json",  # none yet
            "POST /containers/create",  # no inspect after it: the start knows what it made
            f"PUT /containers/{_id(engine_calls, 'PUT')}/archive",  # the template's files
            f"POST /containers/{_id(engine_calls, 'PUT')}/start",
            # Followed until the setup step is done, without an inspect for the TTY setting first.
            f"GET /containers/{_id(engine_calls, 'PUT')}/logs",
            f"GET /containers/dockyard-ws-{ws}/json",  # the running container's address
        ]
    ), "\n".join(engine_calls)
    assert set(observation.timings) == {"volume", "inspect", "network", "network.wait", "create", "start"}


def test_the_call_after_a_followed_log_gets_a_working_connection(
    runtime: DockerRuntime, new_spec: SpecFactory, log: list[str]
) -> None:
    """The start follows the setup step's log and closes that stream; the pool must not hand its closed socket
    to the next call (it did, and the next stop or start failed with EBADF)."""
    spec = new_spec()
    for _ in range(2):
        assert runtime.start(spec, log.append).state is ContainerState.RUNNING
        # The very next calls, on this thread, take the connection the followed log gave back.
        assert runtime.observe(spec.workspace_id).state is ContainerState.RUNNING
        runtime.stop(spec.workspace_id, log.append)


def _id(calls: list[str], method: str) -> str:
    """The container id in the first call of `method` to /containers/<id>/…."""
    for call in calls:
        found = re.match(rf"{method} /containers/([0-9a-f]{{64}})/", call)
        if found:
            return found.group(1)
    return "<none>"


def test_the_engine_client_looks_for_no_proxy_or_netrc_on_a_unix_socket(runtime: DockerRuntime) -> None:
    # requests looks up proxies and ~/.netrc at every call unless told not to; a burst makes thousands of calls.
    assert runtime.base_url.startswith("unix://")
    assert runtime.client.api.trust_env is False
    assert runtime.client.ping()

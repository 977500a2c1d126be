"""Brokered git credentials in a real Docker workspace: the git server is a container of the test's own
(tests/gitserver.py in the base image) joined, as `git.test`, to the network made ahead for the workspace (a warm
network), so its name resolves there without a query leaving the engine. The clone, the task branch and a push
go through the credential helper, and afterwards the secret is found in no file of the container and in no
process's environment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from sqlalchemy import select

from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.naming import container_name, network_name
from dockyard.store.models import Workspace
from dockyard.warmpool import store as warmnetworks
from dockyard_sdk import models as m
from tests.gitauth.test_git_credentials import GIT_MANIFEST, PASSWORD, USER, git
from tests.harness import Harness, make_harness

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

GITSERVER = Path(__file__).parents[1] / "gitserver.py"
HOST = "git.test:8080"
# Reads every process's environment as root and says which ones hold the secret (given as an argument, so
# that this process's own environment does not).
ENVIRON_PROBE = """
import glob, sys
hits = []
for path in glob.glob('/proc/[0-9]*/environ'):
    try:
        if sys.argv[1].encode() in open(path, 'rb').read():
            hits.append(path)
    except OSError:
        pass
print(len(glob.glob('/proc/[0-9]*/environ')), hits)
"""


@pytest.fixture
def dh(tmp_path: Path, database_url: str, engine: DockerRuntime, base_image: str) -> Iterator[Harness]:
    runtime = DockerRuntime(subnet_pool="10.234.0.0/16", ready_timeout=60)
    harness = make_harness(tmp_path, database_url, runtime=runtime, warm_networks={"open": 1, "internal": 0})
    try:
        yield harness
    finally:
        with harness.app.state.sessions() as db:
            ids = list(db.scalars(select(Workspace.id)))
        pool = harness.app.state.background.warm_pool
        pool.sizes = {}
        pool.fill()
        harness.close()
        for workspace_id in ids:
            runtime.delete(workspace_id, lambda line: None)
        runtime.close()


@pytest.fixture
def git_container(tmp_path: Path, base_image: str) -> Iterator[tuple[Any, Path]]:
    root = tmp_path / "srv"
    root.mkdir()
    bare = root / "app.git"
    git("init", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git("clone", str(bare), str(seed))
    (seed / "README").write_text("hello\n")
    git("add", "README", cwd=seed)
    git("commit", "-m", "first", cwd=seed)
    git("push", "origin", "HEAD:main", cwd=seed)
    client = docker.from_env()
    container = client.containers.run(
        base_image,
        ["python3", "/gitserver.py", "/srv/git", "8080", USER, PASSWORD],
        name=f"dockyard-test-git-{uuid.uuid4().hex[:8]}",
        detach=True,
        volumes={str(root): {"bind": "/srv/git", "mode": "rw"}, str(GITSERVER): {"bind": "/gitserver.py"}},
        labels={"dockyard.test": "gitserver"},
    )
    try:
        yield container, bare
    finally:
        container.remove(force=True)
        client.close()


def test_clone_push_and_no_trace_of_the_credential_in_a_docker_workspace(
    dh: Harness, git_container: tuple[Any, Path]
) -> None:
    container, bare = git_container
    dh.admin.add_git_auth(m.CreateGitAuthRequest(host=HOST, username=USER, password=PASSWORD))
    parameters = {"repo": f"http://{HOST}/app.git", "branch": "task-9"}
    # No network at all: git's own message is the workspace's start error.
    offline = {**GIT_MANIFEST, "name": "offline", "network": {"egress": "none"}}
    dh.template({"dockyard.yaml": yaml.safe_dump(offline, sort_keys=False)})
    created = dh.admin.create_workspace(
        m.CreateWorkspaceRequest(template="offline", name="offline", parameters=parameters)
    )
    first = dh.admin.get_workspace(created.id, wait="ready", timeout=120)
    assert first.agent is not None
    assert first.agent.lifecycle == m.AgentLifecycle.START_ERROR
    assert first.agent.error is not None
    assert "Could not resolve host: git.test" in first.agent.error

    pool = dh.app.state.background.warm_pool
    pool.fill()
    with dh.app.state.sessions() as db:
        [warm_id] = warmnetworks.ids(db)
    client = docker.from_env()
    client.networks.get(network_name(warm_id)).connect(container, aliases=["git.test"])
    manifest = {**GIT_MANIFEST, "network": {"egress": "all"}, "resources": {"cpu": 1, "memory": "512Mi"}}
    dh.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})
    created = dh.admin.create_workspace(
        m.CreateWorkspaceRequest(template="gitws", name="dockergit", parameters=parameters)
    )
    assert created.id == warm_id
    ws = dh.admin.get_workspace(created.id, wait="ready", timeout=120)
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)

    def sh(command: str) -> m.ExecResult:
        return dh.admin.exec(ws.id, m.ExecRequest(command=command, timeout=60))

    assert sh("git -C project rev-parse --abbrev-ref HEAD").stdout.strip() == "task-9"
    pushed = sh(
        "cd project && echo x > X && git add X && "
        "git -c user.name=a -c user.email=a@example.com commit -qm from-docker && git push -q origin task-9"
    )
    assert pushed.exit_code == 0, pushed.stderr
    assert git("--git-dir", str(bare), "log", "-1", "--format=%s", "task-9") == "from-docker"

    workspace = client.containers.get(container_name(ws.id))
    code, found = workspace.exec_run(
        ["grep", "-rlsF", "--exclude-dir=proc", "--exclude-dir=sys", "--exclude-dir=dev", PASSWORD, "/"],
        user="root",
    )
    assert (code, found) == (1, b"")
    code, environ = workspace.exec_run(["python3", "-c", ENVIRON_PROBE, PASSWORD], user="root")
    assert code == 0, environ
    count, hits = environ.decode().split(" ", 1)
    assert int(count) >= 2
    assert hits.strip() == "[]"
    client.close()


def test_a_limited_docker_workspace_with_no_network_pushes_its_task_branch_through_the_proxy(
    dh: Harness, origin: tuple[str, Path, Any]
) -> None:
    """No egress at all: git reaches the repository (on the host's loopback, out of the container's reach) only
    through the agent's link and the control plane's git proxy, which holds the credential."""
    host, bare, _app = origin
    git_spec = {**GIT_MANIFEST["git"], "push": "task-branch"}
    manifest = {
        **GIT_MANIFEST,
        "git": git_spec,
        "network": {"egress": "none"},
        "resources": {"cpu": 1, "memory": "512Mi"},
    }
    dh.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})
    dh.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    created = dh.admin.create_workspace(
        m.CreateWorkspaceRequest(
            template="gitws",
            name="proxied",
            parameters={"repo": f"http://{host}/app.git", "branch": "task-9"},
        )
    )
    ws = dh.admin.get_workspace(created.id, wait="ready", timeout=120)
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)

    def sh(command: str) -> m.ExecResult:
        return dh.admin.exec(ws.id, m.ExecRequest(command=command, timeout=60))

    commit = "git -c user.name=a -c user.email=a@example.com commit -qm"
    pushed = sh(f"cd project && echo x > X && git add X && {commit} from-docker && git push -q origin task-9")
    assert pushed.exit_code == 0, pushed.stderr
    assert git("--git-dir", str(bare), "log", "-1", "--format=%s", "task-9") == "from-docker"
    main = sh("cd project && git push origin HEAD:main")
    assert main.exit_code == 1
    assert "(dockyard: this workspace may push only its task branch refs/heads/task-9)" in main.stderr
    assert git("--git-dir", str(bare), "log", "-1", "--format=%s", "main") == "first"

    client = docker.from_env()
    workspace = client.containers.get(container_name(ws.id))
    # Where anything could have been written: the home volume, and what the container changed in its image.
    written = sorted({"/home", *(c["Path"] for c in workspace.diff() or [] if c["Kind"] != 2)})
    found = workspace.exec_run(
        ["find", *written, "-type", "f", "-exec", "grep", "-lF", PASSWORD, "{}", "+"], user="root"
    ).output
    assert found == b""
    code, environ = workspace.exec_run(["python3", "-c", ENVIRON_PROBE, PASSWORD], user="root")
    assert code == 0, environ
    assert environ.decode().split(" ", 1)[1].strip() == "[]"
    client.close()

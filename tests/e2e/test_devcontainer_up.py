"""`dockyard up` of a repository folder with a Dockerfile-based dev container configuration, a local feature,
all six lifecycle hooks in their three forms, `waitFor`, a forwarded port and a `remoteUser`, through a real
`dockyard server` on the real engine: ready when `waitFor` says, the port reachable through the agent, and
each hook run exactly once across a stop/start and a recreated container."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import docker
import pytest

from dockyard_sdk import models as m
from tests.gitauth.test_git_credentials import git
from tests.gitserver import serve
from tests.harness import tar_gz
from tests.live import DOCKYARD, LiveServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.engine_only, pytest.mark.timeout(900)]

CONFIG = """// a repository's dev container
{
  "name": "demo",
  "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"GREETING": "hello"}},
  "features": {"./greeter": {"who": "world"}, "./base-tools": {}},
  "overrideFeatureInstallOrder": [],
  "containerEnv": {"DEMO_MODE": "on"},
  "remoteEnv": {"HOOK_ENV": "from-remote-env", "HOOK_HOME": "${containerEnv:HOME}"},
  "remoteUser": "dev",
  "forwardPorts": [8000],
  "portsAttributes": {"8000": {"label": "web"}},
  "hostRequirements": {"cpus": 1, "memory": "1gb"},
  "onCreateCommand": "echo oncreate:$HOOK_ENV:$(pwd):$HOOK_HOME >> ~/hooks.log",
  "updateContentCommand": ["sh", "-c", "echo updatecontent >> ~/hooks.log"],
  "postCreateCommand": {
    "a": "echo postcreate-a >> ~/hooks.log",
    "b": ["sh", "-c", "echo postcreate-b >> ~/hooks.log"]
  },
  "postStartCommand": "setsid python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 < /dev/null & echo poststart >> ~/hooks.log",
  "postAttachCommand": "sleep 1; echo postattach >> ~/hooks.log",
  "waitFor": "postCreateCommand",
}
"""


def _repo(folder: Path) -> Path:
    files = {
        ".devcontainer/devcontainer.json": CONFIG,
        ".devcontainer/Dockerfile": 'FROM dockyard/base:bookworm\nARG GREETING\nRUN echo "$GREETING" > /etc/greeting\n',
        ".devcontainer/greeter/devcontainer-feature.json": json.dumps(
            {
                "id": "greeter",
                "options": {"who": {"type": "string", "default": "nobody"}},
                "containerEnv": {"GREETER": "installed"},
                "installsAfter": ["base-tools"],
            }
        ),
        ".devcontainer/greeter/install.sh": '#!/bin/sh\nset -e\necho "hi $WHO" > /etc/greeter\n'
        "cat /etc/base-tools >> /etc/greeter\n",
        ".devcontainer/base-tools/devcontainer-feature.json": '{"id": "base-tools"}',
        ".devcontainer/base-tools/install.sh": "#!/bin/sh\necho base-tools-first > /etc/base-tools\n",
        "app.py": "print('the app')\n",
    }
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    return folder


@pytest.fixture(scope="module")
def shell(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    subprocess.run(
        [DOCKYARD, "login", live.url, "--token", live.token], env=env, check=True, capture_output=True
    )
    return env


def _dockyard(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKYARD, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _sh(live: LiveServer, ws: m.Workspace, command: str) -> str:
    result = live.client.exec(ws.id, m.ExecRequest(command=command))
    assert result.exit_code == 0, result
    return result.stdout


def _hooks(live: LiveServer, ws: m.Workspace, *, lines: int, timeout: float = 60) -> list[str]:
    """hooks.log once it has `lines` lines (the hooks after waitFor go on in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _sh(live, ws, "cat ~/hooks.log 2>/dev/null || true").splitlines()
        if len(found) >= lines or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _log(live: LiveServer, build_id: str) -> list[str]:
    return [line.output for line in live.client.build_logs(build_id) if line.stage == "devcontainer"]


def test_dockyard_up_runs_a_dev_container_as_its_configuration_says(
    live: LiveServer, shell: dict[str, str], tmp_path: Path
) -> None:
    repo = _repo(tmp_path / "demo-repo")
    plan = _dockyard(shell, "up", str(repo), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[:3] == [
        "Workspace demo-repo from template demo-repo (.devcontainer/devcontainer.json)",
        "  image: built from .devcontainer/Dockerfile (context .)",
        "  feature: ./base-tools ()",
    ]
    assert "  postCreateCommand (waitFor): " in plan.stdout
    assert live.client.list_workspaces(name="demo-repo").workspaces == []  # a dry run makes nothing

    created = _dockyard(shell, "up", str(repo), "-o", "json")
    assert created.returncode == 0, created.stderr
    ws = m.Workspace.model_validate_json(created.stdout)
    assert ws.status == m.WorkspaceStatus.RUNNING
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY

    # Ready exactly when waitFor (postCreateCommand) finished: before postStart and postAttach ran.
    log = _log(live, ws.latest_build.id)
    ready = log.index("the workspace is ready (waitFor)")
    assert any(line.startswith("postCreateCommand finished") for line in log[:ready])
    assert "running postStartCommand" in log[ready:]
    hooks = _hooks(live, ws, lines=6)
    assert hooks[:2] == ["oncreate:from-remote-env:/workspaces/demo-repo:/home/dev", "updatecontent"]
    assert sorted(hooks[2:4]) == ["postcreate-a", "postcreate-b"]
    assert hooks[4:] == ["poststart", "postattach"]

    # The image: its Dockerfile with args, the features in installsAfter order with their options, the env.
    assert _sh(live, ws, "cat /etc/greeting /etc/greeter") == "hello\nhi world\nbase-tools-first\n"
    assert _sh(live, ws, "id -un; echo $DEMO_MODE $GREETER; cat /workspaces/demo-repo/app.py") == (
        "dev\non installed\nprint('the app')\n"
    )
    timings = live.client.get_workspace(ws.id).latest_build.timings
    assert {
        f"devcontainer.{h}" for h in ("onCreateCommand", "postCreateCommand", "postAttachCommand")
    } <= set(timings)

    # The forwarded port, through the agent's dial.
    local = free_port()
    forward = subprocess.Popen(
        [DOCKYARD, "port-forward", ws.name, "--tcp", f"{local}:8000"],
        env=shell,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/app.py", timeout=5) as reply:
                    assert reply.read() == b"print('the app')\n"
                    break
            except OSError:
                assert time.monotonic() < deadline, "port 8000 never answered"
                time.sleep(0.5)
    finally:
        forward.terminate()
        forward.wait(10)

    # Stop and start: the create hooks are not run again; the start hooks are.
    assert _dockyard(shell, "stop", ws.name).returncode == 0
    started = _dockyard(shell, "start", ws.name)
    assert started.returncode == 0, started.stderr
    live.client.get_workspace(ws.id, wait="ready", timeout=120)
    hooks = _hooks(live, ws, lines=8)
    assert hooks[6:] == ["poststart", "postattach"]

    # A recreated container (removed behind Dockyard's back while stopped): still no create hook again.
    assert _dockyard(shell, "stop", ws.name).returncode == 0
    client = docker.from_env()
    try:
        client.containers.get(f"dockyard-ws-{ws.id}").remove(force=True)
    finally:
        client.close()
    assert _dockyard(shell, "start", ws.name).returncode == 0
    live.client.get_workspace(ws.id, wait="ready", timeout=120)
    hooks = _hooks(live, ws, lines=10)
    assert hooks.count("oncreate:from-remote-env:/workspaces/demo-repo:/home/dev") == 1
    assert hooks.count("postcreate-a") == 1
    assert hooks[8:] == ["poststart", "postattach"]
    assert len(hooks) == 10

    # Another workspace from the same folder has its own create hooks (and reuses the cached image).
    second = _dockyard(shell, "up", str(repo), "--name", "demo-two", "-o", "json")
    assert second.returncode == 0, second.stderr
    other = m.Workspace.model_validate_json(second.stdout)
    assert _hooks(live, other, lines=1)[0] == "oncreate:from-remote-env:/workspaces/demo-repo:/home/dev"


def test_a_failing_hook_skips_the_later_ones_and_says_which(
    live: LiveServer, shell: dict[str, str], tmp_path: Path
) -> None:
    repo = tmp_path / "broken-hook"
    (repo / ".devcontainer").mkdir(parents=True)
    (repo / ".devcontainer/devcontainer.json").write_text(
        json.dumps(
            {
                "image": "dockyard/base:bookworm",
                "onCreateCommand": "echo about to fail; exit 3",
                "postCreateCommand": "touch ~/should-not-exist",
            }
        )
    )
    result = _dockyard(shell, "up", str(repo), "-o", "json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        "error: broken-hook: onCreateCommand failed with exit code 3; the later hooks were skipped\n"
        in result.stderr
    )
    ws = live.client.get_workspace("broken-hook")
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.START_ERROR
    log = _log(live, ws.latest_build.id)
    assert log == [
        "running onCreateCommand",
        "about to fail",
        "onCreateCommand failed with exit code 3; the later hooks were skipped",
    ]
    assert _sh(live, ws, "ls ~/should-not-exist 2>/dev/null || echo absent") == "absent\n"


def test_up_refuses_a_configuration_before_making_anything(
    live: LiveServer, shell: dict[str, str], tmp_path: Path
) -> None:
    repo = tmp_path / "unsafe"
    (repo / ".devcontainer").mkdir(parents=True)
    (repo / ".devcontainer/devcontainer.json").write_text('{\n  "image": "x",\n  "privileged": true\n}\n')
    before = [t.name for t in live.client.list_templates()]
    result = _dockyard(shell, "up", str(repo))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "error: .devcontainer/devcontainer.json asks for what Dockyard cannot honour.\n"
        "  .devcontainer/devcontainer.json:3: privileged: workspaces never run privileged\n"
    )
    assert [t.name for t in live.client.list_templates()] == before


def test_a_template_builds_a_workspace_from_a_private_repositorys_configuration(
    live: LiveServer, tmp_path: Path
) -> None:
    """`devcontainer: {repo}`: the server fetches the configuration with the pusher's git credential and the
    engine builds its feature into the workspace (the agent's clone of the repository is tested with the real
    agent in tests/templates/test_devcontainer_repo.py; here the template's own `git:` turns it off)."""
    root = tmp_path / "srv"
    seed = tmp_path / "seed"
    git("init", "-q", "--bare", "--initial-branch=main", str(root / "app.git"))
    git("clone", "-q", str(root / "app.git"), str(seed))
    files = {
        ".devcontainer/devcontainer.json": json.dumps(
            {
                "image": "dockyard/base:bookworm",
                "features": {"./hello": {"greeting": "from-repo"}},
                "postCreateCommand": "cat /etc/hello > ~/hello.txt",
                "waitFor": "postCreateCommand",
            }
        ),
        ".devcontainer/hello/devcontainer-feature.json": json.dumps(
            {"id": "hello", "options": {"greeting": {"type": "string", "default": "hi"}}}
        ),
        ".devcontainer/hello/install.sh": "#!/bin/sh\necho $GREETING > /etc/hello\n",
    }
    for path, text in files.items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_text(text)
    git("add", "-A", cwd=seed)
    git("commit", "-qm", "config", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    port = free_port()
    server, _app = serve(str(root), host="127.0.0.1", port=port, user="robot", password="e2e-secret")
    url = f"http://127.0.0.1:{port}/app.git"
    try:
        live.client.add_git_auth(
            m.CreateGitAuthRequest(host=f"127.0.0.1:{port}", username="robot", password="e2e-secret")
        )
        manifest = f'name: repo-config\ndevcontainer: {{repo: "{url}"}}\ngit: {{repo: ""}}\n'
        template = live.client.create_template(tar_gz({"dockyard.yaml": manifest}))
    finally:
        server.shutdown()
    version = live.client.get_template_version("repo-config", template.active_version_id or "")
    assert version.manifest.model_dump()["devcontainer"]["commit"] == git(
        "-C", str(seed), "rev-parse", "HEAD"
    )
    created = live.client.create_workspace(
        m.CreateWorkspaceRequest(template="repo-config", name="repo-config")
    )
    ws = live.client.get_workspace(created.id, wait="ready", timeout=300)
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)
    assert _sh(live, ws, "cat ~/hello.txt; ls -A /workspaces/repo-config") == "from-repo\n.devcontainer\n"

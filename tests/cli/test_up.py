"""`dockyard up` through the in-process harness: what it pushes and creates, its dry run, and its refusals (the
real engine runs it in tests/e2e/test_devcontainer_up.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dockyard.templates.devcontainer import oci
from dockyard_sdk import models as m
from tests.cli.conftest import Cli
from tests.gitserver import serve
from tests.harness import Harness, manifest_yaml, tar_gz
from tests.live import free_port

CONFIG = (
    '{\n  "image": "dockyard/base:bookworm",\n  "forwardPorts": [8000],\n  "postCreateCommand": "make"\n}\n'
)


def _repo(folder: Path, config: str = CONFIG) -> Path:
    (folder / ".devcontainer").mkdir(parents=True)
    (folder / ".devcontainer/devcontainer.json").write_text(config)
    (folder / "main.py").write_text("print()\n")
    (folder / ".git").mkdir()
    (folder / ".git/HEAD").write_text("ref: refs/heads/main\n")
    return folder


def test_up_pushes_the_folder_as_a_template_and_creates_the_workspace(
    logged_in: Cli, tmp_path: Path, h: Harness
) -> None:
    repo = _repo(tmp_path / "My_Repo")
    first = logged_in.ok("up", str(repo), "--no-wait", "-o", "json")
    workspace = json.loads(first.stdout)
    assert (workspace["name"], workspace["template_name"]) == ("my-repo", "my-repo")
    assert "Creating workspace my-repo from" in first.stderr
    [version] = h.admin.list_template_versions("my-repo")
    assert version.manifest.devcontainer == ".devcontainer/devcontainer.json"
    assert version.manifest.description == "dockyard up of my-repo"
    # The repository's files, without .git, and the generated manifest.
    assert sorted(f.path for f in version.files) == [
        ".devcontainer/devcontainer.json",
        "dockyard.yaml",
        "main.py",
    ]
    # The same files again: the same version (and so the same cached image), another workspace.
    logged_in.ok("up", str(repo), "--no-wait", "--name", "second")
    assert [v.id for v in h.admin.list_template_versions("my-repo")] == [version.id]
    assert sorted(w.name for w in h.admin.list_workspaces().workspaces) == ["my-repo", "second"]


def test_up_dry_run_prints_the_plan_and_makes_nothing(logged_in: Cli, tmp_path: Path, h: Harness) -> None:
    repo = _repo(tmp_path / "demo")
    result = logged_in.ok("up", str(repo), "--dry-run")
    assert result.stdout.splitlines() == [
        "Workspace demo from template demo (.devcontainer/devcontainer.json)",
        "  image: dockyard/base:bookworm",
        "  user: dev; workspace folder: /workspaces/demo",
        "  port: 8000",
        '  postCreateCommand: "make"',
    ]
    plan = json.loads(logged_in.ok("up", str(repo), "--dry-run", "-o", "json").stdout)
    assert (plan["template"], plan["wait_for"], plan["steps"]) == (
        "demo",
        "updateContentCommand",
        [{"hook": "postCreateCommand", "command": "make"}],
    )
    assert h.admin.list_templates() == []


def test_up_dry_run_shows_what_each_oci_feature_resolved_to(
    logged_in: Cli, tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oci, "_cache_dir", tmp_path / "features")
    ref = f"{registry}/features/hello:1"
    repo = _repo(tmp_path / "demo", json.dumps({"image": "dockyard/base:bookworm", "features": {ref: {}}}))
    digest = oci.fetch(oci.parse(ref)).manifest_digest  # type: ignore[arg-type]
    lines = logged_in.ok("up", str(repo), "--dry-run").stdout.splitlines()
    assert f"  feature: {ref} (GREETING=hi) = {registry}/features/hello@{digest}" in lines


def test_up_of_a_git_url_reads_it_here_and_clones_it_in_the_workspace(logged_in: Cli, tmp_path: Path) -> None:
    repo = _repo(tmp_path / "origin")
    (repo / ".git/HEAD").unlink()
    (repo / ".git").rmdir()
    run = {"cwd": repo, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], **run)  # type: ignore[call-overload]
    subprocess.run(["git", "add", "-A"], **run)  # type: ignore[call-overload]
    subprocess.run(  # type: ignore[call-overload]
        ["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "init"], **run
    )
    url = f"file://{repo}"
    result = logged_in.ok("up", url, "--dry-run")
    assert (
        result.stdout.splitlines()[0]
        == "Workspace origin from template origin (.devcontainer/devcontainer.json)"
    )
    assert (
        f"  clone: {url} into /workspaces/origin (by the agent, with your brokered git credential)"
        in result.stdout.splitlines()
    )


def test_up_refuses_a_configuration_and_uploads_nothing(logged_in: Cli, tmp_path: Path, h: Harness) -> None:
    # Port 1 on loopback: a registry that is not running (never the internet from a test).
    repo = _repo(tmp_path / "bad", '{\n  "image": "x",\n  "features": {"127.0.0.1:1/acme/tool:1": {}}\n}\n')
    result = logged_in("up", str(repo), "--no-wait")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        "error: .devcontainer/devcontainer.json asks for what Dockyard cannot honour.\n"
        '  .devcontainer/devcontainer.json:3: features["127.0.0.1:1/acme/tool:1"]: feature '
        "127.0.0.1:1/acme/tool:1 cannot be fetched from its registry 127.0.0.1:1: the registry is not reachable\n"
    )
    assert h.admin.list_templates() == []


def test_up_never_pushes_over_a_hand_written_template(logged_in: Cli, tmp_path: Path, h: Harness) -> None:
    h.admin.create_template(tar_gz({"dockyard.yaml": manifest_yaml(name="taken")}))
    repo = _repo(tmp_path / "taken")
    result = logged_in("up", str(repo), "--no-wait")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Template taken exists and was not made by `dockyard up`.\n")
    assert len(h.admin.list_template_versions("taken")) == 1
    assert h.admin.list_workspaces().workspaces == []


def test_up_of_a_private_repository_clones_it_with_the_brokered_credential(
    logged_in: Cli, tmp_path: Path, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real `git http-backend` behind basic auth, the real agent: the workspace's clone is the template's git
    step, so the credential registered with `dockyard git-auth add` is what gets it in."""
    folder = tmp_path / "ws"
    config = json.dumps({"image": "dockyard/base:bookworm", "workspaceFolder": str(folder)})
    seed = _repo(tmp_path / "seed", config)
    (seed / ".git/HEAD").unlink()
    (seed / ".git").rmdir()
    root = tmp_path / "srv"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "app.git")], check=True)
    run = {"cwd": seed, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q", "-b", "main"], **run)  # type: ignore[call-overload]
    subprocess.run(["git", "add", "-A"], **run)  # type: ignore[call-overload]
    subprocess.run(  # type: ignore[call-overload]
        ["git", "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "private"], **run
    )
    subprocess.run(["git", "push", "-q", str(root / "app.git"), "HEAD:main"], **run)  # type: ignore[call-overload]
    port = free_port()
    server, app = serve(str(root), host="127.0.0.1", port=port, user="robot", password="s3cret-up")
    host = f"127.0.0.1:{port}"
    # Reading the configuration happens here, with the user's own git and credentials (never the agent's).
    helper = "!f() { echo username=robot; echo password=s3cret-up; }; f"
    for key, value in {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", helper)
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    # The image's copy of the configuration in the workspace folder, which the clone takes over.
    (folder / ".devcontainer").mkdir(parents=True)
    (folder / ".devcontainer/devcontainer.json").write_text(config)
    try:
        h.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username="robot", password="s3cret-up"))
        created = json.loads(logged_in.ok("up", f"http://{host}/app.git", "--no-wait", "-o", "json").stdout)
        [version] = h.admin.list_template_versions("app")
        assert version.manifest.git is not None
        assert (version.manifest.git.repo, version.manifest.git.path) == (
            f"http://{host}/app.git",
            str(folder),
        )
        assert version.manifest.startup_script == ""
        ws = h.admin.get_workspace(created["id"], wait="ready", timeout=60)
    finally:
        server.shutdown()
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)
    assert (folder / "main.py").read_text() == "print()\n"
    log = subprocess.run(["git", "-C", str(folder), "log", "--format=%s"], capture_output=True, text=True)
    status = subprocess.run(
        ["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True
    )
    assert (log.stdout, status.stdout) == ("private\n", "")
    actions = [e.action for e in h.admin.audit(resource_type="workspace", resource=ws.id).audit_logs]
    assert "gitauth.release" in actions
    assert any(authorized for _method, _path, authorized in app.requests)

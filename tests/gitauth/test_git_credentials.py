"""Git with brokered credentials, through real components: a git smart-HTTP server behind basic auth on
loopback (tests/gitserver.py), the real agent as a local process (`FakeRuntime(agents=True)`), real git.

Before the workspace is ready the agent clones and checks out the task branch, asking for the credential
through `dockyard-agent git-credential` at the moment git needs it. The same paths run in Docker in
test_git_docker.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard_sdk import Forbidden, ValidationError
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.gitserver import GitApp
from tests.harness import BASE_MANIFEST, Harness

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "robot", "s3cret-token-7f1e9a"
GIT_MANIFEST: dict[str, Any] = {
    **BASE_MANIFEST,
    "name": "gitws",
    "parameters": [
        {"name": "repo", "type": "string", "format": "git-url", "default": ""},
        {"name": "branch", "type": "string", "format": "git-ref", "default": "main"},
    ],
    "startup_script": "test -d ~/project/.git",
    "lifetime": {},
    "git": {"repo": "{{ parameters.repo }}", "branch": "{{ parameters.branch }}"},
}


def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd or "/"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _create(h: Harness, repo: str, branch: str, name: str) -> m.Workspace:
    try:
        h.admin.get_template("gitws")
    except Exception:  # noqa: BLE001 - any lookup failure means "push it"
        h.template({"dockyard.yaml": yaml.safe_dump(GIT_MANIFEST, sort_keys=False)})
    created = h.admin.create_workspace(
        m.CreateWorkspaceRequest(template="gitws", name=name, parameters={"repo": repo, "branch": branch})
    )
    return h.admin.get_workspace(created.id, wait="ready", timeout=60)


def _sh(h: Harness, ws: m.Workspace, command: str) -> m.ExecResult:
    return h.admin.exec(ws.id, m.ExecRequest(command=command, timeout=60))


def _register(h: Harness, host: str) -> m.GitAuth:
    return h.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))


def test_a_missing_credential_is_a_start_error_naming_the_host_and_the_command(
    ah: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, _app = origin
    ws = _create(ah, f"http://{host}/app.git", "task-1", "nocred")

    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.START_ERROR
    assert ws.agent.error is not None
    assert ws.latest_build is not None
    assert f"run `dockyard git-auth add {host}`" in ws.agent.error
    # git's own words follow the helper's.
    assert f"cloning http://{host}/app.git failed:" in ws.agent.error
    assert "fatal: could not read Username" in ws.agent.error
    assert ws.latest_build is not None
    log = "\n".join(line.output for line in ah.admin.build_logs(ws.latest_build.id))
    assert f"admin has no git credential for {host}" in log


def test_a_repository_that_does_not_exist_is_a_start_error_with_git_s_message(
    ah: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, _app = origin
    _register(ah, host)
    ws = _create(ah, f"http://{host}/nothing.git", "task-1", "norepo")

    assert ws.agent is not None
    assert ws.agent.error is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.START_ERROR
    assert "fatal: repository" in ws.agent.error
    assert "not found" in ws.agent.error


def test_clone_branch_commit_push_with_a_brokered_credential(
    ah: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    host, bare, app = origin
    registered = _register(ah, host)
    assert (registered.host, registered.username, registered.last_used_at) == (host, USER, None)

    ws = _create(ah, f"http://{host}/app.git", "feature/auth-refactor", "withcred")

    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)
    head = _sh(ah, ws, "git -C project rev-parse --abbrev-ref HEAD")
    assert head.stdout.strip() == "feature/auth-refactor"
    assert _sh(ah, ws, "cat project/README").stdout == "hello\n"
    pushed = _sh(
        ah,
        ws,
        "cd project && echo change > CHANGE && git add CHANGE && "
        "git -c user.name=agent -c user.email=agent@example.com commit -qm change && "
        "git push -q origin feature/auth-refactor",
    )
    assert pushed.exit_code == 0, pushed.stderr
    assert git("--git-dir", str(bare), "log", "-1", "--format=%s", "feature/auth-refactor") == "change"
    # Every request git made after the first refusal carried the credential.
    assert any(authorized for _method, _path, authorized in app.requests)
    assert ah.admin.list_git_auth()[0].last_used_at is not None


def test_an_existing_task_branch_is_checked_out(ah: Harness, origin: tuple[str, Path, GitApp]) -> None:
    host, _bare, _app = origin
    _register(ah, host)
    ws = _create(ah, f"http://{host}/app.git", "existing", "existing")

    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY, ws.agent
    status = _sh(ah, ws, "git -C project status -sb").stdout
    assert status.startswith("## existing...origin/existing"), status


def test_the_credential_is_in_no_file_and_no_environment(
    ah: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, _app = origin
    _register(ah, host)
    ws = _create(ah, f"http://{host}/app.git", "task-1", "nowhere")
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY
    runtime = ah.runtime
    assert isinstance(runtime, FakeRuntime)
    home = Path(runtime.homes[ws.id])
    # Another fetch asks again; nothing was kept from the first.
    assert _sh(ah, ws, "git -C project fetch -q origin").exit_code == 0

    found = subprocess.run(["grep", "-rl", PASSWORD, str(home)], capture_output=True, text=True, check=False)
    assert found.stdout == ""
    agent = runtime.processes[ws.id].pid
    for pid in [agent, *_descendants(agent)]:
        assert PASSWORD.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    # At rest the secret is encrypted: not in the database file either.
    database = Path(ah.settings.resolved_database_url.removeprefix("sqlite:///"))
    if database.exists():
        assert PASSWORD.encode() not in database.read_bytes()


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] + [d for c in children for d in _descendants(int(c))]


def test_credentials_are_released_only_for_the_repository_s_host(
    ah: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, _app = origin
    _register(ah, host)
    ah.admin.add_git_auth(m.CreateGitAuthRequest(host="other.example", password="other-secret-1"))
    ws = _create(ah, f"http://{host}/app.git", "task-1", "hosts")

    def ask(protocol: str, asked: str) -> m.ExecResult:
        return _sh(
            ah, ws, f"printf 'protocol={protocol}\\nhost={asked}\\n\\n' | dockyard-agent git-credential get"
        )

    other = ask("https", "other.example")
    assert (other.exit_code, other.stdout) == (0, "")
    assert f"credentials are released only for http://{host}, the workspace's repository" in other.stderr
    downgrade = ask("https", host)
    assert downgrade.stdout == ""
    own = ask("http", host)
    assert own.stdout == f"username={USER}\npassword={PASSWORD}\n"
    actions = [e.action for e in ah.admin.audit(resource_type="workspace", resource=ws.id).audit_logs]
    assert actions.count("gitauth.refuse") >= 2
    assert "gitauth.release" in actions


def test_the_git_auth_api_ladder_and_validation(ah: Harness) -> None:
    alice = ah.user("alice")
    reader = ah.user("bob", scopes=[m.Scope.USER_READ])

    with pytest.raises(ValidationError) as bad:
        alice.add_git_auth(m.CreateGitAuthRequest.model_construct(host="-oProxy", username="x", password="p"))
    assert [v.field for v in bad.value.validations] == ["host"]
    assert bad.value.validations[0].detail.startswith("String should match pattern")
    with pytest.raises(Forbidden):
        reader.add_git_auth(m.CreateGitAuthRequest(host="github.com", password="p"))
    alice.add_git_auth(m.CreateGitAuthRequest(host="GitHub.com", password="alice-token"))
    # Not even an owner reads or replaces another user's credentials.
    with pytest.raises(Forbidden):
        ah.admin.list_git_auth("alice")
    anonymous = ah.http().get("/api/v2/users/me/git-auth")
    assert anonymous.status_code == 401

    listed = alice.list_git_auth()
    assert [(c.host, c.username) for c in listed] == [("github.com", "x-access-token")]
    assert (
        "alice-token"
        not in ah.http()
        .get("/api/v2/users/me/git-auth", headers={"Authorization": f"Bearer {alice.token}"})
        .text
    )
    assert reader.list_git_auth() == []
    alice.remove_git_auth("github.com")
    assert alice.list_git_auth() == []


def _until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)

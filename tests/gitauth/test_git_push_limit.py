"""`git.push: task-branch` (template) and `git_push: task-branch` (token), through real components: the agent
as a local process, its git proxy port, the control plane's git proxy and a real `git http-backend` behind
basic auth. The credential stays on the control plane; git in the workspace pushes its task branch and nothing
else, and the refusal comes from the proxy, before anything reaches the server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from dockyard_sdk import Forbidden
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime
from tests.gitauth.test_git_credentials import GIT_MANIFEST, PASSWORD, USER, _descendants, git
from tests.gitserver import GitApp
from tests.harness import Harness, make_harness

pytestmark = pytest.mark.timeout(120)

COMMIT = "git -c user.name=agent -c user.email=agent@example.com commit -qm"
REFUSED = "dockyard: this workspace may push only its task branch refs/heads/task-1"


def _refs(bare: Path) -> str:
    return git("--git-dir", str(bare), "for-each-ref", "--format=%(refname) %(objectname)")


def _ready(h: Harness, client: object, name: str, template: str, repo: str) -> m.Workspace:
    assert hasattr(client, "create_workspace")
    created = client.create_workspace(
        m.CreateWorkspaceRequest(template=template, name=name, parameters={"repo": repo, "branch": "task-1"})
    )
    ws = h.admin.get_workspace(created.id, wait="ready", timeout=60)
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)
    return ws


def test_a_limited_workspace_pushes_its_task_branch_and_nothing_else(
    ah: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    host, bare, _app = origin
    manifest = {**GIT_MANIFEST, "name": "limited", "git": {**GIT_MANIFEST["git"], "push": "task-branch"}}
    ah.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})
    ah.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    ws = _ready(ah, ah.admin, "limited", "limited", f"http://{host}/app.git")

    def sh(command: str) -> m.ExecResult:
        return ah.admin.exec(ws.id, m.ExecRequest(command=command, timeout=60))

    # Cloned through the proxy; the stored remote is still the repository's own URL.
    assert sh("git -C project rev-parse --abbrev-ref HEAD").stdout.strip() == "task-1"
    assert sh("git -C project config remote.origin.url").stdout.strip() == f"http://{host}/app.git"
    pushed = sh(
        f"cd project && echo change > CHANGE && git add CHANGE && {COMMIT} change && git push -q origin task-1"
    )
    assert pushed.exit_code == 0, pushed.stderr
    assert git("--git-dir", str(bare), "log", "-1", "--format=%s", "task-1") == "change"

    before = _refs(bare)
    main = sh("cd project && git push origin HEAD:main")
    assert main.exit_code == 1
    assert f" ! [remote rejected] HEAD -> main ({REFUSED})" in main.stderr
    assert f"remote: {REFUSED}" in main.stderr
    # A tag and a delete in one push with the task branch: all of it is refused, the task branch included.
    mixed = sh(
        f"cd project && git tag v1 && {COMMIT} more --allow-empty && git push origin task-1 v1 :existing"
    )
    assert mixed.exit_code == 1
    assert f"! [remote rejected] v1 -> v1 ({REFUSED})" in mixed.stderr
    assert f"! [remote rejected] existing ({REFUSED})" in mixed.stderr
    assert "task-1 -> task-1 (not pushed: another ref in this push was refused)" in mixed.stderr
    assert _refs(bare) == before

    # Around the proxy there is nothing to push with: the helper never hands the credential out.
    helper = sh(f"printf 'protocol=http\\nhost={host}\\n\\n' | dockyard-agent git-credential get")
    assert (helper.exit_code, helper.stdout) == (0, "")
    assert "this workspace may push only its task branch" in helper.stderr
    direct = sh("cd project && GIT_CONFIG_COUNT=1 GIT_TERMINAL_PROMPT=0 git push origin HEAD:main")
    assert direct.exit_code == 128
    assert "could not read Username" in direct.stderr
    assert _refs(bare) == before

    runtime = ah.runtime
    assert isinstance(runtime, FakeRuntime)
    found = subprocess.run(
        ["grep", "-rl", PASSWORD, runtime.homes[ws.id]], capture_output=True, text=True, check=False
    )
    assert found.stdout == ""
    agent = runtime.processes[ws.id].pid
    for pid in [agent, *_descendants(agent)]:
        assert PASSWORD.encode() not in Path(f"/proc/{pid}/environ").read_bytes()

    rows = ah.admin.audit(resource_type="workspace", resource=ws.id).audit_logs
    pushes = sorted(
        (r.action, *sorted(r.detail["refs"])) for r in rows if r.action.startswith("gitauth.push")
    )
    assert pushes == [
        ("gitauth.push", "refs/heads/task-1"),
        ("gitauth.push_refused", "refs/heads/existing", "refs/heads/task-1", "refs/tags/v1"),
        ("gitauth.push_refused", "refs/heads/main"),
    ]


def test_a_token_limited_to_task_branches_limits_the_workspaces_it_creates(
    ah: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    host, bare, _app = origin
    ah.template({"dockyard.yaml": yaml.safe_dump(GIT_MANIFEST, sort_keys=False)})
    ah.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    created = ah.admin.create_token(m.CreateTokenRequest(name="agents", git_push=m.GitPush.TASK_BRANCH))
    assert created.git_push == m.GitPush.TASK_BRANCH
    limited = ah.client(created.key)
    # It cannot mint a token without the limit.
    with pytest.raises(Forbidden) as refused:
        limited.create_token(m.CreateTokenRequest(name="wider"))
    assert [(v.field, v.detail) for v in refused.value.validations] == [
        ("git_push", "must be task-branch: your token pushes only task branches")
    ]
    assert [t.name for t in ah.admin.list_tokens()].count("wider") == 0

    # The template says `any`; the token's limit holds all the same.
    ws = _ready(ah, limited, "bytoken", "gitws", f"http://{host}/app.git")
    before = _refs(bare)
    main = ah.admin.exec(
        ws.id,
        m.ExecRequest(
            command=f"cd project && {COMMIT} x --allow-empty && git push origin HEAD:main", timeout=60
        ),
    )
    assert main.exit_code == 1
    assert f"({REFUSED})" in main.stderr
    assert _refs(bare) == before


def test_a_git_host_the_operator_denies_fails_the_clone_and_nothing_reaches_it(
    tmp_path: Path, database_url: str, origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, app = origin
    # `--outbound-deny 127.0.0.0/8`: the git host listens on loopback.
    h = make_harness(tmp_path, database_url, runtime=FakeRuntime(agents=True), outbound_deny=["127.0.0.0/8"])
    try:
        manifest = {**GIT_MANIFEST, "name": "limited", "git": {**GIT_MANIFEST["git"], "push": "task-branch"}}
        h.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})
        h.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
        created = h.admin.create_workspace(
            m.CreateWorkspaceRequest(
                template="limited",
                name="denied",
                parameters={"repo": f"http://{host}/app.git", "branch": "t"},
            )
        )
        ws = h.admin.get_workspace(created.id, wait="ready", timeout=60)

        assert ws.agent is not None
        assert ws.agent.lifecycle == m.AgentLifecycle.START_ERROR
        assert ws.agent.error is not None
        assert (
            f"dockyard: cannot reach {host}: 127.0.0.1 is in 127.0.0.0/8, a range this server does not connect "
            "to for its users"
        ) in ws.agent.error
        assert app.requests == []
    finally:
        h.close()

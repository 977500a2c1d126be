"""Git mirrors (gitauth/mirrors.py): the server fetches a repository once for many workspace starts, and the
workspaces clone it from a read-only mount. Against a real git HTTP server (git http-backend behind basic auth,
on loopback) and, for the workspaces, real Docker."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from dockyard.agent import agent
from dockyard.gitauth.mirrors import CLONES_LOCK, MAX_PACKS, REPO, STATE, Mirrors
from dockyard.outbound import OutboundPolicy
from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.naming import container_name
from dockyard_sdk import models as m
from tests.gitauth.test_git_credentials import GIT_MANIFEST, PASSWORD, USER, git
from tests.gitserver import GitApp
from tests.harness import Harness, docker_harness

pytestmark = pytest.mark.timeout(300)

CREDENTIAL = (USER, PASSWORD)


def _fetches(app: GitApp) -> int:
    """Fetches (and clones) the git server answered: one ref advertisement each."""
    return sum(1 for method, path, _ in app.requests if method == "GET" and path.endswith("/info/refs"))


def _state(folder: Path, after: float, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = json.loads((folder / STATE).read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("began", 0) >= after:
            return state
        time.sleep(0.02)
    raise AssertionError(f"no fetch began after {after} within {timeout} s")


def _fetched(mirrors: Mirrors, folder: Path, repo: str) -> None:
    """A fetch asked for now has worked and its thread is done (so a prune or a roll-up sees it settled)."""
    after = time.time()
    mirrors.refresh(folder, repo, after=after, credential=CREDENTIAL)
    assert _state(folder, after)["ok"] is True
    while mirrors._mirrors[folder].running:
        time.sleep(0.01)


def _push_upstream(bare: Path, work: Path, message: str, *refspecs: str) -> None:
    """A commit `message` on main, pushed straight into the served repository (with `refspecs` too)."""
    git("clone", str(bare), str(work))
    (work / message).write_text(f"{message}\n")
    git("add", message, cwd=work)
    git("commit", "-m", message, cwd=work)
    git("push", "origin", "HEAD:main", *refspecs, cwd=work)


def _owner_mirror(tmp_path: Path, host: str) -> tuple[str, Mirrors, Path]:
    """The test repository's URL, a process's mirrors and owner-1's mirror folder of it."""
    repo = f"http://{host}/app.git"
    mirrors = Mirrors(tmp_path / "mirrors", OutboundPolicy.with_denied([]))
    return repo, mirrors, mirrors.folder("owner-1", repo)


def test_a_mirror_is_fetched_once_for_many_requests_and_again_for_a_later_one(
    tmp_path: Path, origin: tuple[str, Path, GitApp]
) -> None:
    host, bare, app = origin
    repo, mirrors, folder = _owner_mirror(tmp_path, host)
    after = time.time()
    threads = [
        threading.Thread(
            target=mirrors.refresh, args=(folder, repo), kwargs={"after": after, "credential": CREDENTIAL}
        )
        for _ in range(20)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = _state(folder, after)
    assert state["ok"] is True, state
    assert _fetches(app) == 1
    mirror = str(folder / REPO)
    assert git("--git-dir", mirror, "rev-parse", "main") == git("--git-dir", str(bare), "rev-parse", "main")
    assert (
        git("--git-dir", mirror, "for-each-ref", "--format=%(refname)")
        == "refs/heads/existing\nrefs/heads/main"
    )
    assert git("--git-dir", mirror, "symbolic-ref", "HEAD") == "refs/heads/main"
    # Readable by any user (a workspace's), and no credential anywhere in it.
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    assert all(p.stat().st_mode & 0o004 for p in folder.rglob("*"))
    assert not [p for p in folder.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]

    # A request already served by a fetch that began after it makes none.
    mirrors.refresh(folder, repo, after=after, credential=CREDENTIAL)
    time.sleep(0.3)
    assert _fetches(app) == 1
    # A push upstream, then a later request: fetched again, pruned branches gone.
    work = tmp_path / "work"
    _push_upstream(bare, work, "second", ":existing")
    later = time.time()
    mirrors.refresh(folder, repo, after=later, credential=CREDENTIAL)
    assert _state(folder, later)["ok"] is True
    assert _fetches(app) == 2
    assert git("--git-dir", mirror, "log", "-1", "--format=%s", "main") == "second"
    assert git("--git-dir", mirror, "for-each-ref", "--format=%(refname)") == "refs/heads/main"
    assert git("--git-dir", mirror, "config", "gc.auto") == "0"


def test_a_failed_fetch_says_why_and_a_denied_host_is_never_contacted(
    tmp_path: Path, origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, app = origin
    repo, mirrors, folder = _owner_mirror(tmp_path, host)
    after = time.time()
    mirrors.refresh(folder, repo, after=after, credential=(USER, "wrong"))
    state = _state(folder, after)
    assert state["ok"] is False
    assert "could not read Username" in state["error"], state  # git, after the 401
    assert not (folder / REPO).exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([CLONES_LOCK, STATE])

    asked = len(app.requests)
    denied = Mirrors(tmp_path / "denied", OutboundPolicy.with_denied(["127.0.0.0/8"]))
    folder = denied.folder("owner-1", repo)
    after = time.time()
    denied.refresh(folder, repo, after=after, credential=CREDENTIAL)
    state = _state(folder, after)
    assert state["ok"] is False
    assert "a range this server does not connect to" in state["error"], state
    assert len(app.requests) == asked


def test_two_processes_on_one_data_dir_take_turns_and_the_state_never_goes_back(
    tmp_path: Path, origin: tuple[str, Path, GitApp]
) -> None:
    """The server and a `dockyard provisioner` beside it share the data dir: two `Mirrors` on one folder."""
    host, _bare, app = origin
    repo = f"http://{host}/app.git"
    processes = [Mirrors(tmp_path / "mirrors", OutboundPolicy.with_denied([])) for _ in range(2)]
    folder = processes[0].folder("owner-1", repo)
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError, ValueError):  # not written yet, or being replaced
                seen.append(json.loads((folder / STATE).read_text())["began"])
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(3):
            after = time.time()
            for mirrors in processes:
                mirrors.refresh(folder, repo, after=after, credential=CREDENTIAL)
            assert _state(folder, after)["ok"] is True
            while any(m._mirrors[folder].running for m in processes):
                time.sleep(0.01)
    finally:
        done.set()
        watcher.join()
    assert seen == sorted(seen)
    assert _fetches(app) == 6
    assert json.loads((folder / STATE).read_text())["ok"] is True


def test_a_mirror_unused_for_a_week_is_removed_and_one_in_use_is_kept(
    tmp_path: Path, origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, _app = origin
    mirrors = Mirrors(tmp_path / "mirrors", OutboundPolicy.with_denied([]))
    old = mirrors.folder("owner-1", f"http://{host}/app.git")
    fresh = mirrors.folder("owner-2", f"http://{host}/app.git")
    _fetched(mirrors, old, f"http://{host}/app.git")
    week = time.time() - 8 * 24 * 3600
    os.utime(old, (week, week))
    busy = mirrors.folder("owner-3", f"http://{host}/app.git")
    os.utime(busy, (week, week))
    with open(busy.parent / f"{busy.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a fetch under way in a process beside this one
        assert mirrors.prune() == [old]
    assert not old.exists()
    assert old not in mirrors._mirrors  # nor kept in memory
    assert fresh.is_dir()
    assert busy.is_dir()
    # Used again: made again, and fetched as new.
    again = mirrors.folder("owner-1", f"http://{host}/app.git")
    later = time.time()
    mirrors.refresh(again, f"http://{host}/app.git", after=later, credential=CREDENTIAL)
    assert _state(again, later)["ok"] is True
    assert (again / REPO / "HEAD").exists()


# POSIX locks never conflict within one process: a workspace's agent and the server are two.
_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR if sys.argv[2] == "write" else os.O_RDONLY)
fcntl.lockf(fd, fcntl.LOCK_EX if sys.argv[2] == "write" else fcntl.LOCK_SH)
print("held", flush=True)
sys.stdin.read()
"""
_TRY_WRITE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    sys.exit(1)
"""


@contextlib.contextmanager
def _locked(folder: Path, kind: str) -> Iterator[None]:
    """`clones.lock` held by another process: "read" as an agent cloning, "write" as the server's roll-up."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK, str(folder / CLONES_LOCK), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(10)


def _packs(folder: Path) -> int:
    return len(list((folder / REPO / "objects" / "pack").glob("*.pack")))


def test_fetches_add_packs_that_are_rolled_up_only_while_no_clone_reads_the_mirror(
    tmp_path: Path, origin: tuple[str, Path, GitApp]
) -> None:
    host, bare, _app = origin
    repo, mirrors, folder = _owner_mirror(tmp_path, host)
    mirror = str(folder / REPO)

    _fetched(mirrors, folder, repo)
    work = tmp_path / "work"
    git("clone", str(bare), str(work))
    with _locked(folder, "read"):
        for n in range(MAX_PACKS + 2):
            (work / f"file-{n}").write_text(f"{n}\n")
            git("add", "-A", cwd=work)
            git("commit", "-m", f"commit {n}", cwd=work)
            git("push", "origin", "HEAD:main", cwd=work)
            _fetched(mirrors, folder, repo)
        # A pack for each fetch, even of one commit, and none rolled up under a clone's read lock.
        assert _packs(folder) == MAX_PACKS + 3
    _fetched(mirrors, folder, repo)  # nothing new to fetch; the roll-up runs now that nobody reads the mirror
    assert _packs(folder) <= 2
    assert not list((folder / REPO / "objects").glob("[0-9a-f][0-9a-f]/*"))
    git("--git-dir", mirror, "fsck", "--no-progress")
    assert git("--git-dir", mirror, "rev-parse", "main") == git("rev-parse", "HEAD", cwd=work)
    assert git("--git-dir", mirror, "rev-list", "--count", "main") == git(
        "rev-list", "--count", "HEAD", cwd=work
    )
    rolled = sorted(p.name for p in (folder / REPO / "objects" / "pack").iterdir())
    _fetched(mirrors, folder, repo)
    assert sorted(p.name for p in (folder / REPO / "objects" / "pack").iterdir()) == rolled  # nothing to do


def test_an_agent_clones_under_a_read_lock_that_a_workspace_cannot_make_a_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "mirror"
    (folder / REPO).mkdir(parents=True)
    (folder / CLONES_LOCK).touch()
    (folder / STATE).write_text(json.dumps({"began": 100.0, "ok": True, "error": ""}))
    # A workspace opens the file through its read-only mount: no write lock, so it cannot stall its owner's
    # other starts (flock(2) would allow it).
    fd = os.open(folder / CLONES_LOCK, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="Bad file descriptor") as refused:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert refused.value.errno == errno.EBADF
    finally:
        os.close(fd)

    offline = agent.Agent("/nonexistent.sock", "token")
    plan = {"mirror": str(folder), "mirror_after": 99.0}
    path, held = asyncio.run(offline._git_mirror(plan, str(tmp_path / "project"), 30))
    assert path == str(folder / REPO)
    assert held is not None
    try:  # the server's roll-up cannot begin while the agent clones
        assert subprocess.run([sys.executable, "-c", _TRY_WRITE, str(folder / CLONES_LOCK)]).returncode == 1
    finally:
        os.close(held)
    assert subprocess.run([sys.executable, "-c", _TRY_WRITE, str(folder / CLONES_LOCK)]).returncode == 0

    # A roll-up that outlasts the agent's wait: the clone goes over the network, and the log says why.
    monkeypatch.setattr(agent, "GIT_MIRROR_LOCK_WAIT", 0.3)
    with _locked(folder, "write"):
        assert asyncio.run(offline._git_mirror(plan, str(tmp_path / "project"), 30)) == ("", None)
    logged = [line for message in offline.outbox if message["type"] == "log" for line in message["lines"]]
    assert "its packs being rolled up" in "\n".join([*logged, *offline.batchers["agent"].lines])
    # A mirror made by a server without clone locks is cloned without one.
    (folder / CLONES_LOCK).unlink()
    assert asyncio.run(offline._git_mirror(plan, str(tmp_path / "project"), 30)) == (str(folder / REPO), None)


# --- through real Docker ------------------------------------------------------------------------------------


@pytest.fixture
def dh(tmp_path: Path, database_url: str, engine: DockerRuntime, base_image: str) -> Iterator[Harness]:
    with docker_harness(tmp_path, database_url, subnet_pool="10.235.0.0/16", workers=4) as harness:
        yield harness


def _limited_template(dh: Harness, *, mirror: bool = True) -> None:
    manifest = {
        **GIT_MANIFEST,
        "git": {**GIT_MANIFEST["git"], "push": "task-branch", "mirror": mirror},
        "network": {"egress": "none"},
        "resources": {"cpu": 1, "memory": "512Mi"},
    }
    dh.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})


def _start(client: Any, name: str, repo: str, branch: str) -> m.Workspace:
    return client.create_workspace(
        m.CreateWorkspaceRequest(template="gitws", name=name, parameters={"repo": repo, "branch": branch})
    )


def _ready(client: Any, workspace_id: str) -> m.Workspace:
    ws = client.get_workspace(workspace_id, wait="ready", timeout=120)
    assert ws.agent is not None
    assert (ws.agent.lifecycle, ws.agent.error) == (m.AgentLifecycle.READY, None)
    return ws


def _log(client: Any, ws: m.Workspace) -> str:
    assert ws.latest_build is not None
    return "\n".join(line.output for line in client.build_logs(ws.latest_build.id))


@pytest.mark.docker
def test_workspaces_clone_from_the_mirror_and_push_through_the_proxy(
    dh: Harness, origin: tuple[str, Path, GitApp], tmp_path: Path
) -> None:
    host, bare, app = origin
    repo = f"http://{host}/app.git"
    _limited_template(dh)
    dh.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    ids = [_start(dh.admin, f"agent-{i}", repo, f"task-{i}").id for i in range(3)]
    workspaces = [_ready(dh.admin, workspace_id) for workspace_id in ids]
    for ws in workspaces:
        assert f"cloned {repo} from the server's mirror" in _log(dh.admin, ws)
    # No workspace reached the repository to clone: the proxy, which its git would have gone through, released
    # the credential to none of them.
    assert dh.admin.audit(action="gitauth.release").audit_logs == []
    assert 1 <= _fetches(app) <= 3

    ws = workspaces[0]

    def sh(command: str) -> m.ExecResult:
        return dh.admin.exec(ws.id, m.ExecRequest(command=command, timeout=60))

    # A clone of its own: on the task branch, `origin` the repository (not the mirror), every branch known.
    assert sh("git -C project rev-parse --abbrev-ref HEAD").stdout.strip() == "task-0"
    assert sh("git -C project config remote.origin.url").stdout.strip() == repo
    assert "origin/existing" in sh("git -C project branch -r").stdout
    assert sh("git -C project fsck --no-progress 2>&1 && echo ok").stdout.strip().endswith("ok")
    assert sh("test -e project/.git/objects/info/alternates").exit_code == 1
    # The mirror is read-only in the workspace, and the push goes through the proxy, limited to the branch.
    assert sh("touch /run/dockyard-git-mirror/x").exit_code != 0
    commit = "git -c user.name=a -c user.email=a@example.com commit -qm"
    pushed = sh(f"cd project && echo x > X && git add X && {commit} from-mirror && git push -q origin task-0")
    assert pushed.exit_code == 0, pushed.stderr
    assert git("--git-dir", str(bare), "log", "-1", "--format=%s", "task-0") == "from-mirror"
    assert sh("cd project && git push origin HEAD:main").exit_code == 1
    # Fetching later reaches the repository itself (through the proxy): the pushed branch is there.
    fetched = sh("cd project && git fetch -q origin && git rev-parse origin/task-0")
    assert fetched.exit_code == 0, fetched.stderr
    assert {e.resource_id for e in dh.admin.audit(action="gitauth.release").audit_logs} == {ws.id}
    container = docker.from_env().containers.get(container_name(ws.id))
    found = container.exec_run(["grep", "-rlsF", PASSWORD, "/run/dockyard-git-mirror", "/home"], user="root")
    assert (found.exit_code, found.output) == (1, b"")

    # A commit pushed upstream after those starts reaches a workspace started after it.
    work = tmp_path / "upstream"
    _push_upstream(bare, work, "later")
    late = _ready(dh.admin, _start(dh.admin, "late", repo, "task-late").id)
    assert f"cloned {repo} from the server's mirror" in _log(dh.admin, late)
    done = dh.admin.exec(late.id, m.ExecRequest(command="git -C project log -1 --format=%s", timeout=60))
    assert done.stdout.strip() == "later"


@pytest.mark.docker
def test_each_owner_has_a_mirror_of_their_own(dh: Harness, origin: tuple[str, Path, GitApp]) -> None:
    host, _bare, _app = origin
    repo = f"http://{host}/app.git"
    _limited_template(dh)
    bob = dh.user("bob")
    for client in (dh.admin, bob):
        client.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    mine = _ready(dh.admin, _start(dh.admin, "mine", repo, "t1").id)
    theirs = _ready(bob, _start(bob, "theirs", repo, "t2").id)
    engine = docker.from_env()
    sources = []
    for ws in (mine, theirs):
        mounts = engine.containers.get(container_name(ws.id)).attrs["Mounts"]
        [mount] = [x for x in mounts if x["Destination"] == "/run/dockyard-git-mirror"]
        assert mount["RW"] is False
        sources.append(mount["Source"])
    assert sources[0] != sources[1]
    assert Path(sources[0]).parent.name == mine.owner_id
    assert Path(sources[1]).parent.name == theirs.owner_id


@pytest.mark.docker
def test_a_failed_mirror_fetch_falls_back_to_the_network_clone(
    dh: Harness, origin: tuple[str, Path, GitApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, _bare, _app = origin
    repo = f"http://{host}/app.git"
    # The server's own fetch fails (as when it cannot reach a host that the workspace can): the agent is told
    # at once and clones through the git proxy, as without a mirror.
    monkeypatch.setattr(Mirrors, "_fetch", lambda self, folder, repo, credential: "simulated failure")
    _limited_template(dh)
    dh.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    started = time.monotonic()
    ws = _ready(dh.admin, _start(dh.admin, "fallback", repo, "task-f").id)
    assert time.monotonic() - started < 60
    log = _log(dh.admin, ws)
    assert "the server could not fetch its mirror of the repository: simulated failure" in log
    assert "cloned " not in log
    done = dh.admin.exec(
        ws.id, m.ExecRequest(command="git -C project rev-parse --abbrev-ref HEAD", timeout=60)
    )
    assert done.stdout.strip() == "task-f"


def _clones_without_a_mirror(h: Harness, host: str, *, mirror: bool) -> None:
    """A workspace of the limited template (asking for a mirror or not) clones over the network: no mount, no
    mirror folder on the server."""
    _limited_template(h, mirror=mirror)
    h.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    ws = _ready(h.admin, _start(h.admin, "plain", f"http://{host}/app.git", "t").id)
    assert "from the server's mirror" not in _log(h.admin, ws)
    mounts = docker.from_env().containers.get(container_name(ws.id)).attrs["Mounts"]
    assert "/run/dockyard-git-mirror" not in [x["Destination"] for x in mounts]
    assert not (Path(h.settings.data_dir) / "git-mirrors").exists()


@pytest.mark.docker
def test_a_template_that_asks_for_no_mirror_gets_none(dh: Harness, origin: tuple[str, Path, GitApp]) -> None:
    _clones_without_a_mirror(dh, origin[0], mirror=False)


@pytest.mark.docker
def test_a_server_without_mirrors_mounts_none(
    tmp_path: Path,
    database_url: str,
    engine: DockerRuntime,
    base_image: str,
    origin: tuple[str, Path, GitApp],
) -> None:
    with docker_harness(tmp_path, database_url, subnet_pool="10.235.0.0/16", git_mirrors=False) as harness:
        _clones_without_a_mirror(harness, origin[0], mirror=True)


@pytest.mark.docker
def test_a_folder_the_image_filled_is_taken_over_from_the_mirror(
    dh: Harness, origin: tuple[str, Path, GitApp]
) -> None:
    """The clone into a folder that already holds files (a dev container's workspace folder; here the home
    with its dotfiles) goes beside it and moves in, from the mirror as from the network."""
    host, _bare, _app = origin
    repo = f"http://{host}/app.git"
    manifest = {
        **GIT_MANIFEST,
        "git": {**GIT_MANIFEST["git"], "path": "/home/dev", "push": "task-branch", "mirror": True},
        "startup_script": "test -f ~/README",
        "network": {"egress": "none"},
        "resources": {"cpu": 1, "memory": "512Mi"},
    }
    dh.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})
    dh.admin.add_git_auth(m.CreateGitAuthRequest(host=host, username=USER, password=PASSWORD))
    ws = _ready(dh.admin, _start(dh.admin, "filled", repo, "task-h").id)
    assert f"cloned {repo} from the server's mirror" in _log(dh.admin, ws)
    done = dh.admin.exec(
        ws.id, m.ExecRequest(command="git -C ~ rev-parse --abbrev-ref HEAD && test -f ~/.bashrc", timeout=60)
    )
    assert (done.exit_code, done.stdout.strip()) == (0, "task-h")

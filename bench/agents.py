"""Agent fleet benchmark: N coding agents run the product brief's five steps at once, against bare Docker.

    .venv/bin/python bench/agents.py                 # 10, 50 and 200 agents (a long run)
    .venv/bin/python bench/agents.py --quick         # 10 agents
    .venv/bin/python bench/agents.py --sizes 10,50   # chosen fleet sizes
    .venv/bin/python bench/agents.py --ttl 90s       # how long each workspace lives (default 2m)

Needs a running Docker engine and the base image. Per fleet size N, in one run:
- baseline: N bare `docker run -d` of the base image + `docker exec … true`, at a concurrency of N;
- N agents at once, each: (1) create a workspace as the brief prints it (`curl -d '{…}'`: a JSON body with curl's
  default form content type, `rich_parameters` with `repo`, `branch` and a TTL as a string) from a template with a
  `git:` section, so that (2) the agent clones the repository and makes the task branch before the workspace is
  ready; (3) edit a file and run the project's tests through exec; (4) commit and push the branch (the credential
  brokered by the control plane), then `dockyard-agent report done`; (5) the TTL deletes the workspace.
Prints creates/s, time to ready p50/p95 and all ready against the baseline (issue 12 target <= 1.5), exec (tests)
and push p50, failures, the server's peak RSS, and once every TTL has run out: workspaces left and this
deployment's containers, volumes and networks left (target 0 each).

The git server is `tests/gitserver.py` (git http-backend behind basic auth) in a container of this benchmark's own,
joined to each workspace's network as `git.test` (workspaces have no egress, and bridges do not reach each other),
as tests/gitauth/test_git_docker.py does. The agent clones before the workspace is ready, so the host must be on
the network first: the server keeps N internal warm networks (made before each fleet, and joined), which the
creates claim; the bare runs likewise start on networks that exist. Leftovers are counted per workspace id. Nothing but this run's own objects and
its server's deployment is touched or removed. Runs from the install's virtualenv (no pytest).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker as dockerlib
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import provision  # noqa: E402
from provision import IMAGE, bare_parallel, docker, percentile, remove_baseline, report, rss_peak_mb, server  # noqa: E402

from dockyard_sdk import Client  # noqa: E402
from dockyard_sdk import models as m  # noqa: E402

GITSERVER = ROOT / "tests" / "gitserver.py"
GIT_HOST = "git.test:8080"
GIT_USER, GIT_PASSWORD = "bench", uuid.uuid4().hex
TEMPLATE = {
    "name": "agent-bench",
    "description": "one coding-agent task (bench/agents.py)",
    "image": IMAGE,
    "parameters": [
        {"name": "repo", "type": "string", "format": "git-url", "default": ""},
        {"name": "branch", "type": "string", "format": "git-ref", "default": "main"},
        {"name": "ttl_minutes", "type": "number", "default": 2, "validation": {"min": 1, "max": 60}},
    ],
    "resources": {"cpu": 1, "memory": "512Mi"},
    "git": {"repo": "{{ parameters.repo }}", "branch": "{{ parameters.branch }}", "path": "project"},
    "startup_script": "test -d ~/project/.git",
    "lifetime": {"ttl": "{{ parameters.ttl_minutes }}m", "on_ttl": "delete"},
    "network": {"egress": "none"},
}
# The project the agents work on: a module and its tests, run with the standard library's unittest.
PROJECT = {
    "calc.py": "def add(a, b):\n    return a + b\n",
    "test_calc.py": "import unittest\n\nimport calc\n\n\nclass T(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(calc.add(2, 3), 5)\n",
}
EDIT_AND_TEST = (
    "cd ~/project && printf 'def sub(a, b):\\n    return a - b\\n' >> calc.py && python3 -m unittest -q 2>&1"
)
COMMIT_AND_PUSH = (
    "cd ~/project && git add -A && git -c user.name=agent -c user.email=agent@bench.test commit -qm 'Add sub' "
    "&& git push -q origin HEAD"
)


def git(*args: str, cwd: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd or "/"), "GIT_CONFIG_NOSYSTEM": "1"}
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@bench.test"]
    return subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


class GitServer:
    """The git host: a container of this run's own, joined to every new network of one deployment."""

    def __init__(self, work: Path) -> None:
        root = work / "srv"
        root.mkdir()
        bare = root / "app.git"
        git("init", "-q", "--bare", "--initial-branch=main", str(bare))
        seed = work / "seed"
        git("clone", "-q", str(bare), str(seed))
        for name, text in PROJECT.items():
            (seed / name).write_text(text)
        git("add", "-A", cwd=seed)
        git("commit", "-qm", "project", cwd=seed)
        git("push", "-q", "origin", "HEAD:main", cwd=seed)
        # Not the baseline's label: the bare runs' cleanup removes everything that carries it.
        # The server runs as root in its container and writes pushed objects there.
        subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)
        self.bare = bare
        self.container = docker(
            "run", "-d", "--label", f"{provision.BASELINE}-git", "-v", f"{root}:/srv/git", "-v",
            f"{GITSERVER}:/gitserver.py:ro", IMAGE, "python3", "/gitserver.py", "/srv/git", "8080", GIT_USER,
            GIT_PASSWORD,
        )  # fmt: skip
        self._events: subprocess.Popen[str] | None = None
        self.joined = 0
        self.deployment = ""

    def follow(self, deployment: str) -> None:
        """Join each network the deployment makes, as soon as the engine reports it."""
        self.deployment = deployment
        self.engine = dockerlib.from_env(timeout=300)
        # Network events carry no labels: the name says "a workspace's", an inspect says whose.
        self._events = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=network", "--filter",
             "event=create"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._join_all, daemon=True).start()

    def _join_all(self) -> None:
        assert self._events is not None
        assert self._events.stdout is not None
        with ThreadPoolExecutor(8) as pool:
            for line in self._events.stdout:
                actor = json.loads(line)["Actor"]
                if actor.get("Attributes", {}).get("name", "").startswith("dockyard-ws-"):
                    pool.submit(self._join, actor["ID"])

    def join_existing(self) -> int:
        """Join every network of the deployment not joined yet; returns how many the git host is on."""
        networks = self.engine.api.networks(filters={"label": f"dockyard.deployment={self.deployment}"})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(self._join, [n["Id"] for n in networks]))
        return len(networks)

    def _join(self, network: str) -> None:
        try:
            attrs = self.engine.api.inspect_network(network)
            if (attrs.get("Labels") or {}).get("dockyard.deployment") != self.deployment:
                return
            if self.container in (attrs.get("Containers") or {}):
                return
            self.engine.api.connect_container_to_network(self.container, network, aliases=["git.test"])
            self.joined += 1
        except dockerlib.errors.APIError as exc:
            # Gone again (a workspace deleted) or joined meanwhile: nothing to do.
            if exc.status_code not in (403, 404, 409):
                print(f"cannot join the git host to network {network}: {exc}", file=sys.stderr)

    def leave(self, workspace_id: str) -> None:
        """Leave a workspace's network once its agent has pushed: a network with the git host still on it
        cannot be removed, and the TTL's delete would fail on it."""
        # Not on it (a create that failed early) or the network gone: nothing to leave.
        with contextlib.suppress(dockerlib.errors.APIError):
            self.engine.api.disconnect_container_from_network(
                self.container, f"dockyard-ws-{workspace_id}", force=True
            )

    def branches(self) -> int:
        return len(git("--git-dir", str(self.bare), "branch", "--list", "task-*").split())

    def close(self) -> None:
        if self._events is not None:
            self._events.terminate()
            self.engine.close()
            self._events = None
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)


@dataclass
class Fleet:
    accepted: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    tests: list[float] = field(default_factory=list)
    pushes: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


def brief_create(http: httpx.Client, index: int, run: str, ttl_minutes: str) -> str:
    """The brief's request as curl sends it: `-d '{…}'` with no Content-Type header means curl's default."""
    body = {
        "template_id": "agent-bench",
        "name": f"agent-task-{run}-{index}",
        "rich_parameters": {
            "repo": f"http://{GIT_HOST}/app.git",
            "branch": f"task-{run}-{index}",
            "ttl_minutes": ttl_minutes,
        },
    }
    reply = http.post(
        "/api/v2/workspaces",
        content=json.dumps(body),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if reply.status_code != 201:
        raise RuntimeError(f"create answered {reply.status_code}: {reply.text[:300]}")
    return str(reply.json()["id"])


def agent(
    client: Client,
    http: httpx.Client,
    gitserver: GitServer,
    index: int,
    run: str,
    ttl: str,
    fleet: Fleet,
) -> None:
    sent = time.perf_counter()
    workspace_id = brief_create(http, index, run, ttl)
    fleet.ids.add(workspace_id)
    fleet.accepted.append(time.perf_counter() - sent)
    ws = client.get_workspace(workspace_id, wait="ready", timeout=600)
    if ws.agent is None or ws.agent.lifecycle != m.AgentLifecycle.READY:
        error = ws.agent.error if ws.agent is not None else ws.status_reason
        raise RuntimeError(f"{ws.name} is {ws.status.value}, agent not ready: {error}")
    fleet.ready.append(time.perf_counter() - sent)
    for command, times in ((EDIT_AND_TEST, fleet.tests), (COMMIT_AND_PUSH, fleet.pushes)):
        started = time.perf_counter()
        result = client.exec(workspace_id, m.ExecRequest(command=command, timeout=300))
        if result.exit_code != 0:
            raise RuntimeError(
                f"{ws.name}: `{command[:40]}…` exited {result.exit_code}: {result.stderr[-300:]}"
            )
        times.append(time.perf_counter() - started)
    done = client.exec(
        workspace_id, m.ExecRequest(command="dockyard-agent report done 'Added sub, tests pass'", timeout=60)
    )
    if done.exit_code != 0:
        raise RuntimeError(f"{ws.name}: report done exited {done.exit_code}: {done.stderr[-300:]}")
    gitserver.leave(workspace_id)


def leftovers(client: Client, deployment: str, workspace_ids: set[str]) -> tuple[int, dict[str, int]]:
    """The fleet's workspaces not yet deleted, and the engine objects of this deployment labelled with one of
    them (the warm networks the pool keeps belong to no workspace yet)."""
    live = [
        w
        for w in client.list_workspaces(limit=1000).workspaces
        if w.id in workspace_ids and w.status != m.WorkspaceStatus.DELETED
    ]
    label = f"label=dockyard.deployment={deployment}"
    owner = '{{.Label "dockyard.workspace.id"}}'
    found = {
        kind: len(set(docker(*command, "--filter", label, "--format", owner).split()) & workspace_ids)
        for kind, command in (
            ("containers", ("ps", "-a")),
            ("volumes", ("volume", "ls")),
            ("networks", ("network", "ls")),
        )
    }
    return len(live), found


def await_pool(client: Client, size: int, gitserver: GitServer) -> None:
    """The warm networks the fleet will claim are made, and the git host is on every one of them."""
    deadline = time.monotonic() + 600
    while client.doctor().warm_networks.get("internal", 0) < size:
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not make {size} warm networks within 600 s")
        time.sleep(1)
    gitserver.join_existing()


def prepared_ids(deployment: str) -> set[str]:
    """The workspace ids the deployment's networks are made for (the warm ones, before a fleet)."""
    names = docker(
        "network", "ls", "--filter", f"label=dockyard.deployment={deployment}", "--format", "{{.Name}}"
    )
    return {name.removeprefix("dockyard-ws-") for name in names.split()}


def fleet_run(
    client: Client,
    size: int,
    ttl: str,
    ttl_seconds: float,
    deployment: str,
    gitserver: GitServer,
    missed: list[str],
) -> None:
    await_pool(client, size, gitserver)
    warm = prepared_ids(deployment)
    bare = bare_parallel(size)
    report(f"{size} bare docker run -d + exec true at a concurrency of {size}: {bare:.2f} s")
    run = uuid.uuid4().hex[:6]
    fleet = Fleet()
    http = httpx.Client(
        base_url=client.url,
        timeout=900,
        headers={"Authorization": f"Bearer {client.token}"},
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
    )
    wide = provision.wide_client(client)
    started = time.perf_counter()

    def one(index: int) -> None:
        try:
            agent(wide, http, gitserver, index, run, ttl, fleet)
        except Exception as exc:  # noqa: BLE001 - one agent's failure is a figure, not the end of the run
            fleet.failures.append(str(exc))
            for workspace_id in fleet.ids:
                gitserver.leave(workspace_id)

    with ThreadPoolExecutor(size) as pool:
        list(pool.map(one, range(size)))
    all_done = time.perf_counter() - started
    http.close()
    wide.close()
    accepted_all = max(fleet.accepted) if fleet.accepted else float("nan")
    all_ready = max(fleet.ready) if fleet.ready else float("nan")
    ratio = all_ready / bare
    p = statistics.median
    report(
        f"{size} agents: creates {len(fleet.accepted) / accepted_all:.1f}/s; ready p50 {p(fleet.ready):.2f} s, "
        f"p95 {percentile(fleet.ready, 0.95):.2f} s, all {all_ready:.2f} s, ratio to {size} bare runs "
        f"{ratio:.2f} (target <= 1.5); exec tests p50 {p(fleet.tests):.2f} s; push p50 {p(fleet.pushes):.2f} s; "
        f"all five steps {all_done:.2f} s; failures {len(fleet.failures)}"
        if fleet.ready and fleet.tests and fleet.pushes
        else f"{size} agents: failures {len(fleet.failures)}"
    )
    report(
        f"  creates that took a network made (and joined) before: {len(fleet.ids & warm)} of {len(fleet.ids)}"
    )
    for failure in fleet.failures[:5]:
        report(f"  failure: {failure}")
    if fleet.failures or ratio > 1.5:
        missed.append(f"{size} agents")
    # Every workspace was created at about the same time: its TTL ends within a reconcile pass of the last one.
    deadline = started + ttl_seconds + 120 + size
    left, objects = leftovers(client, deployment, fleet.ids)
    while (left or any(objects.values())) and time.perf_counter() < deadline:
        time.sleep(5)
        left, objects = leftovers(client, deployment, fleet.ids)
    waited = time.perf_counter() - started
    report(
        f"  after the TTL ({ttl} min, {waited:.0f} s after the creates): {left} workspaces, "
        f"{objects['containers']} containers, {objects['volumes']} volumes, {objects['networks']} networks of "
        f"this deployment left (target 0)"
    )
    if left or any(objects.values()):
        missed.append(f"{size} agents leftovers")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 agents only")
    parser.add_argument("--sizes", default="", help="fleet sizes, e.g. 10,50 (default 10,50,200)")
    parser.add_argument("--ttl", default="2m", help="workspace TTL in whole minutes, e.g. 1m or 2m")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10" if args.quick else "10,50,200")).split(",")]
    if not args.ttl.endswith("m") or not args.ttl[:-1].isdigit():
        parser.error("--ttl must be whole minutes, e.g. 2m")
    minutes = args.ttl[:-1]
    docker("image", "inspect", IMAGE)
    work = Path(tempfile.mkdtemp(prefix="dy-bench-agents-"))
    missed: list[str] = []
    gitserver = GitServer(work)
    try:
        # The git host must be on a workspace's network before its agent clones, which happens before the
        # workspace is ready: the fleet's networks are made ahead (the warm pool) and joined as they appear.
        with server(workers="auto", warm_networks=f"open=0,internal={max(sizes)}") as (client, pid):
            deployment = client.doctor().deployment
            gitserver.follow(deployment)
            client.create_template(provision_template())
            client.add_git_auth(
                m.CreateGitAuthRequest(host=GIT_HOST, username=GIT_USER, password=GIT_PASSWORD)
            )
            for size in sizes:
                fleet_run(client, size, minutes, int(minutes) * 60, deployment, gitserver, missed)
            report(
                f"task branches pushed to the git server: {gitserver.branches()}; server peak RSS "
                f"{rss_peak_mb(pid):.0f} MB"
            )
            # Before the server's cleanup: a network with the git host on it cannot be removed.
            gitserver.close()
    finally:
        gitserver.close()
        remove_baseline()
        shutil.rmtree(work, ignore_errors=True)
    report("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    if args.check and missed:
        sys.exit(1)


def provision_template() -> bytes:
    sys.path.insert(0, str(ROOT))
    from bench.livesrv import template_archive

    return template_archive(**TEMPLATE)


if __name__ == "__main__":
    main()

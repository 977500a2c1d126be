"""Agent fleet benchmark: N coding agents run the product brief's five steps at once, against bare Docker.

    .venv/bin/python bench/agents.py                 # 10, 50 and 200 agents (a long run)
    .venv/bin/python bench/agents.py --quick         # 10 agents
    .venv/bin/python bench/agents.py --sizes 10,50   # chosen fleet sizes
    .venv/bin/python bench/agents.py --ttl 1m        # each workspace's TTL (default 2m for 10, 5m for 50, 10m for 200)

Needs a running Docker engine and the base image. Per fleet size N, in one run:
- baseline: N bare `docker run -d` of the base image + `docker exec … true`, at a concurrency of N (the issue's);
- N agents at once, each: (1) create a workspace as the brief prints it (`curl -d '{…}'`: a JSON body with curl's
  default form content type, `rich_parameters` with `repo`, `branch` and a TTL as a string) from a template with a
  `git:` section, so that (2) the agent clones the repository and makes the task branch before the workspace is
  ready; (3) report the task `working`, edit a file and run the project's tests through exec; (4) commit and push
  the branch, then `dockyard-agent report done` with a link; (5) the TTL deletes the workspace. Each task (3-4)
  begins once the whole fleet is ready, so that the time to ready is the provisioning alone (the clone
  included), as the baseline's is; `--tasks at-ready` begins each as soon as its own workspace is ready, as an
  orchestrator would, and the first agents' tests and pushes then share the host with the last ones' starts;
- once the TTLs have run out, the same task by hand: N bare containers of the image, each cloning, branching,
  editing, testing, committing and pushing through `docker exec` against the same git host, at a concurrency
  of N: what the fleet's work costs without Dockyard (no agent, reports, brokered credential or git proxy).
Prints creates/s, time to ready p50/p95 and all ready against the baseline (issue 12 target <= 1.5, for the
provisioning alone: with `--tasks at-ready` the ratio is printed and not held to it), and
against the same task by hand (all ready against all cloned, all five steps against all pushed, host CPU), where the
time to ready went (the server's own timestamps), exec (tests) and push p50, failures, the host's CPU time per
agent against a bare run's (on a saturated host the fleet's time follows it), the server's CPU and peak RSS,
and once every TTL has run out: workspaces left and this deployment's containers, volumes and networks left
(target 0 each).

The git host is `tests/gitserver.py` (git http-backend behind basic auth) in a process of this benchmark's own on
loopback. The template limits pushes to the task branch (`git.push: task-branch`), so the workspaces' git goes
through the Dockyard git proxy: the agent relays it over its control connection and the control plane forwards
it with the brokered credential. Workspaces keep `egress: none`, so they have no network at all (loopback only)
and a TTL's delete has nothing in its way. A workspace's TTL waits while its task reports `working`, so an agent that
is late never loses its workspace mid-task; the TTL deletes it once it reports `done`. Leftovers are counted per
workspace id. Nothing but this run's own objects and its server's deployment is touched or removed. Runs from
the install's virtualenv (no pytest).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import provision  # noqa: E402
from provision import (  # noqa: E402
    BASELINE,
    IMAGE,
    bare_parallel_cpu,
    cpu_seconds,
    docker,
    host_cpu_seconds,
    percentile,
    remove_baseline,
    report,
    rss_peak_mb,
    server,
)

from dockyard.warmpool.pool import parse_sizes  # noqa: E402
from dockyard_sdk import Client  # noqa: E402
from dockyard_sdk import models as m  # noqa: E402

GITSERVER = ROOT / "tests" / "gitserver.py"
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
    # Through the git proxy: the credential stays in the control plane and the git host needs no route from
    # the workspaces (their networks are internal), which a fleet of agents limited to their branch wants.
    "git": {
        "repo": "{{ parameters.repo }}",
        "branch": "{{ parameters.branch }}",
        "path": "project",
        "push": "task-branch",
        # One fetch by the server for many starts, as a fleet on one repository wants (gitauth/mirrors.py).
        "mirror": True,
    },
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
REPORT_WORKING = "dockyard-agent report working 'Adding sub'"
EDIT_AND_TEST = (
    "cd ~/project && printf 'def sub(a, b):\\n    return a - b\\n' >> calc.py && python3 -m unittest -q 2>&1"
)
COMMIT_AND_PUSH = (
    "cd ~/project && git add -A && git -c user.name=agent -c user.email=agent@bench.test commit -qm 'Add sub' "
    "&& git push -q origin HEAD"
)
REPORT_DONE = "dockyard-agent report done 'Added sub, tests pass' --link pr=http://git.bench.test/pull/1"
# The git host's process: tests/gitserver.py on loopback only (its own __main__ listens on every address).
SERVE = (
    "import sys, threading; sys.path.insert(0, sys.argv[1]); import gitserver; "
    "gitserver.serve(sys.argv[2], host='127.0.0.1', port=int(sys.argv[3]), user=sys.argv[4], "
    "password=sys.argv[5]); threading.Event().wait()"
)


def git(*args: str, cwd: Path | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd or "/"), "GIT_CONFIG_NOSYSTEM": "1"}
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@bench.test"]
    return subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


class GitServer:
    """The git host: a process of this run's own on loopback, reached by the control plane's git proxy."""

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
        self.bare = bare
        # The same project for the tasks done by hand: their branches never reach the fleet's clones.
        git("clone", "-q", "--bare", str(bare), str(root / "by-hand.git"))
        port = provision.free_port()
        self.host = f"127.0.0.1:{port}"
        self.repo = f"http://{self.host}/app.git"
        self.by_hand = f"http://{GIT_USER}:{GIT_PASSWORD}@{self.host}/by-hand.git"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVE,
                str(GITSERVER.parent),
                str(root),
                str(port),
                GIT_USER,
                GIT_PASSWORD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"the git server did not start on {self.host}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.repo}/info/refs?service=git-upload-pack", timeout=5).status_code == 401
        except httpx.HTTPError:
            return False

    def branches(self) -> int:
        return len(git("--git-dir", str(self.bare), "branch", "--list", "task-*").split())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@dataclass
class Fleet:
    accepted: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    reports: list[float] = field(default_factory=list)
    tests: list[float] = field(default_factory=list)
    pushes: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    done_at: list[float] = field(default_factory=list)


class ReadyGate:
    """Counts the fleet's agents that are ready or have failed on the way; notes the host's CPU time when the
    last one arrives and, with `--tasks after-all-ready`, holds every task until then."""

    def __init__(self, size: int, *, hold: bool) -> None:
        self.size, self.hold = size, hold
        self.arrived = 0
        self.host_cpu_at_all_ready = float("nan")
        self._changed = threading.Condition()

    def arrive(self) -> None:
        with self._changed:
            self.arrived += 1
            if self.arrived == self.size:
                self.host_cpu_at_all_ready = host_cpu_seconds()
                self._changed.notify_all()

    def pass_(self) -> None:
        if self.hold:
            with self._changed:
                self._changed.wait_for(lambda: self.arrived >= self.size, timeout=900)


def bare_task(gitserver: GitServer, index: int, run: str) -> tuple[float, float]:
    """One agent's task by hand, for the second baseline: a bare container of the same image, then the same
    steps through `docker exec` (clone and branch, edit and test, commit and push to the same git host, to a
    copy of the repository whose branches the fleet's clones never see); its times to cloned and to pushed.
    What Dockyard adds is left out: no agent, no task reports, no brokered credential (it is in the clone's
    URL), no git proxy, no workspace network (the host's, to reach the git host on loopback: a start without a
    network namespace to make, cheaper than the first baseline's bridge)."""
    started = time.perf_counter()
    container = docker("run", "-d", "--label", BASELINE, "--network", "host", IMAGE, "sleep", "infinity")
    clone = (
        f"git clone -q {gitserver.by_hand} ~/project && cd ~/project && git checkout -q -b bare-{run}-{index}"
    )
    docker("exec", container, "sh", "-c", clone)
    cloned = time.perf_counter() - started
    for command in (EDIT_AND_TEST, COMMIT_AND_PUSH):
        docker("exec", container, "sh", "-c", command)
    return cloned, time.perf_counter() - started


def bare_tasks(gitserver: GitServer, size: int, run: str) -> tuple[float, float, float]:
    """`size` bare tasks at once: the wall times until all were cloned and all pushed, and the host's CPU time
    per task (before their removal)."""
    cpu = host_cpu_seconds()
    with ThreadPoolExecutor(size) as pool:
        times = list(pool.map(lambda index: bare_task(gitserver, index, run), range(size)))
    cpu = host_cpu_seconds() - cpu
    remove_baseline()
    return max(t[0] for t in times), max(t[1] for t in times), cpu / size


def brief_create(http: httpx.Client, index: int, run: str, repo: str, ttl_minutes: str) -> str:
    """The brief's request as curl sends it: `-d '{…}'` with no Content-Type header means curl's default."""
    body = {
        "template_id": "agent-bench",
        "name": f"agent-task-{run}-{index}",
        "rich_parameters": {"repo": repo, "branch": f"task-{run}-{index}", "ttl_minutes": ttl_minutes},
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
    index: int,
    run: str,
    *,
    repo: str,
    ttl: str,
    fleet: Fleet,
    gate: ReadyGate,
) -> None:
    sent = time.perf_counter()
    try:
        workspace_id = brief_create(http, index, run, repo, ttl)
        fleet.ids.add(workspace_id)
        fleet.accepted.append(time.perf_counter() - sent)
        ws = client.get_workspace(workspace_id, wait="ready", timeout=600)
        if ws.agent is None or ws.agent.lifecycle != m.AgentLifecycle.READY:
            error = ws.agent.error if ws.agent is not None else ws.status_reason
            raise RuntimeError(f"{ws.name} is {ws.status.value}, agent not ready: {error}")
        fleet.ready.append(time.perf_counter() - sent)
    finally:
        gate.arrive()
    gate.pass_()
    for command, times in (
        (REPORT_WORKING, fleet.reports),
        (EDIT_AND_TEST, fleet.tests),
        (COMMIT_AND_PUSH, fleet.pushes),
        (REPORT_DONE, None),
    ):
        started = time.perf_counter()
        result = client.exec(workspace_id, m.ExecRequest(command=command, timeout=300))
        if result.exit_code != 0:
            raise RuntimeError(
                f"{ws.name}: `{command[:40]}…` exited {result.exit_code}: {result.stderr[-300:]}"
            )
        if times is not None:
            times.append(time.perf_counter() - started)
    fleet.done_at.append(time.perf_counter())


def breakdown(client: Client, workspace_ids: set[str]) -> str:
    """Where each create's time to ready went, from the server's own timestamps (means, seconds): queued, the
    build (volume, network, container, until it runs), the agent's start and connection, the clone and the task
    branch (the log's `git` stage), then the startup script; and the build's own step timings. Then the same for
    the one create that took longest: a fleet's "all ready" is its time."""
    phases: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    slowest: tuple[float, str] = (0.0, "")
    for workspace_id in workspace_ids:
        ws = client.get_workspace(workspace_id)
        # The create's build (a TTL may have added a delete since).
        build = min(client.list_builds(workspace_id), key=lambda b: b.number)
        agent = ws.agent
        if agent is None or build.started_at is None or build.completed_at is None:
            continue
        if agent.first_connected_at is None or agent.started_at is None or agent.ready_at is None:
            continue
        git_lines = [line.time for line in client.build_logs(build.id) if line.stage == "git"]
        git_end = max(git_lines) if git_lines else agent.started_at
        marks = {
            "queue": (build.created_at, build.started_at),
            "build": (build.started_at, build.completed_at),
            "agent connect": (build.completed_at, agent.first_connected_at),
            "agent start": (agent.first_connected_at, agent.started_at),
            "git": (agent.started_at, git_end),
            "startup script": (git_end, agent.ready_at),
        }
        for name, (start, end) in marks.items():
            phases.setdefault(name, []).append((end - start).total_seconds())
        total = (agent.ready_at - build.created_at).total_seconds()
        if total > slowest[0]:
            since = ", ".join(
                f"{name} {(end - start).total_seconds():.2f}" for name, (start, end) in marks.items()
            )
            slowest = (
                total,
                f"{since}; build timings: " + ", ".join(f"{k} {v:.2f}" for k, v in build.timings.items()),
            )
        for key, value in build.timings.items():
            steps.setdefault(key.removeprefix("container."), []).append(value)
    mean = statistics.mean
    return (
        ", ".join(f"{name} {mean(values):.2f}" for name, values in phases.items())
        + "; build timings: "
        + ", ".join(f"{name} {mean(values):.2f}" for name, values in steps.items())
        + f"\n  the slowest ({slowest[0]:.2f} s): {slowest[1]}"
    )


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


def await_pool(client: Client, sizes: dict[str, int]) -> None:
    """The warm networks are made before a fleet, as on a server that has been up a while: a create that claims
    a network still being made would race its maker."""
    deadline = time.monotonic() + 600
    while any(client.doctor().warm_networks.get(kind, 0) < size for kind, size in sizes.items()):
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not make its warm networks {sizes} within 600 s")
        time.sleep(1)


def fleet_run(
    client: Client,
    size: int,
    *,
    ttl_minutes: int,
    deployment: str,
    gitserver: GitServer,
    warm: dict[str, int],
    pid: int,
    missed: list[str],
    tasks_after_all_ready: bool,
) -> None:
    await_pool(client, warm)
    bare, bare_cpu = bare_parallel_cpu(size)
    report(
        f"{size} bare docker run -d + exec true at a concurrency of {size}: {bare:.2f} s; host CPU per run "
        f"{bare_cpu / size:.2f} s"
    )
    run = uuid.uuid4().hex[:6]
    fleet = Fleet()
    http = httpx.Client(
        base_url=client.url,
        timeout=900,
        headers={"Authorization": f"Bearer {client.token}"},
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
    )
    wide = provision.wide_client(client)
    load = os.getloadavg()
    cpu = cpu_seconds(pid)
    host_cpu = host_cpu_seconds()
    if provision.PROFILE:
        os.kill(pid, signal.SIGUSR1)  # the profile is the fleet's alone
    started = time.perf_counter()
    gate = ReadyGate(size, hold=tasks_after_all_ready)

    def one(index: int) -> None:
        try:
            agent(wide, http, index, run, repo=gitserver.repo, ttl=str(ttl_minutes), fleet=fleet, gate=gate)
        except Exception as exc:  # noqa: BLE001 - one agent's failure is a figure, not the end of the run
            fleet.failures.append(str(exc))

    with ThreadPoolExecutor(size) as pool:
        list(pool.map(one, range(size)))
    all_done = time.perf_counter() - started
    if provision.PROFILE:
        os.kill(pid, signal.SIGUSR2)
    # CPU time is what a loaded host stretches least: the server's share of the fleet, per agent.
    server_cpu = (cpu_seconds(pid) - cpu) / size
    # Everything the fleet cost the host (workspaces, engine, server, git host, this benchmark), per agent: with
    # both cores busy from the first create to the last push, "all ready" follows it.
    fleet_cpu = (host_cpu_seconds() - host_cpu) / size
    ready_cpu = (gate.host_cpu_at_all_ready - host_cpu) / size
    http.close()
    wide.close()
    accepted_all = max(fleet.accepted) if fleet.accepted else float("nan")
    all_ready = max(fleet.ready) if fleet.ready else float("nan")
    ratio = all_ready / bare
    p = statistics.median
    # Every figure is printed before anything is waited for or cleaned up: a failure later loses none of them.
    when = "" if tasks_after_all_ready else " (each task begun as soon as its workspace was ready)"
    # The target compares provisioning with provisioning: with the tasks beside the later starts the
    # fleet also does work that `exec true` never does.
    target = "target <= 1.5" if tasks_after_all_ready else "not held to the target: the tasks share the host"
    report(
        f"{size} agents{when}: creates {len(fleet.accepted) / accepted_all:.1f}/s; ready p50 {p(fleet.ready):.2f} s, "
        f"p95 {percentile(fleet.ready, 0.95):.2f} s, all {all_ready:.2f} s, ratio to {size} bare runs "
        f"{ratio:.2f} ({target}); exec report working p50 {p(fleet.reports):.2f} s, tests p50 {p(fleet.tests):.2f} s; push p50 {p(fleet.pushes):.2f} s; "
        f"all five steps {all_done:.2f} s; failures {len(fleet.failures)}"
        if fleet.ready and fleet.tests and fleet.pushes
        else f"{size} agents: failures {len(fleet.failures)}"
    )
    report(f"  where the time to ready went (means, s): {breakdown(client, fleet.ids)}")
    report(
        f"  load average at the start {load[0]:.1f}, at the end {os.getloadavg()[0]:.1f}; host CPU per agent: "
        f"until all were ready {ready_cpu:.2f} s ({ready_cpu / (bare_cpu / size):.1f}x a bare run's), all five "
        f"steps {fleet_cpu:.2f} s ({fleet_cpu / (bare_cpu / size):.1f}x); server CPU per agent "
        f"{server_cpu:.2f} s; server peak RSS {rss_peak_mb(pid):.0f} MB; task branches on the git server: "
        f"{gitserver.branches()}"
    )
    for failure in fleet.failures[:5]:
        report(f"  failure: {failure}")
    if fleet.failures or (tasks_after_all_ready and ratio > 1.5):
        missed.append(f"{size} agents")
    # The TTL runs from each create and waits for a task still `working`: the last deletes are due a reconcile
    # pass or two after the later of the two, then the delete builds queue behind each other.
    due = max([started + ttl_minutes * 60, *fleet.done_at])
    deadline = due + 120 + size
    left, objects = leftovers(client, deployment, fleet.ids)
    while (left or any(objects.values())) and time.perf_counter() < deadline:
        time.sleep(5)
        left, objects = leftovers(client, deployment, fleet.ids)
    waited = time.perf_counter() - started
    report(
        f"  after the TTL ({ttl_minutes} min, {waited:.0f} s after the creates): {left} workspaces, "
        f"{objects['containers']} containers, {objects['volumes']} volumes, {objects['networks']} networks of "
        f"this deployment left (target 0)"
    )
    if left or any(objects.values()):
        missed.append(f"{size} agents leftovers")
    # Not the target: the same work done by hand in bare containers. Run last, on a host the fleet has
    # left, so that neither run starts in the other's wake.
    task_cloned, task_pushed, task_cpu = bare_tasks(gitserver, size, run)
    report(
        f"{size} bare docker run + the same task by docker exec (clone and branch, edit and test, commit and "
        f"push; the host's network, the credential in the URL) at a concurrency of {size}: all cloned "
        f"{task_cloned:.2f} s, all pushed {task_pushed:.2f} s; host CPU per task {task_cpu:.2f} s"
    )
    if fleet.ready and fleet.pushes:
        report(
            f"  {size} agents against the same task by hand: all ready {all_ready / task_cloned:.2f}x all "
            f"cloned, all five steps {all_done / task_pushed:.2f}x all pushed, host CPU per agent "
            f"{fleet_cpu / task_cpu:.2f}x per task"
        )


def default_ttl(sizes: list[int]) -> int:
    """Minutes: long enough for the largest fleet to be ready and report `working` on a loaded 2-core host
    (after that the TTL waits for the task anyway). The TTL runs from the create: a workspace still queued or
    cloning when it ends is deleted (measured: 50 agents at a load average of 40-80 were ready p50 123 s, and
    a 2-minute TTL deleted 26 of them before they reported `working`)."""
    largest = max(sizes)
    return 2 if largest <= 10 else 5 if largest <= 50 else 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 agents only")
    parser.add_argument("--sizes", default="", help="fleet sizes, e.g. 10,50 (default 10,50,200)")
    parser.add_argument(
        "--ttl",
        default="",
        help="workspace TTL in whole minutes, e.g. 1m (default 2m for 10 agents, 5m for 50, 10m for 200)",
    )
    parser.add_argument(
        "--warm-networks",
        default="",
        help="the server's warm networks (default 0: the fleet's workspaces have egress none, which takes no "
        "network at all)",
    )
    parser.add_argument(
        "--workers",
        default="auto",
        help="the server's --provisioner-workers (default auto, as a deployment runs)",
    )
    parser.add_argument(
        "--tasks",
        choices=("after-all-ready", "at-ready"),
        default="after-all-ready",
        help="when each agent begins its task: once the whole fleet is ready (default: its time to ready is the "
        "provisioning alone, as the bare runs' is, and held to the target), or as soon as its own workspace is "
        "ready, as an orchestrator would (the ratio printed, not held to the target)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="run the server under bench/profile_server.py (every thread's CPU time, sampled) and write each "
        "profile to PATH.txt and PATH.folded once a fleet's five steps are done (the next fleet's replaces it)",
    )
    args = parser.parse_args()
    provision.PROFILE = args.profile
    sizes = [int(s) for s in (args.sizes or ("10" if args.quick else "10,50,200")).split(",")]
    if args.ttl and (not args.ttl.endswith("m") or not args.ttl[:-1].isdigit() or args.ttl == "0m"):
        parser.error("--ttl must be whole minutes, at least 1, e.g. 2m")
    minutes = int(args.ttl[:-1]) if args.ttl else default_ttl(sizes)
    if not args.warm_networks:
        args.warm_networks = "0"
    try:
        warm = parse_sizes(args.warm_networks)
    except ValueError as exc:
        parser.error(f"--warm-networks: {exc}")
    docker("image", "inspect", IMAGE)
    work = Path(tempfile.mkdtemp(prefix="dy-bench-agents-"))
    missed: list[str] = []
    gitserver = GitServer(work)
    try:
        with server(workers=args.workers, warm_networks=args.warm_networks) as (client, pid):
            deployment = client.doctor().deployment
            client.create_template(provision_template())
            client.add_git_auth(
                m.CreateGitAuthRequest(host=gitserver.host, username=GIT_USER, password=GIT_PASSWORD)
            )
            for size in sizes:
                fleet_run(
                    client,
                    size,
                    ttl_minutes=minutes,
                    deployment=deployment,
                    gitserver=gitserver,
                    warm=warm,
                    pid=pid,
                    missed=missed,
                    tasks_after_all_ready=args.tasks == "after-all-ready",
                )
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

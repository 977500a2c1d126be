"""CLI benchmark: how fast `dockyard` starts, and how much time its waiting commands add to the API's own.

    .venv/bin/python bench/cli.py            # 10 samples of each
    .venv/bin/python bench/cli.py --quick    # 5 samples

Starts its own `dockyard server` on a free loopback port (Docker runtime) and runs the `dockyard` program of this
virtualenv as a user would, with a config folder of its own. Measured in one run (issue 15 targets in brackets):
- start-up, p50 wall: `dockyard --help`, `dockyard list` and the ProxyCommand `dockyard ssh --stdio` to the live
  server (stdin closed at once: start, WebSocket handshake, close) [<= 0.25 s each];
- `ssh dockyard.WS true` through config-ssh's ProxyCommand against `ssh` straight to the gateway's port, p50
  [ratio <= 1.3];
- `dockyard create/stop/start`, p50 wall, against the API's own time for the same operation measured through the
  SDK (create: request to agent ready; stop and start: request to the build's end), and the difference: the
  CLI's dead time [<= 0.3 s].
The figures that need a workspace are skipped, saying so, when no Docker engine answers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.livesrv import DOCKYARD, LiveServer, start_live_server, stop_live_server  # noqa: E402

from dockyard_sdk import models as m  # noqa: E402

STARTUP_TARGET = 0.25
SSH_RATIO_TARGET = 1.3
DEAD_TIME_TARGET = 0.3


def p50(values: list[float]) -> float:
    return statistics.median(values)


def line(label: str, value: str, target: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("  ok" if met else "  MISSED")
    print(f"{label:<44} {value:>12}  {target}{verdict}", flush=True)


class User:
    """The CLI as a shell user runs it: its own HOME and config folder, logged in to the live server."""

    def __init__(self, live: LiveServer, home: Path) -> None:
        self.live = live
        self.home = home
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "LANG": "C.UTF-8",
        }
        self.ssh_config = home / "ssh_config"

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> float:
        """Wall time of one command, from fork to exit."""
        started = time.perf_counter()
        result = subprocess.run(
            list(args),
            env=self.env,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            cwd=self.home,
        )
        took = time.perf_counter() - started
        if check and result.returncode != 0:
            raise RuntimeError(f"{args} exited {result.returncode}: {result.stderr.decode(errors='replace')}")
        return took

    def dockyard(self, *args: str, check: bool = True) -> float:
        return self.run(DOCKYARD, *args, check=check)


def sample(count: int, work: Callable[[], float]) -> list[float]:
    work()  # a first run warms the page cache and writes bytecode; it is not counted
    return [work() for _ in range(count)]


def startup(user: User, count: int, workspace: str) -> None:
    print("\nStart-up, p50 wall")
    commands = {
        "dockyard --help": ["--help"],
        "dockyard list": ["list"],
        # stdin is closed at once: start, credentials, WebSocket handshake with the gateway, close.
        "dockyard ssh --stdio (ProxyCommand)": ["ssh", "--stdio", workspace],
    }
    for label, args in commands.items():

        def once(args: list[str] = args) -> float:
            return user.dockyard(*args, check=args[0] != "ssh")

        took = p50(sample(count, once))
        line(label, f"{took:.3f} s", f"[<= {STARTUP_TARGET} s]", took <= STARTUP_TARGET)


def ssh_through_proxy(user: User, count: int, workspace: str) -> None:
    print("\nssh WS true, p50 wall")
    proxied = p50(
        sample(count, lambda: user.run("ssh", "-F", str(user.ssh_config), f"dockyard.{workspace}", "true"))
    )
    direct_args = (
        "ssh", "-F", str(user.ssh_config), "-o", "ProxyCommand=none", "-o", "HostName=127.0.0.1",
        "-p", str(user.live.ssh_port), "-l", workspace, f"dockyard.{workspace}", "true",
    )  # fmt: skip
    direct = p50(sample(count, lambda: user.run(*direct_args)))
    line("ssh dockyard.WS true (ProxyCommand)", f"{proxied:.3f} s")
    line("ssh straight to the gateway", f"{direct:.3f} s")
    ratio = proxied / direct
    line("ratio", f"{ratio:.2f}", f"[<= {SSH_RATIO_TARGET}]", ratio <= SSH_RATIO_TARGET)


def api_time(live: LiveServer, operation: str, name: str) -> float:
    """The API's own time for `operation` on workspace `name`, through the SDK (no CLI process)."""
    client = live.client
    started = time.perf_counter()
    if operation == "create":
        created = client.create_workspace(m.CreateWorkspaceRequest(template="base", name=name))
        client.get_workspace(created.id, wait="ready", timeout=300)
    else:
        transition = m.Transition.STOP if operation == "stop" else m.Transition.START
        ws = client.get_workspace(name)
        client.create_build(ws.id, m.CreateBuildRequest(transition=transition))
        client.get_workspace(ws.id, wait="done", timeout=300)
    return time.perf_counter() - started


def delete(live: LiveServer, name: str) -> None:
    ws = live.client.get_workspace(name)
    live.client.get_workspace(ws.id, wait="done", timeout=300)
    live.client.delete_workspace(ws.id)
    live.client.get_workspace(ws.id, wait="done", timeout=300)


def dead_time(user: User, count: int) -> None:
    print("\nWaiting commands: CLI wall against the API's own time, p50")
    cli: dict[str, list[float]] = {"create": [], "stop": [], "start": []}
    api: dict[str, list[float]] = {"create": [], "stop": [], "start": []}
    for index in range(count):
        # Paired rounds, the API's and the CLI's in turn, so that a slow moment of the engine hits both.
        api_name, cli_name = f"api-{index}", f"cli-{index}"
        api["create"].append(api_time(user.live, "create", api_name))
        cli["create"].append(user.dockyard("create", cli_name, "--template", "base"))
        for operation in ("stop", "start"):
            api[operation].append(api_time(user.live, operation, api_name))
            cli[operation].append(user.dockyard(operation, cli_name))
        delete(user.live, api_name)
        delete(user.live, cli_name)
    for operation in ("create", "stop", "start"):
        by_cli, by_api = p50(cli[operation]), p50(api[operation])
        waited = "agent ready" if operation == "create" else "build done"
        line(f"dockyard {operation} ({waited})", f"{by_cli:.3f} s")
        line(f"  API {operation} ({waited})", f"{by_api:.3f} s")
        gap = by_cli - by_api
        line("  dead time", f"{gap:.3f} s", f"[<= {DEAD_TIME_TARGET} s]", gap <= DEAD_TIME_TARGET)


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "version"], capture_output=True, timeout=30, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 samples instead of 10")
    args = parser.parse_args()
    count = 5 if args.quick else 10
    docker = engine_answers()
    live = start_live_server(subnets="10.217.0.0/16")
    home = Path(tempfile.mkdtemp(prefix="dy-bench-cli-"))
    try:
        user = User(live, home)
        user.dockyard("login", live.url, "--token", live.token)
        user.dockyard("config-ssh", "--ssh-config", str(user.ssh_config), "--yes")
        workspace = "bench"
        if docker:
            live.workspace(workspace)
        if docker:
            # Before the start-up figures: their `ssh --stdio` runs close stdin before any SSH handshake, and the
            # gateway counts each as a failed login from this address, which its limiter then refuses for a while.
            ssh_through_proxy(user, count, workspace)
        startup(user, count, workspace)
        if not docker:
            print("\nNo Docker engine answers: the ssh and dead-time figures need workspaces; skipped.")
            return
        dead_time(user, count)
    finally:
        stop_live_server(live)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

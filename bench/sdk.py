"""The SDK's orchestrator example against the same task through the raw HTTP API: lines of code and wall time.

    .venv/bin/python bench/sdk.py            # 3 rounds of each example (about 2 minutes)
    .venv/bin/python bench/sdk.py --rounds 1

Starts its own `dockyard server` (Docker runtime, a fresh data dir, no SSH listener, no warm networks) on a free
loopback port and runs docs/examples/orchestrator.py (the SDK, five sandboxes in parallel: create, write a file,
a command with streamed output, read the result, a timeout, delete), async_orchestrator.py (the same with
AsyncClient) and orchestrator_raw_http.py (the same with httpx) as separate processes, alternating, and prints
each one's code lines and p50 wall time. It deletes only the workspaces it made, then stops its server.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dockyard.sdk import Client

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
SCRIPTS = ("orchestrator.py", "async_orchestrator.py", "orchestrator_raw_http.py")
DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def code_lines(path: Path) -> int:
    """Lines that are neither blank, comments nor the module docstring."""
    source = path.read_text()
    body = ast.parse(source).body
    skip: set[int] = set()
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        skip = set(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), 1)
        if number not in skip and line.strip() and not line.strip().startswith("#")
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="dy-bench-sdk-"))
    url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_WARM_NETWORKS": "0",
        "DOCKYARD_LOG_FORMAT": "json",
    }
    log = (data_dir / "server.log").open("w")
    server = subprocess.Popen(
        [DOCKYARD, "server", "--listen", url.removeprefix("http://"), "--ssh-listen", ""],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "admin-token").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                print((data_dir / "server.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.1)
        token = (data_dir / "admin-token").read_text().strip()
        client = Client(url, token)
        while True:
            try:
                client.health()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        run_env = {**env, "DOCKYARD_URL": url, "DOCKYARD_TOKEN": token}
        times: dict[str, list[float]] = {script: [] for script in SCRIPTS}
        for _ in range(args.rounds):
            for script in SCRIPTS:
                started = time.monotonic()
                done = subprocess.run(
                    [sys.executable, str(EXAMPLES / script)], env=run_env, capture_output=True, text=True
                )
                elapsed = time.monotonic() - started
                if done.returncode != 0:
                    print(f"{script} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    return 1
                times[script].append(elapsed)
        raw = statistics.median(times["orchestrator_raw_http.py"])
        for script in SCRIPTS:
            p50 = statistics.median(times[script])
            print(
                f"{script:28} {code_lines(EXAMPLES / script):3d} lines of code, "
                f"5 sandboxes: p50 {p50:.2f} s over {args.rounds} rounds, ratio to raw HTTP {p50 / raw:.2f}"
            )
        for ws in client.list_workspaces().workspaces:
            if ws.status.value not in ("deleted", "deleting"):
                client.delete_workspace(ws.id)
        return 0
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

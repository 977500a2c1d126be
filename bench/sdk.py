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
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.livesrv import start_live_server, stop_live_server  # noqa: E402

EXAMPLES = ROOT / "docs" / "examples"
SCRIPTS = ("orchestrator.py", "async_orchestrator.py", "orchestrator_raw_http.py")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = start_live_server(subnets="10.219.0.0/16")
    try:
        run_env = {**server.env, "DOCKYARD_URL": server.url, "DOCKYARD_TOKEN": server.token}
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
        return 0
    finally:
        # Deletes only this server's own workspaces (the examples delete theirs already), then stops it.
        stop_live_server(server)


if __name__ == "__main__":
    sys.exit(main())

"""App proxy benchmark: a 100 MB download through the app proxy against the same through `dockyard port-forward`.

    .venv/bin/python bench/apps.py              # 100 MB, 3 rounds each
    .venv/bin/python bench/apps.py --mb 32 --rounds 2

Needs a running Docker engine. One workspace serves a random file with `python3 -m http.server` (a template app);
both paths end in the agent's dial stream, so the ratio measures the proxy's own cost (issue 14: >= 0.5).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bench.livesrv import DOCKYARD, free_port, start_live_server, stop_live_server, template_archive  # noqa: E402


def download(url: str, headers: dict[str, str]) -> tuple[float, int]:
    """Seconds and bytes of one streamed GET."""
    started = time.perf_counter()
    size = 0
    with httpx.stream("GET", url, headers=headers, timeout=120) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            size += len(chunk)
    return time.perf_counter() - started, size


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    live = start_live_server(subnets="10.242.0.0/16")
    forward: subprocess.Popen[bytes] | None = None
    try:
        app = {
            "slug": "files",
            "port": 8000,
            "command": 'python3 -m http.server 8000 --bind 127.0.0.1 --directory "$HOME/files"',
        }
        startup = f'mkdir -p "$HOME/files" && head -c {args.mb * 2**20} /dev/urandom > "$HOME/files/blob.bin"'
        live.client.create_template(
            template_archive(name="files", image="dockyard/base:bookworm", startup_script=startup, apps=[app])
        )
        ws = live.workspace("bench", template="files", timeout=300)
        owner = live.client.me().username
        auth = {"Authorization": f"Bearer {live.token}"}
        proxied = f"{live.url}/@{owner}/{ws.name}/apps/files/blob.bin"
        deadline = time.monotonic() + 60
        while httpx.head(proxied, headers=auth).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not come up")
            time.sleep(0.5)

        local = free_port()
        home = tempfile.mkdtemp(prefix="dy-bench-cli-")
        env = {**os.environ, "DOCKYARD_URL": live.url, "DOCKYARD_TOKEN": live.token, "XDG_CONFIG_HOME": home}
        forward = subprocess.Popen(
            [DOCKYARD, "port-forward", ws.name, "--tcp", f"{local}:8000"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(local)
        forwarded = f"http://127.0.0.1:{local}/blob.bin"

        results: dict[str, list[float]] = {"app proxy": [], "port-forward": []}
        for _ in range(args.rounds):
            for name, url, headers in (("app proxy", proxied, auth), ("port-forward", forwarded, {})):
                seconds, size = download(url, headers)
                if size != args.mb * 2**20:
                    raise RuntimeError(f"{name}: got {size} bytes")
                results[name].append(size / 2**20 / seconds)
        proxy, direct = (statistics.median(results[k]) for k in ("app proxy", "port-forward"))
        print(f"{args.mb} MB download, median of {args.rounds}:")
        print(
            f"  through the app proxy:       {proxy:7.1f} MB/s  (rounds: {', '.join(f'{v:.1f}' for v in results['app proxy'])})"
        )
        print(
            f"  through dockyard port-forward: {direct:5.1f} MB/s  (rounds: {', '.join(f'{v:.1f}' for v in results['port-forward'])})"
        )
        print(f"  ratio app proxy / port-forward: {proxy / direct:.2f}  (target >= 0.5)")
    finally:
        if forward is not None:
            forward.terminate()
            forward.wait(10)
        stop_live_server(live)


if __name__ == "__main__":
    main()

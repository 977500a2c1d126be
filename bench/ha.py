"""Event wake-up latency across replicas, on PostgreSQL (issue 10's "event wake-up latency" figure).

    .venv/bin/python bench/ha.py            # 500 messages, 30 waits (about a minute)
    .venv/bin/python bench/ha.py --quick    # 200 messages, 10 waits
    .venv/bin/python bench/ha.py --check    # exit 1 when a target is missed

A throwaway PostgreSQL cluster (tests/pg.py, the one the test suite uses) is started and migrated, then:
1. pubsub: a second Python process publishes messages through `PostgresPubsub`, each carrying its send time;
   this process subscribes through its own `PostgresPubsub` and records when each arrives (publish on one
   process → callback on another). Target: p95 ≤ 100 ms.
2. `?wait=done` across two `dockyard server` processes on that database (neither runs workers, so builds stay
   queued): a workspace is created through server A and its build is canceled through server B while a client
   waits on A with `?wait=done`; the figure is A's answer time minus the build's `completed_at` written by B.
   Target: p95 ≤ 100 ms (before the pubsub, the waiter polled every 0.5 s, then 2 s).
Wall clocks are compared within one host, so they agree.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests/pg.py, the same throwaway cluster the test suite uses

from tests import pg  # noqa: E402

from dockyard import logs  # noqa: E402
from dockyard.events import PostgresPubsub  # noqa: E402
from dockyard.store.db import libpq_url, make_engine, normalize_url  # noqa: E402
from dockyard.store.migrate import migrate  # noqa: E402
from dockyard_sdk import Client  # noqa: E402
from dockyard_sdk import models as m  # noqa: E402

DOCKYARD = str(Path(sys.executable).parent / "dockyard")
TARGET_P95_MS = 100.0
CHANNEL = "bench_wakeup"


def say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


def line(name: str, samples_ms: list[float]) -> tuple[str, bool]:
    p50, p95, worst = percentiles(samples_ms)
    met = p95 <= TARGET_P95_MS
    verdict = "target met" if met else f"target missed: p95 > {TARGET_P95_MS:.0f} ms"
    return (
        f"{name}: n={len(samples_ms)}, p50 {p50:.2f} ms, p95 {p95:.2f} ms, max {worst:.2f} ms — {verdict}",
        met,
    )


@contextmanager
def database() -> Iterator[str]:
    with pg.cluster() as admin_url:
        admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE dockyard_bench"))
        admin.dispose()
        url = admin_url.rsplit("/", 1)[0] + "/dockyard_bench"
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


# --- 1. pubsub across processes ---------------------------------------------------------------------------------


def publisher(url: str, count: int, interval: float) -> None:
    """Runs in the child process: publish `count` messages, each carrying its wall-clock send time."""
    pubsub = PostgresPubsub(url)
    pubsub.wait_connected(10)
    for index in range(count):
        pubsub.publish(CHANNEL, f"{index} {time.time():.6f}")
        time.sleep(interval)
    time.sleep(0.5)  # let the notifier thread send the last batch
    pubsub.close()


def pubsub_latency(url: str, count: int) -> list[float]:
    libpq = libpq_url(url)
    assert libpq is not None
    latencies: dict[int, float] = {}
    done = threading.Event()

    def received(payload: bytes) -> None:
        index, sent = payload.decode().split()
        latencies[int(index)] = (time.time() - float(sent)) * 1000
        if len(latencies) == count:
            done.set()

    subscriber = PostgresPubsub(libpq)
    subscriber.subscribe(CHANNEL, received)
    # Spaced out, as real events are: a tight loop would measure batching, not wake-up.
    child = subprocess.Popen(
        [sys.executable, __file__, "--publisher", libpq, "--count", str(count), "--interval", "0.005"]
    )
    done.wait(60)
    child.wait(30)
    subscriber.close()
    if len(latencies) != count:
        say(f"pubsub: {count - len(latencies)} of {count} messages never arrived")
    return list(latencies.values())


# --- 2. ?wait=done across two servers ---------------------------------------------------------------------------


def start_server(url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DOCKYARD_DATABASE_URL": url,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [
            DOCKYARD,
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--ssh-listen",
            "",
            "--provisioner-workers",
            "0",
            "--warm-networks",
            "0",
            "--no-access-log",
        ],
        env=env,
        stdout=(data_dir / "server.log").open("a"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            sys.exit(f"error: the server exited; see {data_dir / 'server.log'}")
        try:
            with Client(base) as client:
                if client.health().status == "ok":
                    return process, base
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.1)
        if time.monotonic() > deadline:
            sys.exit("error: the server did not start in 60 s")


def wait_latency(url: str, rounds: int) -> list[float]:
    root = Path(tempfile.mkdtemp(prefix="dy-ha-"))
    first, url_a = start_server(url, root / "a")
    processes = [first]
    try:
        second, url_b = start_server(url, root / "b")
        processes.append(second)
        token = (root / "a" / "admin-token").read_text().strip()
        latencies = []
        with Client(url_a, token) as a, Client(url_b, token) as b, ThreadPoolExecutor(1) as pool:
            for index in range(rounds):
                ws = a.create_workspace(m.CreateWorkspaceRequest(template="base", name=f"wake-{index}"))
                waiting = pool.submit(lambda ws_id=ws.id: _wait_done(a, ws_id))
                time.sleep(0.2)  # the wait is in place on A
                b.cancel_build(ws.latest_build.id)
                answered, build = waiting.result(30)
                assert build.completed_at is not None, build
                latencies.append((answered - build.completed_at).total_seconds() * 1000)
        return latencies
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)


def _wait_done(client: Client, workspace_id: str) -> tuple[datetime, m.WorkspaceBuild]:
    ws = client.get_workspace(workspace_id, wait="done", timeout=30)
    return datetime.now(UTC), ws.latest_build


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 messages and 10 waits")
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--waits", type=int, default=30)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--publisher", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        publisher(args.publisher, args.count, args.interval)
        return
    logs.configure("console", level=40)
    messages, waits = (200, 10) if args.quick else (args.messages, args.waits)
    say("starting a throwaway PostgreSQL cluster")
    results = []
    with database() as url:
        say(f"pubsub: {messages} messages from another process")
        results.append(line("pubsub publish → callback in another process", pubsub_latency(url, messages)))
        say(f"?wait=done: {waits} builds canceled through server B while server A waits")
        results.append(line("?wait=done on server A, build ended through server B", wait_latency(url, waits)))
    print("event wake-up latency across replicas (PostgreSQL LISTEN/NOTIFY)")
    for text_line, _ in results:
        print(f"  {text_line}")
    if args.check and not all(met for _, met in results):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Load benchmark: authenticated `GET /api/v2/templates` on one server process, SQLite and PostgreSQL.

    .venv/bin/python bench/api.py            # both backends, 15 s of load each
    .venv/bin/python bench/api.py --quick    # 5 s each
    .venv/bin/python bench/api.py --backend postgres --duration 30 --check

For each backend: a fresh data dir (and, for PostgreSQL, a throwaway cluster from tests/pg.py) is migrated and
seeded through the store with 1,000 users and 10,000 API tokens; one `dockyard server --no-access-log` process
serves it on a free loopback port; wrk drives 32 connections, each request carrying a token picked at random
from 1,000 of the 10,000. Printed per backend: requests/s, p50 and p99 latency, the server's peak RSS, and
whether the target (>= 800 req/s, p99 <= 50 ms) is met. `--check` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests/pg.py, the same throwaway cluster the test suite uses

from tests import pg  # noqa: E402

from dockyard import logs  # noqa: E402
from dockyard.accounts import tokens, users  # noqa: E402
from dockyard.api.app import prepare_database  # noqa: E402
from dockyard.config import Settings  # noqa: E402
from dockyard.store.db import make_engine, make_sessionmaker, normalize_url  # noqa: E402
from dockyard.store.models import User  # noqa: E402
from dockyard_sdk.models import Role, Scope  # noqa: E402

PATH = "/api/v2/templates"
TARGET_RPS = 800.0
TARGET_P99_MS = 50.0

# wrk runs this in each of its threads. Each request picks one of the sampled tokens at random; done() prints
# one JSON line with wrk's exact figures (latencies in microseconds) for this script to parse.
LUA = """
local tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
  local headers = { ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] }
  return wrk.format("GET", "%(path)s", headers)
end

function done(summary, latency, requests)
  io.write(string.format(
    'BENCH {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout))
end
"""


@dataclass
class Figures:
    backend: str
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: dict[str, int]
    peak_rss_mb: float

    @property
    def missed(self) -> list[str]:
        missed = []
        if self.rps < TARGET_RPS:
            missed.append(f"{self.rps:.0f} req/s < {TARGET_RPS:.0f}")
        if self.p99_ms > TARGET_P99_MS:
            missed.append(f"p99 {self.p99_ms:.1f} ms > {TARGET_P99_MS:.0f} ms")
        if any(self.errors.values()):
            missed.append(f"errors {self.errors}")
        return missed

    def line(self) -> str:
        verdict = "target met" if not self.missed else "target missed: " + ", ".join(self.missed)
        return (
            f"{self.backend}: {self.rps:.0f} req/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"server peak RSS {self.peak_rss_mb:.0f} MB — {verdict}"
        )


def say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("wrk is missing; installing it with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
        found = shutil.which("wrk")
    if not found:
        sys.exit("error: wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def database(backend: str, data_dir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{data_dir / 'dockyard.db'}"
        return
    with pg.cluster() as url:
        admin = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE dockyard_bench"))
        admin.dispose()
        yield url.rsplit("/", 1)[0] + "/dockyard_bench"


def seed(url: str, data_dir: Path, *, user_count: int, token_count: int) -> list[str]:
    """Migrate, run first start (owner and built-in templates), then add users and tokens; returns the keys.

    Users have no password: argon2 would spend minutes hashing 1,000 of them and the benchmark never logs in.
    """
    settings = Settings(data_dir=data_dir, database_url=url, access_log=False)
    engine = make_engine(url)
    try:
        prepare_database(settings, engine)
        with make_sessionmaker(engine)() as db:
            org = users.default_organization(db)
            people = [
                User(
                    organization_id=org.id,
                    username=f"bench-{i:05d}",
                    email=f"bench-{i:05d}@example.com",
                    password_hash=None,
                    role=Role.MEMBER.value,
                )
                for i in range(user_count)
            ]
            db.add_all(people)
            db.flush()
            keys = []
            for i in range(token_count):
                key, _ = tokens.issue(
                    db,
                    people[i % user_count],
                    name=f"bench-{i // user_count}",
                    lifetime=timedelta(days=7),
                    scopes=[Scope.TEMPLATE_READ],
                    allow_list=[],
                )
                keys.append(key)
            db.commit()
        return keys
    finally:
        engine.dispose()


@contextmanager
def server(url: str, data_dir: Path, log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    executable = Path(sys.executable).parent / "dockyard"
    command = [str(executable)] if executable.exists() else ["dockyard"]
    command += ["server", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir), "--database-url", url,
                "--no-access-log", "--log-format", "json", "--ssh-listen", ""]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    try:
        deadline = time.monotonic() + 180  # a loaded machine imports slowly
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"dockyard server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockyard server did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base, process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def touch_tokens(base: str, keys: list[str]) -> None:
    """One request per sampled token: the first use of a token writes last_used_at, later ones do not."""

    def one(key: str) -> int:
        return http.get(PATH, headers={"Authorization": f"Bearer {key}"}).status_code

    with httpx.Client(base_url=base, timeout=30) as http, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(one, keys))
        bad = [s for s in statuses if s != 200]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(keys)} warm-up requests failed (status {bad[0]})")
        templates = http.get(PATH, headers={"Authorization": f"Bearer {keys[0]}"}).json()
        say(f"warm: {len(keys)} tokens used once; the list holds {len(templates)} templates")


def wrk(
    binary: str, base: str, script: Path, *, seconds: float, connections: int, threads: int
) -> dict[str, int]:
    command = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(script), base + PATH]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            return dict(json.loads(line.removeprefix("BENCH ")))
    raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def run(backend: str, args: argparse.Namespace, wrk_binary: str) -> Figures:
    print(f"{backend}:", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix=f"dockyard-bench-{backend}-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir(mode=0o700)  # the server refuses a data dir others can read
        with database(backend, data_dir) as url:
            started = time.monotonic()
            keys = seed(url, data_dir, user_count=args.users, token_count=args.tokens)
            say(f"seeded {args.users} users and {len(keys)} tokens in {time.monotonic() - started:.1f} s")
            sample = random.Random(1).sample(keys, min(args.sample, len(keys)))
            token_file = root / "tokens.txt"
            token_file.write_text("\n".join(sample) + "\n")
            script = root / "bench.lua"
            script.write_text(LUA % {"tokens": token_file, "path": PATH})
            log = root / "server.log"
            try:
                with server(url, data_dir, log) as (base, pid):
                    touch_tokens(base, sample)
                    wrk(wrk_binary, base, script, seconds=args.warmup, connections=args.connections,
                        threads=args.threads)  # fmt: skip
                    say(f"load: {args.connections} connections for {args.duration:.0f} s")
                    raw = wrk(wrk_binary, base, script, seconds=args.duration, connections=args.connections,
                              threads=args.threads)  # fmt: skip
                    rss = peak_rss_mb(pid)
            except RuntimeError:
                if log.exists():
                    print(log.read_text()[-3000:], file=sys.stderr)
                raise
    seconds = raw["duration_us"] / 1e6
    return Figures(
        backend=backend,
        rps=raw["requests"] / seconds,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        requests=raw["requests"],
        errors={k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]},
        peak_rss_mb=rss,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="5 s of load per backend instead of 15 s")
    parser.add_argument("--duration", type=float, help="seconds of measured load per backend")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the server has the other core)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=1000, help="tokens the load picks from at random")
    parser.add_argument("--check", action="store_true", help="exit 1 when a backend misses the target")
    args = parser.parse_args()
    # Seeding runs first start in this process; its log lines are noise here.
    logs.configure("console", level=logging.WARNING)
    args.duration = args.duration or (5.0 if args.quick else 15.0)
    args.warmup = 2.0 if args.quick else 3.0
    wrk_binary = ensure_wrk()
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    print(
        f"GET {PATH}: {args.users} users, {args.tokens} tokens ({args.sample} in use), {args.connections} "
        f"connections, {args.duration:.0f} s per backend, one server process, {os.cpu_count()} cores",
        file=sys.stderr,
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.1f} before starting; other work on these cores skews the figures",
              file=sys.stderr)  # fmt: skip
    results = [run(backend, args, wrk_binary) for backend in backends]
    print()
    for figures in results:
        print(figures.line())
    return 1 if args.check and any(f.missed for f in results) else 0


if __name__ == "__main__":
    sys.exit(main())

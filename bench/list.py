"""List benchmark: `GET /api/v2/workspaces?limit=100` with 1,000 workspaces on one server process.

    .venv/bin/python bench/list.py                      # SQLite, 1,000 workspaces, 300 requests
    .venv/bin/python bench/list.py --quick              # 100 requests
    .venv/bin/python bench/list.py --backend postgres --check

A fresh data dir (and, for PostgreSQL, a throwaway cluster from tests/pg.py) is migrated, the first start makes
the owner and the built-in templates, and 1,000 workspaces are written straight into the store, spread over 20
users, each with two builds, half with an agent row, in settled states (stopped, failed, canceled), so that no
worker or reconciler touches them. One `dockyard server --no-access-log` serves it; one client sends the list
request one at a time as the owner (who sees all 1,000) and times each reply. Printed: p50 and p95 latency, the
page size and count returned, the server's CPU time per request (what
the latency would be on an idle machine), and whether the target (p50 <= 30 ms on SQLite) is met. `--check` exits 1 on a miss.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import database, say, server
from dockyard.accounts import users
from dockyard.api.app import prepare_database
from dockyard.config import Settings
from dockyard.store.db import make_engine, make_sessionmaker
from dockyard.store.models import Template, User, Workspace, WorkspaceAgent, WorkspaceBuild
from dockyard_sdk.models import Role

PATH = "/api/v2/workspaces?limit=100"
TARGET_P50_MS = 30.0
# Settled latest builds: nothing in the server acts on these.
STATES = [("stop", "succeeded"), ("start", "failed"), ("stop", "canceled"), ("stop", "succeeded")]


def seed(url: str, data_dir: Path, *, workspace_count: int, user_count: int) -> None:
    settings = Settings(data_dir=data_dir, database_url=url, access_log=False)
    engine = make_engine(url)
    try:
        prepare_database(settings, engine)
        with make_sessionmaker(engine)() as db:
            org = users.default_organization(db)
            template = db.scalar(select(Template).where(Template.name == "base"))
            assert template is not None
            assert template.active_version_id is not None
            owners = [
                User(
                    organization_id=org.id,
                    username=f"bench-{i:03d}",
                    email=f"bench-{i:03d}@example.com",
                    password_hash=None,
                    role=Role.MEMBER.value,
                )
                for i in range(user_count)
            ]
            db.add_all(owners)
            db.flush()
            for i in range(workspace_count):
                owner = owners[i % user_count]
                workspace = Workspace(
                    organization_id=org.id,
                    owner_id=owner.id,
                    template_id=template.id,
                    template_version_id=template.active_version_id,
                    name=f"ws-{i:05d}",
                    parameters={},
                )
                db.add(workspace)
                db.flush()
                transition, status = STATES[i % len(STATES)]
                for number, (t, s) in enumerate([("start", "succeeded"), (transition, status)], start=1):
                    db.add(
                        WorkspaceBuild(
                            workspace_id=workspace.id,
                            number=number,
                            transition=t,
                            status=s,
                            initiator_id=owner.id,
                            template_version_id=template.active_version_id,
                            parameters={},
                            timings={},
                        )
                    )
                if i % 2:
                    db.add(
                        WorkspaceAgent(
                            workspace_id=workspace.id, stats={}, ports=[], connection="disconnected"
                        )
                    )
            db.commit()
    finally:
        engine.dispose()


def cpu_seconds(pid: int) -> float:
    """The server's user and system CPU time so far: per request, what the latency would be on an idle
    machine (on a loaded one the wall-clock figures also count waiting for a core)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run(backend: str, args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix=f"dockyard-bench-list-{backend}-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir(mode=0o700)  # the server refuses a data dir others can read
        with database(backend, data_dir) as url:
            started = time.monotonic()
            seed(url, data_dir, workspace_count=args.workspaces, user_count=args.users)
            say(f"{backend}: seeded {args.workspaces} workspaces in {time.monotonic() - started:.1f} s")
            token = (data_dir / "admin-token").read_text().strip()
            log = root / "server.log"
            with server(url, data_dir, log) as (base, pid), httpx.Client(base_url=base, timeout=30) as client:
                headers = {"Authorization": f"Bearer {token}"}
                for _ in range(args.warmup):
                    client.get(PATH, headers=headers).raise_for_status()
                timings = []
                cpu_before = cpu_seconds(pid)
                for _ in range(args.requests):
                    begun = time.perf_counter()
                    reply = client.get(PATH, headers=headers)
                    timings.append((time.perf_counter() - begun) * 1000)
                    reply.raise_for_status()
                cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / len(timings)
                body = reply.json()
    p50, p95 = statistics.median(timings), percentile(timings, 0.95)
    met = backend != "sqlite" or p50 <= TARGET_P50_MS
    target = (
        f"target p50 <= {TARGET_P50_MS:.0f} ms: {'met' if met else 'MISSED'}" if backend == "sqlite" else ""
    )
    print(
        f"{backend:8} GET {PATH} ({len(body['workspaces'])} of {body['count']}): "
        f"p50 {p50:.1f} ms  p95 {p95:.1f} ms  server CPU {cpu_ms:.1f} ms/request  over {len(timings)} requests"
        f"  {target}",
        flush=True,
    )
    return met


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "all"], default="sqlite")
    parser.add_argument("--quick", action="store_true", help="100 requests instead of 300")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    args.requests = args.requests or (100 if args.quick else 300)
    backends = ["sqlite", "postgres"] if args.backend == "all" else [args.backend]
    met = all([run(backend, args) for backend in backends])
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    sys.exit(main())

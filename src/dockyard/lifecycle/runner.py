"""Hosts the background work of a control-plane process: provisioner workers and the lifecycle loops.

Every replica runs workers; the lifecycle loops (reconcile, TTL, idle, autostart, drift, warm networks) run only on the replica
holding the lease (`lifecycle/leader.py`). Idle workers wake on the pubsub's jobs channel, so a build queued by
any replica starts at once wherever a worker is free.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs as logging
from dockyard.egress.service import Egress
from dockyard.events import Subscription, bus_of, channels
from dockyard.gitauth.mirrors import Mirrors
from dockyard.lifecycle import autostart, idle, reconcile, ttl
from dockyard.lifecycle.leader import FOLLOWER_RETRY, Lease, SingleProcess
from dockyard.provisioner import idempotency_keys, queue
from dockyard.provisioner.instance import Instance
from dockyard.provisioner.sizing import poll_interval
from dockyard.provisioner.worker import Worker
from dockyard.runtimes.base import Runtime, RuntimeFailure
from dockyard.tunnel.door import LinkDoor
from dockyard.tunnel.links import AgentLinks
from dockyard.warmpool.pool import WarmPool
from dockyard.warmpool.prebuild_pool import PrebuildPool

log = logging.get(__name__)


class Background:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtime: Runtime,
        *,
        workers: int,
        reconcile_interval: float = 5.0,
        lifecycle: bool = True,
        agent_dir: Path | None = None,
        agent_links: AgentLinks | None = None,
        data_dir: Path | None = None,
        warm_networks: dict[str, int] | None = None,
        lease: Lease | None = None,
        agent_url: str = "",
        egress: Egress | None = None,
        mirrors: Mirrors | None = None,
    ) -> None:
        # `allowlist` workspaces go out through this process's egress proxy.
        self.egress = egress
        if egress is not None:
            runtime.bind_egress(egress.gateway)
        self.agents: LinkDoor | None = None
        if agent_dir is not None and agent_links is not None:
            # The runtime mounts these; the workers give each workspace's link its token.
            runtime.bind_agent(agent_dir, agent_links.root)
            self.agents = LinkDoor(sessions, agent_links, url=agent_url)
        # Signs the builds this process claims, so a restart recovers them at once (provisioner/instance.py).
        self.instance = Instance.acquire(data_dir) if data_dir is not None else None
        self.warm_pool: WarmPool | None = None
        capabilities = runtime.capabilities()
        if warm_networks and capabilities.bridged_egress:
            # Egress "all" workspaces join the deployment bridge: there is no network to make ahead for them.
            warm_networks = {**warm_networks, "open": 0}
        if warm_networks and capabilities.prepared_networks:
            self.warm_pool = WarmPool(sessions, runtime, sizes=warm_networks)
        elif warm_networks:
            log.warning("this runtime makes no networks ahead of workspaces: --warm-networks is ignored")
        # Warm workspace pools run wherever the lifecycle loops do; templates without `prebuilds` cost one query.
        self.prebuild_pool = PrebuildPool(sessions)
        self.sessions = sessions
        self.runtime = runtime
        self.mirrors = mirrors
        self.workers = workers
        self.reconcile_interval = reconcile_interval
        self.lifecycle = lifecycle
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        # Without a lease this process leads: right for SQLite, and for tests that drive one runner.
        self.lease: Lease = lease or SingleProcess()
        self._jobs: Subscription | None = None
        # Lifecycle passes this process ran (as leader): for `doctor`-style diagnostics and tests.
        self.passes = 0

    def start(self) -> None:
        if self.instance is not None:
            with self.sessions() as db:
                reconcile.recover_orphaned_builds(db, self.instance)
        bus = bus_of(self.sessions)
        if bus is not None and self.instance is not None:
            # On SQLite, a `dockyard provisioner` beside this server holds another slot of the data dir.
            instance = self.instance
            bus.hears_all_when(lambda: not instance.has_peers())
        if bus is not None and self.workers:
            self._jobs = bus.pubsub.subscribe(channels.JOBS, lambda _build: queue.wakeup.notify())
        for index in range(self.workers):
            name = f"worker-{index}"
            worker = Worker(
                self.sessions,
                self.runtime,
                name=self.instance.worker_name(name) if self.instance is not None else name,
                agents=self.agents,
                mirrors=self.mirrors,
            )
            self._spawn(
                f"provisioner-{index}",
                lambda w=worker: w.run(self.stop_event, poll_interval=poll_interval(self.workers)),  # type: ignore[misc]
            )
        if self.lifecycle:
            self._spawn("lifecycle", self._loop)
            if self.warm_pool is not None:
                pool = self.warm_pool
                # Its own thread: making many networks takes seconds, which the reconciler should not wait for.
                self._spawn(
                    "warm-networks",
                    lambda: pool.run(self.stop_event, self.reconcile_interval, leading=self.lease.leading),
                )
            prebuild_pool = self.prebuild_pool
            self._spawn(
                "prebuilds",
                lambda: prebuild_pool.run(
                    self.stop_event, self.reconcile_interval, leading=self.lease.leading
                ),
            )

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self.prebuild_pool.wakeup.set()
        if self._jobs is not None:
            self._jobs.cancel()
        queue.wakeup.notify_all()
        for thread in self.threads:
            thread.join(timeout)
        if self.instance is not None:
            self.instance.release()
        self.lease.release()
        if self.egress is not None:
            self.egress.stop()

    def tick(self) -> None:
        """One pass of every lifecycle loop (the loop calls this; tests call it directly)."""
        with self.sessions() as db:
            reconcile.recover_stale_builds(db)
        if self.instance is not None:
            with self.sessions() as db:
                reconcile.recover_orphaned_builds(db, self.instance)
        with self.sessions() as db:
            ttl.enforce_deadlines(db)
        with self.sessions() as db:
            idle.enforce_idle(db)
        with self.sessions() as db:
            autostart.start_due(db)
        with self.sessions() as db:
            idempotency_keys.expire(db)
        with self.sessions() as db:
            try:
                reconcile.observe_drift(db, self.runtime)
            except RuntimeFailure as exc:
                # The engine being down is reported by builds and by `doctor`; it is no reason to stop looping.
                log.warning("runtime unavailable for reconciliation", error=exc.message)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            if self.lease.leading():
                self.passes += 1
                try:
                    self.tick()
                except Exception:
                    log.exception("lifecycle pass failed")
                wait = self.reconcile_interval
            else:
                # Followers try for the lease often enough to replace a dead leader within seconds.
                wait = min(self.reconcile_interval, FOLLOWER_RETRY)
            self.stop_event.wait(wait)

"""How many provisioner workers a process runs when the operator leaves it to Dockyard (`--provisioner-workers auto`).

A worker spends a build waiting on the engine (network, volume, container create and start, the setup step), not
on this process's CPU, and the engine takes a whole burst at once: the bare baseline of a burst of N is N
`docker run` + `exec` at a concurrency of N. A burst queued behind too few workers waits for nothing but a
worker: with 16 workers (8 per CPU) a burst of 50 spent 8.8 s of each build in the queue. So there are enough
workers for a burst of 50 on a 2-core host, up to 64 (where the engine's own throughput, not the worker count,
bounds a burst: on 2 cores 64 starts at once keep it busy, and every worker may hold a database connection).

What the worker count used to cost is kept flat: claims take one process lock (`queue.py`), and idle workers
poll the queue (for builds queued by other processes) IDLE_POLLS_PER_SECOND times a second between them, not
once a second each. A build queued in this process wakes one idle worker at once either way.
"""

from __future__ import annotations

import os

WORKERS_PER_CPU = 32
MIN_WORKERS = 16
MAX_WORKERS = 64
# How often a process's idle workers look at the queue, all of them together.
IDLE_POLLS_PER_SECOND = 16


def parse_workers(text: str) -> int | None:
    """`auto` (None) or a whole number of workers (0: builds run in `dockyard provisioner` processes)."""
    value = text.strip().lower()
    if value == "auto":
        return None
    if not value.isdigit():
        raise ValueError(f"must be a whole number or 'auto', not {text.strip()!r}")
    return int(value)


def worker_count(requested: int | None, *, cpus: int | None = None) -> int:
    """The workers to run: `requested`, or for None WORKERS_PER_CPU per CPU within MIN..MAX_WORKERS."""
    if requested is not None:
        return requested
    count = (cpus if cpus is not None else os.cpu_count() or 1) * WORKERS_PER_CPU
    return max(MIN_WORKERS, min(MAX_WORKERS, count))


def poll_interval(workers: int) -> float:
    """Seconds between one idle worker's looks at the queue: at least 1, longer the more workers there are."""
    return max(1.0, workers / IDLE_POLLS_PER_SECOND)

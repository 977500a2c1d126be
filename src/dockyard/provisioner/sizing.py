"""How many provisioner workers a process runs when the operator leaves it to Dockyard (`--provisioner-workers auto`).

A worker spends a build waiting on the engine (network, volume, container create and start, the setup step), not
on this process's CPU, and the engine does more at once than one at a time: fifty bare `docker run` + `exec` took
32 s at a concurrency of 50 on a loaded 2-core host and 47 s at 8. Four workers queued a burst of 200 creates for
a minute and a half. So the count follows the engine host's cores, generously; the engine's own serial part
(networks) is gated in the runtime, not by starving every other step of workers. Not more generously: each idle
worker polls the queue once a second, and on SQLite every claim waits for the one writer.
"""

from __future__ import annotations

import os

WORKERS_PER_CPU = 8
MIN_WORKERS = 8
MAX_WORKERS = 64


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

"""Waking idle provisioner workers (one per queued build, all at shutdown) and waiting requests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from dockyard.events import Bus
from dockyard.events.bus import RECHECK_ALONE, RECHECK_MEMORY
from dockyard.events.memory import MemoryPubsub
from dockyard.provisioner.instance import Instance
from dockyard.provisioner.queue import Wakeup


def _waiters(wakeup: Wakeup, count: int) -> tuple[list[threading.Thread], list[int]]:
    woken: list[int] = []
    lock = threading.Lock()

    def wait() -> None:
        if wakeup.wait(10, 0) != 0:
            with lock:
                woken.append(1)

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # all of them waiting
    return threads, woken


def test_a_queued_build_wakes_one_idle_worker_and_shutdown_wakes_all() -> None:
    wakeup = Wakeup()
    threads, woken = _waiters(wakeup, 8)
    wakeup.notify()
    time.sleep(0.3)
    # One build, one worker: the other seven keep waiting instead of all racing for the same claim.
    assert len(woken) == 1
    wakeup.notify_all()
    for thread in threads:
        thread.join(5)
    assert len(woken) == 8
    # A worker that was busy during a notify sees the new generation and looks at the queue at once.
    started = time.monotonic()
    assert wakeup.wait(10, 0) == 2
    assert time.monotonic() - started < 1


def test_waiters_on_sqlite_recheck_often_only_while_another_process_shares_the_data_dir(
    tmp_path: Path,
) -> None:
    server = Instance.acquire(tmp_path)
    bus = Bus(MemoryPubsub())
    try:
        assert bus.recheck == RECHECK_MEMORY  # nothing known: re-read every second
        bus.hears_all_when(lambda: not server.has_peers())
        assert not server.has_peers()
        assert bus.recheck == RECHECK_ALONE
        provisioner = Instance.acquire(tmp_path)  # `dockyard provisioner` beside the server
        server._peers = (0.0, False)  # past the second the answer is kept
        assert server.has_peers()
        assert bus.recheck == RECHECK_MEMORY
        provisioner.release()
        server._peers = (0.0, True)
        assert not server.has_peers()
    finally:
        server.release()
        bus.close()

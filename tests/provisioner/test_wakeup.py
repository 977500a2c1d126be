"""Waking idle provisioner workers: one per queued build, all at shutdown."""

from __future__ import annotations

import threading
import time

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

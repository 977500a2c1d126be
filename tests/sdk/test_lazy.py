"""Modules loaded at first use are safe to first use from many threads at once (an orchestrator's sandboxes
open their first streams together)."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import sys, threading
from dockyard_sdk.lazy import load_later
streams = load_later("dockyard_sdk.streams")
assert "websockets" not in sys.modules
start = threading.Barrier(16)
found = []
def use():
    start.wait()
    found.append(streams.open_websocket is not None and streams.ExecStream is not None)
threads = [threading.Thread(target=use) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(found))
"""


def test_first_use_from_sixteen_threads_at_once() -> None:
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "16", "")

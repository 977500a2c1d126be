"""Run `dockyard ARGS...` (e.g. `server --listen ...`) under a sampling CPU profiler and write what it found when
asked or when the process ends.

    DOCKYARD_PROFILE_OUT=/tmp/server .venv/bin/python bench/profile_server.py server --listen ...
    kill -USR1 PID   # start over: forget what was sampled so far (e.g. just before a burst)
    kill -USR2 PID   # write /tmp/server.txt (top functions) and /tmp/server.folded (stacks, flame-graph input)

`bench/provision.py --profile PATH` starts its servers this way and profiles each burst alone.

Why not cProfile: it follows one thread, and a control plane spends its CPU on many (the event loop,
Starlette's thread pool, provisioner workers, the pubsub); per-thread profilers with a CPU-time timer misreport
every call still waiting when the profile is read (they are closed on the reading thread's clock), which buries
the real figures under idle workers' waits. This sampler looks at every thread's stack SAMPLE_HZ times a
second and charges each thread's own CPU time used since the previous look (its CPU clock, so a thread that
waits on the engine, a lock or the database is charged nothing) to its current stack. Its own cost is a few
per cent of one core, and it is left out of the figures.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import threading
import time
from types import FrameType

SAMPLE_HZ = 200


class Sampler:
    def __init__(self) -> None:
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        self.started = time.monotonic()
        self._clocks: dict[int, float] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.stacks.clear()
            self.started = time.monotonic()

    def run(self) -> None:
        me = threading.get_ident()
        while True:
            time.sleep(1 / SAMPLE_HZ)
            frames = sys._current_frames()
            with self._lock:
                for ident, frame in frames.items():
                    if ident == me:
                        continue
                    try:
                        clock = time.clock_gettime(time.pthread_getcpuclockid(ident))
                    except (OSError, ProcessLookupError):
                        continue
                    used = clock - self._clocks.get(ident, clock)
                    self._clocks[ident] = clock
                    if used > 0:
                        self.stacks[_stack(frame)] += used

    def write(self, path: str) -> None:
        with self._lock:
            stacks = dict(self.stacks)
            seconds = time.monotonic() - self.started
        total = sum(stacks.values())
        own: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        for stack, used in stacks.items():
            own[stack[-1]] += used
            for name in set(stack):
                inclusive[name] += used
        with open(f"{path}.folded", "w") as out:
            for stack, used in sorted(stacks.items(), key=lambda item: -item[1]):
                out.write(f"{';'.join(stack)} {round(used * 1e6)}\n")
        with open(f"{path}.txt", "w") as out:
            out.write(f"{total:.2f} s of CPU in {seconds:.1f} s of wall time (sampled threads only)\n\n")
            for title, counter in (("own", own), ("inclusive", inclusive)):
                out.write(f"--- {title} CPU seconds ---\n")
                for name, used in counter.most_common(80):
                    out.write(f"{used:8.3f} {100 * used / total:5.1f}%  {name}\n")
                out.write("\n")


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    names = []
    while frame is not None:
        code = frame.f_code
        names.append(f"{code.co_name} ({_short(code.co_filename)}:{code.co_firstlineno})")
        frame = frame.f_back
    return tuple(reversed(names))


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main() -> None:
    path = os.environ.get("DOCKYARD_PROFILE_OUT") or "server-profile"
    sampler = Sampler()
    threading.Thread(target=sampler.run, name="profile-sampler", daemon=True).start()
    signal.signal(signal.SIGUSR1, lambda *_: sampler.reset())
    signal.signal(signal.SIGUSR2, lambda *_: sampler.write(path))
    from dockyard.cli.entry import main as cli

    sys.argv = ["dockyard", *sys.argv[1:]]
    try:
        cli()
    finally:
        sampler.write(path)


if __name__ == "__main__":
    main()

"""A spinner with the newest log lines above it, redrawn in place on a terminal, on the standard library alone.

What the Typer commands draw with Rich's `Live` (`cli/progress.py`), for the standard-library commands
(`create`, `start`, `stop`, `restart`): a user at a terminal is the one who notices the half second Rich and
Typer take to import. Lines said with `say` stay; the window and the spinner vanish when the wait ends.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Self, TextIO

from dockyard_sdk.units import format_duration

_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"  # Rich's "dots" spinner
_FRAME_SECONDS = 0.08
_REFRESH_SECONDS = 1 / 8
_WINDOW = 10
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def wanted(stream: TextIO | None = None) -> bool:
    """A terminal that can redraw lines: a tty whose TERM is not `dumb` (where Rich would not animate)."""
    stream = stream or sys.stderr
    return stream.isatty() and os.environ.get("TERM", "") not in ("dumb", "unknown")


class Live:
    """Redraws `label()` next to a spinner, under the newest `add`ed lines, until the `with` block ends."""

    def __init__(self, label: Callable[[], str], *, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.window: deque[str] = deque(maxlen=_WINDOW)
        self.started = time.monotonic()
        self._drawn = 0  # lines on screen now
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="dockyard-live", daemon=True)

    def __enter__(self) -> Self:
        self.stream.write(_HIDE_CURSOR)
        self._draw()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()
        with self._lock:
            self._clear()
            self.stream.write(_SHOW_CURSOR)
            self.stream.flush()

    def add(self, line: str) -> None:
        """A log line for the window (it scrolls out; `say` keeps a line)."""
        self.window.append(line)

    def say(self, text: str) -> None:
        """A line printed for good above the window."""
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
        self._draw()

    def _refresh(self) -> None:
        while not self._done.wait(_REFRESH_SECONDS):
            self._draw()

    def _draw(self) -> None:
        width = max(20, shutil.get_terminal_size().columns)
        elapsed = time.monotonic() - self.started
        frame = _FRAMES[int(elapsed / _FRAME_SECONDS) % len(_FRAMES)]
        spent = format_duration(timedelta(seconds=int(elapsed)))
        lines = [f"\x1b[2m{_fit(line, width)}\x1b[0m" for line in self.window]
        lines.append(_fit(f"{frame} {self.label()} ({spent})", width))
        with self._lock:
            self._clear()
            self.stream.write("\n".join(lines))
            self.stream.flush()
            self._drawn = len(lines)

    def _clear(self) -> None:
        # To the start of the first drawn line, and everything below it away.
        if self._drawn:
            up = f"\x1b[{self._drawn - 1}A" if self._drawn > 1 else ""
            self.stream.write(f"\r{up}\x1b[J")
            self._drawn = 0


def _fit(line: str, width: int) -> str:
    """One screen line: a longer one is cut with an ellipsis, as Rich cuts the window's lines."""
    # A build's own control characters (colours, carriage returns) would move the cursor under the redraw.
    line = "".join(ch if ch.isprintable() else " " for ch in line.replace("\t", "    "))
    return line if len(line) < width else line[: width - 2] + "…"

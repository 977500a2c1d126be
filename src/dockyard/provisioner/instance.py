"""Which process claimed a build, and whether that process is certainly gone.

Workers sign the builds they claim with `<data id>:<slot>@<boot>/<worker>`: the data dir's random id (made once,
kept in `<data_dir>/instance-id`), a slot the process holds an exclusive `flock` on for its whole life
(`<data_dir>/instances/slot-<n>.lock`), a random id of this boot, and the worker's name. The kernel drops a
`flock` when its process dies, however it dies (`kill -9` included), so:

- a process that takes slot n at start knows that every build signed with slot n and another boot belongs to a
  dead process, and requeues it at once: a server restarted after a crash recovers its builds immediately, not
  after the one-minute heartbeat timeout;
- any process on the same data dir can tell whether another slot's holder is alive by trying its lock, which
  catches a crashed `dockyard provisioner` process next to a live server.

Processes on other hosts (PostgreSQL deployments) have another data dir, so their builds are judged by the
builds' heartbeats only (lifecycle/reconcile.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_SLOTS = 1024


def data_id(data_dir: Path) -> str:
    """The data dir's id, made by the first process that asks."""
    path = data_dir / "instance-id"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if value:
            return value
        # A process died between creating and writing it; nothing has been signed with an id yet.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    value = secrets.token_hex(6)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


@dataclass(frozen=True)
class Signature:
    data_id: str
    slot: int
    boot: str

    @classmethod
    def parse(cls, worker: str | None) -> Signature | None:
        owner = (worker or "").partition("/")[0]
        name, at, boot = owner.partition("@")
        ident, colon, slot = name.partition(":")
        if not (at and colon and slot.isdigit() and ident and boot):
            return None
        return cls(ident, int(slot), boot)


@dataclass
class Instance:
    data_dir: Path
    data_id: str
    slot: int
    boot: str = field(default_factory=lambda: secrets.token_hex(4))
    _fd: int | None = field(default=None, repr=False)
    _peers: tuple[float, bool] = field(default=(0.0, False), repr=False)

    @classmethod
    def acquire(cls, data_dir: Path) -> Instance:
        """Take the lowest free slot of this data dir for the life of this process (or until `release`)."""
        folder = data_dir / "instances"
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        ident = data_id(data_dir)
        for slot in range(MAX_SLOTS):
            fd = _try_lock(folder / f"slot-{slot}.lock")
            if fd is not None:
                return cls(data_dir, ident, slot, _fd=fd)
        raise RuntimeError(f"more than {MAX_SLOTS} Dockyard processes share the data dir {data_dir}")

    def worker_name(self, worker: str) -> str:
        return f"{self.data_id}:{self.slot}@{self.boot}/{worker}"

    def is_gone(self, worker: str | None) -> bool:
        """Whether the process that signed a build with `worker` has certainly ended."""
        signature = Signature.parse(worker)
        if signature is None or signature.data_id != self.data_id:
            return False
        if signature.slot == self.slot:
            return signature.boot != self.boot
        fd = _try_lock(self.data_dir / "instances" / f"slot-{signature.slot}.lock")
        if fd is None:
            return False
        # Nobody holds that slot: its last holder is gone. Let go at once, so a starting process can take it.
        os.close(fd)
        return True

    def has_peers(self) -> bool:
        """Whether another live process holds a slot of this data dir (a `dockyard provisioner` beside a SQLite
        server); the answer is kept for a second."""
        checked, answer = self._peers
        if time.monotonic() - checked < 1.0:
            return answer
        answer = False
        for path in (self.data_dir / "instances").glob("slot-*.lock"):
            if path.name == f"slot-{self.slot}.lock":
                continue
            fd = _try_lock(path)
            if fd is None:
                answer = True
                break
            os.close(fd)
        self._peers = (time.monotonic(), answer)
        return answer

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd

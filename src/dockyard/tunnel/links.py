"""Each workspace's private link to the hub: a host folder bind-mounted into that workspace's container alone.

`<data_dir>/agents/<workspace id>/` holds the hub's socket for that workspace (`hub.sock`) and the agent's token
(`token`). Only the workspace's own container mounts the folder (read-only, at `MOUNT`), so a connection that
arrives on its socket can only come from inside that workspace: the listener that accepted a connection names
its workspace, and the token must name the same one (docs/SECURITY.md, "Agent identity").

Permissions: `agents/` is 0700 for the server's user, so no other host user reaches any link. A link folder is
0700 and its token 0600, owned by the workspace user's uid when the server runs as root (the usual case, since
it drives the Docker engine). A server running as another user cannot hand files to that uid, so it leaves the
folder 0711 and the token 0644: still unreachable from other workspaces and other host users, but readable by
every user inside the one workspace.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Protocol

from dockyard.runtimes.plan import LINK_MOUNT, SOCKET_NAME, TOKEN_NAME

# Where a workspace sees its link folder (runtimes/plan.py). Nested in the shared agent folder's mount point,
# which the server gives an empty `link` folder for this purpose (a mount point must exist in a read-only mount).
MOUNT = LINK_MOUNT
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Origin:
    """Which workspace a connection's transport proves it comes from.

    A private socket proves its workspace by being reachable from that workspace alone. A later networked
    transport proves it by the source address the runtime assigned; `transport` says which proof it is.
    """

    workspace_id: str
    transport: str = "socket"

    def describe(self) -> str:
        return f"{self.transport} of workspace {self.workspace_id}"


class LinkListener(Protocol):
    """Told (on a worker thread) when a link folder appears or goes, so the hub can listen at once."""

    def link_changed(self, workspace_id: str) -> None: ...


def checked(workspace_id: str) -> str:
    if not _ID.match(workspace_id):
        raise ValueError(f"workspace id {workspace_id!r} cannot name a link folder")
    return workspace_id


class AgentLinks:
    """The link folders of one data dir. Workers make and remove them; the hub listens in them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listeners: list[LinkListener] = []
        self._lock = Lock()

    def subscribe(self, listener: LinkListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: LinkListener) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def folder(self, workspace_id: str) -> Path:
        return self.root / checked(workspace_id)

    def socket_path(self, workspace_id: str) -> Path:
        return self.folder(workspace_id) / SOCKET_NAME

    def ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Reached only by the server's user; containers get their own folder by bind mount, not by this path.
        os.chmod(self.root, 0o700)

    def prepare(self, workspace_id: str, *, token: str, uid: int) -> Path:
        """Make the workspace's link folder and token file (idempotent); returns the folder."""
        self.ensure_root()
        folder = self.folder(workspace_id)
        folder.mkdir(exist_ok=True)
        owned = os.geteuid() == 0
        # Written beside and renamed, so an agent never reads half a token. The staging name is unique per call:
        # named by pid alone, two of one server's threads preparing one workspace truncated each other's file.
        fd, name = tempfile.mkstemp(dir=folder, prefix=f".{TOKEN_NAME}.")
        staging = Path(name)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        if owned:
            os.chown(staging, uid, uid)
            os.chmod(staging, 0o600)
        else:
            os.chmod(staging, 0o644)
        staging.replace(folder / TOKEN_NAME)
        if owned:
            os.chown(folder, uid, uid)
        os.chmod(folder, 0o700 if owned else 0o711)
        self._notify(workspace_id)
        return folder

    def remove(self, workspace_id: str) -> None:
        shutil.rmtree(self.folder(workspace_id), ignore_errors=True)
        self._notify(workspace_id)

    def workspace_ids(self) -> set[str]:
        """The workspaces that have a link folder (made by any process on this data dir)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return set()
        return {name for name in names if _ID.match(name) and (self.root / name).is_dir()}

    def exists(self, workspace_id: str) -> bool:
        return self.folder(workspace_id).is_dir()

    def _notify(self, workspace_id: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener.link_changed(workspace_id)

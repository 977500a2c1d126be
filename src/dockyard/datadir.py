"""The data dir holds the database, deployment secrets and the admin's first token: private to the server's user.

Modes are set explicitly, never left to the umask: `mkdir` and `open` mask what they are given, and SQLite
creates its WAL and shared-memory files with the database file's own mode, so a database made 0600 before
SQLite first opens it keeps all three private.

The agent folder (`<data dir>/agent`) is the one exception inside: workspaces bind-mount it and their
unprivileged user must read the agent and reach its socket, so the hub opens it up on purpose. Local users
on the host still cannot reach it through the 0700 data dir; workspaces reach it through their mount.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# Folders the server opens up deliberately (see the module docstring).
SHARED_FOLDERS = frozenset({"agent"})
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class DataDirOpen(Exception):
    """The data dir can be read or entered by other local users."""


def others_can_enter(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o077)


def open_message(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    return (
        f"the data dir {path} is open to other local users (mode {mode:04o}); it holds the database, "
        f"deployment keys and the admin token. Run `chmod 700 {path}`, or start with --allow-open-data-dir "
        "to run anyway"
    )


def prepare(data_dir: Path, *, allow_open: bool) -> str | None:
    """Create the data dir 0700, or check an existing one. An existing folder open to others is not changed
    behind the operator's back (it may be shared on purpose): it is refused (DataDirOpen) unless `allow_open`,
    and then the returned warning must be logged."""
    if not data_dir.exists():
        data_dir.mkdir(mode=PRIVATE_DIR, parents=True)
        # mkdir's mode is masked by the umask.
        data_dir.chmod(PRIVATE_DIR)
        return None
    if not others_can_enter(data_dir):
        return None
    if not allow_open:
        raise DataDirOpen(open_message(data_dir))
    return open_message(data_dir)


def sqlite_path(database_url: str) -> Path | None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _private_file(path: Path) -> None:
    if path.is_symlink() or not path.is_file():
        return
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_FILE:
        path.chmod(PRIVATE_FILE)


def protect(data_dir: Path, *, database_url: str) -> None:
    """Make the SQLite database (made now if missing, so that SQLite inherits the mode) and every file and
    folder directly in the data dir private, whatever the umask. Runs before the database is first opened."""
    if not data_dir.exists():
        data_dir.mkdir(mode=PRIVATE_DIR, parents=True)
        data_dir.chmod(PRIVATE_DIR)
    database = sqlite_path(database_url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        if not database.exists():
            # Created 0600 before SQLite opens it: its -wal and -shm files copy this mode.
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        for suffix in SQLITE_SUFFIXES:
            _private_file(database.with_name(database.name + suffix))
    for entry in data_dir.iterdir():
        if entry.name in SHARED_FOLDERS or entry.is_symlink():
            continue
        if entry.is_dir():
            if stat.S_IMODE(entry.stat().st_mode) != PRIVATE_DIR:
                entry.chmod(PRIVATE_DIR)
        else:
            _private_file(entry)

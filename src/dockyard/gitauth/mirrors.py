"""Git mirrors: the server fetches a repository once for many workspaces, which clone it from a read-only mount.

A fleet of agents on one repository would otherwise clone it once each: N round trips to the git host through
the git proxy (or N clones from GitHub, which rate-limits them), and N packs computed there. With a mirror the
server fetches the repository with its owner's credential, as the git proxy would forward it, into
`<data dir>/git-mirrors/<owner>/<repository hash>/repo.git`. That folder is mounted read-only into the owner's
workspaces of that repository, whose agent clones from it and then points `origin` at the repository itself;
pushes and later fetches go there as before. A mirror holds one owner's repository (never another user's, whose
credential may read other branches) and no credential.

Fresh as a clone: each workspace start asks for a fetch that began at or after its own request (`after`).
Requests that arrive while a fetch runs are served by the next one, so a burst of N starts makes a few fetches,
not N. After each fetch `state.json` says when it began and whether it worked; the agent waits for one that began
at or after its request, and clones over the network, as without a mirror, when it failed or does not come.

A clone reads the refs first and copies the objects after, so a fetch beside it never leaves it a ref without
its objects. Each fetch adds a pack; once there are many, the small ones are rolled into one (`git repack
--geometric`), which deletes them, so it runs only while no clone reads the mirror: each agent holds a read
lock on `clones.lock` in the mounted folder while it clones, and the roll-up, between a fetch and its state,
takes the write lock or leaves the packs to a later fetch. Nothing else deletes objects (no gc, no prune). A
mirror that no start has used for a week is removed whole.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from dockyard import logs as logging
from dockyard.config import Settings
from dockyard.gitauth import fetching
from dockyard.outbound import OutboundDenied, OutboundPolicy

log = logging.get(__name__)

REPO = "repo.git"
STATE = "state.json"
CLONES_LOCK = "clones.lock"
# Each fetch with anything new adds a pack: past this many, the small ones are rolled together.
MAX_PACKS = 16
FETCH_TIMEOUT = 300.0
CONNECT_TIMEOUT = 5.0
# A mirror no start has used for a week is removed (looked for at most once an hour).
UNUSED_FOR = 7 * 24 * 3600.0
PRUNE_EVERY = 3600.0
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_MIRROR_CONFIG = {
    # Objects are removed only by the roll-up, while no clone reads the mirror (see above).
    "gc.auto": "0",
    "maintenance.auto": "false",
    # Workspaces read the mirror as their own user, whatever the server's umask.
    "core.sharedRepository": "all",
}


def of(settings: Settings) -> Mirrors | None:
    """The process's mirrors, unless `--no-git-mirrors`."""
    return Mirrors(settings.git_mirrors_dir, settings.outbound) if settings.git_mirrors else None


@dataclass
class _Mirror:
    """One mirror's fetches: at most one runs, and one more is due while a request is newer than it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False
    wanted: float = 0.0
    began: float = 0.0
    credential: tuple[str, str] | None = None


class Mirrors:
    def __init__(self, root: Path, outbound: OutboundPolicy) -> None:
        self.root = root
        self.outbound = outbound
        self._mirrors: dict[Path, _Mirror] = {}
        self._lock = threading.Lock()
        self._pruned = float("-inf")

    def folder(self, owner_id: str, repo: str) -> Path:
        """The owner's mirror of `repo` (made empty if new): the folder a workspace mounts."""
        self._prune_now_and_then()
        digest = hashlib.sha256(repo.encode()).hexdigest()[:32]
        folder = self.root / owner_id / digest
        folder.mkdir(parents=True, exist_ok=True)
        # Inside a workspace the mount is the folder alone: the data dir above it may stay private.
        os.chmod(folder, 0o755)  # noqa: S103 - workspaces read the mirror as their own user
        clones = folder / CLONES_LOCK
        if not clones.exists():
            clones.touch(0o644)
            os.chmod(clones, 0o644)  # whatever the umask: each workspace's agent opens it to take its lock
        # Marked as used now, so that a prune (in this process or one beside it) leaves it alone.
        os.utime(folder)
        return folder

    def prune(self, unused_for: float = UNUSED_FOR) -> list[Path]:
        """Remove the mirrors that no start has used for `unused_for` seconds; the ones removed."""
        removed = []
        cutoff = time.time() - unused_for
        for folder in self.root.glob("*/*"):
            if not folder.is_dir() or folder.stat().st_mtime >= cutoff:
                continue
            with open(folder.parent / f"{folder.name}.lock", "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # being fetched
                if folder.stat().st_mtime >= cutoff:
                    continue
                # The lock file stays: another process may be waiting on it.
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
                self._forget(folder)
        return removed

    def _forget(self, folder: Path) -> None:
        with self._lock:
            mirror = self._mirrors.get(folder)
            if mirror is not None and not mirror.running:
                del self._mirrors[folder]

    def _prune_now_and_then(self) -> None:
        with self._lock:
            if time.monotonic() - self._pruned < PRUNE_EVERY:
                return
            self._pruned = time.monotonic()
        threading.Thread(target=self._prune_quietly, name="git-mirror-prune", daemon=True).start()

    def _prune_quietly(self) -> None:
        try:
            for folder in self.prune():
                log.info("git mirror removed: unused", folder=str(folder))
        except OSError as exc:
            log.warning("git mirror prune failed", error=str(exc))

    def refresh(self, folder: Path, repo: str, *, after: float, credential: tuple[str, str] | None) -> None:
        """Have a fetch of `repo` into `folder` begin at or after `after` (a time.time()), in the background."""
        with self._lock:
            mirror = self._mirrors.setdefault(folder, _Mirror())
        with mirror.lock:
            mirror.wanted = max(mirror.wanted, min(after, time.time()))
            mirror.credential = credential
            if mirror.running or mirror.began >= after:
                return
            mirror.running = True
        threading.Thread(
            target=self._fetches, args=(folder, repo, mirror), name="git-mirror", daemon=True
        ).start()

    def _fetches(self, folder: Path, repo: str, mirror: _Mirror) -> None:
        while True:
            with mirror.lock:
                if mirror.began >= mirror.wanted:
                    mirror.running = False
                    return
                credential = mirror.credential
            # Outside the mounted folder, which any of the owner's workspaces could lock.
            with open(folder.parent / f"{folder.name}.lock", "a") as lock:
                # A `dockyard provisioner` process beside the server shares the data dir: its fetches and this
                # one's take turns, each stamped with when it really began and its state written before the
                # next one begins, so that `state.json` never goes back in time.
                fcntl.flock(lock, fcntl.LOCK_EX)
                began = time.time()
                try:
                    error = self._fetch(folder, repo, credential)
                except (
                    Exception
                ) as exc:  # a mirror is a cache: whatever breaks it, workspaces clone as before
                    log.exception("git mirror fetch failed", repo=repo)
                    error = f"{type(exc).__name__}: {exc}"
                if error:
                    log.warning("git mirror fetch failed", repo=repo, error=error)
                # Before the state: the starts waiting for this fetch are not cloning yet.
                if not error:
                    self._roll_up(folder)
                _write_state(folder, {"began": began, "ok": not error, "error": error})
            with mirror.lock:
                mirror.began = began

    def _fetch(self, folder: Path, repo: str, credential: tuple[str, str] | None) -> str:
        """Fetch `repo` into the mirror (cloned bare the first time); "" or why it failed."""
        try:
            where = fetching.destination(repo, self.outbound)
        except (OutboundDenied, OSError) as exc:
            return f"cannot reach {repo}: {exc}"
        # A host the server cannot reach (one only the workspaces' networks reach) fails at once, and the
        # workspaces clone over their own network instead of waiting.
        if not where.reachable(CONNECT_TIMEOUT):
            return f"cannot connect to {where.host} port {where.port} within {CONNECT_TIMEOUT:.0f} s"
        env = fetching.git_env(home=str(folder), pinned=where.curl_resolve(), credential=credential)
        bare = folder / REPO
        if (bare / "HEAD").exists():
            # A pack even for a few objects (git unpacks fewer than 100 into files of their own): the roll-up
            # then counts packs alone, and a clone copies a few files rather than thousands.
            fetch = ["git", "-C", str(bare), "-c", "fetch.unpackLimit=1", "fetch", "--quiet", "--prune"]
            return _run([*fetch, "--", repo, *_REFSPECS], env)
        for leftover in folder.glob(f".{REPO}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        # Cloned beside and renamed, so that a workspace never sees half a repository.
        partial = folder / f".{REPO}.{uuid.uuid4().hex[:8]}"
        settings = [f"--config={key}={value}" for key, value in _MIRROR_CONFIG.items()]
        error = _run(["git", "clone", "--quiet", "--bare", *settings, "--", repo, str(partial)], env)
        if not error:
            os.rename(partial, bare)
        shutil.rmtree(partial, ignore_errors=True)
        return error

    def _roll_up(self, folder: Path) -> bool:
        """Roll the mirror's small packs (and any loose objects) into one once fetches have added many; only
        while no clone reads the mirror, since it deletes what it rolled up. Whether it ran."""
        objects = folder / REPO / "objects"
        try:
            packs = len(list((objects / "pack").glob("*.pack")))
            loose = any(any(fanout.iterdir()) for fanout in objects.glob("[0-9a-f][0-9a-f]"))
            if packs <= MAX_PACKS and not loose:
                return False
            # A POSIX lock, not flock(2): a write lock needs the file open for writing, which the workspaces'
            # read-only mount cannot give them, so the most one can do is hold up its own owner's roll-ups.
            with open(folder / CLONES_LOCK, "r+b") as clones:
                try:
                    fcntl.lockf(clones, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EACCES, errno.EAGAIN):
                        return False  # a workspace is cloning: a later fetch rolls them up
                    raise
                # `--geometric` leaves the big pack as it is: each roll-up rewrites little.
                repack = ["git", "-C", str(folder / REPO), "repack", "--geometric=2", "-d", "--quiet"]
                error = _run(repack, fetching.git_env(home=str(folder), pinned="", credential=None))
        except OSError as exc:
            error = str(exc)
        if error:
            log.warning("git mirror roll-up failed", folder=str(folder), error=error)
        return not error


def _run(argv: list[str], env: dict[str, str]) -> str:
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=FETCH_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"git took more than {FETCH_TIMEOUT:.0f} s"
    if done.returncode == 0:
        return ""
    return " ".join(line.strip() for line in done.stderr.strip().splitlines()[-3:])[-500:] or "git failed"


def _write_state(folder: Path, state: dict[str, object]) -> None:
    partial = folder / f".{STATE}.{uuid.uuid4().hex[:8]}"
    partial.write_text(json.dumps(state))
    os.chmod(partial, 0o644)
    os.replace(partial, folder / STATE)

"""Home volumes with a real size: one ext4 file system per workspace, in a sparse image file.

Docker's `--storage-opt size` needs overlay2 on xfs with project quotas, which most hosts (this one: ext4) do
not have, so `resources.disk` is enforced below Docker instead. Per workspace `w`, under the disks folder:
- `w.img`, a sparse file of the template's size, formatted ext4 (no blocks reserved for root, the home folder's
  root owned by the workspace uid, no `lost+found` to clutter the home);
- `mnt/w`, where the image is loop-mounted (nosuid, nodev) on the host;
- the home volume `dockyard-home-w`, a Docker `local` volume with `type=none, o=bind, device=mnt/w`, so the
  container sees the mounted file system and a write past its size fails with ENOSPC in the workspace alone.

The mount point is made immutable (`chattr +i`) while nothing is mounted on it, so that a container started
behind Dockyard's back with the disk unmounted gets a read-only empty folder instead of writing to the host's
disk without a limit. Mounts do not survive a host reboot: every start mounts its disk again, and
`mount_all()` (run by the first reconciliation pass of a server) mounts every disk it holds.

Not done: resizing (a new `resources.disk` applies to new workspaces only), and a cap on the sum of the sizes:
the images are sparse, so the disks folder's own file system bounds them all together.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from dockyard.runtimes.base import LogSink, RuntimeFailure
from dockyard.runtimes.docker.spec import WorkspaceSpec

# ext4 needs room for its metadata and journal; below this the file system would be mostly overhead.
MIN_DISK_BYTES = 16 * 2**20
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
COMMAND_TIMEOUT = 60


class DiskFailure(RuntimeFailure):
    """A home disk could not be made, mounted or removed."""


class HomeDisks:
    """The size-limited home file systems of one deployment, all under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def image(self, workspace_id: str) -> Path:
        return self.root / f"{_checked(workspace_id)}.img"

    def mountpoint(self, workspace_id: str) -> Path:
        return self.root / "mnt" / _checked(workspace_id)

    def ensure(self, workspace_id: str, size: int, *, uid: int, log: LogSink) -> Path:
        """Make the disk if it is new, mount it if it is not, and return its mount point."""
        if size < MIN_DISK_BYTES:
            raise DiskFailure(
                f"resources.disk is {size} bytes; a home disk needs at least {MIN_DISK_BYTES // 2**20} MiB."
            )
        with self._lock(workspace_id), _host_errors("making the home disk"):
            image, mountpoint = self.image(workspace_id), self.mountpoint(workspace_id)
            fresh = not image.exists()
            if fresh:
                self._make(image, size, uid=uid, log=log)
            elif image.stat().st_size != size:
                log(
                    f"The home disk of {workspace_id} keeps its size of {image.stat().st_size} bytes: "
                    "resizing is not supported"
                )
            self._mount(image, mountpoint)
            if fresh:
                # mkfs makes lost+found; in a home folder it is only clutter (e2fsck recreates it if needed).
                with contextlib.suppress(OSError):
                    (mountpoint / "lost+found").rmdir()
            return mountpoint

    def remove(self, workspace_id: str, log: LogSink) -> None:
        """Unmount the disk and delete it with everything on it. Nothing to do for a workspace without one."""
        with self._lock(workspace_id), _host_errors("removing the home disk"):
            image, mountpoint = self.image(workspace_id), self.mountpoint(workspace_id)
            if mounted(mountpoint):
                try:
                    _run(["umount", str(mountpoint)])
                except DiskFailure:
                    # Still in use (a shell of the host's in it, a container being removed): detach it now and
                    # let the kernel finish when the last user goes; the image is deleted either way.
                    _run(["umount", "--lazy", str(mountpoint)])
            if mountpoint.exists():
                _immutable(mountpoint, on=False)
                mountpoint.rmdir()
            if image.exists():
                image.unlink()
                log(f"Removed the home disk of {workspace_id}")

    def mount_all(self, log: LogSink) -> list[str]:
        """Mount every disk that is not mounted (after a host reboot); returns their workspace ids."""
        if not self.root.is_dir():
            return []
        done = []
        for image in sorted(self.root.glob("*.img")):
            workspace_id = image.name.removesuffix(".img")
            if not _ID.match(workspace_id):
                continue
            mountpoint = self.mountpoint(workspace_id)
            if mounted(mountpoint):
                continue
            with self._lock(workspace_id):
                try:
                    self._mount(image, mountpoint)
                except DiskFailure as exc:
                    log(f"Cannot mount the home disk of {workspace_id}: {exc.message} {exc.detail}".strip())
                    continue
            done.append(workspace_id)
        return done

    # -- steps ------------------------------------------------------------------------------------------

    def _lock(self, workspace_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(workspace_id, threading.Lock())

    def _make(self, image: Path, size: int, *, uid: int, log: LogSink) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The images hold users' files: only root (and so dockerd) may read them.
        os.chmod(self.root, 0o700)
        log(f"Making a home disk of {size} bytes")
        partial = image.with_suffix(".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        try:
            _run(
                [
                    "mkfs.ext4",
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-E",
                    f"lazy_itable_init=1,lazy_journal_init=1,root_owner={uid}:{uid}",
                    str(partial),
                ]
            )
        except DiskFailure:
            partial.unlink(missing_ok=True)
            raise
        # Renamed only once formatted, so that a crash never leaves an image that looks usable and is not.
        partial.rename(image)

    def _mount(self, image: Path, mountpoint: Path) -> None:
        if mounted(mountpoint):
            return
        mountpoint.mkdir(mode=0o700, parents=True, exist_ok=True)
        _immutable(mountpoint, on=True)
        _run(["mount", "-o", "loop,nosuid,nodev", str(image), str(mountpoint)])


@contextlib.contextmanager
def _host_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise DiskFailure(f"Failed {doing}: {exc.strerror or exc}.", detail=str(exc)) from exc


def mounted(path: Path) -> bool:
    """Whether something is mounted exactly at `path` (in this process's mount namespace)."""
    target = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                fields = line.split(" ")
                if len(fields) > 4 and _unescape(fields[4]) == target:
                    return True
    except OSError:
        return False
    return False


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def home_volume(
    client: docker.DockerClient,
    disks: HomeDisks | None,
    spec: WorkspaceSpec,
    volume: str,
    log: LogSink,
    *,
    labels: dict[str, str],
) -> tuple[int | None, dict[str, str] | None]:
    """Make the workspace's home volume if needed; returns the size it is limited to (None when it is not)
    and the volume's labels (an existing volume keeps its own).

    The engine's low-level create answers with the volume as it is, made or found, which spares an inspect
    of it per start.
    """
    if spec.disk_bytes is None:
        return None, client.api.create_volume(volume, labels=labels).get("Labels")
    if disks is None:
        log("The template sets resources.disk, but this runtime has no folder for home disks: not enforced")
        return None, client.api.create_volume(volume, labels=labels).get("Labels")
    mountpoint = disks.ensure(spec.workspace_id, spec.disk_bytes, uid=spec.uid, log=log)
    try:
        existing = client.api.inspect_volume(volume)
    except docker.errors.NotFound:
        existing = None
    if existing is None:
        created = client.api.create_volume(
            volume,
            driver="local",
            driver_opts={"type": "none", "o": "bind", "device": str(mountpoint)},
            labels=labels,
        )
        existing = created
    elif (existing.get("Options") or {}).get("device") != str(mountpoint):
        # Made before the template limited the disk: the data is in it, so it stays as it is.
        log(f"Volume {volume} predates the disk limit and is not limited")
        return None, existing.get("Labels")
    # The image's own size: an older disk keeps the size it was made with.
    return disks.image(spec.workspace_id).stat().st_size, existing.get("Labels")


# linux/fs.h: the inode flags ioctls (what chattr uses) and the immutable flag.
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_IMMUTABLE_FL = 0x00000010


def _immutable(path: Path, *, on: bool) -> None:
    """`chattr +i`/`-i` without a process of its own (a start costs enough already)."""
    # Best effort: not every file system under the disks folder supports the flag (tmpfs does not).
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            buffer = bytearray(4)
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buffer)
            flags = int.from_bytes(buffer, sys.byteorder)
            wanted = flags | _FS_IMMUTABLE_FL if on else flags & ~_FS_IMMUTABLE_FL
            if wanted != flags:
                fcntl.ioctl(fd, _FS_IOC_SETFLAGS, wanted.to_bytes(4, sys.byteorder))
        finally:
            os.close(fd)


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError as exc:
        raise DiskFailure(
            f"Cannot enforce resources.disk: {argv[0]} is not installed on the Docker host "
            "(packages e2fsprogs and mount).",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise DiskFailure(f"`{' '.join(argv)}` did not finish within {COMMAND_TIMEOUT} s.") from exc
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode("utf-8", "replace").strip()
        hint = " (making and mounting home disks needs root on the Docker host)" if os.geteuid() != 0 else ""
        raise DiskFailure(f"Cannot enforce resources.disk: `{argv[0]}` failed{hint}.", detail=detail) from exc


def _checked(workspace_id: str) -> str:
    if not _ID.match(workspace_id):
        raise ValueError(f"workspace id {workspace_id!r} cannot name a home disk")
    return workspace_id

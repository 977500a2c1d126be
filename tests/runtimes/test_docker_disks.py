"""Size-limited home disks on the host (loop-mounted ext4), without Docker: what the home volume binds to."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.runtimes.docker.disks import DiskFailure, HomeDisks, mounted

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="loop mounts need root")

SIZE = 32 * 2**20


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[HomeDisks]:
    disks = HomeDisks(tmp_path / "disks")
    yield disks
    for image in (tmp_path / "disks").glob("*.img"):
        disks.remove(image.name.removesuffix(".img"), lambda line: None)


def test_a_disk_is_a_file_system_of_its_size_owned_by_the_user(disks: HomeDisks) -> None:
    lines: list[str] = []
    mountpoint = disks.ensure("ws1", SIZE, uid=1000, log=lines.append)

    assert mounted(mountpoint)
    assert lines == [f"Making a home disk of {SIZE} bytes"]
    assert os.stat(mountpoint).st_uid == 1000
    assert os.listdir(mountpoint) == []
    assert os.stat(disks.root).st_mode & 0o777 == 0o700
    image = disks.image("ws1")
    assert image.stat().st_size == SIZE
    # Sparse: the host holds only what was written.
    assert image.stat().st_blocks * 512 < SIZE
    with pytest.raises(OSError, match="No space left on device") as full:
        _fill(mountpoint / "big", 64 * 2**20)
    assert full.value.errno == errno.ENOSPC
    # Again: mounted already, nothing made.
    assert disks.ensure("ws1", SIZE, uid=1000, log=lines.append) == mountpoint
    assert len(lines) == 1


def test_mount_all_mounts_what_a_reboot_unmounted_and_remove_leaves_nothing(disks: HomeDisks) -> None:
    mountpoint = disks.ensure("ws2", SIZE, uid=1000, log=lambda line: None)
    (mountpoint / "kept").write_text("data")
    subprocess.run(["umount", str(mountpoint)], check=True)
    with pytest.raises(PermissionError):
        (mountpoint / "stray").write_text("the bare mount point is immutable")

    assert disks.mount_all(lambda line: None) == ["ws2"]
    assert (mountpoint / "kept").read_text() == "data"
    assert disks.mount_all(lambda line: None) == []

    lines: list[str] = []
    disks.remove("ws2", lines.append)
    assert not mountpoint.exists()
    assert not disks.image("ws2").exists()
    assert lines == ["Removed the home disk of ws2"]
    disks.remove("ws2", lines.append)
    assert len(lines) == 1


def test_a_disk_too_small_for_ext4_is_refused_with_the_field(disks: HomeDisks) -> None:
    with pytest.raises(DiskFailure) as refused:
        disks.ensure("ws3", 2**20, uid=1000, log=lambda line: None)
    assert refused.value.message == "resources.disk is 1048576 bytes; a home disk needs at least 16 MiB."
    assert not disks.image("ws3").exists()


def test_workspace_ids_cannot_escape_the_folder(disks: HomeDisks) -> None:
    with pytest.raises(ValueError, match="cannot name a home disk"):
        disks.image("../etc")


def _fill(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        for _ in range(size // 2**20):
            file.write(b"\0" * 2**20)
            file.flush()
            os.fsync(file.fileno())

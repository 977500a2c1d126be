"""Resource limits through a real `dockyard server` on the real Docker engine: a command that times out takes
everything it forked with it, a workspace stops at its process, memory and disk limits and says so, and the
files and exec APIs return what is really there."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import manifest_yaml, tar_gz
from tests.live import LiveServer

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

DISK = 64 * 2**20
PIDS = 128


def _sh(live: LiveServer, ws: m.Workspace, command: str, **kwargs: object) -> m.ExecResult:
    return live.client.exec(ws.id, m.ExecRequest(command=command, **kwargs))


def _limited(live: LiveServer, name: str) -> m.Workspace:
    if not [t for t in live.client.list_templates() if t.name == "limited"]:
        manifest = manifest_yaml(
            name="limited",
            resources={"cpu": 1, "memory": "192Mi", "pids": PIDS, "disk": "64Mi"},
            startup_script="",
        )
        live.client.create_template(tar_gz({"dockyard.yaml": manifest}))
    return live.workspace(name, template="limited")


def _processes(live: LiveServer, ws: m.Workspace, needle: str) -> list[str]:
    listing = _sh(live, ws, "ps -eo pid,sid,args")
    return [line for line in listing.stdout.splitlines() if needle in line and "ps -eo" not in line]


def _stats(live: LiveServer, ws: m.Workspace, ready: Callable[[m.AgentStats], bool]) -> m.Workspace:
    """The workspace once its agent reported stats that satisfy `ready` (reports come every 15 s)."""
    deadline = time.monotonic() + 60
    while True:
        current = live.client.get_workspace(ws.id)
        stats = current.agent.stats if current.agent is not None else None
        if stats is not None and ready(stats):
            return current
        assert time.monotonic() < deadline, stats
        time.sleep(1)


# --- a timeout ends everything the command started -------------------------------------------------------------

# Background jobs in the command's group, a job-control group, a new session, and a bounded fork loop.
FORKS = (
    "sleep 1000 & sleep 1000 & "
    "(set -m; sleep 1000 &); "
    "setsid sleep 1000 & "
    "setsid sh -c 'sleep 1000 & wait' & "
    "i=0; while [ $i -lt 30 ]; do sleep 1000 & i=$((i+1)); done; "
    "wait"
)


def test_an_exec_timeout_kills_every_process_it_forked(live: LiveServer) -> None:
    ws = live.workspace("dev")
    before = _processes(live, ws, "sleep 1000")
    assert before == []

    result = _sh(live, ws, FORKS, timeout=3)

    assert result.timed_out
    assert result.exit_code is None
    deadline = time.monotonic() + 5
    while (left := _processes(live, ws, "sleep 1000")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


def test_a_streamed_exec_timeout_and_a_vanished_client_kill_everything(live: LiveServer) -> None:
    ws = live.workspace("dev")
    url = live.url.replace("http://", "ws://") + f"/api/v2/workspaces/{ws.id}/exec/stream"
    headers = {"Authorization": f"Bearer {live.token}"}
    with ws_connect(url, additional_headers=headers) as conn:
        conn.send(json.dumps({"command": FORKS, "timeout": 2}))
        messages: list[str | bytes] = []
        while not (messages and isinstance(messages[-1], str)):
            messages.append(conn.recv(timeout=20))
    assert json.loads(messages[-1])["timed_out"] is True
    # The client goes away while the command runs (as an SSH client that drops its connection does).
    with ws_connect(url, additional_headers=headers) as conn:
        conn.send(json.dumps({"command": FORKS.replace("wait", "echo forked; wait")}))
        seen = b""
        while b"forked" not in seen:
            seen += conn.recv(timeout=20)[1:]  # type: ignore[operator]
        assert len(_processes(live, ws, "sleep 1000")) >= 30
    deadline = time.monotonic() + 5
    while (left := _processes(live, ws, "sleep 1000")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == []


# --- processes and memory -----------------------------------------------------------------------------------------


FORK_LOOP = """
import errno, os, signal, sys, time
children = []
try:
    for _ in range(1000):
        pid = os.fork()
        if pid == 0:
            time.sleep(1000)
            os._exit(0)
        children.append(pid)
except OSError as exc:
    sys.stdout.write(f"{errno.errorcode[exc.errno]},{exc.strerror},{len(children)}")
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_a_fork_loop_stops_at_the_templates_pids_limit_and_says_so(live: LiveServer) -> None:
    ws = _limited(live, "procs")

    result = live.client.exec(ws.id, m.ExecRequest(command=["python3", "-c", FORK_LOOP], timeout=60))

    refused, reason, forked = result.stdout.split(",")
    assert (refused, reason) == ("EAGAIN", "Resource temporarily unavailable"), result
    assert 0 < int(forked) < PIDS
    assert result.limits_hit == ["pids"]
    current = _stats(live, ws, lambda s: bool(s.pids_limit_hits))
    stats = current.agent.stats  # type: ignore[union-attr]
    assert stats is not None
    assert stats.pids_limit == PIDS
    assert stats.pids_current is not None
    assert 0 < stats.pids_current < PIDS
    assert current.status == m.WorkspaceStatus.RUNNING
    assert f"process limit {PIDS} hit" in current.status_reason
    assert re.search(r"\(\d+ forks? refused\)", current.status_reason), current.status_reason


def test_a_memory_hog_is_oom_killed_and_the_workspace_says_so(live: LiveServer) -> None:
    ws = _limited(live, "hog")
    hog = "x = []\nwhile True: x.append(bytearray(8 << 20))"

    result = live.client.exec(ws.id, m.ExecRequest(command=["python3", "-c", hog], timeout=60))

    assert (result.exit_code, result.signal) == (137, "KILL"), result
    assert result.limits_hit == ["memory"]
    current = _stats(live, ws, lambda s: bool(s.oom_kills))
    # The kernel killed the hog, not the workspace: it runs on and tells why it is short of processes.
    assert current.status == m.WorkspaceStatus.RUNNING
    assert "memory limit hit (" in current.status_reason
    assert _sh(live, ws, "echo alive").stdout == "alive\n"


# --- disk ---------------------------------------------------------------------------------------------------------


def _disk_image(live: LiveServer, ws: m.Workspace) -> Path:
    return live.data_dir / "disks" / f"{ws.id}.img"


def test_writing_past_the_disk_limit_fails_with_enospc_in_the_workspace_only(live: LiveServer) -> None:
    ws = _limited(live, "disk")
    image = _disk_image(live, ws)
    assert image.stat().st_size == DISK

    result = _sh(live, ws, "dd if=/dev/zero of=$HOME/big bs=1M count=200 2>&1; df -B1 --output=size $HOME")

    assert "No space left on device" in result.stdout, result
    assert result.exit_code == 0
    # The file system holding the home is the 64 MiB disk: the host's disk only holds the image's blocks.
    assert int(result.stdout.split()[-1]) <= DISK
    assert os.stat(image).st_blocks * 512 <= DISK
    with pytest.raises(ApiError) as refused:
        live.client.write_file(ws.id, "more.bin", b"x" * (8 * 2**20))
    assert refused.value.status_code == 413
    assert "No space left on device" in refused.value.message
    _sh(live, ws, "rm -f $HOME/big")
    live.client.write_file(ws.id, "kept.txt", b"on the limited disk")

    current = _stats(live, ws, lambda s: s.disk_limit_bytes is not None)
    stats = current.agent.stats  # type: ignore[union-attr]
    assert stats is not None
    assert stats.disk_limit_bytes == DISK
    assert stats.disk_total_bytes is not None
    assert stats.disk_total_bytes <= DISK

    live.client.stop_workspace(ws.id)
    assert live.client.get_workspace(ws.id, wait="done", timeout=60).status == m.WorkspaceStatus.STOPPED
    live.client.start_workspace(ws.id)
    live.client.get_workspace(ws.id, wait="ready", timeout=60)
    assert live.client.read_file(ws.id, "kept.txt") == b"on the limited disk"
    owner_and_files = _sh(live, ws, "stat -c %U $HOME; ls -A $HOME").stdout.split()
    assert owner_and_files[0] == "dev"
    assert "lost+found" not in owner_and_files

    mountpoint = live.data_dir / "disks" / "mnt" / ws.id
    assert os.path.ismount(mountpoint)
    live.client.delete_workspace(ws.id)
    live.client.get_workspace(ws.id, wait="done", timeout=60)
    assert not image.exists()
    assert not mountpoint.exists()


def test_disks_unmounted_by_a_reboot_are_mounted_again_at_server_start_and_by_a_start(
    live: LiveServer,
) -> None:
    ws = _limited(live, "reboot")
    live.client.write_file(ws.id, "kept.txt", b"before the reboot")
    live.client.stop_workspace(ws.id)
    live.client.get_workspace(ws.id, wait="done", timeout=60)
    mountpoint = live.data_dir / "disks" / "mnt" / ws.id
    # What a host reboot leaves: the image, no mount.
    subprocess.run(["umount", str(mountpoint)], check=True)
    assert not os.path.ismount(mountpoint)
    with pytest.raises(PermissionError):
        (mountpoint / "stray").write_text("the empty mount point is immutable")

    live.restart()
    deadline = time.monotonic() + 30
    while not os.path.ismount(mountpoint):
        assert time.monotonic() < deadline, "the server's first reconciliation did not mount the disk"
        time.sleep(0.5)
    subprocess.run(["umount", str(mountpoint)], check=True)

    live.client.start_workspace(ws.id)
    live.client.get_workspace(ws.id, wait="ready", timeout=60)

    assert os.path.ismount(mountpoint)
    assert live.client.read_file(ws.id, "kept.txt") == b"before the reboot"


# --- what the files and exec APIs return ----------------------------------------------------------------------


def test_reading_a_file_whose_size_lies_returns_what_was_read(live: LiveServer) -> None:
    ws = live.workspace("dev")
    response = httpx.get(
        f"{live.url}/api/v2/workspaces/{ws.id}/files",
        params={"path": "/proc/cpuinfo"},
        headers={"Authorization": f"Bearer {live.token}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert response.headers["x-file-size"] == "0"
    assert b"processor" in response.content
    assert live.client.read_file(ws.id, "/proc/self/status").startswith(b"Name:")
    with pytest.raises(ApiError) as unreadable:
        live.client.read_file(ws.id, "/proc/1/mem")
    assert unreadable.value.status_code in (400, 403)
    # What h11 said when the body outgrew the declared length.
    assert "Content-Length" not in live.log()
    assert "LocalProtocolError" not in live.log()


def test_exec_returns_binary_output_faithfully_in_base64_or_says_it_was_lossy(live: LiveServer) -> None:
    ws = live.workspace("dev")
    command = r"printf 'ok\377\000\351t\303\251\n'; printf '\200' >&2"

    exact = _sh(live, ws, command, encoding="base64")
    text = _sh(live, ws, command)
    clean = _sh(live, ws, "printf 'caf\\303\\251'")

    assert exact.encoding == "base64"
    assert base64.b64decode(exact.stdout) == b"ok\xff\x00\xe9t\xc3\xa9\n"
    assert base64.b64decode(exact.stderr) == b"\x80"
    assert not exact.lossy
    assert (text.encoding, text.lossy) == ("utf-8", True)
    assert text.stdout == "ok\ufffd\x00\ufffdté\n"
    assert (clean.stdout, clean.lossy) == ("café", False)
    # A cut at max_output_bytes inside a character is not a loss.
    cut = _sh(live, ws, "printf 'caf\\303\\251'", max_output_bytes=4)
    assert (cut.stdout, cut.stdout_truncated, cut.lossy) == ("caf", True, False)

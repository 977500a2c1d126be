"""Secrets at rest and the metrics token, through real `dockyard server` processes started with a permissive
umask: the data dir and everything the server keeps in it stay private to the server's user."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.live import DOCKYARD, free_port

pytestmark = pytest.mark.timeout(180)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DOCKYARD_DATA_DIR": str(data_dir),
        "DOCKYARD_LOG_FORMAT": "json",
        "DOCKYARD_WARM_NETWORKS": "0",
        "DOCKYARD_SSH_LISTEN": "",
        "DOCKYARD_PROVISIONER_WORKERS": "0",
        **extra,
    }


def _open_umask() -> None:
    os.umask(0)


@contextmanager
def server(data_dir: Path, *args: str, **env: str) -> Iterator[str]:
    """A server started with umask 000; yields its URL once healthy."""
    url = f"http://127.0.0.1:{free_port()}"
    log = data_dir.parent / f"{data_dir.name}.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            # No SSH listener: the default port may be taken by another server on this machine.
            [DOCKYARD, "server", "--listen", url.removeprefix("http://"), "--ssh-listen", "", *args],
            env=_env(data_dir, **env),
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_open_umask,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_everything_in_a_new_data_dir_is_private_whatever_the_umask(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with server(data_dir, DOCKYARD_METRICS_TOKEN="scrape-secret") as url:
        token = (data_dir / "admin-token").read_text().strip()
        # A write, so that SQLite has its WAL and shared-memory files open.
        created = httpx.post(
            f"{url}/api/v2/users/me/tokens",
            json={"name": "probe"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
        assert _mode(data_dir) == 0o700
        for name in ("dockyard.db", "dockyard.db-wal", "dockyard.db-shm", "admin-token", "admin-password"):
            assert _mode(data_dir / name) == 0o600, name
        # The agent folder is mounted into workspaces, whose unprivileged user must read it: open on purpose,
        # and out of other host users' reach behind the 0700 data dir.
        assert _mode(data_dir / "agent") == 0o755
        # --metrics-token (here from its environment variable) guards /metrics.
        anonymous = httpx.get(f"{url}/metrics")
        assert anonymous.status_code == 401
        assert anonymous.json()["message"] == "The metrics endpoint needs the metrics token."
        api_token = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert api_token.status_code == 401
        scraped = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert scraped.status_code == 200
        assert "dockyard_http_requests_total" in scraped.text
    for path in data_dir.iterdir():
        if path.name != "agent":
            assert _mode(path) & 0o077 == 0, path


def test_an_open_data_dir_is_refused_unless_allowed(tmp_path: Path) -> None:
    data_dir = tmp_path / "shared"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    # Left behind by an older version or a careless copy.
    (data_dir / "admin-token").write_text("dy_old_token\n")
    (data_dir / "admin-token").chmod(0o644)
    refused = subprocess.run(
        [DOCKYARD, "server", "--listen", f"127.0.0.1:{free_port()}", "--ssh-listen", ""],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_open_umask,
    )
    assert refused.returncode == 1
    assert refused.stderr == (
        f"error: the data dir {data_dir} is open to other local users (mode 0755); it holds the database, "
        f"deployment keys and the admin token. Run `chmod 700 {data_dir}`, or start with --allow-open-data-dir "
        "to run anyway\n"
    )
    # Nothing was made or changed.
    assert sorted(p.name for p in data_dir.iterdir()) == ["admin-token"]
    assert _mode(data_dir / "admin-token") == 0o644
    with server(data_dir, "--allow-open-data-dir"):
        log = (tmp_path / "shared.log").read_text()
        assert "INSECURE: the data dir" in log
        # The operator's folder is left as it is; what the server keeps inside is still private.
        assert _mode(data_dir) == 0o755
        for name in ("dockyard.db", "admin-token"):
            assert _mode(data_dir / name) == 0o600, name
    # Once fixed, the server starts without the flag (and without --metrics-token, /metrics is public).
    data_dir.chmod(0o700)
    with server(data_dir) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200

"""Fixtures for the SSH gateway tests: an in-process server with the gateway on a free port, OpenSSH keys, and
an `ssh` command line that pins the deployment's CA (no trust-on-first-use)."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from dockyard.gateway.server import Gateway
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.harness import Harness
from tests.live import free_port


def app_gateway(h: Harness) -> Gateway:
    gateway = h.app.state.gateway
    assert isinstance(gateway, Gateway)
    return gateway


@contextmanager
def tcp_gateway(h: Harness) -> Iterator[Gateway]:
    """A gateway listening on a free loopback port, sharing the app's CA, host key, hub and database. (The
    harness turns the app's own TCP listener off so that tests can run side by side.)"""
    app_gateway(h)
    settings = dataclasses.replace(h.settings, ssh_listen=f"127.0.0.1:{free_port()}")
    gateway = Gateway(h.app.state.sessions, h.app.state.hub, settings)
    h.lifespan.portal.call(gateway.start)
    try:
        yield gateway
    finally:
        h.lifespan.portal.call(gateway.close)


@pytest.fixture
def gw(h: Harness) -> Gateway:
    return app_gateway(h)


@pytest.fixture
def listening(ah: Harness) -> Iterator[Gateway]:
    with tcp_gateway(ah) as gateway:
        yield gateway


@dataclass
class SshKeyFiles:
    private: Path
    public: Path

    @property
    def public_text(self) -> str:
        return self.public.read_text().strip()


def make_key(
    folder: Path, name: str = "id_ed25519", kind: str = "ed25519", bits: int | None = None
) -> SshKeyFiles:
    folder.mkdir(parents=True, exist_ok=True)
    private = folder / name
    command = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name}@test", "-f", str(private)]
    if bits:
        command += ["-b", str(bits)]
    subprocess.run(command, check=True)
    return SshKeyFiles(private, folder / f"{name}.pub")


@dataclass
class OpenSsh:
    """Command lines for the OpenSSH client against one gateway, trusting only its CA."""

    host: str
    port: int
    known_hosts: Path
    # ERROR keeps ssh's banner-level chatter out of stderr, so tests can compare stderr whole.
    log_level: str = "ERROR"

    def options(self, key: SshKeyFiles | None = None, *extra: str) -> list[str]:
        options = [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "HostKeyAlias=dockyard",
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "ConnectTimeout=20",
            "-o", f"LogLevel={self.log_level}",
            "-F", "/dev/null",
        ]  # fmt: skip
        if key is not None:
            options += ["-i", str(key.private)]
        return [*options, *extra]

    def ssh(self, user: str, key: SshKeyFiles | None, *args: str, options: tuple[str, ...] = ()) -> list[str]:
        return ["ssh", *self.options(key, *options), "-p", str(self.port), f"{user}@{self.host}", *args]

    def run(
        self,
        user: str,
        key: SshKeyFiles | None,
        *args: str,
        options: tuple[str, ...] = (),
        input: bytes | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.ssh(user, key, *args, options=options), input=input, capture_output=True, timeout=timeout
        )


def openssh_for(client: Client, folder: Path, address: tuple[str, int]) -> OpenSsh:
    """OpenSSH pointed at the gateway on `address`, trusting what the API publishes (`/api/v2/deployment/ssh`)
    and nothing else."""
    info = m.SshGateway.model_validate(client.http.get("/api/v2/deployment/ssh").raise_for_status().json())
    folder.mkdir(parents=True, exist_ok=True)
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(info.known_hosts + "\n")
    return OpenSsh(host=address[0], port=address[1], known_hosts=known_hosts)


def register_key(client: Client, key: SshKeyFiles, name: str = "laptop", user: str = "me") -> m.SshKey:
    response = client.http.post(
        f"/api/v2/users/{user}/sshkeys", json={"name": name, "public_key": key.public_text}
    )
    assert response.status_code == 201, response.text
    return m.SshKey.model_validate(response.json())


def fetch_certificate(client: Client, key: SshKeyFiles, valid_for: str = "1h") -> m.SshCertificate:
    response = client.http.post(
        "/api/v2/users/me/sshcert", json={"public_key": key.public_text, "valid_for": valid_for}
    )
    assert response.status_code == 200, response.text
    cert = m.SshCertificate.model_validate(response.json())
    # Where OpenSSH looks for the certificate of `-i key`.
    key.private.with_name(key.private.name + "-cert.pub").write_text(cert.certificate + "\n")
    return cert


def text_of(completed: subprocess.CompletedProcess[bytes]) -> tuple[int, str, str]:
    return completed.returncode, completed.stdout.decode(), completed.stderr.decode()


class Terminal:
    """The controlling side of a pseudo-terminal: expect output, in order."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = b""
        self._position = 0

    def expect(self, marker: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.seen[self._position :]:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} in {self.seen[self._position :]!r}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"terminal closed before {marker!r}; got {self.seen[self._position :]!r}"
                self.seen += chunk
        start = self._position
        self._position = self.seen.index(marker, start) + len(marker)
        return self.seen[start : self._position]


def set_terminal_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

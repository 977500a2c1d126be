"""The git proxy on its own (gitauth/proxy.py), on loopback ports, in front of the real `git http-backend` behind
basic auth: what git prints for a missing credential, what is never forwarded, and how the commands of a push
are read. The whole path through the agent is in test_git_push_limit.py."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dockyard.gitauth import proxy
from dockyard.gitauth.pktline import Commands, PktError, pkt, read_commands
from dockyard.outbound import OutboundPolicy
from tests.gitauth.test_git_credentials import PASSWORD, USER
from tests.gitserver import GitApp

pytestmark = pytest.mark.timeout(60)
OID = "a" * 40


@pytest.fixture
def proxies(origin: tuple[str, Path, GitApp]) -> Iterator[dict[str, int]]:
    """Ports of proxies for `origin`'s repository: `ok` holds the credential, `nocred` has none, `denied`
    holds it but may not connect to loopback, where the git host is."""
    host, _bare, _app = origin
    upstreams = {
        "ok": proxy.Upstream(
            repo=f"http://{host}/app.git", branch="task-1", authorization=proxy.basic(USER, PASSWORD)
        ),
        "nocred": proxy.Upstream(error=f"dockyard: alice has no git credential for {host}"),
    }
    loop = asyncio.new_event_loop()

    async def start(upstream: proxy.Upstream, outbound: OutboundPolicy) -> int:
        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await proxy.serve(reader, writer, upstream, outbound=outbound)
            writer.close()

        server = await asyncio.start_server(client, "127.0.0.1", 0)
        return int(server.sockets[0].getsockname()[1])

    ports = {
        name: loop.run_until_complete(start(upstream, OutboundPolicy()))
        for name, upstream in upstreams.items()
    }
    # An operator who denies loopback (`--outbound-deny 127.0.0.0/8`): the git host is on it.
    ports["denied"] = loop.run_until_complete(
        start(upstreams["ok"], OutboundPolicy.with_denied(["127.0.0.0/8"]))
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield ports
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _ls_remote(port: int) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["git", "ls-remote", f"http://127.0.0.1:{port}/"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_missing_credential_is_git_s_remote_error_and_only_smart_http_is_served(
    proxies: dict[str, int], origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, app = origin
    listed = _ls_remote(proxies["nocred"])
    assert (listed.returncode, listed.stdout) == (128, "")
    assert listed.stderr == f"fatal: remote error: dockyard: alice has no git credential for {host}\n"
    assert app.requests == []

    with socket.create_connection(("127.0.0.1", proxies["ok"])) as sock:
        sock.sendall(b"GET /HEAD HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert answer.endswith(b"\r\n\r\ndockyard: only git's smart HTTP protocol is served here\n")
    # Dumb HTTP would read the repository's files one by one: never forwarded.
    assert app.requests == []


def test_a_git_host_in_a_denied_range_is_never_reached_and_git_says_why(
    proxies: dict[str, int], origin: tuple[str, Path, GitApp]
) -> None:
    host, _bare, app = origin
    listed = _ls_remote(proxies["denied"])

    assert (listed.returncode, listed.stdout) == (128, "")
    assert listed.stderr == (
        f"fatal: remote error: dockyard: cannot reach {host}: 127.0.0.1 is in 127.0.0.0/8, "
        "a range this server does not connect to for its users\n"
    )
    assert app.requests == []
    # The same proxy without the rule reaches it.
    allowed = _ls_remote(proxies["ok"])
    assert (allowed.returncode, allowed.stderr) == (0, "")
    assert "refs/heads/main" in allowed.stdout


def test_the_commands_of_a_push_are_read_whatever_the_chunks_and_anything_else_is_refused() -> None:
    async def parse(data: bytes) -> Commands:
        async def body() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 7):
                yield data[start : start + 7]

        return await read_commands(body())

    first = pkt(f"{OID} {'b' * 40} refs/heads/x\0report-status side-band-64k".encode())
    delete = pkt(f"{OID} {'0' * 40} refs/tags/t\n".encode())
    commands = asyncio.run(parse(pkt(f"shallow {OID}\n".encode()) + first + delete + b"0000PACK"))
    assert [(u.ref, u.delete) for u in commands.updates] == [("refs/heads/x", False), ("refs/tags/t", True)]
    assert commands.capabilities == {"report-status", "side-band-64k"}
    for bad, message in [
        (pkt(b"push-cert\0report-status") + b"0000", "signed pushes (push-cert) are not supported"),
        (pkt(b"hello world\n") + b"0000", "not a ref update command: b'hello world'"),
        (b"0000", "the request updates no ref"),
        (first, "the request ended before its command list did"),
        (b"zzzz", "not a pkt-line length: b'zzzz'"),
    ]:
        with pytest.raises(PktError) as error:
            asyncio.run(parse(bad))
        assert str(error.value).startswith(message)

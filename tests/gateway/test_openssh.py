"""The OpenSSH client (ssh, scp, sftp, ssh -L) against the gateway, with workspaces that run the real agent as
local processes (FakeRuntime(agents=True)). tests/gateway/test_live.py repeats the main paths through Docker.

Every test pins the deployment's CA in its known_hosts and runs ssh with StrictHostKeyChecking=yes: a gateway
that presented anything but a certificate from that CA would fail every test here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pty
import shlex
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from starlette.websockets import WebSocketDisconnect

from dockyard.gateway import ca
from dockyard.gateway.server import Gateway
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.gateway.conftest import (
    OpenSsh,
    SshKeyFiles,
    Terminal,
    fetch_certificate,
    make_key,
    openssh_for,
    register_key,
    set_terminal_size,
    sha256_of,
    text_of,
)
from tests.harness import Harness
from tests.live import free_port

pytestmark = pytest.mark.timeout(180)


def _workspace(h: Harness, client: Client, name: str = "dev") -> m.Workspace:
    try:
        h.admin.get_template("tmpl")
    except Exception:  # noqa: BLE001 - any failure means "push it"
        h.template(name="tmpl")
    created = client.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name=name))
    ready = client.get_workspace(created.id, wait="ready", timeout=60)
    assert ready.agent is not None, ready
    assert ready.agent.lifecycle == m.AgentLifecycle.READY, ready
    return ready


@pytest.fixture
def alice(ah: Harness) -> Client:
    return ah.user("alice")


@pytest.fixture
def ssh(ah: Harness, listening: Gateway, tmp_path: Path) -> OpenSsh:
    return openssh_for(ah.admin, tmp_path / "ssh", ca.parse_listen(listening.settings.ssh_listen))


@pytest.fixture
def alice_key(alice: Client, tmp_path: Path) -> SshKeyFiles:
    key = make_key(tmp_path / "alice")
    register_key(alice, key)
    return key


def test_exec_with_exit_status_and_separate_stderr(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh
) -> None:
    ws = _workspace(ah, alice)
    assert ws.last_used_at is None
    result = ssh.run("dev", alice_key, "echo out; echo err >&2; echo $SHELL; exit 3")
    # Commands run with the user's login shell from the password database, as sshd runs them.
    assert text_of(result)[:2] == (3, "out\n/bin/bash\n")
    assert result.stderr == b"err\n"
    piped = ssh.run("dev", alice_key, "tr a-z A-Z", input=b"fed through stdin\n")
    assert text_of(piped) == (0, "FED THROUGH STDIN\n", "")
    # Every session marks the workspace used, and the key records its use.
    assert alice.get_workspace(ws.id).last_used_at is not None
    [key] = alice.http.get("/api/v2/users/me/sshkeys").json()
    assert key["last_used_at"] is not None


def test_a_dropped_ssh_client_takes_every_process_of_its_command_along(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh
) -> None:
    _workspace(ah, alice)
    command = (
        "sleep 600 & echo $!; setsid sleep 600 & echo $!; setsid sh -c 'sleep 600 & echo $!; wait' & "
        "sleep 0.3; echo started; wait"
    )
    client = subprocess.Popen(
        ssh.ssh("dev", alice_key, command), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert client.stdout is not None
    lines = [client.stdout.readline().strip() for _ in range(4)]
    assert lines[-1] == b"started", lines
    pids = sorted(int(line) for line in lines[:3])
    assert all(os.path.exists(f"/proc/{pid}") for pid in pids)

    client.kill()
    client.wait()

    deadline = time.monotonic() + 10
    while (alive := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive == []


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_certificate_login_and_its_refusals(ah: Harness, alice: Client, ssh: OpenSsh, tmp_path: Path) -> None:
    _workspace(ah, alice)
    key = make_key(tmp_path / "cert")  # never registered: only the certificate vouches for it
    assert ssh.run("dev", key, "true").returncode == 255
    fetch_certificate(alice, key)
    assert text_of(ssh.run("dev", key, "echo $DOCKYARD_WORKSPACE_NAME")) == (0, "dev\n", "")
    # Expired: a 5 s certificate stops working once its time is up.
    fetch_certificate(alice, key, valid_for="5s")
    assert ssh.run("dev", key, "true").returncode == 0
    time.sleep(6)
    expired = ssh.run("dev", key, "true")
    assert expired.returncode == 255
    assert b"Permission denied (publickey)" in expired.stderr


def test_revoked_token_revokes_its_certificates(
    ah: Harness, alice: Client, ssh: OpenSsh, tmp_path: Path
) -> None:
    _workspace(ah, alice)
    created = ah.admin.create_token(
        m.CreateTokenRequest(name="ci", scopes=[m.Scope.WORKSPACE_CONNECT]), user="alice"
    )
    key = make_key(tmp_path / "ci")
    fetch_certificate(ah.client(created.key), key)
    assert ssh.run("dev", key, "true").returncode == 0
    response = ah.admin.http.delete(f"/api/v2/users/alice/tokens/{created.id}")
    assert response.status_code == 204
    refused = ssh.run("dev", key, "true")
    assert refused.returncode == 255
    assert b"Permission denied (publickey)" in refused.stderr


def test_certificate_keeps_its_tokens_allow_list(
    ah: Harness, alice: Client, ssh: OpenSsh, tmp_path: Path
) -> None:
    _workspace(ah, alice, "dev")
    _workspace(ah, alice, "other")
    created = ah.admin.create_token(
        m.CreateTokenRequest(name="narrow", scopes=[m.Scope.ALL], allow_list=["workspace:other"]),
        user="alice",
    )
    key = make_key(tmp_path / "narrow")
    fetch_certificate(ah.client(created.key), key)
    assert text_of(ssh.run("other", key, "echo in")) == (0, "in\n", "")
    refused = ssh.run("dev", key, "echo in")
    assert text_of(refused) == (1, "", 'dockyard: no workspace "dev" for user alice (try: dockyard list)\n')


def test_removed_key_is_refused_also_on_an_open_connection(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh, tmp_path: Path
) -> None:
    _workspace(ah, alice)
    control = tmp_path / "cm.sock"
    master = ["-o", "ControlMaster=yes", "-o", f"ControlPath={control}", "-o", "ControlPersist=60"]
    shared = ("-o", "ControlMaster=no", "-o", f"ControlPath={control}")
    assert (
        subprocess.run([*ssh.ssh("dev", alice_key, options=(*master, "-N", "-f"))], timeout=60).returncode
        == 0
    )
    try:
        assert text_of(ssh.run("dev", alice_key, "echo shared", options=shared)) == (0, "shared\n", "")
        [key] = alice.http.get("/api/v2/users/me/sshkeys").json()
        assert alice.http.delete(f"/api/v2/users/me/sshkeys/{key['id']}").status_code == 204
        # A new session on the connection that is already open: refused with a message.
        refused = ssh.run("dev", alice_key, "echo shared", options=shared)
        assert refused.returncode != 0
        assert b"dockyard: your SSH key or token was revoked or expired" in refused.stderr
        # And a new connection does not get in at all.
        fresh = ssh.run("dev", alice_key, "true")
        assert (fresh.returncode, b"Permission denied (publickey)" in fresh.stderr) == (255, True)
    finally:
        subprocess.run(["ssh", "-o", f"ControlPath={control}", "-O", "exit", "x"], capture_output=True)


def test_other_users_workspaces(ah: Harness, alice: Client, ssh: OpenSsh, tmp_path: Path) -> None:
    _workspace(ah, alice)
    bob = ah.user("bob")
    bob_key, owner_key = make_key(tmp_path / "bob"), make_key(tmp_path / "owner")
    register_key(bob, bob_key)
    register_key(ah.admin, owner_key)
    for user in ("alice.dev", "alice/dev", "dev"):
        refused = ssh.run(user, bob_key, "echo should-not-run")
        assert text_of(refused) == (
            1,
            "",
            f'dockyard: no workspace "{user}" for user bob (try: dockyard list)\n',
        )
    # The same answer for a workspace that does not exist at all: nothing to learn by probing.
    assert ssh.run("carol.dev", bob_key, "true").stderr == (
        b'dockyard: no workspace "carol.dev" for user bob (try: dockyard list)\n'
    )
    # A forward is refused the same way (the message is ssh's channel-open failure).
    # (ssh prints channel-open failures at its default log level, INFO.)
    forward = dataclasses.replace(ssh, log_level="INFO").run(
        "alice.dev", bob_key, options=("-W", "127.0.0.1:9")
    )
    assert forward.returncode == 255
    assert b"administratively prohibited: dockyard: no workspace" in forward.stderr
    # An owner may connect to anyone's workspace, in the documented form.
    owner = ssh.run("alice.dev", owner_key, "echo $DOCKYARD_WORKSPACE_OWNER/$DOCKYARD_WORKSPACE_NAME")
    assert text_of(owner) == (0, "alice/dev\n", "")
    assert text_of(ssh.run("dev", owner_key, "true"))[2].startswith(
        'dockyard: no workspace "dev" for user admin'
    )


def test_unknown_key_is_refused(ah: Harness, alice: Client, ssh: OpenSsh, tmp_path: Path) -> None:
    _workspace(ah, alice)
    stranger = make_key(tmp_path / "stranger")
    refused = ssh.run("dev", stranger, "true")
    assert (refused.returncode, b"Permission denied (publickey)" in refused.stderr) == (255, True)
    # Without any key the gateway offers nothing else (no passwords, no keyboard-interactive).
    bare = ssh.run("dev", None, "true", options=("-o", "PubkeyAuthentication=no"))
    assert b"Permission denied (publickey)" in bare.stderr


def test_environment_from_the_client(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh
) -> None:
    _workspace(ah, alice)
    result = subprocess.run(
        ssh.ssh("dev", alice_key, 'printf "%s|%s|%s" "$FOO" "$LANG" "$SSH_CONNECTION"',
                options=("-o", 'SetEnv=FOO="bar baz"', "-o", "SendEnv=LANG")),
        env={**os.environ, "LANG": "C.UTF-8"},
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    foo, lang, connection = result.stdout.decode().split("|")
    assert (result.returncode, foo, lang) == (0, "bar baz", "C.UTF-8")
    assert connection.startswith("127.0.0.1 ")
    assert connection.endswith(f" {ssh.port}")


def test_pty_size_resize_and_interrupt(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh
) -> None:
    _workspace(ah, alice)
    master, terminal = pty.openpty()
    set_terminal_size(terminal, 33, 101)
    command = ssh.ssh(
        "dev",
        alice_key,
        'echo "term=$TERM"; stty size; read line; stty size; echo sleeping; sleep 60; echo not-reached',
    )
    process = subprocess.Popen(
        [command[0], "-tt", *command[1:]],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(terminal)
    try:
        screen = Terminal(master)
        assert b"term=xterm-256color" in screen.expect(b"33 101")
        set_terminal_size(master, 40, 120)
        process.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b"go\r")
        screen.expect(b"40 120")
        screen.expect(b"sleeping")
        os.write(master, b"\x03")  # Ctrl-C, through the remote terminal's line discipline
        process.wait(timeout=20)
        with contextlib.suppress(OSError):
            assert b"not-reached" not in os.read(master, 65536)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


# The local "workspace" is this machine: scripts/test.sh installs openssh-sftp-server and rsync for these.
def test_scp_and_sftp(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh, tmp_path: Path
) -> None:
    _workspace(ah, alice)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(3 * 2**20 + 17))
    target = f"dev@{ssh.host}"
    scp = ["scp", *ssh.options(alice_key), "-P", str(ssh.port)]
    # OpenSSH 9 scp speaks SFTP; -O is the legacy protocol (`scp -t`/`scp -f` run in the workspace).
    for mode in ([], ["-O"]):
        name = f"up{len(mode)}.bin"
        assert (
            subprocess.run(
                [*scp, *mode, str(upload), f"{target}:{name}"], capture_output=True, timeout=120
            ).returncode
            == 0
        )
        remote = ssh.run("dev", alice_key, f"sha256sum {name}")
        assert remote.stdout.decode().split()[0] == sha256_of(upload)
        back = tmp_path / f"down{len(mode)}.bin"
        assert (
            subprocess.run(
                [*scp, *mode, f"{target}:{name}", str(back)], capture_output=True, timeout=120
            ).returncode
            == 0
        )
        assert sha256_of(back) == sha256_of(upload)
    batch = tmp_path / "batch"
    batch.write_text(
        f"mkdir box\nput {upload} box/put.bin\nls -l box\nget box/put.bin {tmp_path / 'got.bin'}\nrm box/put.bin\nrmdir box\n"
    )
    sftp = subprocess.run(
        ["sftp", *ssh.options(alice_key), "-P", str(ssh.port), "-b", str(batch), target],
        capture_output=True,
        timeout=120,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert b"put.bin" in sftp.stdout
    assert sha256_of(tmp_path / "got.bin") == sha256_of(upload)
    assert ssh.run("dev", alice_key, "test -e box").returncode == 1


@pytest.fixture
def http_port() -> int:
    return free_port()


def test_local_forwarding(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh, tmp_path: Path, http_port: int
) -> None:
    _workspace(ah, alice)
    local = free_port()
    serve = f"mkdir -p site && echo served-from-workspace > site/index.html && exec python3 -m http.server {http_port} --bind 127.0.0.1 --directory site"
    process = subprocess.Popen(
        ssh.ssh("dev", alice_key, serve, options=("-L", f"127.0.0.1:{local}:127.0.0.1:{http_port}")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=5) as response:
                    body = response.read()
                break
            except OSError:
                time.sleep(0.3)
        assert body == b"served-from-workspace\n"
        # `-W` is the same direct-tcpip channel, on ssh's own stdin/stdout.
        raw = ssh.run(
            "dev",
            alice_key,
            options=("-W", f"127.0.0.1:{http_port}"),
            input=b"GET /index.html HTTP/1.0\r\n\r\n",
        )
        assert raw.stdout.startswith(b"HTTP/1.0 200 OK")
        assert raw.stdout.endswith(b"served-from-workspace\n")
    finally:
        process.terminate()
        process.wait(30)
    # A port nobody listens on: ssh reports the agent's reason.
    closed = dataclasses.replace(ssh, log_level="INFO").run(
        "dev", alice_key, options=("-W", f"127.0.0.1:{free_port()}")
    )
    assert closed.returncode == 255
    assert b"dockyard: cannot connect to 127.0.0.1:" in closed.stderr
    assert b"connection refused" in closed.stderr


def test_connecting_starts_a_stopped_workspace(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh
) -> None:
    ws = _workspace(ah, alice)
    alice.create_build(ws.id, m.CreateBuildRequest(transition=m.Transition.STOP))
    assert alice.get_workspace(ws.id, wait="done", timeout=30).status == m.WorkspaceStatus.STOPPED
    result = ssh.run("dev", alice_key, "echo up")
    assert text_of(result) == (0, "up\n", "dockyard: workspace dev is stopped; starting it…\n")
    assert alice.get_workspace(ws.id).status == m.WorkspaceStatus.RUNNING


def test_rsync_over_ssh(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh, tmp_path: Path
) -> None:
    _workspace(ah, alice)
    source = tmp_path / "tree"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("alpha\n")
    (source / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    transport = shlex.join(["ssh", *ssh.options(alice_key), "-p", str(ssh.port)])
    pushed = subprocess.run(
        ["rsync", "-a", "-e", transport, f"{source}/", f"dev@{ssh.host}:tree/"],
        capture_output=True,
        timeout=120,
    )
    assert pushed.returncode == 0, pushed.stderr
    back = tmp_path / "back"
    pulled = subprocess.run(
        ["rsync", "-a", "-e", transport, f"dev@{ssh.host}:tree/", f"{back}/"],
        capture_output=True,
        timeout=120,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert (back / "a.txt").read_text() == "alpha\n"
    assert sha256_of(back / "sub" / "b.bin") == sha256_of(source / "sub" / "b.bin")


@contextlib.contextmanager
def _websocket_relay(h: Harness, path: str, token: str) -> Iterator[int]:
    """A loopback TCP port whose one connection is carried over the SSH WebSocket route, as
    `dockyard ssh --stdio` carries its stdin and stdout."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def relay() -> None:
        conn, _ = listener.accept()
        # On the server's own loop, where the gateway and the agent connections live.
        with conn, h.http().websocket_connect(path, headers={"Authorization": f"Bearer {token}"}) as ws:

            def upstream() -> None:
                # The route may close the WebSocket first (the session ended); the relay below then leaves the
                # `with` and closes the test client's streams under this thread.
                with contextlib.suppress(OSError, anyio.ClosedResourceError, WebSocketDisconnect):
                    while data := conn.recv(65536):
                        ws.send_bytes(data)
                    ws.close()

            threading.Thread(target=upstream, daemon=True).start()
            with contextlib.suppress(WebSocketDisconnect, OSError):
                while True:
                    message = ws.receive()
                    if message["type"] == "websocket.close":
                        break
                    conn.sendall(message.get("bytes") or b"")
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(30)


def test_ssh_over_the_websocket_route(
    ah: Harness, alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh
) -> None:
    ws = _workspace(ah, alice)
    # Over the WebSocket the URL names the workspace; the SSH user name is not consulted.
    with _websocket_relay(ah, f"/api/v2/workspaces/{ws.id}/ssh", alice.token or "") as port:
        relayed = dataclasses.replace(ssh, port=port).run("anything", alice_key, "echo via websocket; exit 4")
    assert text_of(relayed) == (4, "via websocket\n", "")
    # Inside, SSH authentication still applies: a token gets a client to the gateway, not into the workspace.
    bob = ah.user("bob")
    bob_key = make_key(ssh.known_hosts.parent / "bob")
    register_key(bob, bob_key)
    with _websocket_relay(ah, f"/api/v2/workspaces/{ws.id}/ssh", alice.token or "") as port:
        refused = dataclasses.replace(ssh, port=port).run("dev", bob_key, "true")
    assert text_of(refused)[0] == 1
    assert refused.stderr.startswith(b'dockyard: no workspace "')

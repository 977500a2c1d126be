"""OpenSSH clients against a real `dockyard server` (its gateway on `--ssh-listen`, and `dockyard ssh --stdio`
as a ProxyCommand) with workspaces in Docker containers of the base image.

The refusal ladder (expired and revoked certificates, removed keys, other users' workspaces) is in
test_openssh.py, where it runs in seconds; here every path goes through a real container.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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
from tests.live import DOCKYARD, LiveServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssh-live")


@pytest.fixture(scope="module")
def alice(live: LiveServer) -> Iterator[Client]:
    live.client.create_user(
        m.CreateUserRequest(username="alice", email="alice@example.com", password="long-enough-1")
    )
    token = live.client.create_token(
        m.CreateTokenRequest(name="ssh-tests", scopes=[m.Scope.ALL]), user="alice"
    )
    with Client(live.url, token.key) as client:
        yield client


@pytest.fixture(scope="module")
def alice_key(alice: Client, folder: Path) -> SshKeyFiles:
    key = make_key(folder / "alice")
    register_key(alice, key)
    return key


@pytest.fixture(scope="module")
def ssh(live: LiveServer, folder: Path) -> OpenSsh:
    return openssh_for(live.client, folder / "client", ("127.0.0.1", live.ssh_port))


@pytest.fixture(scope="module")
def workspace(alice: Client) -> m.Workspace:
    created = alice.create_workspace(m.CreateWorkspaceRequest(template="base", name="dev"))
    ready = alice.get_workspace(created.id, wait="ready", timeout=180)
    assert ready.status == m.WorkspaceStatus.RUNNING, ready.status_reason
    return ready


def test_gateway_info_matches_the_listener(live: LiveServer) -> None:
    info = live.client.ssh_gateway()
    assert (info.host, info.port, info.host_key_alias) == ("127.0.0.1", live.ssh_port, "dockyard")


def test_exec_in_the_container(
    alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh, workspace: m.Workspace
) -> None:
    result = ssh.run("dev", alice_key, "id -un; echo $HOME; echo $SHELL; echo err >&2; exit 5")
    assert text_of(result) == (5, "dev\n/home/dev\n/bin/bash\n", "err\n")
    env = subprocess.run(
        ssh.ssh(
            "dev", alice_key, 'echo "$FOO $LANG"', options=("-o", "SetEnv=FOO=bar", "-o", "SendEnv=LANG")
        ),
        env={**os.environ, "LANG": "C.UTF-8"},
        capture_output=True,
        timeout=60,
    )
    assert text_of(env) == (0, "bar C.UTF-8\n", "")
    used = alice.get_workspace(workspace.id).last_used_at
    assert used is not None


def test_interactive_shell_with_a_terminal(
    alice_key: SshKeyFiles, ssh: OpenSsh, workspace: m.Workspace
) -> None:
    import pty

    master, terminal = pty.openpty()
    set_terminal_size(terminal, 33, 101)
    command = ssh.ssh("dev", alice_key)
    process = subprocess.Popen(
        [command[0], "-tt", *command[1:]],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(terminal)
    screen = Terminal(master)
    try:
        os.write(master, b'echo "size $(stty size) on $(tty) as $TERM"\r')
        assert b"on /dev/pts/" in screen.expect(b"size 33 101 on /dev/pts/")
        set_terminal_size(master, 50, 160)
        process.send_signal(signal.SIGWINCH)
        time.sleep(0.5)
        os.write(master, b'echo "now $(stty size)"\r')
        screen.expect(b"now 50 160")
        os.write(master, b"sleep 60; echo after-sleep\r")
        time.sleep(0.5)
        os.write(master, b"\x03")  # Ctrl-C ends the sleep, not the shell
        # (Markers are computed, so that the terminal's echo of the typed line never matches them.)
        os.write(master, b"echo still-$((40+2)); exit 7\r")
        screen.expect(b"still-42")
        assert process.wait(timeout=30) == 7
        assert b"\nafter-sleep" not in screen.seen
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)


def test_file_transfers(ssh: OpenSsh, alice_key: SshKeyFiles, workspace: m.Workspace, folder: Path) -> None:
    upload = folder / "upload.bin"
    upload.write_bytes(os.urandom(8 * 2**20 + 3))
    target = f"dev@{ssh.host}"
    scp = ["scp", *ssh.options(alice_key), "-P", str(ssh.port)]
    for mode in ([], ["-O"]):
        name = f"up{len(mode)}.bin"
        pushed = subprocess.run(
            [*scp, *mode, str(upload), f"{target}:{name}"], capture_output=True, timeout=120
        )
        assert pushed.returncode == 0, pushed.stderr
        assert ssh.run("dev", alice_key, f"sha256sum {name}").stdout.split()[0].decode() == sha256_of(upload)
        back = folder / f"down{len(mode)}.bin"
        pulled = subprocess.run(
            [*scp, *mode, f"{target}:{name}", str(back)], capture_output=True, timeout=120
        )
        assert pulled.returncode == 0, pulled.stderr
        assert sha256_of(back) == sha256_of(upload)
    batch = folder / "batch"
    got = folder / "got.bin"
    batch.write_text(
        f"mkdir box\nput {upload} box/put.bin\nls box\nget box/put.bin {got}\nrm box/put.bin\nrmdir box\n"
    )
    sftp = subprocess.run(
        ["sftp", *ssh.options(alice_key), "-P", str(ssh.port), "-b", str(batch), target],
        capture_output=True,
        timeout=120,
    )
    assert sftp.returncode == 0, sftp.stderr
    assert b"box/put.bin" in sftp.stdout
    assert sha256_of(got) == sha256_of(upload)
    tree = folder / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    transport = shlex.join(["ssh", *ssh.options(alice_key), "-p", str(ssh.port)])
    synced = subprocess.run(
        ["rsync", "-a", "-e", transport, f"{tree}/", f"{target}:tree/"], capture_output=True, timeout=120
    )
    assert synced.returncode == 0, synced.stderr
    assert ssh.run("dev", alice_key, "sha256sum tree/sub/b.bin").stdout.split()[0].decode() == sha256_of(
        tree / "sub" / "b.bin"
    )


def test_local_forward_to_a_port_in_the_container(
    ssh: OpenSsh, alice_key: SshKeyFiles, workspace: m.Workspace
) -> None:
    local = free_port()
    serve = (
        "mkdir -p site && echo from-the-container > site/index.html && "
        "exec python3 -m http.server 8123 --bind 127.0.0.1 --directory site"
    )
    process = subprocess.Popen(
        ssh.ssh("dev", alice_key, serve, options=("-L", f"127.0.0.1:{local}:127.0.0.1:8123")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = b""
        deadline = time.monotonic() + 60
        while not body and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=5) as response:
                    body = response.read()
            except OSError:
                time.sleep(0.5)
        assert body == b"from-the-container\n"
    finally:
        process.terminate()
        process.wait(30)


def test_certificate_and_owner_access(
    live: LiveServer, alice: Client, ssh: OpenSsh, workspace: m.Workspace, folder: Path
) -> None:
    key = make_key(folder / "cert")
    fetch_certificate(alice, key)
    assert text_of(ssh.run("dev", key, "id -un")) == (0, "dev\n", "")
    owner_key = make_key(folder / "owner")
    register_key(live.client, owner_key)
    owner = ssh.run("alice.dev", owner_key, "echo $DOCKYARD_WORKSPACE_OWNER")
    assert text_of(owner) == (0, "alice\n", "")
    refused = ssh.run("nope", owner_key, "true")
    assert text_of(refused) == (1, "", 'dockyard: no workspace "nope" for user admin (try: dockyard list)\n')


def test_proxycommand_dockyard_ssh_stdio(
    live: LiveServer,
    alice: Client,
    alice_key: SshKeyFiles,
    ssh: OpenSsh,
    workspace: m.Workspace,
    folder: Path,
) -> None:
    # No SSH port involved: `dockyard ssh --stdio` carries the connection over the API's WebSocket.
    proxy = f"{shlex.quote(DOCKYARD)} ssh --stdio dev"
    environment = {
        **os.environ,
        "DOCKYARD_URL": live.url,
        "DOCKYARD_TOKEN": alice.token or "",
        "XDG_CONFIG_HOME": str(folder / "xdg"),
    }
    command = [
        "ssh",
        *ssh.options(alice_key, "-o", f"ProxyCommand={proxy}"),
        "dev@dockyard.dev",
        "echo proxied; exit 3",
    ]
    result = subprocess.run(command, env=environment, capture_output=True, timeout=120)
    assert text_of(result) == (3, "proxied\n", "")


def test_connecting_starts_a_stopped_workspace(
    alice: Client, alice_key: SshKeyFiles, ssh: OpenSsh, workspace: m.Workspace
) -> None:
    alice.create_build(workspace.id, m.CreateBuildRequest(transition=m.Transition.STOP))
    assert alice.get_workspace(workspace.id, wait="done", timeout=120).status == m.WorkspaceStatus.STOPPED
    result = ssh.run("dev", alice_key, "cat ~/up0.bin | wc -c", timeout=300)
    assert text_of(result) == (0, f"{8 * 2**20 + 3}\n", "dockyard: workspace dev is stopped; starting it…\n")
    assert alice.get_workspace(workspace.id).status == m.WorkspaceStatus.RUNNING

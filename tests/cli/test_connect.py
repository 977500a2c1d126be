"""`dockyard exec | ssh | port-forward` and `create`'s wait for the agent, against the in-process server whose
workspaces run the real agent as local processes (`FakeRuntime(agents=True)`); WebSockets go through
`tests.sdk.inprocess`. The same commands as real processes, with OpenSSH, are in tests/e2e/test_connect_live.py.
"""

from __future__ import annotations

import contextlib
import socket
import stat
import threading

import pytest

from dockyard.cli import config, connect, forward, sshconfig, sshkeys
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.cli.conftest import Cli, Golden
from tests.harness import Harness
from tests.sdk.inprocess import in_process

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def connected(logged_in: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    def factory(url: str, token: str | None) -> Client:
        return in_process(logged_in.client(url, token), logged_in.h.lifespan)

    monkeypatch.setattr(config, "client_factory", factory)
    return logged_in


def _ready(h: Harness, name: str = "ws", template: str = "tmpl", **manifest: object) -> m.Workspace:
    try:
        h.admin.get_template(template)
    except Exception:  # noqa: BLE001 - missing: push it
        h.template(name=template, **manifest)
    created = h.admin.create_workspace(m.CreateWorkspaceRequest(template=template, name=name))
    ws = h.admin.get_workspace(created.id, wait="ready", timeout=30)
    assert ws.agent is not None
    return ws


# --- exec ------------------------------------------------------------------------------------------------------


def test_exec_splits_stdout_and_stderr_and_mirrors_the_exit_code(connected: Cli, h: Harness) -> None:
    _ready(h)
    result = connected("exec", "ws", "--", "echo out; echo err >&2; exit 7")
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n"), result.stderr


def test_exec_runs_several_arguments_as_argv(connected: Cli, h: Harness) -> None:
    _ready(h)
    result = connected.ok("exec", "ws", "--", "printf", "%s|", "a b", "$HOME")
    assert result.stdout == "a b|$HOME|"


def test_exec_missing_program_exits_127(connected: Cli, h: Harness) -> None:
    _ready(h)
    result = connected("exec", "ws", "--", "no-such-program-here", "x")
    assert result.exit_code == 127
    assert "no-such-program-here" in result.stderr
    assert result.stdout == ""


def test_exec_forwards_piped_stdin(connected: Cli, h: Harness) -> None:
    _ready(h)
    data = "".join(f"line {i}\n" for i in range(20000))
    result = connected.ok("exec", "ws", "--", "wc -l; cat >/dev/null", input=data)
    assert result.stdout.strip() == "20000"
    assert connected.ok("exec", "ws", "--", "cat", input="round trip\n").stdout == "round trip\n"
    assert connected.ok("exec", "ws", "-n", "--", "cat", input="ignored\n").stdout == ""


def test_exec_cwd_and_env(connected: Cli, h: Harness) -> None:
    _ready(h)
    result = connected.ok(
        "exec", "ws", "--cwd", "/tmp", "-e", "A=1", "--env", "B=x=y", "--", 'echo "$PWD $A $B"'
    )
    assert result.stdout == "/tmp 1 x=y\n"


def test_exec_timeout_kills_and_exits_124(connected: Cli, h: Harness) -> None:
    _ready(h)
    result = connected("exec", "ws", "--timeout", "1s", "--", "echo started; sleep 30")
    assert (result.exit_code, result.stdout) == (124, "started\n")
    assert result.stderr == "error: the command was killed after the --timeout of 1s\n"


def test_exec_json_runs_to_the_end_and_prints_the_result(connected: Cli, h: Harness) -> None:
    _ready(h)
    result = connected.ok("exec", "ws", "-o", "json", "--", "cat; echo err >&2; exit 3", input="fed")
    shown = m.ExecResult.model_validate_json(result.stdout)
    assert (shown.exit_code, shown.stdout, shown.stderr, shown.timed_out) == (3, "fed", "err\n", False)
    assert result.stderr == ""


def test_exec_checks_options_before_connecting(connected: Cli, h: Harness) -> None:
    result = connected("exec", "ws", "-e", "NOEQUALS", "--", "true")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: Invalid request.\n  --env: 'NOEQUALS' is not KEY=VALUE\n",
    )
    result = connected("exec", "ws", "--timeout", "soon", "--", "true")
    assert result.exit_code == 2
    assert "'soon' is not a duration" in result.stderr


def test_exec_unknown_workspace(connected: Cli, golden: Golden) -> None:
    golden("exec_unknown_workspace", connected, "exec", "nope", "--", "true")


def test_exec_stopped_workspace_names_its_status(connected: Cli, h: Harness) -> None:
    ws = _ready(h)
    h.admin.stop_workspace(ws.id)
    h.await_build(ws.id)
    result = connected("exec", "ws", "--", "true")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Workspace 'ws' is stopped.\n")


# --- create --wait: the agent ----------------------------------------------------------------------------------


def test_create_waits_for_the_startup_script(connected: Cli, h: Harness) -> None:
    h.template(name="tmpl", startup_script="echo setting up; sleep 1; echo done")
    result = connected.ok("create", "ws", "--template", "tmpl", "-o", "json")
    ws = m.Workspace.model_validate_json(result.stdout)
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY
    lines = result.stderr.splitlines()
    assert "ws: waiting for the agent" in lines or "ws: running the startup script" in lines
    assert lines[-1].startswith("Workspace ws is ready (startup script took ")


def test_create_fails_when_the_startup_script_fails(connected: Cli, h: Harness) -> None:
    h.template(name="tmpl", startup_script="echo first; echo broken >&2; exit 3")
    result = connected("create", "ws", "--template", "tmpl")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    tail = lines[lines.index("Last lines of the startup script's output:") + 1 :]
    assert [line[9:] for line in tail[:-2]] == ["startup_script | first", "startup_script | broken"]
    assert tail[-2:] == [
        "error: the startup script of ws failed with exit code 3",
        "hint: see the whole log with `dockyard logs ws`",
    ]


# --- ssh -------------------------------------------------------------------------------------------------------


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What `dockyard ssh` would have exec'd."""
    calls: list[list[str]] = []
    monkeypatch.setattr(connect, "_run_ssh", calls.append)
    monkeypatch.setattr(sshconfig, "dockyard_command", lambda: "/usr/bin/dockyard")
    return calls


def test_ssh_starts_a_stopped_workspace_waits_and_runs_openssh(
    connected: Cli, h: Harness, ran: list[list[str]]
) -> None:
    ws = _ready(h)
    h.admin.stop_workspace(ws.id)
    h.await_build(ws.id)

    result = connected.ok("ssh", "ws")

    assert h.admin.get_workspace(ws.id).status is m.WorkspaceStatus.RUNNING
    assert "Starting ws (build #3)" in result.stderr
    assert "Workspace ws is ready" in result.stderr
    files = sshkeys.key_files()
    assert ran == [
        [
            "ssh",
            "-o", f"ProxyCommand=/usr/bin/dockyard ssh --stdio {ws.id}",
            "-o", "HostKeyAlias=dockyard",
            "-o", f"UserKnownHostsFile={files.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"CertificateFile={files.certificate}",
            "-i", str(files.private_key),
            "-o", "IdentitiesOnly=yes",
            "-l", "ws",
            "--", "dockyard.ws",
        ]
    ]  # fmt: skip
    for path in (files.private_key, files.public_key, files.certificate, files.known_hosts):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(files.folder.stat().st_mode) == 0o700
    assert files.known_hosts.read_text().startswith("@cert-authority dockyard ssh-ed25519 ")
    assert sshkeys.certificate_usable(
        files, ca_public_key=h.admin.ssh_gateway().ca_public_key, margin=sshkeys.RENEW_BEFORE
    )


def test_ssh_with_a_command_reuses_the_certificate(connected: Cli, h: Harness, ran: list[list[str]]) -> None:
    _ready(h)
    connected.ok("ssh", "ws")
    first = sshkeys.key_files().certificate.read_text()
    connected.ok("ssh", "ws", "--no-wait", "--", "echo", "hi")
    assert ran[-1][-4:] == ["--", "dockyard.ws", "echo", "hi"]
    assert "-tt" not in ran[-1]
    assert sshkeys.key_files().certificate.read_text() == first


def test_ssh_unknown_workspace(connected: Cli, ran: list[list[str]], golden: Golden) -> None:
    golden("ssh_unknown_workspace", connected, "ssh", "nope")
    assert ran == []


def test_ssh_stdio_unknown_workspace_keeps_stdout_clean(connected: Cli) -> None:
    result = connected("ssh", "--stdio", "nope")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "error: Workspace 'nope' not found.\n"


# --- port-forward ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: --tcp: give at least one --tcp LOCAL:REMOTE\n"),
        (["--tcp", "80:http"], "error: --tcp: '80:http' is not LOCAL:REMOTE (e.g. 8080:80) or PORT\n"),
        (["--tcp", "70000:80"], "error: --tcp: '70000:80': port 70000 is not between 1 and 65535\n"),
        (["--tcp", "8080:80", "--tcp", "8080:81"], "error: --tcp: local port 8080 is given more than once\n"),
    ],
)
def test_port_forward_checks_its_specs(connected: Cli, args: list[str], message: str) -> None:
    before = len(connected.connections)
    result = connected("port-forward", "ws", *args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", message)
    assert len(connected.connections) == before


def test_port_forward_unknown_workspace(connected: Cli) -> None:
    result = connected("port-forward", "nope", "--tcp", "8080:80")
    assert (result.exit_code, result.stderr) == (1, "error: Workspace 'nope' not found.\n")


def test_port_forward_stopped_workspace(connected: Cli, h: Harness) -> None:
    ws = _ready(h)
    h.admin.stop_workspace(ws.id)
    h.await_build(ws.id)
    result = connected("port-forward", "ws", "--tcp", "8080:80")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: ws is stopped\nhint: start it with `dockyard start ws`\n",
    )


def test_forwarder_carries_many_connections_at_once(h: Harness) -> None:
    ws = _ready(h)
    server = socket.create_server(("127.0.0.1", 0))

    def echo() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return

            def serve(c: socket.socket) -> None:
                with c, contextlib.suppress(OSError):
                    while data := c.recv(65536):
                        c.sendall(data[::-1])

            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    port = int(server.getsockname()[1])
    forwarder = forward._Forwarder(in_process(h.admin, h.lifespan), ws.id, "ws")
    pairs = [socket.socketpair() for _ in range(5)]
    threads = [
        threading.Thread(target=forwarder.handle, args=(theirs, forward.PortSpec(1, port)), daemon=True)
        for _, theirs in pairs
    ]
    for thread in threads:
        thread.start()
    for index, (ours, _) in enumerate(pairs):
        ours.sendall(f"abc{index}".encode())
    for index, (ours, _) in enumerate(pairs):
        assert ours.recv(100) == f"{index}cba".encode()
    for ours, _ in pairs:
        ours.close()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    assert forwarder.active == set()
    server.close()

"""The connect commands as real processes against a real server and Docker workspaces: `dockyard exec`, OpenSSH
(ssh, scp, rsync) through `config-ssh`'s entries and `ssh --stdio`, and `port-forward`.

Each command runs as `dockyard` in a subprocess with a home and config folder of its own, as a user would run
it; nothing here goes through the in-process harness.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dockyard_sdk import models as m
from tests.harness import manifest_yaml, tar_gz
from tests.live import DOCKYARD, LiveServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@dataclass
class User:
    """A shell user of the CLI: its own HOME and config folder, logged in to the live server."""

    live: LiveServer
    home: Path
    env: dict[str, str]
    ssh_config: Path

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = 120,
        check: bool = False,
        env_token: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        env = self.env if env_token is None else {**self.env, "DOCKYARD_TOKEN": env_token}
        result = subprocess.run(
            list(args), input=input, env=env, capture_output=True, timeout=timeout, cwd=self.home
        )
        if check:
            assert result.returncode == 0, (args, result.returncode, result.stderr.decode(errors="replace"))
        return result

    def dockyard(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return self.run(DOCKYARD, *args, **kwargs)  # type: ignore[arg-type]

    def ssh(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return self.run("ssh", "-F", str(self.ssh_config), *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def user(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> User:
    home = tmp_path_factory.mktemp("home")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LANG": "C.UTF-8",
    }
    shell = User(live, home, env, home / "ssh_config")
    live.workspace("dev")
    shell.dockyard("login", live.url, "--token", live.token, check=True)
    shell.dockyard("config-ssh", "--ssh-config", str(shell.ssh_config), "--yes", check=True)
    return shell


# --- exec ------------------------------------------------------------------------------------------------------


def test_exec_mirrors_the_exit_code_and_splits_the_streams(user: User) -> None:
    result = user.dockyard("exec", "dev", "--", "echo out; echo err >&2; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    missing = user.dockyard("exec", "dev", "--", "no-such-program")
    assert missing.returncode == 127
    assert b"no-such-program" in missing.stderr
    argv = user.dockyard("exec", "dev", "--", "printf", "%s|", "a b", "$HOME", check=True)
    assert argv.stdout == b"a b|$HOME|"


def test_exec_pipes_binary_stdin_both_ways(user: User) -> None:
    data = os.urandom(3 * 2**20)
    result = user.dockyard("exec", "dev", "--", "cat", input=data, check=True)
    assert result.stdout == data
    counted = user.dockyard("exec", "dev", "--", "wc -c", input=data, check=True)
    assert counted.stdout.strip() == str(len(data)).encode()


def test_exec_json(user: User) -> None:
    result = user.dockyard("exec", "dev", "-o", "json", "--", "cat; exit 2", input=b"fed", check=True)
    shown = m.ExecResult.model_validate_json(result.stdout)
    assert (shown.exit_code, shown.stdout) == (2, "fed")


def test_exec_unknown_workspace(user: User) -> None:
    result = user.dockyard("exec", "nope", "--", "true")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        b"",
        b"error: Workspace 'nope' not found.\n",
    )


# --- list (the standard-library path, cli/listing.py) ------------------------------------------------------


def test_list_over_the_standard_library_client(user: User) -> None:
    listed = user.dockyard("list", "-o", "json", check=True)
    assert m.WorkspaceList.model_validate_json(listed.stdout) == user.live.client.list_workspaces(owner="me")
    table = user.dockyard("list", "--status", "running", check=True).stdout.decode().splitlines()
    assert table[0].split() == ["NAME", "TEMPLATE", "STATUS", "TASK", "LAST", "BUILD", "TTL"]
    assert [row.split()[:3] for row in table[1:]] == [["dev", "base", "v1"]]
    none = user.dockyard("list", "--template", "nope")
    assert (none.returncode, none.stdout, none.stderr) == (0, b"", b"No workspaces match.\n")
    refused = user.dockyard("list", check=False, env_token="dy_bad_token")
    assert (refused.returncode, refused.stdout) == (1, b"")
    assert refused.stderr.decode().splitlines()[0] == "error: Invalid API token."


# --- OpenSSH ---------------------------------------------------------------------------------------------------


def test_config_ssh_entries_work_with_openssh(user: User) -> None:
    assert "Host dockyard.*\n" in user.ssh_config.read_text()
    result = user.ssh("dockyard.dev", "echo hi; echo there >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"hi\n", b"there\n")
    again = user.dockyard("config-ssh", "--ssh-config", str(user.ssh_config), "--yes", check=True)
    assert again.stderr == f"No changes to {user.ssh_config}\n".encode()


def test_a_workspace_created_after_config_ssh_is_reachable(user: User) -> None:
    written = user.ssh_config.read_text()
    later = user.live.workspace("later")
    user.live.client.write_file(later.id, "which.txt", b"the later one")
    result = user.ssh("dockyard.later", "cat which.txt")
    assert (result.returncode, result.stdout) == (0, b"the later one"), result.stderr
    assert user.ssh_config.read_text() == written
    # owner.name reaches the same workspace; a deleted one is refused by the server, not by a stale entry.
    admin = user.live.client.me().username
    assert user.ssh(f"dockyard.{admin}.later", "cat which.txt").stdout == b"the later one"
    user.live.client.delete_workspace(later.id)
    user.live.client.get_workspace(later.id, wait="done", timeout=60)
    gone = user.ssh("dockyard.later", "true")
    assert gone.returncode == 255
    assert b"error: Workspace 'later' not found." in gone.stderr


def test_ssh_stdin_and_a_terminal(user: User) -> None:
    data = os.urandom(2**20)
    piped = user.ssh("dockyard.dev", "sha256sum", input=data, check=True)
    expected = subprocess.run(["sha256sum"], input=data, capture_output=True, check=True).stdout
    assert piped.stdout.split()[0] == expected.split()[0]
    tty = user.ssh("-tt", "dockyard.dev", "tty; exit 0", check=True)
    assert tty.stdout.startswith(b"/dev/pts/")


def test_scp_both_protocols(user: User) -> None:
    local = user.home / "upload.bin"
    local.write_bytes(os.urandom(5 * 2**20 + 3))
    config = ["-F", str(user.ssh_config)]
    for flags, name in (([], "sftp.bin"), (["-O"], "legacy.bin")):
        user.run("scp", *config, *flags, str(local), f"dockyard.dev:{name}", check=True)
        back = user.home / f"back-{name}"
        user.run("scp", *config, *flags, f"dockyard.dev:{name}", str(back), check=True)
        assert back.read_bytes() == local.read_bytes(), flags


def test_rsync_over_ssh(user: User) -> None:
    source = user.home / "tree"
    (source / "sub").mkdir(parents=True)
    for index in range(50):
        (source / "sub" / f"f{index}.txt").write_text(f"file {index}\n" * index)
    (source / "big.bin").write_bytes(os.urandom(2**20))
    ssh = f"ssh -F {user.ssh_config}"
    user.run("rsync", "-a", "-e", ssh, f"{source}/", "dockyard.dev:tree/", check=True)
    listed = user.dockyard("exec", "dev", "--", "cd tree && find . -type f -exec sha256sum {} +", check=True)
    remote = {path: digest for digest, path in (line.split() for line in listed.stdout.decode().splitlines())}
    local = {
        f"./{path.relative_to(source)}": hashlib.sha256(path.read_bytes()).hexdigest()
        for path in source.rglob("*")
        if path.is_file()
    }
    assert remote == local
    # A second run finds nothing to send.
    again = user.run("rsync", "-a", "--stats", "-e", ssh, f"{source}/", "dockyard.dev:tree/", check=True)
    assert b"Number of regular files transferred: 0" in again.stdout


def test_dockyard_ssh_runs_openssh(user: User) -> None:
    result = user.dockyard("ssh", "dev", "--", "echo", "via", "dockyard", "ssh", check=True)
    assert result.stdout == b"via dockyard ssh\n"


def test_dockyard_ssh_on_a_terminal_gets_a_login_shell(user: User) -> None:
    # `script` gives the command a terminal, so `dockyard ssh` asks OpenSSH for one (-tt).
    result = user.run(
        "script", "-qec", f"{DOCKYARD} ssh dev", "/dev/null", input=b"echo tty-$((6*7)); tty; exit 4\n"
    )
    assert result.returncode == 4
    assert b"tty-42" in result.stdout
    assert b"/dev/pts/" in result.stdout


def test_ssh_stdio_errors_go_to_stderr_only(user: User) -> None:
    result = user.dockyard("ssh", "--stdio", "nope", input=b"")
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        b"",
        b"error: Workspace 'nope' not found.\n",
    )


# --- port-forward ----------------------------------------------------------------------------------------------


def test_port_forward_to_a_server_in_the_workspace(user: User) -> None:
    remote = 8765
    # setsid: the server must outlive the exec, whose process group ends with it.
    user.dockyard(
        "exec", "dev", "--",
        f"mkdir -p www && echo hello-from-dev > www/index.html && cd www && "
        f"setsid -f python3 -m http.server {remote} --bind 127.0.0.1 >/dev/null 2>&1",
        check=True,
    )  # fmt: skip
    local = free_port()
    process = subprocess.Popen(
        [DOCKYARD, "port-forward", "dev", "--tcp", f"{local}:{remote}"],
        env=user.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line == f"Forwarding 127.0.0.1:{local} -> dev:{remote}\n".encode()
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{local}/index.html", timeout=10)
                break
            except httpx.HTTPError:
                # The server in the workspace may still be starting.
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert (response.status_code, response.text) == (200, "hello-from-dev\n")

        def fetch(_: int) -> str:
            return httpx.get(f"http://127.0.0.1:{local}/index.html", timeout=30).text

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(fetch, range(24))) == ["hello-from-dev\n"] * 24
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert stderr.decode().endswith("Stopped forwarding.\n")


# --- start, stop, restart: the standard-library path and the Typer one ----------------------------------------

FAST_ENTRY = "import sys; from dockyard.cli.entry import main; sys.argv[0] = 'dockyard'; main()"
_CLI_LIBRARIES = {"typer", "pydantic", "httpx", "rich"}


def _fast(user: User, *args: str) -> tuple[int, list[str]]:
    """`dockyard ARGS` traced by -X importtime: its exit code and stderr, after asserting that it ran on the
    standard library alone (cli/transitions.py)."""
    result = user.run(sys.executable, "-X", "importtime", "-c", FAST_ENTRY, *args, timeout=180)
    assert result.stdout == b""
    lines, loaded = [], set()
    for line in result.stderr.decode().splitlines():
        if line.startswith("import time:"):
            loaded.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        else:
            lines.append(line)
    assert "dockyard" in loaded
    assert loaded & _CLI_LIBRARIES == set()
    return result.returncode, lines


def _typer(user: User, *args: str) -> tuple[int, list[str]]:
    # `-o table` is the default output, and a form the standard-library path leaves to Typer.
    result = user.dockyard(*args, "-o", "table", timeout=180)
    assert result.stdout == b""
    return result.returncode, result.stderr.decode().splitlines()


def _shape(lines: list[str]) -> list[str]:
    """Lines without what differs from run to run: build numbers, clock times, durations, Docker's ids."""
    shaped = []
    for line in lines:
        line = re.sub(r"(#|--build )\d+", r"\1N", line)
        line = re.sub(r"\b(sha256:)?[0-9a-f]{12,64}\b", "ID", line)
        line = re.sub(r"\b\d\d:\d\d:\d\d\b", "HH:MM:SS", line)
        shaped.append(re.sub(r"\b\d+\.\d\ds\b", "S", line))
    return shaped


def test_start_stop_restart_print_what_the_typer_commands_print(user: User, live: LiveServer) -> None:
    live.workspace("dev")
    fast_stop, fast_start = _fast(user, "stop", "dev"), _fast(user, "start", "dev")
    typer_stop, typer_start = _typer(user, "stop", "dev"), _typer(user, "start", "dev")
    runs = {"stop": (fast_stop, typer_stop), "start": (fast_start, typer_start)}
    for verb, ((fast_code, fast), (typer_code, typer)) in runs.items():
        assert (fast_code, typer_code) == (0, 0), (fast, typer)
        assert _shape(fast) == _shape(typer), verb
        assert fast[0].startswith(f"{'Stopping' if verb == 'stop' else 'Starting'} dev (build #")
        assert fast[-1].startswith(f"Workspace dev is {'stopped' if verb == 'stop' else 'running'} (build #")
    code, lines = _fast(user, "restart", "dev")
    assert code == 0, lines
    assert [line.split(" (")[0] for line in lines if not line.startswith(("dev:", "  ", "0", "1", "2"))] == [
        "Stopping dev",
        "Workspace dev is stopped",
        "Starting dev",
        "Workspace dev is running",
    ], lines
    assert live.client.get_workspace("dev").status is m.WorkspaceStatus.RUNNING


def test_start_errors_match_the_typer_command(user: User) -> None:
    fast, typer = _fast(user, "start", "nosuch"), _typer(user, "start", "nosuch")
    assert fast == typer
    assert fast[0] == 1
    assert fast[1][0].startswith("error: "), fast


def test_a_failing_build_exits_non_zero_with_the_builds_error(user: User, live: LiveServer) -> None:
    live.client.create_template(
        tar_gz(
            {
                "dockyard.yaml": "name: broken\nbuild: {dockerfile: Dockerfile}\n",
                "Dockerfile": "FROM dockyard/base:bookworm\nRUN echo building-step-output && exit 3\n",
            }
        )
    )
    created = live.client.create_workspace(m.CreateWorkspaceRequest(template="broken", name="broken"))
    assert live.client.get_workspace(created.id, wait="done", timeout=120).status is m.WorkspaceStatus.FAILED
    (fast_code, fast), (typer_code, typer) = _fast(user, "start", "broken"), _typer(user, "start", "broken")
    assert (fast_code, typer_code) == (1, 1)
    assert _shape(fast) == _shape(typer)
    errors = [line for line in fast if line.startswith("error: ")]
    assert len(errors) == 1, fast
    assert re.fullmatch(r"error: build #\d+ \(start\) of broken failed", errors[0]), fast
    assert any("returned a non-zero code: 3" in line for line in fast), fast
    assert any("building-step-output" in line for line in fast), fast
    assert fast[-1].startswith("hint: see its whole log with `dockyard logs broken --build ")


# --- create: the standard-library path and the Typer one ------------------------------------------------------


def _create(user: User, *args: str, fast: bool) -> tuple[int, list[str], str, set[str]]:
    """`dockyard create ARGS` traced by -X importtime: exit code, stderr lines, stdout, top-level modules loaded.
    Not `fast`: `-tT` (a form Click takes and the standard-library path leaves to Typer) for `--template=T`."""
    if not fast:
        args = tuple(f"-t{arg.partition('=')[2]}" if arg.startswith("--template=") else arg for arg in args)
    result = user.run(sys.executable, "-X", "importtime", "-c", FAST_ENTRY, "create", *args, timeout=180)
    lines, loaded = [], set()
    for line in result.stderr.decode().splitlines():
        if line.startswith("import time:"):
            loaded.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        else:
            lines.append(line)
    assert "dockyard" in loaded
    return result.returncode, lines, result.stdout.decode(), loaded


def _same_shape(text: str, name: str) -> list[str]:
    """Output lines without the workspace's name, its agent's passing states (when a read sees them depends
    on timing) and what differs from run to run."""
    kept = [line for line in text.splitlines() if not line.startswith(f"{name}: ")]
    uuid = r"\b[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\b"
    shaped = _shape([re.sub(uuid, "UUID", line.replace(name, "NAME")) for line in kept])
    return [re.sub(r"\d+", "N", line) for line in shaped]


def test_create_prints_what_the_typer_command_prints(user: User, live: LiveServer) -> None:
    fast_code, fast, fast_out, fast_loaded = _create(user, "made-fast", "--template=base", fast=True)
    typer_code, typer, typer_out, typer_loaded = _create(user, "made-typer", "--template=base", fast=False)
    assert (fast_code, typer_code) == (0, 0), (fast, typer)
    assert fast_loaded & _CLI_LIBRARIES == set()
    assert "typer" in typer_loaded  # the comparison is with the Typer command indeed
    assert fast[0].startswith("Creating workspace made-fast from base v")
    assert fast[-1].startswith("Workspace made-fast is ready")
    assert _same_shape("\n".join(fast), "made-fast") == _same_shape("\n".join(typer), "made-typer")
    assert fast_out.startswith("NAME       made-fast\n")
    assert "STATUS     running\n" in fast_out
    assert _same_shape(fast_out, "made-fast") == _same_shape(typer_out, "made-typer")
    ready = live.client.get_workspace("made-fast")
    assert ready.agent is not None
    assert ready.agent.lifecycle is m.AgentLifecycle.READY


def test_create_json_without_waiting_is_the_typer_commands_json(user: User, live: LiveServer) -> None:
    fast_code, fast, fast_out, fast_loaded = _create(
        user, "json-fast", "--template=base", "--no-wait", "-o", "json", fast=True
    )
    typer_code, typer, typer_out, _ = _create(
        user, "json-typer", "--template=base", "--no-wait", "--output=JSON", fast=False
    )
    assert (fast_code, typer_code) == (0, 0), (fast, typer)
    assert fast_loaded & _CLI_LIBRARIES == set()
    assert _same_shape("\n".join(fast), "json-fast") == _same_shape("\n".join(typer), "json-typer")
    assert fast[-1] == "Follow its progress with `dockyard logs json-fast --follow`"
    data = json.loads(fast_out)
    # The API's JSON as the SDK's model reads and prints it, as the Typer command does: the same text.
    assert json.dumps(m.Workspace.model_validate(data).model_dump(mode="json"), indent=2) + "\n" == fast_out
    assert list(json.loads(typer_out)) == list(data)
    assert (data["name"], data["latest_build"]["transition"]) == ("json-fast", "start")


def test_create_whose_startup_script_fails_like_the_typer_command(user: User, live: LiveServer) -> None:
    script = "echo on-{{ parameters.branch | quote }}; exit 3"
    live.client.create_template(
        tar_gz({"dockyard.yaml": manifest_yaml(name="scripted", startup_script=script)})
    )
    args = ("--template=scripted", "-p", "branch=feature")
    fast_code, fast, fast_out, fast_loaded = _create(user, "script-fast", *args, fast=True)
    typer_code, typer, typer_out, _ = _create(user, "script-typer", *args, fast=False)
    assert (fast_code, typer_code, fast_out, typer_out) == (1, 1, "", "")
    assert fast_loaded & _CLI_LIBRARIES == set()
    assert _same_shape("\n".join(fast), "script-fast") == _same_shape("\n".join(typer), "script-typer")
    assert "Last lines of the startup script's output:" in fast, fast
    assert any(line.endswith("| on-feature") for line in fast), fast
    assert fast[-2:] == [
        "error: the startup script of script-fast failed with exit code 3",
        "hint: see the whole log with `dockyard logs script-fast`",
    ]
    assert live.client.get_workspace("script-fast").parameters["branch"] == "feature"


def test_create_refused_by_the_server_is_explained_by_the_typer_command(user: User, live: LiveServer) -> None:
    # The server's 422 hands the arguments to the Typer command, which names the bad value after its option.
    fast_code, fast, fast_out, fast_loaded = _create(user, "Not A Name", "--template=base", fast=True)
    typer_code, typer, typer_out, _ = _create(user, "Not A Name", "--template=base", fast=False)
    assert (fast_code, fast, fast_out) == (typer_code, typer, typer_out)
    assert fast_code == 1
    assert fast[0] == "error: Invalid request.", fast
    assert fast[1].startswith("  NAME: "), fast
    assert "typer" in fast_loaded
    code, lines, _, loaded = _create(user, "--template=nosuch", fast=True)
    assert (code, loaded & _CLI_LIBRARIES) == (1, set())
    assert lines[0].startswith("error: "), lines
    assert not [w for w in live.client.list_workspaces().workspaces if w.name in ("Not A Name", "nosuch")]


def _on_a_terminal(user: User, *args: str) -> tuple[int, str, set[str]]:
    """`dockyard ARGS` with stderr on a pseudo-terminal: exit code, what the terminal got, modules loaded."""
    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    env = {**user.env, "TERM": "xterm", "COLUMNS": "100"}
    with subprocess.Popen(
        [sys.executable, "-X", "importtime", "-c", FAST_ENTRY, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        cwd=user.home,
    ) as process:
        os.close(terminal)
        code = process.wait(timeout=180)
    reader.join(timeout=30)
    os.close(controller)
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    loaded = {
        line.rsplit("|", 1)[1].strip().split(".")[0] for line in text.splitlines() if "import time:" in line
    }
    return code, text, loaded


def test_a_terminal_gets_the_standard_library_spinner(user: User, live: LiveServer) -> None:
    live.workspace("dev")
    code, text, loaded = _on_a_terminal(user, "restart", "dev")
    assert code == 0, text
    assert "dockyard" in loaded
    assert loaded & _CLI_LIBRARIES == set()
    assert "\x1b[?25l" in text  # the cursor hidden while the spinner turns
    assert text.rstrip().endswith(
        "\x1b[?25hWorkspace dev is running" + text.rstrip().rpartition("running")[2]
    )
    assert "dev is stopping (" in text or "dev is pending (" in text or "dev is starting (" in text
    assert "Workspace dev is stopped (build #" in text

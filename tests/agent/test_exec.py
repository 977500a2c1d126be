"""`exec` and reconnecting `pty` streams."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import time

import pytest

from tests.agent.fakeplane import EOF, STDIN, AgentEnv, Control

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
async def control(agent: AgentEnv) -> Control:
    control = await agent.connect()
    await control.wait_state("ready")
    return control


async def test_exec_argv_separates_stdout_and_stderr(control: Control, agent: AgentEnv) -> None:
    stream = await control.open("exec", argv=["sh", "-c", "echo out; echo err >&2; pwd; exit 7"])

    output = await stream.collect()

    assert output.stdout == f"out\n{agent.home}\n".encode()
    assert output.stderr == b"err\n"
    assert output.exit == {"type": "exit", "exit_code": 7, "signal": None}
    assert await stream.recv() is None


async def test_exec_shell_with_cwd_env_and_stdin(control: Control, agent: AgentEnv) -> None:
    (agent.home / "sub").mkdir()
    stream = await control.sh("pwd; echo $GREETING; tr a-z A-Z | wc -c", cwd="sub", env={"GREETING": "hi"})
    stream.send(STDIN, b"abc\n")
    stream.send(STDIN, b"def\n")
    stream.send(EOF)

    output = await stream.collect()

    assert output.stdout.split() == [str(agent.home / "sub").encode(), b"hi", b"8"]
    assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}


async def test_exec_does_not_leak_the_agent_token(control: Control) -> None:
    stream = await control.open("exec", argv=["env"])

    output = await stream.collect()

    assert b"DOCKYARD_WORKSPACE_NAME=dev" in output.stdout
    assert b"DOCKYARD_AGENT_TOKEN" not in output.stdout
    assert b"dya_ws1_secret" not in output.stdout


async def test_exec_of_a_missing_program_is_127_command_not_found(control: Control) -> None:
    stream = await control.open("exec", argv=["no-such-program-xyz", "arg"])

    output = await stream.collect()

    assert output.stdout == b""
    assert output.stderr == b"no-such-program-xyz: command not found\n"
    assert output.exit == {"type": "exit", "exit_code": 127, "signal": None}


async def test_exec_of_a_file_that_is_not_executable_is_126(control: Control, agent: AgentEnv) -> None:
    script = agent.home / "script.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)

    output = await (await control.open("exec", argv=[str(script)])).collect()

    assert output.stderr == f"{script}: Permission denied\n".encode()
    assert output.exit == {"type": "exit", "exit_code": 126, "signal": None}


async def test_kill_message_kills_the_process_group(control: Control, agent: AgentEnv) -> None:
    marker = agent.home / "child.pid"
    stream = await control.sh(f"sleep 30 & echo $! > {marker}; echo started; wait")
    await stream.read_until(b"started")

    started = time.monotonic()
    stream.send_json({"type": "kill"})
    output = await stream.collect()

    assert output.exit == {"type": "exit", "exit_code": 137, "signal": "KILL"}
    assert time.monotonic() - started < 2
    await _assert_gone(int(marker.read_text()))


async def test_signal_message_reaches_the_process(control: Control) -> None:
    stream = await control.sh("trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 0.05; done")
    await stream.read_until(b"ready")

    stream.send_json({"type": "signal", "signal": "INT"})
    output = await stream.collect()

    assert b"got-int" in output.stdout
    assert output.exit == {"type": "exit", "exit_code": 5, "signal": None}


async def test_closing_the_stream_kills_the_process_group(control: Control, agent: AgentEnv) -> None:
    marker = agent.home / "child.pid"
    stream = await control.sh(f"sleep 30 & echo $! > {marker}; echo started; wait")
    await stream.read_until(b"started")

    await stream.close()

    await _assert_gone(int(marker.read_text()))


# Each one leaves the command's process group differently: job control (its own group, same session), setsid
# (a new session), and setsid in a double fork whose middle process exits (re-parented to init at once).
ESCAPES = (
    "sleep 600 & echo $! >> {pids}; "
    "(set -m; sleep 600 & echo $! >> {pids}); "
    "setsid sleep 600 & echo $! >> {pids}; "
    "setsid sh -c 'sleep 600 & echo $! >> {pids}' & "
    "i=0; while [ $i -lt 20 ]; do sleep 600 & echo $! >> {pids}; i=$((i+1)); done; "
    "sleep 0.3; echo started; wait"
)


@pytest.mark.parametrize("how", ["kill", "close"])
async def test_ending_an_exec_kills_everything_it_started(
    control: Control, agent: AgentEnv, how: str
) -> None:
    pids = agent.home / "pids"
    stream = await control.sh(ESCAPES.format(pids=pids))
    await stream.read_until(b"started")
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) == 24
    assert all(_alive(pid) for pid in started)

    if how == "kill":
        stream.send_json({"type": "kill"})
        output = await stream.collect()
        assert output.exit == {"type": "exit", "exit_code": 137, "signal": "KILL"}
    else:
        await stream.close()

    for pid in started:
        await _assert_gone(pid)


async def test_a_normal_exit_leaves_background_processes_alone(control: Control, agent: AgentEnv) -> None:
    pids = agent.home / "pids"
    output = await (await control.sh(f"setsid sleep 600 > /dev/null 2>&1 & echo $! > {pids}")).collect()
    assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}
    pid = int(pids.read_text())
    await asyncio.sleep(0.3)
    try:
        assert _alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_exit_is_not_held_up_by_a_background_child(control: Control) -> None:
    started = time.monotonic()
    stream = await control.sh("sleep 5 & echo parent")

    output = await stream.collect()

    assert output.stdout == b"parent\n"
    assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}
    assert time.monotonic() - started < 2


async def test_large_output_arrives_whole(control: Control) -> None:
    stream = await control.sh("yes 0123456789 | head -c 20000000")

    output = await stream.collect()

    assert output.stdout == b"0123456789\n" * 1_818_181 + b"0123456789"[:9]
    assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}


async def test_exec_with_pty_echoes_input_and_follows_resize(control: Control) -> None:
    stream = await control.open(
        "exec", argv=["sh"], pty={"term": "xterm-256color", "width": 100, "height": 30}
    )
    stream.send(STDIN, b"stty size; echo $TERM; tty -s && echo is-a-tty\n")
    await stream.read_until(b"is-a-tty\r\n")

    stream.send_json({"type": "resize", "width": 132, "height": 43})
    stream.send(STDIN, b"stty size\n")
    seen = await stream.read_until(b"43 132")
    stream.send(STDIN, b"exit 3\n")
    output = await stream.collect()

    assert b"stty size" in seen  # the terminal echoed what was typed
    assert output.exit == {"type": "exit", "exit_code": 3, "signal": None}
    assert output.stderr == b""


async def test_exec_with_pty_reports_size_and_term_from_the_start(control: Control) -> None:
    stream = await control.sh("stty size; echo $TERM", pty={"term": "vt100", "width": 90, "height": 20})

    output = await stream.collect()

    assert output.stdout == b"20 90\r\nvt100\r\n"
    assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}


async def test_reconnecting_pty_replays_scrollback_on_reattach(control: Control) -> None:
    first = await control.open("pty", reconnect="term-1", width=80, height=24, command=None)
    first.send(STDIN, b"echo hi-$((40 + 2))\n")
    await first.read_until(b"hi-42")
    await first.close()

    second = await control.open("pty", reconnect="term-1", width=100, height=40)
    replay = await second.read_until(b"hi-42")
    second.send(STDIN, b"stty size; exit\n")
    output = await second.collect()

    assert b"echo hi-$((40 + 2))" in replay
    assert b"40 100" in output.stdout
    assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}

    # The id is forgotten once the shell exits: the same id starts a fresh shell with no scrollback.
    third = await control.open("pty", reconnect="term-1", command="echo fresh")
    fresh = await third.collect()
    assert b"hi-42" not in fresh.stdout
    assert b"fresh" in fresh.stdout


async def test_a_new_attach_takes_over_the_terminal(control: Control) -> None:
    first = await control.open("pty", reconnect="term-2", width=80, height=24)
    first.send(STDIN, b"echo one\n")
    await first.read_until(b"one\r\n")

    second = await control.open("pty", reconnect="term-2", width=80, height=24)
    await second.read_until(b"one\r\n")

    # The first connection is closed by the agent once the second one attached.
    while (frame := await first.recv()) is not None:
        assert frame[0] != 1, frame
    second.send(STDIN, b"echo two\n")
    await second.read_until(b"two\r\n")
    second.send_json({"type": "kill"})
    output = await second.collect()
    assert output.exit == {"type": "exit", "exit_code": 137, "signal": "KILL"}


SHORT_TERMINAL_TIMEOUTS = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("agent", sys.argv[1])
agent = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agent)
agent.PTY_IDLE_TIMEOUT = 0.5
agent.PTY_HANGUP_GRACE = 0.3
sys.exit(agent.main(sys.argv[2:]))
"""


async def test_an_abandoned_terminal_ends_with_everything_started_in_it(agent: AgentEnv) -> None:
    plane = await agent.start(wrapper=SHORT_TERMINAL_TIMEOUTS)
    control = await plane.control()
    await control.wait_state("ready")
    pids = agent.home / "pids"
    stream = await control.open("pty", reconnect="term-idle", command=ESCAPES.format(pids=pids))
    await stream.read_until(b"started")
    started = [int(line) for line in pids.read_text().split()]
    assert all(_alive(pid) for pid in started)

    # Detached: the terminal keeps running for PTY_IDLE_TIMEOUT, then hangs up, then everything is killed.
    await stream.close()

    for pid in started:
        await _assert_gone(pid)


@pytest.mark.skipif(
    not pwd.getpwuid(os.getuid()).pw_shell.endswith("bash"), reason="checks bash's login flag"
)
async def test_pty_default_command_is_the_users_login_shell(control: Control) -> None:
    stream = await control.open("pty", reconnect="term-3")
    stream.send(STDIN, b"shopt -q login_shell && echo LOGIN-$((1 + 1)); exit\n")

    output = await stream.collect()

    assert b"LOGIN-2\r\n" in output.stdout
    assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}


async def test_exec_of_true_is_fast(control: Control) -> None:
    timings = []
    for _ in range(10):
        started = time.perf_counter()
        output = await (await control.open("exec", argv=["true"])).collect()
        timings.append(time.perf_counter() - started)
        assert output.exit == {"type": "exit", "exit_code": 0, "signal": None}

    # Whole round trips through the fake plane, including fork/exec; the median stays well below 50 ms.
    assert sorted(timings)[len(timings) // 2] < 0.05, timings


async def _assert_gone(pid: int) -> None:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "Z":
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"process {pid} is still running")

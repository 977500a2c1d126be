"""The control connection: hello/welcome, reject, lifecycle and scripts, re-dial, heartbeat, stats, SIGTERM."""

from __future__ import annotations

import asyncio
import platform
import signal
import socket
from pathlib import Path

import pytest

from tests.agent.fakeplane import TOKEN, AgentEnv

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_hello_then_welcome_with_no_script_is_ready(agent: AgentEnv) -> None:
    control = await agent.connect()

    await control.wait_state("ready")
    hello = control.hello
    assert hello == {
        "type": "hello",
        "token": TOKEN,
        "version": "0.1.0",
        "protocol": 1,
        "pid": agent.process.pid if agent.process else None,
        "hostname": socket.gethostname(),
        "os": "linux",
        "arch": platform.machine(),
        "python": hello["python"],
    }
    assert hello["python"].count(".") == 2
    assert control.lifecycle() == [("starting", None), ("ready", None)]


async def test_bad_token_is_rejected_and_logged_and_the_agent_keeps_running(agent: AgentEnv) -> None:
    plane = await agent.start(token="dya_ws1_wrong")

    await asyncio.sleep(1.0)

    assert [hello["token"] for hello in plane.hellos] == ["dya_ws1_wrong"]
    assert agent.process is not None
    assert agent.process.returncode is None
    assert "dockyard-agent: the control plane rejected this agent: invalid agent token" in agent.stderr()
    # Retrying slowly (5-10 s), so no second hello yet.
    assert len(plane.hellos) == 1


async def test_startup_script_streams_its_output_then_ready(agent: AgentEnv) -> None:
    # stderr is merged into the log; a last line without a newline still arrives at EOF.
    script = 'echo "hello from $DOCKYARD_WORKSPACE_NAME"\necho oops >&2\nprintf "no newline"\n'
    control = await agent.connect(startup_script=script)

    await control.wait_state("ready")

    assert control.lifecycle() == [("starting", None), ("ready", 0)]
    assert control.log_lines("startup_script") == ["hello from dev", "oops", "no newline"]
    assert agent.stderr() == ""


async def test_startup_script_runs_in_home_with_a_login_shell(agent: AgentEnv) -> None:
    control = await agent.connect(startup_script="pwd\nshopt -q login_shell && echo login\n")

    await control.wait_state("ready")

    assert control.log_lines("startup_script") == [str(agent.home), "login"]


async def test_failing_startup_script_is_start_error_with_its_exit_code(agent: AgentEnv) -> None:
    control = await agent.connect(startup_script="echo before\nexit 3\n")

    await control.wait_state("start_error")

    assert control.lifecycle() == [("starting", None), ("start_error", 3)]
    assert control.log_lines("startup_script") == ["before"]


async def test_startup_script_that_outlives_its_timeout_is_killed(agent: AgentEnv) -> None:
    marker = agent.home / "finished"
    control = await agent.connect(
        startup_script=f"echo started\nsleep 20\ntouch {marker}\n", startup_timeout=0.5
    )

    await control.wait_state("start_timeout")
    await asyncio.sleep(0.2)

    assert control.lifecycle() == [("starting", None), ("start_timeout", None)]
    assert control.log_lines("startup_script") == ["started"]
    assert not marker.exists()


async def test_long_lines_are_split_at_4_kib(agent: AgentEnv) -> None:
    control = await agent.connect(startup_script="head -c 10000 /dev/zero | tr '\\0' x; echo\n")

    await control.wait_state("ready")

    assert [len(line) for line in control.log_lines("startup_script")] == [4096, 4096, 1808]


async def test_first_connect_follows_a_socket_that_appears_late_without_backing_off(agent: AgentEnv) -> None:
    # The hub listens in a workspace's link folder when the server gets to it, which under a burst of creates
    # can be after the container started: the agent must connect as soon as the socket is there, not sleep
    # through a backoff (4 s at most before this) while the workspace waits for it.
    plane = await agent.start(listen_after=2.5)
    control = await plane.control(timeout=15)

    assert plane.listening_at is not None
    waited = asyncio.get_running_loop().time() - plane.listening_at
    assert waited < 0.8, f"the agent connected {waited:.2f} s after the socket appeared"
    await control.wait_state("ready")
    assert len(plane.hellos) == 1
    # The missing socket is said once, not once per attempt.
    assert agent.stderr().count("cannot reach the control plane") == 1, agent.stderr()


async def test_redial_after_the_server_drops_resends_state_without_rerunning_the_script(
    agent: AgentEnv,
) -> None:
    counter = agent.home / "runs"
    plane = await agent.start(startup_script=f"echo run >> {counter}\necho done\n")
    first = await plane.control()
    await first.wait_state("ready")

    await first.close()
    second = await plane.control(timeout=5)

    await second.wait_state("ready")
    assert second.lifecycle() == [("ready", 0)]
    assert second.log_lines("startup_script") == []
    assert counter.read_text() == "run\n"
    assert len(plane.hellos) == 2


async def test_logs_while_disconnected_are_delivered_after_the_redial(agent: AgentEnv) -> None:
    plane = await agent.start(startup_script="sleep 0.6\necho late\n")
    first = await plane.control()
    await first.wait_state("starting")

    await first.close()
    # Refuse re-dials until the script has finished, so its output and state pile up in the agent.
    plane.accepting = False
    await asyncio.sleep(1.0)
    plane.accepting = True
    second = await plane.control(timeout=15)

    await second.wait_state("ready")
    assert second.lifecycle() == [("ready", 0)]
    assert second.log_lines("startup_script") == ["late"]


async def test_ping_is_answered_and_silence_means_redial(agent: AgentEnv) -> None:
    plane = await agent.start(heartbeat=0.3)
    first = await plane.control()
    first.send_json({"type": "ping"})
    await first.wait_for(lambda m: m["type"] == "pong")

    # The fake never pings again: after 3 x heartbeat the agent gives up on this connection.
    second = await plane.control(timeout=5)

    await first.closed.wait()
    assert "nothing from the control plane for 0.9 s" in agent.stderr()
    await second.wait_state("ready")


async def test_stats_report_usage_and_listening_ports(agent: AgentEnv) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        control = await agent.connect(stats_interval=0.2)
        stats = await control.wait_for(lambda m: m["type"] == "stats")
    finally:
        listener.close()

    assert set(stats) == {
        "type",
        "cpu_cores",
        "memory_bytes",
        "memory_limit_bytes",
        "oom_kills",
        "pids_current",
        "pids_limit",
        "pids_limit_hits",
        "disk_used_bytes",
        "disk_total_bytes",
        "disk_limit_bytes",
        "ports",
    }
    # Read from the cgroup's files, which a host's root cgroup lacks (tests/e2e checks them in a container).
    assert stats["pids_current"] is None or stats["pids_current"] > 0
    assert stats["disk_limit_bytes"] is None
    assert isinstance(stats["cpu_cores"], float)
    assert stats["cpu_cores"] >= 0
    assert isinstance(stats["memory_bytes"], int)
    assert stats["memory_limit_bytes"] is None or stats["memory_limit_bytes"] > 0
    assert 0 < stats["disk_used_bytes"] <= stats["disk_total_bytes"]
    assert {"port": port, "address": "127.0.0.1", "family": "ipv4"} in stats["ports"]
    assert stats["ports"] == sorted(stats["ports"], key=lambda p: (p["port"], p["family"], p["address"]))


async def test_sigterm_runs_the_shutdown_script_and_exits_zero(agent: AgentEnv) -> None:
    control = await agent.connect(shutdown_script="echo bye\nexit 4\n")
    await control.wait_state("ready")

    code = await agent.stop(signal.SIGTERM)

    assert code == 0
    await control.closed.wait()
    assert control.lifecycle() == [("starting", None), ("ready", None), ("shutting_down", None), ("off", 4)]
    assert control.log_lines("shutdown_script") == ["bye"]
    off = control.messages.index({"type": "lifecycle", "state": "off", "exit_code": 4})
    bye = next(i for i, m in enumerate(control.messages) if m["type"] == "log")
    assert bye < off


async def test_the_task_socket_folder_is_removed_at_shutdown(agent: AgentEnv) -> None:
    control = await agent.connect()
    await control.wait_state("ready")
    [folder] = Path(agent.socket_dir).glob("dockyard-agent-*")
    assert (folder / "task.sock").is_socket()

    assert await agent.stop(signal.SIGTERM) == 0

    assert not folder.exists()


async def test_sigint_also_shuts_down_cleanly(agent: AgentEnv) -> None:
    control = await agent.connect()
    await control.wait_state("ready")

    assert await agent.stop(signal.SIGINT) == 0
    assert control.states()[-2:] == ["shutting_down", "off"]


async def test_sigterm_during_the_startup_script_kills_it(agent: AgentEnv) -> None:
    control = await agent.connect(startup_script="sleep 20\n")
    await control.wait_state("starting")

    assert await agent.stop(signal.SIGTERM) == 0
    assert control.states() == ["starting", "shutting_down", "off"]


async def test_unreachable_control_plane_is_retried(agent: AgentEnv) -> None:
    plane = await agent.start()
    control = await plane.control()
    await plane.stop()
    await control.close()
    await asyncio.sleep(0.5)

    assert "cannot reach the control plane" in agent.stderr()
    assert agent.process is not None
    assert agent.process.returncode is None


async def test_the_token_can_come_from_a_file_kept_out_of_child_processes(
    agent: AgentEnv, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    plane = await agent.start(token_file=str(token_file))
    control = await plane.control()
    await control.wait_state("ready")
    assert control.hello["token"] == TOKEN
    # Streams attach with it too, and programs the agent runs see neither the token nor where it is.
    stream = await control.open("exec", argv=["env"])
    output = await stream.collect()
    assert b"DOCKYARD_WORKSPACE_NAME=dev" in output.stdout
    assert b"DOCKYARD_AGENT_TOKEN" not in output.stdout
    assert TOKEN.encode() not in output.stdout


async def test_an_unreadable_token_file_stops_the_agent_with_a_reason(
    agent: AgentEnv, tmp_path: Path
) -> None:
    plane = await agent.start(token_file=str(tmp_path / "missing"))
    assert agent.process is not None
    assert await asyncio.wait_for(agent.process.wait(), 10) == 2
    assert plane.hellos == []
    assert agent.stderr() == (
        f"dockyard-agent: cannot read the agent token: [Errno 2] No such file or directory: "
        f"'{tmp_path / 'missing'}'\n"
    )

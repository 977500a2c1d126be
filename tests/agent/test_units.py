"""The agent's pure parts, imported in-process: stats readers on fake cgroup and /proc trees, log lines."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
from pathlib import Path

import pytest

from dockyard.agent import AGENT_FILE, agent
from dockyard.runtimes.plan import LAUNCHER
from dockyard.tunnel.install import install_agent
from tests.agent.fakeplane import AGENT_PYTHON

pytestmark = pytest.mark.timeout(30)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_agent_parses_as_python_3_9_and_imports_nothing_from_dockyard() -> None:
    tree = ast.parse(AGENT_FILE.read_text(), feature_version=(3, 9))

    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.startswith("dockyard")}
    assert agent.VERSION == "0.1.0"
    assert agent.PROTOCOL == 1


def test_the_agents_start_imports_only_what_the_link_socket_needs() -> None:
    # Every workspace's start pays for the agent's imports (asyncio is most of it); these are only for the
    # network link, terminals and scripts, and are imported where those start.
    probe = (
        "import sys; sys.modules['ssl'] = None; sys.path.insert(0, sys.argv[1]); import agent; "
        "print(' '.join(sorted({'tempfile', 'shutil', 'urllib.parse', 'pty', 'base64'} & set(sys.modules))))"
    )
    done = subprocess.run(
        [AGENT_PYTHON, "-I", "-c", probe, str(AGENT_FILE.parent)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


def test_the_workspace_tools_exit_before_the_agents_own_imports(tmp_path: Path) -> None:
    # `dockyard-agent report` runs twice per task in every workspace of a fleet: it must cost a bare
    # interpreter's start, not the agent's (asyncio alone is 20-30 ms of CPU).
    install_agent(tmp_path)
    for args in (["report", "--help"], ["report", "working"], ["git-credential", "store"]):
        done = subprocess.run(
            [AGENT_PYTHON, "-I", "-X", "importtime", "-c", LAUNCHER, str(tmp_path / "agent.py"), *args],
            capture_output=True,
            text=True,
            input="",
            env={"PATH": os.environ["PATH"]},
        )
        imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if "|" in line}
        assert "json" in imported, done.stderr
        assert not imported & {"asyncio", "subprocess", "signal", "termios"}, (args, sorted(imported))
        assert done.returncode == (0 if args != ["report", "working"] else 1), done.stderr


def test_the_private_folder_is_new_and_the_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    first, second = agent.private_folder("dockyard-agent-"), agent.private_folder("dockyard-agent-")
    assert first != second
    for folder in (first, second):
        assert Path(folder).parent == tmp_path
        assert Path(folder).name.startswith("dockyard-agent-")
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700


def test_cgroup_v2_cpu_and_memory(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            "memory.current": "734003200\n",
            "memory.stat": "anon 100\nfile 500\ninactive_file 209715200\nactive_file 3\n",
            "memory.max": "2147483648\n",
        },
    )

    assert agent.cpu_usage_ns(str(root)) == 2_500_000_000
    assert agent.memory(str(root)) == (524_288_000, 2_147_483_648)

    (root / "memory.max").write_text("max\n")
    assert agent.memory(str(root)) == (524_288_000, None)


def test_cgroup_v1_cpu_and_memory(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "cpuacct/cpuacct.usage": "123456789\n",
            "memory/memory.usage_in_bytes": "1000000\n",
            "memory/memory.stat": "cache 5\ntotal_inactive_file 250000\n",
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
        },
    )

    assert agent.cpu_usage_ns(str(root)) == 123_456_789
    # No limit is an absurdly large number on cgroup v1.
    assert agent.memory(str(root)) == (750_000, None)

    (root / "memory/memory.limit_in_bytes").write_text("536870912\n")
    assert agent.memory(str(root)) == (750_000, 536_870_912)


def test_missing_cgroup_files_fall_back(tmp_path: Path) -> None:
    proc = write(
        tmp_path / "proc", {"12/stat": "12 (my (odd) name) S " + " ".join(["0"] * 10) + " 300 200 0 0"}
    )

    assert agent.memory(str(tmp_path / "nothing")) == (0, None)
    ticks = agent.os.sysconf("SC_CLK_TCK")
    assert agent.cpu_usage_ns(str(tmp_path / "nothing"), str(proc)) == 500 * 1_000_000_000 // ticks
    assert agent.cpu_usage_ns(str(tmp_path / "nothing"), str(tmp_path / "noproc")) is None
    assert agent.disk(str(tmp_path / "nothing")) == (0, 0)


def test_cpu_meter_reports_cores_over_wall_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path, {"cpu.stat": "usage_usec 1000000\n"})
    clock = iter([100.0, 102.0, 103.0])
    monkeypatch.setattr(agent.time, "monotonic", lambda: next(clock))
    meter = agent.CpuMeter(str(root), str(tmp_path / "noproc"))

    assert meter.sample() == 0.0
    (root / "cpu.stat").write_text("usage_usec 4000000\n")
    assert meter.sample() == 1.5
    (root / "cpu.stat").write_text("usage_usec 3000000\n")  # a counter that went back is no negative use
    assert meter.sample() == 0.0


def test_listening_ports_from_proc_net(tmp_path: Path) -> None:
    header = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    )
    proc = write(
        tmp_path,
        {
            "net/tcp": header
            + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000 0 1\n"
            + "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 0 2\n"
            + "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 0 3\n"
            + "   3: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000 0 4\n",
            "net/tcp6": header
            + "   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0\n"
            + "   1: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 0 0 0 0\n",
        },
    )

    assert agent.listening_ports(str(proc)) == [
        {"port": 22, "address": "0.0.0.0", "family": "ipv4"},
        {"port": 3000, "address": "::1", "family": "ipv6"},
        {"port": 8080, "address": "127.0.0.1", "family": "ipv4"},
        {"port": 8080, "address": "::", "family": "ipv6"},
    ]
    assert agent.listening_ports(str(tmp_path / "missing")) == []


def test_line_splitter_strips_newlines_and_splits_long_lines() -> None:
    lines: list[str] = []
    splitter = agent.LineSplitter(lines.append)

    splitter.feed(b"one\r\ntw")
    splitter.feed(b"o\n\n")
    splitter.feed("é".encode() * 3000)  # 6000 bytes, no newline yet
    splitter.feed(b"\nbad \xff byte\nend")
    splitter.close()

    assert lines[:3] == ["one", "two", ""]
    # Split at 4 KiB without cutting the two-byte character in half.
    assert [len(line.encode()) for line in lines[3:5]] == [4096, 1904]
    assert lines[5:] == ["bad \ufffd byte", "end"]


def test_exit_status_and_spawn_failures() -> None:
    assert agent.exit_status(0) == (0, None)
    assert agent.exit_status(3) == (3, None)
    assert agent.exit_status(-9) == (137, "KILL")
    assert agent.exit_status(-15) == (143, "TERM")
    assert agent.spawn_failure(FileNotFoundError(2, "No such file or directory", "nope"), "nope", "/h") == (
        127,
        "nope: command not found\n",
    )
    assert agent.spawn_failure(FileNotFoundError(2, "No such file or directory", "/x"), "ls", "/x") == (
        1,
        "/x: No such file or directory\n",
    )
    assert agent.spawn_failure(PermissionError(13, "Permission denied", "f"), "f", "/h") == (
        126,
        "f: Permission denied\n",
    )


def test_the_disconnected_outbox_keeps_states_and_the_newest_1000_lines() -> None:
    offline = agent.Agent("/nonexistent.sock", "token")

    offline.send({"type": "lifecycle", "state": "starting", "exit_code": None})
    offline.send({"type": "log", "source": "startup_script", "lines": [f"a{i}" for i in range(600)]})
    offline.send({"type": "stats", "cpu_cores": 0.0})  # stale by the time we reconnect: dropped
    offline.send({"type": "log", "source": "startup_script", "lines": [f"b{i}" for i in range(600)]})
    offline.send({"type": "lifecycle", "state": "ready", "exit_code": 0})

    kept = list(offline.outbox)
    assert [m["type"] for m in kept] == ["lifecycle", "log", "log", "lifecycle"]
    assert kept[1]["lines"] == [f"a{i}" for i in range(200, 600)]
    assert kept[2]["lines"] == [f"b{i}" for i in range(600)]
    assert offline.outbox_lines == 1000

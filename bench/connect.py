"""Connection benchmark: the SSH gateway, exec API and terminal against OpenSSH's sshd in the same workspace.

    .venv/bin/python bench/connect.py            # the full run (a few minutes)
    .venv/bin/python bench/connect.py --quick    # fewer samples, a 64 MB copy, 20 sessions over 4 workspaces

Needs a running Docker engine; builds `dockyard/bench-sshd:bookworm` (the base image plus openssh-server) once.
Measured in one run (issue 4 targets in brackets):
- `ssh WS true` through the gateway, p50/p95, and the ratio to the same through sshd in the workspace [<= 2.0];
- `scp` of a 256 MB file into the workspace, MB/s each way and the ratio to sshd [>= 0.5];
- exec API `true`, p50 [<= 30 ms]; terminal keystroke echo round trip, p50 [<= 5 ms];
- 100 concurrent SSH sessions over 20 workspaces: all succeed; the server's peak RSS (the gateway runs in it);
- the agent's RSS when idle [<= 30 MB].
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from bench.livesrv import LiveServer, start_live_server, stop_live_server, template_archive  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from dockyard.runtimes.images import build_base_image  # noqa: E402
from dockyard_sdk import models as m  # noqa: E402

SSHD_IMAGE = "dockyard/bench-sshd:bookworm"
SSHD_PORT = 2200
# sshd runs as the workspace user: no privilege separation, its own host key, only that user may log in.
SSHD_SETUP = f"""set -e
mkdir -p ~/.bench-sshd ~/.ssh && chmod 700 ~/.ssh
[ -f ~/.bench-sshd/host ] || ssh-keygen -q -t ed25519 -N '' -f ~/.bench-sshd/host
cat > ~/.bench-sshd/config <<EOF
Port {SSHD_PORT}
HostKey $HOME/.bench-sshd/host
PidFile $HOME/.bench-sshd/pid
UsePAM no
StrictModes no
PasswordAuthentication no
AuthorizedKeysFile $HOME/.ssh/authorized_keys
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
[ -f ~/.bench-sshd/pid ] && kill "$(cat ~/.bench-sshd/pid)" 2>/dev/null || true
/usr/sbin/sshd -f ~/.bench-sshd/config
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def run(command: list[str], *, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, timeout=timeout, check=False)


class Ssh:
    """OpenSSH client options for the gateway and for the workspace's own sshd."""

    def __init__(self, folder: Path, live: LiveServer, key: Path) -> None:
        gateway = live.client.ssh_gateway()
        known = folder / "known_hosts"
        known.write_text(gateway.known_hosts + "\n")
        common = [
            "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip
        self.gateway = [
            *common, "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
            "-o", "HostKeyAlias=dockyard", "-p", str(live.ssh_port),
        ]  # fmt: skip
        self.gateway_host = "127.0.0.1"
        self.direct = [
            *common, "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no",
            "-p", str(SSHD_PORT),
        ]  # fmt: skip

    @staticmethod
    def scp_options(options: list[str]) -> list[str]:
        return ["-P" if option == "-p" else option for option in options]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    result = run(command, timeout=120)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr.decode(errors='replace')}")
    return elapsed


def container_address(workspace_id: str) -> str:
    client = docker.from_env()
    try:
        container = client.containers.get(f"dockyard-ws-{workspace_id}")
        networks = container.attrs["NetworkSettings"]["Networks"]
        return str(next(iter(networks.values()))["IPAddress"])
    finally:
        client.close()


def agent_rss_mb(live: LiveServer, ws: m.Workspace) -> float:
    result = live.client.exec(
        ws.id,
        m.ExecRequest(
            command="grep VmRSS /proc/$(pgrep -u $(id -u) -f /run/dockyard/agent.py | head -1)/status"
        ),
    )
    return int(result.stdout.split()[1]) / 1024


def server_rss_mb(live: LiveServer, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{live.process.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def echo_round_trips(live: LiveServer, ws: m.Workspace, samples: int) -> list[float]:
    url = live.url.replace("http://", "ws://") + f"/api/v2/workspaces/{ws.id}/pty?reconnect=bench"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {live.token}"}) as conn:
        # A raw terminal that echoes each byte at once, as an editor's input loop would see it.
        conn.send(b"stty raw -echo; cat\n")
        time.sleep(1.0)
        while True:
            try:
                conn.recv(timeout=0.2)
            except TimeoutError:
                break
        times = []
        for index in range(samples):
            char = bytes([97 + index % 26])
            started = time.perf_counter()
            conn.send(char)
            received = b""
            while char not in received:
                received += conn.recv(timeout=5)  # type: ignore[operator]
            times.append(time.perf_counter() - started)
        conn.send(b"\x03")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    samples = 10 if args.quick else 30
    copy_mb = 64 if args.quick else 256
    sessions, spread = (20, 4) if args.quick else (100, 20)

    build_base_image(SSHD_IMAGE, log=lambda line: None, extra_packages=("openssh-server",))
    live = start_live_server(subnets="10.219.0.0/16")
    folder = Path(tempfile.mkdtemp(prefix="dy-bench-"))
    try:
        key = folder / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        public = (folder / "id_ed25519.pub").read_text().strip()
        live.client.add_ssh_key("me", m.CreateSshKeyRequest(name="bench", public_key=public))
        live.client.create_template(template_archive(name="sshd", image=SSHD_IMAGE, startup_script=""))
        ws = live.workspace("bench", template="sshd")
        live.client.write_file(ws.id, ".ssh/authorized_keys", (public + "\n").encode(), mode=0o600)
        setup = live.client.exec(ws.id, m.ExecRequest(command=SSHD_SETUP))
        if setup.exit_code != 0:
            raise SystemExit(f"sshd setup failed: {setup.stderr}")
        address = container_address(ws.id)
        ssh = Ssh(folder, live, key)
        gateway_target = f"{ws.name}@{ssh.gateway_host}"
        direct_target = f"dev@{address}"
        time.sleep(0.5)

        # --- ssh WS true ---------------------------------------------------------------------------------
        for target, options in ((gateway_target, ssh.gateway), (direct_target, ssh.direct)):
            timed(["ssh", *options, target, "true"])  # warm-up
        gateway_times = [timed(["ssh", *ssh.gateway, gateway_target, "true"]) for _ in range(samples)]
        direct_times = [timed(["ssh", *ssh.direct, direct_target, "true"]) for _ in range(samples)]
        # OpenSSH prefers the post-quantum sntrup761x25519 key exchange, which asyncssh lacks; the same
        # key exchange as the gateway's shows how much of the difference that is.
        same_kex = ["-o", "KexAlgorithms=curve25519-sha256"]
        direct_c25519 = [
            timed(["ssh", *ssh.direct, *same_kex, direct_target, "true"]) for _ in range(samples)
        ]
        gw50, gw95 = percentile(gateway_times, 0.5), percentile(gateway_times, 0.95)
        sd50 = percentile(direct_times, 0.5)
        ratio = gw50 / sd50
        print(f"baseline sshd:   ssh true p50 {ms(sd50)} p95 {ms(percentile(direct_times, 0.95))}")
        c50 = percentile(direct_c25519, 0.5)
        print(
            f"baseline sshd, curve25519 kex: ssh true p50 {ms(c50)} p95 {ms(percentile(direct_c25519, 0.95))} "
            f"(gateway ratio to it {gw50 / c50:.2f})"
        )
        print(
            f"gateway:         ssh true p50 {ms(gw50)} p95 {ms(gw95)} ratio {ratio:.2f} "
            f"(target <= 2.0: {'met' if ratio <= 2.0 else 'MISSED'})"
        )

        # --- scp -----------------------------------------------------------------------------------------
        blob = folder / "blob.bin"
        with blob.open("wb") as handle:
            for _ in range(copy_mb):
                handle.write(os.urandom(2**20))
        digest = hashlib.sha256(blob.read_bytes()).hexdigest()
        rates = {}
        for label, target, options in (
            ("baseline sshd", direct_target, ssh.direct),
            ("gateway", gateway_target, ssh.gateway),
        ):
            seconds = timed(["scp", "-q", *Ssh.scp_options(options), str(blob), f"{target}:blob.bin"])
            check = live.client.exec(ws.id, m.ExecRequest(command="sha256sum blob.bin; rm blob.bin"))
            assert check.stdout.split()[0] == digest, f"{label}: the copy differs"
            rates[label] = copy_mb / seconds
        scp_ratio = rates["gateway"] / rates["baseline sshd"]
        print(f"baseline sshd:   scp {copy_mb} MB in {rates['baseline sshd']:.0f} MB/s")
        print(
            f"gateway:         scp {copy_mb} MB in {rates['gateway']:.0f} MB/s ratio {scp_ratio:.2f} "
            f"(target >= 0.5: {'met' if scp_ratio >= 0.5 else 'MISSED'})"
        )

        # --- exec API and terminal echo ------------------------------------------------------------------
        request = m.ExecRequest(command=["true"])
        live.client.exec(ws.id, request)
        exec_times = []
        for _ in range(samples * 5):
            started = time.perf_counter()
            live.client.exec(ws.id, request)
            exec_times.append(time.perf_counter() - started)
        exec50 = percentile(exec_times, 0.5)
        print(
            f"exec API true:   p50 {ms(exec50)} p95 {ms(percentile(exec_times, 0.95))} "
            f"(target <= 30 ms: {'met' if exec50 <= 0.030 else 'MISSED'})"
        )
        echoes = echo_round_trips(live, ws, samples * 10)
        echo50 = percentile(echoes, 0.5)
        print(
            f"terminal echo:   p50 {ms(echo50)} p95 {ms(percentile(echoes, 0.95))} "
            f"(target <= 5 ms: {'met' if echo50 <= 0.005 else 'MISSED'})"
        )

        # --- concurrent sessions -------------------------------------------------------------------------
        names = [f"load-{i}" for i in range(spread)]
        created = [
            live.client.create_workspace(m.CreateWorkspaceRequest(template="base", name=name))
            for name in names
        ]
        for workspace in created:
            live.client.get_workspace(workspace.id, wait="ready", timeout=300)

        def session(index: int) -> bool:
            target = f"{names[index % spread]}@{ssh.gateway_host}"
            result = run(["ssh", *ssh.gateway, target, f"sleep 2; echo ok-{index}"], timeout=300)
            return result.returncode == 0 and result.stdout.strip() == f"ok-{index}".encode()

        started = time.perf_counter()
        with ThreadPoolExecutor(sessions) as pool:
            outcomes = list(pool.map(session, range(sessions)))
        wall = time.perf_counter() - started
        succeeded = sum(outcomes)
        print(
            f"concurrent:      {succeeded}/{sessions} SSH sessions over {spread} workspaces succeeded in "
            f"{wall:.1f} s; server peak RSS {server_rss_mb(live):.0f} MB "
            f"({'met' if succeeded == sessions else 'MISSED'})"
        )
        time.sleep(2)
        idle = statistics.mean(agent_rss_mb(live, w) for w in [ws, *created[:3]])
        print(f"agent idle RSS:  {idle:.1f} MB (target <= 30 MB: {'met' if idle <= 30 else 'MISSED'})")
    finally:
        stop_live_server(live)


if __name__ == "__main__":
    main()

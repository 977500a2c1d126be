"""Egress allow-lists through the real engine, the real agent and the real proxy: one workspace whose only way
out is the egress proxy, against two containers of the test's own playing `allowed.test` and `denied.test`
(network aliases on an internal network of the test's, so nothing here can reach further than this machine).

From inside the workspace: curl (plain HTTP and a CONNECT tunnel) and Python's urllib reach allowed.test through
the proxy the environment names; denied.test is refused with 403; DNS answers allowed.test and not denied.test.
A program that knows no proxy (an empty environment) is intercepted: TLS on 443 goes by its SNI, plain HTTP on
80 by its Host, other ports by the address (the CIDR entry). The log (API and CLI) shows every decision.

The proxy runs on the host, where Docker's aliases do not resolve, so the deployment maps the two names to the
containers' addresses with its static host entries (`--egress-host`), the way an operator pins a name.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from dockyard.runtimes.docker import DockerRuntime
from dockyard.runtimes.docker.naming import bridge_name, container_name, network_name
from dockyard_sdk import models as m
from tests.harness import BASE_MANIFEST, Harness, docker_harness
from tests.security.conftest import chain_rules

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

# Answers every GET with its own name: plain HTTP on 8080 and 80, HTTPS on 443 (the certificate in $CERT).
SERVE = (
    "import http.server, os, ssl, sys, threading\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = sys.argv[1].encode()\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "def run(port, tls=False):\n"
    "    server = http.server.ThreadingHTTPServer(('0.0.0.0', port), H)\n"
    "    if tls:\n"
    "        open('/tmp/cert.pem', 'w').write(os.environ['CERT'])\n"
    "        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); context.load_cert_chain('/tmp/cert.pem')\n"
    "        server.socket = context.wrap_socket(server.socket, server_side=True)\n"
    "    server.serve_forever()\n"
    "threading.Thread(target=run, args=(80,), daemon=True).start()\n"
    "threading.Thread(target=run, args=(443, True), daemon=True).start()\n"
    "run(8080)\n"
)


def _certificate(directory: Path) -> str:
    """A self-signed certificate for both names, with its key (one PEM)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=egress-test",
            "-addext",
            "subjectAltName=DNS:allowed.test,DNS:denied.test",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        capture_output=True,
        check=True,
    )
    return cert.read_text() + key.read_text()


@pytest.fixture
def servers(base_image: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """allowed.test and denied.test, by name -> address."""
    client = docker.from_env()
    tag = uuid.uuid4().hex[:8]
    labels = {"dockyard.test": "egress"}
    network = client.networks.create(
        f"dockyard-test-egress-{tag}", driver="bridge", internal=True, labels=labels
    )
    made: list[Any] = []
    pem = _certificate(tmp_path)
    try:
        addresses = {}
        for name in ("allowed.test", "denied.test"):
            container = client.containers.create(
                base_image,
                ["python3", "-c", SERVE, name],
                name=f"dockyard-test-{name.split('.')[0]}-{tag}",
                labels=labels,
                network=network.name,
                environment={"CERT": pem},
            )
            made.append(container)
            # Aliases on the test's own network: the names these containers answer to there.
            network.disconnect(container)
            network.connect(container, aliases=[name])
            container.start()
            container.reload()
            addresses[name] = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        yield addresses
    finally:
        for container in made:
            container.remove(force=True)
        network.remove()
        client.close()


@pytest.fixture
def dh(tmp_path: Path, database_url: str, servers: dict[str, str]) -> Iterator[Harness]:
    with docker_harness(tmp_path, database_url, subnet_pool="10.238.0.0/16", egress_hosts=servers) as harness:
        yield harness


def test_an_allowlist_workspace_goes_out_only_through_the_proxy_and_every_attempt_is_logged(
    dh: Harness, servers: dict[str, str]
) -> None:
    manifest = {
        **BASE_MANIFEST,
        "name": "fenced",
        "resources": {"cpu": 1, "memory": "512Mi"},
        # The CIDR: allowed.test's address alone, reachable directly as well.
        "network": {
            "egress": "allowlist",
            "allow": ["allowed.test", "*.pypi.test", f"{servers['allowed.test']}/32"],
        },
    }
    dh.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})
    created = dh.admin.create_workspace(m.CreateWorkspaceRequest(template="fenced", name="fenced"))
    ws = dh.admin.get_workspace(created.id, wait="ready", timeout=120)
    assert ws.latest_build.status == m.BuildStatus.SUCCEEDED, dh.admin.build_logs(ws.latest_build.id)
    assert ws.agent is not None
    assert ws.agent.lifecycle == m.AgentLifecycle.READY

    def sh(command: str) -> str:
        result = dh.admin.exec(ws.id, m.ExecRequest(command=command, timeout=30))
        return (result.stdout + result.stderr).strip()

    allowed, denied = servers["allowed.test"], servers["denied.test"]
    # Without the proxy (and before DNS gave out allowed.test's address) only the CIDR entry is reachable:
    # every TCP connection lands on the intercepting proxy, which lets allowed.test's address through and
    # closes denied.test's at once.
    probe = (
        "import socket, sys\ns = socket.socket(); s.settimeout(5)\n"
        "try:\n"
        '    s.connect((sys.argv[1], 8080)); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")\n'
        '    print("answered" if s.recv(4096) else "blocked")\n'
        'except OSError as e: print("blocked", e)'
    )
    assert sh(f"python3 -c '{probe}' {allowed}") == "answered"
    assert sh(f"python3 -c '{probe}' {denied}").startswith("blocked")
    assert sh(f"curl -s -m 5 --noproxy '*' http://{denied}:8080/ || echo failed").endswith("failed")
    assert sh(f"curl -sS -m 5 --noproxy '*' http://{allowed}:8080/") == "allowed.test"

    # Ordinary tools find the proxy in the environment: plain HTTP, a CONNECT tunnel, Python's urllib.
    assert sh("curl -sS -m 10 http://allowed.test:8080/") == "allowed.test"
    assert sh("curl -sS -m 10 --proxytunnel http://allowed.test:8080/") == "allowed.test"
    urllib = "import urllib.request as u; print(u.urlopen('http://allowed.test:8080/', timeout=10).read().decode())"
    assert sh(f'python3 -c "{urllib}"') == "allowed.test"
    # The other name is refused by the proxy, whichever way it is asked for.
    assert sh("curl -s -o /dev/null -w '%{http_code}' -m 10 http://denied.test:8080/") == "403"
    assert (
        sh("curl -s -o /dev/null -w '%{http_connect}' -m 10 --proxytunnel http://denied.test:8080/") == "403"
    )
    assert sh(f"curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://{denied}:8080/") == "403"
    # DNS answers allowed names only.
    resolve = 'import socket, sys\ntry: print(socket.gethostbyname(sys.argv[1]))\nexcept OSError as e: print("no", e)'
    assert sh(f"python3 -c '{resolve}' allowed.test") == allowed
    assert sh(f"python3 -c '{resolve}' denied.test").startswith("no ")

    # A program with no proxy in its environment: TLS by SNI on 443, HTTP by Host on 80. denied.test has no
    # DNS answer, so curl is handed its address; the proxy refuses by the name asked for.
    bare = "env -i PATH=/usr/bin:/bin curl -sS -m 10 -k"
    assert sh(f"{bare} https://allowed.test/") == "allowed.test"
    assert sh(f"{bare} http://allowed.test/") == "allowed.test"
    refused = sh(f"{bare} --resolve denied.test:443:{denied} https://denied.test/ || echo refused")
    # curl's exit is non-zero and the server's answer ("denied.test") never came.
    assert "refused" in refused.splitlines(), refused
    assert "denied.test" not in refused.splitlines(), refused
    assert (
        sh(f"{bare} -o /dev/null -w '%{{http_code}}' --resolve denied.test:80:{denied} http://denied.test/")
        == "403"
    )
    assert "not in this workspace's allow-list" in sh(
        f"{bare} --resolve denied.test:80:{denied} http://denied.test/"
    )
    # Other ports go by address: one the DNS responder gave out for a name allowed there (any port, here).
    assert sh(f"{bare} http://allowed.test:8080/") == "allowed.test"
    # An allowed SNI sent to denied.test's address is dialled as the proxy resolves the name: allowed.test.
    assert sh(f"{bare} --resolve allowed.test:443:{denied} https://allowed.test/") == "allowed.test"

    # The host firewall opens exactly the proxy's two ports on the workspace's own gateway.
    attached = docker.from_env().containers.get(container_name(ws.id)).attrs["NetworkSettings"]["Networks"]
    gateway = attached[network_name(ws.id)]["Gateway"]
    rules = chain_rules()
    openings = [n for n, rule in enumerate(rules) if f"-d {gateway}/32" in rule]
    forwards = subprocess.run(
        ["iptables", "-w", "-S", "DOCKER-USER"], capture_output=True, text=True, check=True
    )
    assert sum(f"{allowed}/32" in line and ws.id in line for line in forwards.stdout.splitlines()) == 2
    assert sorted(rules[n].split("--dport ")[1].split()[0] for n in openings) == ["3128", "3129", "53"], rules
    bridge = bridge_name(docker.from_env().networks.get(network_name(ws.id)).id)
    redirects = subprocess.run(
        ["iptables", "-w", "-t", "nat", "-S", "PREROUTING"], capture_output=True, text=True, check=True
    )
    redirect = [line for line in redirects.stdout.splitlines() if f"-i {bridge}" in line]
    assert len(redirect) == 1, redirect
    assert "-p tcp" in redirect[0], redirect
    assert "--to-ports 3129" in redirect[0], redirect
    reject = next(n for n, rule in enumerate(rules) if f"-i {bridge}" in rule and "REJECT" in rule)
    assert all(f"-i {bridge}" in rules[n] and rules[n].endswith("-j RETURN") and n < reject for n in openings)

    dh.app.state.background.egress.log.flush()
    page = dh.admin.egress_events(ws.id, limit=1000)
    seen = {(e.protocol, e.host, e.port, e.decision, e.reason) for e in page.events}
    assert page.count == len(page.events)
    assert {
        ("http", "allowed.test", 8080, "allowed", ""),
        ("connect", "allowed.test", 8080, "allowed", ""),
        ("dns", "allowed.test", 0, "allowed", ""),
        ("http", "denied.test", 8080, "denied", "not in the allow-list"),
        ("connect", "denied.test", 8080, "denied", "not in the allow-list"),
        ("http", denied, 8080, "denied", "not in the allow-list"),
        ("dns", "denied.test", 0, "denied", "not in the allow-list"),
        # Intercepted: by address (the CIDR entry), by SNI, by Host.
        ("tcp", allowed, 8080, "allowed", ""),
        ("tcp", "allowed.test", 8080, "allowed", ""),
        ("tcp", denied, 8080, "denied", "not in the allow-list"),
        ("tls", "allowed.test", 443, "allowed", ""),
        ("tls", "denied.test", 443, "denied", "not in the allow-list"),
        ("http", "allowed.test", 80, "allowed", ""),
        ("http", "denied.test", 80, "denied", "not in the allow-list"),
    } <= seen, seen
    assert {e.decision for e in page.events} == {"allowed", "denied"}
    # Newest first, and pages do not overlap.
    ids = [e.id for e in page.events]
    assert ids == sorted(ids, reverse=True)
    first, second = dh.admin.egress_events(ws.id, limit=2), dh.admin.egress_events(ws.id, limit=2, offset=2)
    assert [e.id for e in first.events + second.events] == ids[:4]
    assert first.count == len(ids)
    assert json.loads(page.model_dump_json())["events"][0]["id"] == ids[0]


def _rules_of(workspace_id: str) -> list[tuple[str, str, list[str]]]:
    """(table, chain, spec) of this workspace's rules in the chains its egress uses."""
    found = []
    for table, chain in (("filter", "DOCKYARD-INPUT"), ("nat", "PREROUTING")):
        listed = subprocess.run(
            ["iptables", "-w", "-t", table, "-S", chain], capture_output=True, text=True, check=True
        )
        for line in listed.stdout.splitlines():
            if workspace_id in line and line.startswith("-A "):
                found.append((table, chain, shlex.split(line)[2:]))
    return found


def test_egress_rules_a_firewall_reload_took_away_are_put_back(dh: Harness, servers: dict[str, str]) -> None:
    manifest = {
        **BASE_MANIFEST,
        "name": "refenced",
        "resources": {"cpu": 1, "memory": "512Mi"},
        "network": {"egress": "allowlist", "allow": ["allowed.test"]},
    }
    dh.template({"dockyard.yaml": yaml.safe_dump(manifest, sort_keys=False)})
    created = dh.admin.create_workspace(m.CreateWorkspaceRequest(template="refenced", name="refenced"))
    ws = dh.admin.get_workspace(created.id, wait="ready", timeout=120)
    assert ws.latest_build.status == m.BuildStatus.SUCCEEDED, dh.admin.build_logs(ws.latest_build.id)

    def fetch() -> str:
        command = "curl -sS -m 5 http://allowed.test:8080/"
        result = dh.admin.exec(ws.id, m.ExecRequest(command=command, timeout=30))
        return (result.stdout + result.stderr).strip()

    assert fetch() == "allowed.test"
    before = _rules_of(ws.id)
    # As a firewall reload would, for this workspace's rules only: the proxy's openings (before the REJECT)
    # and the REDIRECT go. The workspace is cut off, not let out.
    taken = [(t, c, spec) for t, c, spec in before if "REJECT" not in spec]
    assert {c for _, c, _ in taken} == {"DOCKYARD-INPUT", "PREROUTING"}, before
    for table, chain, spec in taken:
        subprocess.run(["iptables", "-w", "-t", table, "-D", chain, *spec], check=True)
    assert fetch() != "allowed.test"

    runtime = dh.runtime
    assert isinstance(runtime, DockerRuntime)
    assert runtime.isolation is not None
    runtime.isolation._next_resync = 0.0  # the resync is due (every FIREWALL_RESYNC seconds)
    runtime.observe_all()

    assert sorted(map(str, _rules_of(ws.id))) == sorted(map(str, before))
    assert fetch() == "allowed.test"

    # `dockyard doctor --prune` puts them back as well, without waiting for the resync.
    for table, chain, spec in taken:
        subprocess.run(["iptables", "-w", "-t", table, "-D", chain, *spec], check=True)
    runtime.repair_host_isolation()
    assert sorted(map(str, _rules_of(ws.id))) == sorted(map(str, before))
    assert fetch() == "allowed.test"

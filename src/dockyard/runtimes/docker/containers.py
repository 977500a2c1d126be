"""What a workspace container is made from: its create arguments, capabilities and configuration hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import docker.types

from dockyard.runtimes.base import ImageBuildFailed, RuntimeFailure
from dockyard.runtimes.docker import bootstrap, naming
from dockyard.runtimes.docker.spec import WorkspaceSpec

# Bumped whenever the way a container is made changes, so existing containers are recreated once.
CONFIG_VERSION = "2"

# The setup step, as root, needs: CHOWN (hand the home volume to the user), DAC_OVERRIDE and FOWNER
# (useradd and file writes under root-owned paths whatever their modes), SETUID and SETGID (setpriv/runuser
# becoming the user). KILL lets docker-init, which stays root, forward SIGTERM to the workload's other uid.
# The workload runs as a non-root uid and so holds none of these (CapEff 0), and no-new-privileges keeps
# setuid binaries from handing them back.
BASE_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"]
# With sudo the user becomes root in the container, bounded by the set above plus AUDIT_WRITE (sudo works
# without it but prints "unable to send audit message" on every call) and FSETID (root, e.g. dpkg, keeps the
# setuid/setgid bits of files it writes). SETPCAP is left out: nothing in a workspace needs to change
# capability sets. no-new-privileges has to be off, or sudo's setuid bit does nothing.
SUDO_CAPS = ["AUDIT_WRITE", "FSETID"]


def create_args(
    spec: WorkspaceSpec, *, network: str | None, volume: str, image_id: str, nano_cpus: int, config_hash: str
) -> dict[str, Any]:
    """Keyword arguments of `containers.create` for the workspace's container; `network` None gives it
    loopback only."""
    labels = {
        **naming.object_labels(spec.workspace_id),
        naming.LABEL_OWNER: spec.owner,
        naming.LABEL_TEMPLATE: spec.template,
        naming.LABEL_BUILD: spec.build_id,
        naming.LABEL_CONFIG: config_hash,
    }
    if spec.bridged:
        # How `observe` knows to ask the kernel for its address: the engine does not know it.
        labels[naming.LABEL_NETWORK] = naming.NETWORK_BRIDGED
    if spec.egress == "allowlist":
        # What the egress proxy enforces, so that a restarted server serves the running workspace again.
        labels[naming.LABEL_EGRESS_ALLOW] = json.dumps(list(spec.egress_allow))
    device_requests = (
        [docker.types.DeviceRequest(count=spec.gpu, capabilities=[["gpu"]])] if spec.gpu > 0 else None
    )
    return {
        "image": image_id,
        "name": naming.container_name(spec.workspace_id),
        "hostname": bootstrap.hostname(spec),
        # The setup script must run as root whatever USER and ENTRYPOINT the image declares; giving an
        # entrypoint also keeps the image's CMD from being appended to it.
        "entrypoint": bootstrap.entrypoint(spec),
        "command": [],
        "user": "0:0",
        "working_dir": "/",
        "environment": dict(spec.env),
        "labels": labels,
        # Loopback only: with the network disabled as well, the engine makes no network sandbox for it and runs
        # no libnetwork hook (a re-exec of dockerd) on each start, which made a start of many such containers at
        # once about 40 % slower. The setup step writes the /etc/hosts the engine then leaves out. A container
        # on the deployment bridge is made the same way and gets its interface after its start.
        **(
            {"network": network}
            if network is not None
            else {"network_mode": "none", "network_disabled": True}
        ),
        # IPv6 off, as the engine has it for its own networks: the bridge has a link-local address, and the host
        # firewall's rules are IPv4 only. Set before the interface arrives, so it never gets an IPv6 address.
        "sysctls": {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
        if spec.bridged
        else None,
        # The engine writes no resolv.conf for a container without a network; the setup step does.
        "dns": (list(spec.dns) or None) if not spec.bridged else None,
        "mounts": [
            docker.types.Mount(target=bootstrap.home_of(spec), source=volume, type="volume"),
            *(
                docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
                for m in spec.mounts
            ),
            *(
                docker.types.Mount(target=v.target, source=v.name, type="volume", read_only=v.read_only)
                for v in spec.volumes
            ),
        ],
        "init": True,
        "nano_cpus": nano_cpus,
        "mem_limit": spec.memory_bytes,
        "memswap_limit": spec.memory_bytes,
        "pids_limit": spec.pids,
        "cap_drop": ["ALL"],
        "cap_add": BASE_CAPS + (SUDO_CAPS if spec.sudo else []),
        "security_opt": [] if spec.sudo else ["no-new-privileges"],
        "privileged": False,
        "stop_signal": "SIGTERM",
        "device_requests": device_requests,
        # No restart policy: the reconciler decides what an exited workspace becomes.
        "log_config": docker.types.LogConfig(type="local", config={"max-size": "10m", "max-file": "3"}),
    }


def config_hash(spec: WorkspaceSpec, image_id: str, nano_cpus: int) -> str:
    """A hash of everything the container is made from.

    Not the build id, owner or template name: those are labels only, and a new build of an unchanged workspace
    must find its stopped container again.
    """
    config: dict[str, Any] = {
        "version": CONFIG_VERSION,
        "image": image_id,
        "name": spec.name,
        "user": spec.user,
        "uid": spec.uid,
        "nano_cpus": nano_cpus,
        "memory": spec.memory_bytes,
        "pids": spec.pids,
        "gpu": spec.gpu,
        "sudo": spec.sudo,
        "egress": spec.egress,
        "env": sorted(spec.env.items()),
        "command": spec.command,
        "mounts": [[m.source, m.target, m.read_only] for m in spec.mounts],
        "files": sorted((path, hashlib.sha256(data).hexdigest()) for path, data in spec.files.items()),
    }
    if spec.egress == "none":
        # Loopback only (no network) since egress "none" stopped meaning an internal bridge: such containers
        # made before are made again once, without their bridge.
        config["network"] = "none"
    if spec.bridged:
        config["network"] = "bridged"
    if spec.egress_allow:
        # Only when set, so that containers made before allow-lists keep their hash.
        config["egress_allow"] = list(spec.egress_allow)
    if spec.volumes:
        # Only when there are some: the hash of every existing container stays what it was.
        config["volumes"] = [[v.name, v.target, v.read_only] for v in spec.volumes]
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:32]


def setup_failure(spec: WorkspaceSpec, exit_code: int | None, output: str) -> RuntimeFailure:
    """The error for a container that exited before its setup step printed READY."""
    if exit_code == 127 and "exec /bin/sh failed" in output:
        # docker-init (tini) could not start the setup script at all.
        return ImageBuildFailed(
            f"Image {spec.image} cannot run a workspace: it has no /bin/sh for the setup step.",
            detail=output[-4000:],
        )
    errors = [
        line.split(bootstrap.ERROR, 1)[1].strip() for line in output.splitlines() if bootstrap.ERROR in line
    ]
    tail = output[-4000:]
    if exit_code == bootstrap.EXIT_UNUSABLE_IMAGE and errors:
        return ImageBuildFailed(f"Image {spec.image} cannot run a workspace: {errors[-1]}.", detail=tail)
    if errors:
        return RuntimeFailure(f"The workspace setup step failed: {errors[-1]}.", detail=tail)
    return RuntimeFailure(
        f"The workspace container exited with code {exit_code} during its setup step.", detail=tail
    )


class LogFollow:
    """A followed log stream that can be closed from another thread, and whose connection never goes back to
    the engine client's pool with its socket closed.

    docker-py's `CancellableStream.close` closes the socket under the pooled connection but leaves the
    connection holding it; once released, the pool handed that connection to the next engine call, which
    failed with EBADF ("Docker engine unreachable: Bad file descriptor") whenever the worker that had followed
    a start's log made the next call. Closing the response as well drops the socket from the connection, so
    the pool opens a new one.
    """

    def __init__(self, stream: docker.types.CancellableStream, response: Any) -> None:
        self._stream = stream
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def close(self) -> None:
        self._stream.close()  # wakes a read blocked in another thread (the ready timeout's)
        self._response.close()


def follow_logs(api: docker.APIClient, container_id: str, *, since: float | None) -> LogFollow:
    """The container's output from `since` on, followed, as a closable stream of chunks.

    What `Container.logs(stream=True, follow=True)` returns, without the inspect that call makes first to
    learn whether the container has a TTY: a workspace container never has one (`create_args`).
    """
    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 0, "tail": "all"}
    if since is not None:
        params["since"] = since
    response = api._get(api._url("/containers/{0}/logs", container_id), params=params, stream=True)
    stream = docker.types.CancellableStream(api._get_result_tty(True, response, False), response)
    return LogFollow(stream, response)

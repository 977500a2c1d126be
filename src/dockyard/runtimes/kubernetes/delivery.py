"""How the agent reaches a pod on any node: its program in a ConfigMap (one per agent version, shared by every
workspace of the deployment) and the workspace's token in a Secret, projected together into one volume."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from dockyard.runtimes.base import LogSink, RuntimeFailure
from dockyard.runtimes.kubernetes import manifests
from dockyard.runtimes.kubernetes.cluster import body
from dockyard.runtimes.kubernetes.objects import CALL_TIMEOUT, create_or_replace
from dockyard.runtimes.kubernetes.options import KubernetesOptions
from dockyard.runtimes.kubernetes.spec import AgentFolders, WorkspaceSpec
from dockyard.runtimes.plan import TOKEN_NAME


class AgentDelivery:
    """The agent's objects for one runtime; remembers which program ConfigMaps exist so a start makes none twice."""

    def __init__(self, options: KubernetesOptions) -> None:
        self.options = options
        self._maps: set[str] = set()
        self._lock = threading.Lock()

    def ensure(
        self,
        core: kubernetes.client.CoreV1Api,
        spec: WorkspaceSpec,
        *,
        folders: AgentFolders,
        deployment: str,
        log: LogSink,
    ) -> manifests.AgentFiles:
        """The agent's ConfigMap (once per version) and the workspace's token Secret (at every start, since
        each build issues a new token)."""
        files = manifests.agent_program(program_files(folders.program))
        namespace = self.options.namespace
        with self._lock:
            known = files.name in self._maps
        if not known:
            config_map = manifests.agent_config_map(files, self.options, deployment=deployment)
            try:
                core.create_namespaced_config_map(namespace, body(config_map), _request_timeout=CALL_TIMEOUT)
                log(f"Created agent program {files.name}")
            except ApiException as exc:
                if exc.status != 409:
                    raise
            with self._lock:
                self._maps.add(files.name)
        token_file = folders.links / spec.workspace_id / TOKEN_NAME
        try:
            token = token_file.read_text()
        except OSError as exc:
            raise RuntimeFailure(
                f"The agent's token for workspace {spec.workspace_id} is missing.", detail=str(exc)
            ) from exc
        create_or_replace(
            manifests.agent_secret(spec, token, self.options, deployment=deployment),
            create=core.create_namespaced_secret,
            read=core.read_namespaced_secret,
            replace=core.replace_namespaced_secret,
            namespace=namespace,
            deployment=deployment,
            what="Secret",
        )
        return files


def program_files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """The agent's installed folder (tunnel/install.py): its files by relative path, executables 0555."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        # `link` is the socket link's mount point; dotfiles are another process's half-written copies.
        if (
            not path.is_file()
            or relative.parts[0] == "link"
            or any(p.startswith(".") for p in relative.parts)
        ):
            continue
        files[relative.as_posix()] = (path.read_bytes(), 0o555 if os.access(path, os.X_OK) else 0o444)
    return files

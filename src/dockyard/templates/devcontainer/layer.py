"""The image layer Dockyard puts on a dev container's image: its local features, installed in order, and the
repository's files at the workspace folder.

The result is a build context (tar.gz) whose Dockerfile starts `FROM` the configuration's own image, so it is
built (and cached by content) the way template Dockerfiles are.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import shlex
import tarfile
from collections.abc import Mapping

from dockyard.templates.devcontainer.features import FEATURE_SCRIPT
from dockyard.templates.devcontainer.plan import Plan

DOCKERFILE = "Dockerfile.dockyard"
# The workspace user's uid (WorkspaceSpec.uid): the repository's files are theirs.
UID = 1000
# Files a template has that are not the repository's.
_NOT_CONTENT = frozenset({"dockyard.yaml"})


def context(plan: Plan, files: Mapping[str, bytes], *, base_image: str, modes: Mapping[str, int]) -> bytes:
    """The build context of the layer over `base_image` (a local image reference)."""
    lines = [f"FROM {base_image}", "USER root"]
    members: dict[str, tuple[bytes, int]] = {}
    for index, feature in enumerate(plan.features):
        staged = f"features/{index}"
        prefix = feature.folder + "/"
        for path, data in files.items():
            if path.startswith(prefix):
                members[f"{staged}/{path[len(prefix) :]}"] = (data, modes.get(path, 0o644))
        where = f"/opt/dockyard-features/{index}"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(feature.env.items()))
        lines.append(f"COPY {staged}/ {where}/")
        # The specification runs install.sh as root from the feature's folder, options in the environment.
        lines.append(
            f"RUN cd {where} && chmod +x {FEATURE_SCRIPT} && env {env} ./{FEATURE_SCRIPT} && rm -rf {where}"
        )
        for name, value in feature.container_env.items():
            lines.append(f"ENV {name}={json.dumps(value)}")
    for path, data in files.items():
        if path not in _NOT_CONTENT:
            members[f"workspace/{path}"] = (data, modes.get(path, 0o644))
    folder = plan.workspace_folder
    lines.append(f"RUN mkdir -p {shlex.quote(folder)}")
    lines.append(f"COPY --chown={UID}:{UID} workspace/ {folder}/")
    # COPY makes the folder root's when it creates it; the user owns the workspace.
    lines.append(f"RUN chown {UID}:{UID} {shlex.quote(folder)}")
    members[DOCKERFILE] = (("\n".join(lines) + "\n").encode(), 0o644)
    if not any(p.startswith("workspace/") for p in members):
        members["workspace/.dockyard-keep"] = (b"", 0o644)
    return _tar(members)


def content_hash(archive: bytes, base_image_id: str) -> str:
    return hashlib.sha256(base_image_id.encode() + b"\0" + archive).hexdigest()


def _tar(members: Mapping[str, tuple[bytes, int]]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for path in sorted(members):
            data, mode = members[path]
            info = tarfile.TarInfo(posixpath.normpath(path))
            info.size = len(data)
            info.mode = mode & 0o777
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()

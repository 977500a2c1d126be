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
from pathlib import Path

from dockyard.templates.devcontainer import oci
from dockyard.templates.devcontainer.features import FEATURE_SCRIPT
from dockyard.templates.devcontainer.plan import Plan

DOCKERFILE = "Dockerfile.dockyard"
# The workspace user's uid (WorkspaceSpec.uid): the repository's files are theirs.
UID = 1000
# Files a template has that are not the repository's (the second is written by the server for a configuration
# fetched from a repository: templates/devcontainer_repo.py).
_NOT_CONTENT = frozenset({"dockyard.yaml", "dockyard.source.json"})


def context(plan: Plan, files: Mapping[str, bytes], *, base_image: str, modes: Mapping[str, int]) -> bytes:
    """The build context of the layer over `base_image` (a local image reference)."""
    lines = [f"FROM {base_image}", "USER root"]
    members: dict[str, tuple[bytes, int]] = {}
    for index, feature in enumerate(plan.features):
        staged = f"features/{index}"
        if feature.folder.startswith("/"):  # an OCI feature, unpacked in the cache when the plan was read
            for path, data in oci.read_folder(Path(feature.folder)).items():
                members[f"{staged}/{path}"] = (data, 0o755 if path.endswith(".sh") else 0o644)
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
    if plan.user is not None and plan.update_remote_user_uid:
        lines.append(f"RUN {update_uid_script(plan.user)}")
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


def update_uid_script(user: str) -> str:
    """updateRemoteUserUID as the reference CLI's updateUID.Dockerfile does it, with the home volume's owner
    (uid and gid 1000, WorkspaceSpec.uid) in place of the local user: the image's user is renumbered so that the
    files in the home volume are theirs. A user missing from the image is left to the workspace's setup step
    (which creates it with that uid). Unlike the reference, another user already holding the uid (`dev` in
    Dockyard's base image, `ubuntu` in Ubuntu's) does not stop it: the uid is what owns files, and the setup step
    accepts shared uids too. A group already holding the gid keeps the user's old group, as the reference does.
    `user` passed plan.py's user-name check, so it is safe in a shell word and a sed pattern."""
    script = _UPDATE_UID.replace("@USER@", user).replace("@UID@", str(UID))
    return " ".join(script.split())


_UPDATE_UID = r"""
REMOTE_USER=@USER@ NEW_UID=@UID@ NEW_GID=@UID@;
eval $(sed -n "s/^${REMOTE_USER}:[^:]*:\([^:]*\):\([^:]*\):[^:]*:\([^:]*\).*/OLD_UID=\1;OLD_GID=\2;HOME_FOLDER=\3/p" /etc/passwd);
eval $(sed -n "s/^\([^:]*\):[^:]*:${NEW_GID}:.*/EXISTING_GROUP=\1/p" /etc/group);
if [ -z "$OLD_UID" ]; then echo "updateRemoteUserUID: no user $REMOTE_USER in the image yet";
elif [ "$OLD_UID" = "$NEW_UID" ] && [ "$OLD_GID" = "$NEW_GID" ]; then echo "updateRemoteUserUID: $REMOTE_USER has $NEW_UID:$NEW_GID";
else
  if [ "$OLD_GID" != "$NEW_GID" ] && [ -n "$EXISTING_GROUP" ]; then NEW_GID="$OLD_GID"; fi;
  echo "updateRemoteUserUID: $REMOTE_USER from $OLD_UID:$OLD_GID to $NEW_UID:$NEW_GID";
  sed -i -e "s/^\(${REMOTE_USER}:[^:]*:\)[^:]*:[^:]*/\1${NEW_UID}:${NEW_GID}/" /etc/passwd;
  if [ "$OLD_GID" != "$NEW_GID" ]; then sed -i -e "s/^\([^:]*:[^:]*:\)${OLD_GID}:/\1${NEW_GID}:/" /etc/group; fi;
  if [ -d "$HOME_FOLDER" ]; then chown -R "$NEW_UID:$NEW_GID" "$HOME_FOLDER"; fi;
fi
"""


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

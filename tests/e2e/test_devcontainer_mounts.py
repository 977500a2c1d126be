"""Dev container `mounts` and `updateRemoteUserUID` through a real `dockyard server` on the real engine: a volume
mount is a labelled named volume of the workspace, removed with it; a bind works only under a folder the admin
allowed (`--devcontainer-allow-host-bind`); the image's remoteUser (uid 1001) is renumbered to the home volume's
uid, so the home and the volume are writable."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import tar_gz
from tests.live import LiveServer, start_live_server, stop_live_server

pytestmark = [pytest.mark.docker, pytest.mark.engine_only, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def allowed() -> Iterator[Path]:
    # One path every run: it is in the template's devcontainer.json, so a path of its own each run would build
    # (and leave behind) new images each run instead of reusing them.
    folder = Path(tempfile.gettempdir()) / "dockyard-test-binds"
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)
    (folder / "hello").write_text("from the host\n")
    (folder / "hello").chmod(0o644)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(base_image: str, allowed: Path) -> Iterator[LiveServer]:
    live = start_live_server(
        subnets="10.227.0.0/16", args=lambda _url: ["--devcontainer-allow-host-bind", str(allowed)]
    )
    try:
        yield live
    finally:
        stop_live_server(live)


def _files(mounts: list[object]) -> bytes:
    config = {"build": {"dockerfile": "Dockerfile"}, "remoteUser": "vscode", "mounts": mounts}
    return tar_gz(
        {
            "dockyard.yaml": "name: mounts\ndevcontainer: .devcontainer/devcontainer.json\n",
            ".devcontainer/devcontainer.json": json.dumps(config, indent=2),
            ".devcontainer/Dockerfile": "FROM dockyard/base:bookworm\nRUN useradd -m -u 1001 -s /bin/bash vscode\n",
        }
    )


def _sh(live: LiveServer, ws: m.Workspace, command: str) -> str:
    result = live.client.exec(ws.id, m.ExecRequest(command=command))
    assert result.exit_code == 0, result
    return result.stdout


def test_volumes_allowed_binds_and_the_remote_user_uid(server: LiveServer, allowed: Path) -> None:
    live = server
    # A bind outside the admin's folder is refused at push, naming the property; nothing is created.
    with pytest.raises(ApiError) as refused:
        live.client.create_template(_files([{"type": "bind", "source": "/etc", "target": "/host-etc"}]))
    assert refused.value.status_code == 422
    assert [(v.field, v.detail) for v in refused.value.validations] == [
        (
            "mounts[0]",
            "binds from the host are refused: /etc is not in a folder an admin allows "
            "(dockyard server --devcontainer-allow-host-bind PATH)",
        )
    ]
    assert "mounts" not in [t.name for t in live.client.list_templates()]

    live.client.create_template(
        _files(
            [
                "source=cache,target=/cache,type=volume",
                {"type": "bind", "source": str(allowed), "target": "/shared"},
            ]
        )
    )
    ws = live.workspace("mounts", template="mounts", timeout=300)
    # (`id -un` may name the image's other user of uid 1000, `dev` in the base image: the uid is what owns files.)
    assert _sh(live, ws, "id -u; echo $USER $HOME").split() == ["1000", "vscode", "/home/vscode"]
    # updateRemoteUserUID: the home volume (uid 1000) and the new volume are the user's to write.
    assert _sh(live, ws, "touch ~/mine /cache/kept && stat -c %u ~/mine /cache/kept").split() == [
        "1000",
        "1000",
    ]
    assert _sh(live, ws, "cat /shared/hello") == "from the host\n"

    engine = docker.from_env()
    try:
        volume = engine.volumes.get(f"dockyard-vol-{ws.id}-cache")
        assert volume.attrs["Labels"]["dockyard.workspace.id"] == ws.id
        # Kept across a stop and start.
        live.client.stop_workspace(ws.id)
        live.client.get_workspace(ws.id, wait="done", timeout=120)
        ws = live.workspace("mounts", template="mounts", timeout=300)
        assert _sh(live, ws, "ls /cache") == "kept\n"
        # Removed with the workspace.
        live.client.delete_workspace(ws.id)
        live.client.get_workspace(ws.id, wait="done", timeout=120)
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(f"dockyard-vol-{ws.id}-cache")
    finally:
        engine.close()

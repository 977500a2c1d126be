"""A real OCI registry for dev container feature tests: Debian's `docker-registry` (the CNCF distribution server)
run on a free loopback port with a temporary storage folder, and a feature pushed to it with plain HTTP calls as
the features distribution specification lays it out (blob upload POST/PUT, manifest PUT)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.templates.devcontainer import oci

REGISTRY = shutil.which("docker-registry")
STORAGE: dict[str, Path] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The registry's address, `features/hello:1` pushed to it; its storage is at STORAGE[address]."""
    if REGISTRY is None:
        if (
            os.environ.get("DOCKYARD_REQUIRE_DOCKER") == "1"
        ):  # the test run installed it: missing is a failure
            pytest.fail("docker-registry is not installed, though scripts/test.sh installs it")
        pytest.skip("docker-registry is not installed (scripts/test.sh installs it)")
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {folder}/data\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        [REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{address}/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.05)
        push(address, "features/hello", "1", feature_tar())
        STORAGE[address] = folder / "data"
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def feature_tar() -> bytes:
    meta = {
        "id": "hello",
        "version": "1.0.0",
        "options": {"greeting": {"type": "string", "default": "hi"}},
        "containerEnv": {"HELLO_HOME": "/opt/hello"},
        "installsAfter": ["./first"],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (
            ("devcontainer-feature.json", json.dumps(meta).encode()),
            ("install.sh", b'#!/bin/sh\necho "$GREETING" > /opt/hello.txt\n'),
        ):
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _blob(address: str, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = httpx.post(f"http://{address}/v2/{name}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = httpx.URL(f"http://{address}").join(start.headers["location"])
    done = httpx.put(location.copy_merge_params({"digest": digest}), content=data)
    assert done.status_code == 201, done.text
    return digest


def push(address: str, name: str, tag: str, layer_tar: bytes, *, layer_digest: str | None = None) -> None:
    """As `devcontainer features publish` does: an empty config and one devcontainers layer."""
    config = b"{}"
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.devcontainers",
            "digest": _blob(address, name, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": oci.LAYER_TYPE,
                "digest": layer_digest or _blob(address, name, layer_tar),
                "size": len(layer_tar),
                "annotations": {"org.opencontainers.image.title": "devcontainer-feature-hello.tgz"},
            }
        ],
    }
    response = httpx.put(
        f"http://{address}/v2/{name}/manifests/{tag}",
        content=json.dumps(manifest).encode(),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.status_code == 201, response.text

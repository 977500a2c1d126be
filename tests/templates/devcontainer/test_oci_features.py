"""OCI dev container features, fetched from a real registry (Debian's `docker-registry`, the CNCF distribution
server, on loopback): pushed here with plain HTTP calls as the features distribution specification lays them out,
then read like a local feature; and the refusals that name the feature and its registry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from dockyard.errors import ValidationFailed
from dockyard.templates.devcontainer import layer, oci
from dockyard.templates.devcontainer.plan import read
from tests.oci_registry import STORAGE, feature_tar, free_port, push

CONFIG = ".devcontainer/devcontainer.json"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "features"
    monkeypatch.setattr(oci, "_cache_dir", folder)
    return folder


def _files(features: dict[str, Any]) -> dict[str, bytes]:
    return {
        CONFIG: json.dumps({"image": "x", "features": features}).encode(),
        ".devcontainer/first/devcontainer-feature.json": b'{"id": "first"}',
        ".devcontainer/first/install.sh": b"#!/bin/sh\n",
    }


def test_an_oci_feature_is_fetched_and_installed_like_a_local_one(registry: str, cache: Path) -> None:
    ref = f"{registry}/features/hello:1"
    files = _files({ref: {"greeting": "hello there"}, "./first": {}})
    plan = read(files, CONFIG, workspace_name="repo")
    # installsAfter orders it after the local feature it names, though written first.
    assert [f.id for f in plan.features] == ["./first", ref]
    hello = plan.features[1]
    assert hello.env["GREETING"] == "hello there"
    assert hello.container_env == {"HELLO_HOME": "/opt/hello"}
    digest = "sha256-" + hashlib.sha256(feature_tar()).hexdigest()
    assert hello.folder == str(cache / digest)
    assert sorted(p.name for p in (cache / digest).iterdir()) == ["devcontainer-feature.json", "install.sh"]

    archive = layer.context(plan, files, base_image="sha256:abc", modes={})
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        script = tar.extractfile("features/1/install.sh").read()  # type: ignore[union-attr]
        dockerfile = tar.extractfile(layer.DOCKERFILE).read().decode()  # type: ignore[union-attr]
    assert script == b'#!/bin/sh\necho "$GREETING" > /opt/hello.txt\n'
    assert "env GREETING='hello there' " in dockerfile
    assert 'ENV HELLO_HOME="/opt/hello"' in dockerfile.splitlines()

    # The second read finds the layer in the cache: same folder, same plan.
    assert read(files, CONFIG, workspace_name="repo") == plan


def _refusal(files: dict[str, bytes]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        read(files, CONFIG, workspace_name="repo")
    return [(v.field, v.detail) for v in info.value.validations]


def test_refusals_name_the_feature_and_its_registry(registry: str, cache: Path) -> None:
    down = f"127.0.0.1:{free_port()}"
    # The registry checks a blob's digest at upload; its files are changed behind its back to serve bytes
    # that do not match the digest the manifest names.
    other = feature_tar().replace(b"$GREETING", b"$GREETINX")
    push(registry, "features/tampered", "1", other)
    hexdigest = hashlib.sha256(other).hexdigest()
    stored = STORAGE[registry] / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    stored.write_bytes(feature_tar())
    refused = _refusal(
        _files(
            {
                f"{down}/features/hello:1": {},
                f"{registry}/features/hello:9": {},
                f"{registry}/features/tampered:1": {},
            }
        )
    )
    assert refused == [
        (
            f'features["{down}/features/hello:1"]',
            f"feature {down}/features/hello:1 cannot be fetched from its registry {down}: the registry is not "
            "reachable",
        ),
        (
            f'features["{registry}/features/hello:9"]',
            f"feature {registry}/features/hello:9 cannot be fetched from its registry {registry}: "
            "features/hello:9 is not in the registry",
        ),
        (
            f'features["{registry}/features/tampered:1"]',
            f"feature {registry}/features/tampered:1 cannot be fetched from its registry {registry}: "
            f"the layer does not match its digest sha256:{hexdigest}",
        ),
    ]
    assert not cache.exists() or list(cache.iterdir()) == []


def test_the_anonymous_bearer_token_flow_of_ghcr(cache: Path) -> None:
    """ghcr.io's flow, against a fake transport (the tests reach no registry but loopback): a 401 whose
    challenge names the token realm, an anonymous token, the same request again with it; https off loopback."""
    tar = feature_tar()
    digest = "sha256:" + hashlib.sha256(tar).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "layers": [{"mediaType": oci.LAYER_TYPE, "digest": digest, "size": len(tar)}],
    }
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url} {request.headers.get('authorization', '-')}")
        if request.url.host == "auth.example":
            return httpx.Response(200, json={"token": "anon"})
        if request.headers.get("authorization") != "Bearer anon":
            challenge = (
                'Bearer realm="https://auth.example/token",service="ghcr.example",scope="repository:x:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if request.url.path.endswith("/manifests/1"):
            return httpx.Response(200, json=manifest)
        return httpx.Response(200, content=tar)

    ref = oci.parse("ghcr.example/devcontainers/features/hello:1")
    assert ref == oci.Reference("ghcr.example", "devcontainers/features/hello", "1")
    folder = oci.fetch(ref, transport=httpx.MockTransport(handle))
    assert (folder / "install.sh").read_bytes() == b'#!/bin/sh\necho "$GREETING" > /opt/hello.txt\n'
    assert seen == [
        "https://ghcr.example/v2/devcontainers/features/hello/manifests/1 -",
        "https://auth.example/token?service=ghcr.example&scope=repository%3Ax%3Apull -",
        "https://ghcr.example/v2/devcontainers/features/hello/manifests/1 Bearer anon",
        f"https://ghcr.example/v2/devcontainers/features/hello/blobs/{digest} Bearer anon",
    ]

    def basic(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="private"'})

    with pytest.raises(oci.FetchFailed) as info:
        oci.fetch(oci.Reference("private.example", "f", "1"), transport=httpx.MockTransport(basic))
    assert str(info.value) == "the registry asks for credentials; only public features can be fetched"
    assert not cache.exists() or [p.name for p in cache.iterdir()] == [folder.name]


@pytest.mark.docker
@pytest.mark.engine_only
def test_the_real_engine_runs_the_fetched_install_script(registry: str, base_image: str) -> None:
    """The layer of an OCI feature, built by the engine over the base image: install.sh ran with its option."""
    files = _files({f"{registry}/features/hello:1": {"greeting": "from the registry"}})
    plan = read(files, CONFIG, workspace_name="repo")
    archive = layer.context(plan, files, base_image=base_image, modes={})
    client = docker.from_env()
    tag = f"dockyard-test/oci-feature:{uuid.uuid4().hex[:8]}"
    try:
        client.images.build(
            fileobj=io.BytesIO(archive),
            custom_context=True,
            encoding="gzip",
            dockerfile=layer.DOCKERFILE,
            tag=tag,
            rm=True,
        )
        out = client.containers.run(tag, ["sh", "-c", "cat /opt/hello.txt; echo $HELLO_HOME"], remove=True)
        assert out == b"from the registry\n/opt/hello\n"
    finally:
        client.images.remove(tag, force=True)
        client.close()

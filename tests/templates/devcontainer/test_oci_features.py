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
from dockyard.outbound import OutboundPolicy
from dockyard.templates.devcontainer import layer, lockfile, oci
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
            return httpx.Response(200, content=json.dumps(manifest).encode())
        return httpx.Response(200, content=tar)

    ref = oci.parse("ghcr.example/devcontainers/features/hello:1")
    assert ref == oci.Reference("ghcr.example", "devcontainers/features/hello", "1")
    fetched = oci.fetch(ref, transport=httpx.MockTransport(handle))
    folder = fetched.folder
    assert fetched.manifest_digest == "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
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
    # Nothing kept of the refused fetch: the cache holds the first feature and its manifest only.
    assert sorted(p.name for p in cache.iterdir()) == ["manifests", folder.name]
    assert [p.name for p in (cache / "manifests").iterdir()] == [fetched.manifest_digest.replace(":", "-")]


def _manifest_digest(registry: str, name: str, tag: str) -> str:
    response = httpx.get(
        f"http://{registry}/v2/{name}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.status_code == 200
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


def _locked(files: dict[str, bytes], pins: dict[str, Any]) -> dict[str, bytes]:
    return {**files, LOCKFILE: lockfile.render(pins)}


LOCKFILE = ".devcontainer/devcontainer-lock.json"


def test_a_read_records_what_each_oci_feature_resolved_to(registry: str) -> None:
    ref = f"{registry}/features/hello:1"
    plan = read(_files({ref: {}, "./first": {}}), CONFIG, workspace_name="repo")
    digest = _manifest_digest(registry, "features/hello", "1")
    # The devcontainer CLI's entry: the version the feature declares, the reference by digest, the digest.
    assert {key: pin.to_json() for key, pin in plan.pins.items()} == {
        ref: {"version": "1.0.0", "resolved": f"{registry}/features/hello@{digest}", "integrity": digest}
    }
    assert json.loads(lockfile.render(plan.pins)) == {
        "features": {
            ref: {"version": "1.0.0", "resolved": f"{registry}/features/hello@{digest}", "integrity": digest}
        }
    }
    assert lockfile.path_for(CONFIG) == LOCKFILE
    assert lockfile.path_for(".devcontainer.json") == ".devcontainer-lock.json"


def test_a_lockfile_pins_a_feature_whose_tag_moved(registry: str, cache: Path) -> None:
    """A pinned read fetches the manifest by its digest: a tag pushed again since changes nothing, and once
    the feature is cached the read asks no registry at all."""
    ref = f"{registry}/features/moving:1"
    push(registry, "features/moving", "1", feature_tar())
    first = read(_files({ref: {}}), CONFIG, workspace_name="repo")
    moved = feature_tar().replace(b"$GREETING", b"moved")
    push(registry, "features/moving", "1", moved)

    pinned = _locked(_files({ref: {}}), first.pins)
    again = read(pinned, CONFIG, workspace_name="repo")
    assert again.features == first.features
    assert (Path(again.features[0].folder) / "install.sh").read_bytes().count(b"$GREETING") == 1
    unpinned = read(_files({ref: {}}), CONFIG, workspace_name="repo")
    assert unpinned.features[0].folder != first.features[0].folder
    assert (Path(unpinned.features[0].folder) / "install.sh").read_bytes().count(b"moved") == 1

    # No registry: every connection is refused (loopback denied), and the pinned read still works from the cache.
    oci.set_outbound(OutboundPolicy.with_denied(["127.0.0.0/8"]))
    assert read(pinned, CONFIG, workspace_name="repo").features == first.features
    assert "127.0.0.0/8" in _refusal(_files({ref: {}}))[0][1]


def test_a_pinned_feature_missing_from_the_cache_is_fetched_by_digest(registry: str, cache: Path) -> None:
    ref = f"{registry}/features/hello:1"
    digest = _manifest_digest(registry, "features/hello", "1")
    pin = lockfile.Pin(version="1.0.0", resolved=f"{registry}/features/hello@{digest}", integrity=digest)
    plan = read(_locked(_files({ref: {}}), {ref: pin}), CONFIG, workspace_name="repo")
    assert plan.pins == {ref: pin}
    layer_folder = "sha256-" + hashlib.sha256(feature_tar()).hexdigest()
    assert plan.features[0].folder == str(cache / layer_folder)
    assert (cache / "manifests" / digest.replace(":", "-")).is_file()


def test_a_lockfile_that_cannot_be_honoured_is_refused(registry: str) -> None:
    ref = f"{registry}/features/hello:1"
    digest = _manifest_digest(registry, "features/hello", "1")
    absent = "sha256:" + "0" * 64
    files = _files({ref: {}})

    def refused(lock: bytes) -> list[tuple[str, str, str | None]]:
        with pytest.raises(ValidationFailed) as info:
            read({**files, LOCKFILE: lock}, CONFIG, workspace_name="repo")
        return [(v.field, v.detail, v.file) for v in info.value.validations]

    assert refused(b"{not json") == [
        (
            "(file)",
            "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            LOCKFILE,
        )
    ]
    assert refused(b"[]") == [("features", "the lockfile needs an object of features", LOCKFILE)]
    other = json.dumps({"features": {ref: {"resolved": f"{registry}/features/other@{digest}"}}}).encode()
    assert refused(other) == [
        (
            f'features["{ref}"]',
            f"`resolved` names another feature: {registry}/features/other@{digest}",
            LOCKFILE,
        )
    ]
    mismatch = json.dumps(
        {"features": {ref: {"resolved": f"{registry}/features/hello@{digest}", "integrity": absent}}}
    ).encode()
    assert refused(mismatch) == [
        (f'features["{ref}"]', f"`integrity` {absent} is not the digest `resolved` names", LOCKFILE)
    ]
    gone = json.dumps({"features": {ref: {"resolved": f"{registry}/features/hello@{absent}"}}}).encode()
    assert refused(gone) == [
        (
            f'features["{ref}"]',
            f"feature {ref} cannot be fetched from its registry {registry}: features/hello@{absent} is not in the "
            "registry",
            CONFIG,
        )
    ]


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

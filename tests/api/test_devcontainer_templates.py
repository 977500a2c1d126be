"""A template whose source is a devcontainer.json: accepted when Dockyard can honour all of it, refused at push
otherwise with the file, line and property, and nothing made."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from dockyard.outbound import OutboundPolicy
from dockyard.runtimes.base import ImageSpec, LogSink
from dockyard.templates.devcontainer import oci
from dockyard_sdk import ApiError
from tests.fakes import FakeRuntime
from tests.harness import Harness, make_harness, manifest_yaml, tar_gz
from tests.oci_registry import feature_tar, push

CONFIG = ".devcontainer/devcontainer.json"
LOCKFILE = ".devcontainer/devcontainer-lock.json"


def _manifest() -> str:
    return manifest_yaml(name="dc", image=None, devcontainer=CONFIG)


def _refused(h: Harness, files: dict[str, str]) -> ApiError:
    with pytest.raises(ApiError) as info:
        h.admin.create_template(tar_gz({"dockyard.yaml": _manifest(), **files}))
    assert h.admin.list_templates() == []
    assert h.admin.audit(action="template.create").audit_logs == []
    return info.value


def test_a_dev_container_template_is_accepted(h: Harness) -> None:
    config = {
        "image": "dockyard/base:bookworm",
        "features": {"./tool": {"flavour": "mild"}},
        "postCreateCommand": "echo hi",
        "forwardPorts": [3000, 9229, 4000],
        "portsAttributes": {"3000": {"label": "web"}, "9229": {"onAutoForward": "ignore"}},
    }
    created = h.admin.create_template(
        tar_gz(
            {
                "dockyard.yaml": _manifest(),
                CONFIG: json.dumps(config),
                ".devcontainer/tool/devcontainer-feature.json": json.dumps(
                    {"id": "tool", "options": {"flavour": {"type": "string", "default": "plain"}}}
                ),
                ".devcontainer/tool/install.sh": "#!/bin/sh\ntrue\n",
            }
        )
    )
    assert created.active_version is not None
    assert created.active_version.manifest.devcontainer == CONFIG
    # Its forwarded ports are the workspace's apps (but for an ignored one).
    ws = h.workspace("dc", name="dc-ws")
    apps = h.admin.list_apps(ws.id).apps
    assert [(a.slug, a.display_name, a.port, a.share) for a in apps] == [
        ("port-3000", "web", 3000, "owner"),
        ("port-4000", "Port 4000", 4000, "owner"),
    ]


CASES = [
    (
        "[1, 2]",
        "Dev container config (.devcontainer/devcontainer.json) must contain a JSON object.",
        [("(root)", 'expected an object such as {"image": "…"}', 1)],
    ),
    (
        '{\n  "image": "dockyard/base:bookworm",\n  "containerEnv": {"X": "${localEnvv:HOME}"}\n}',
        "Invalid dev container config .devcontainer/devcontainer.json.",
        [("containerEnv.X", "unknown variable ${localEnvv:HOME}", 3)],
    ),
    (
        '{\n  "image": "dockyard/base:bookworm",\n  "features": {\n'
        '    "127.0.0.1:1/devcontainers/features/node:1": {}\n  }\n}',
        ".devcontainer/devcontainer.json asks for what Dockyard cannot honour.",
        [
            (
                'features["127.0.0.1:1/devcontainers/features/node:1"]',
                "feature 127.0.0.1:1/devcontainers/features/node:1 cannot be fetched from its registry "
                "127.0.0.1:1: the registry is not reachable",
                4,
            )
        ],
    ),
    (
        '{\n  "image": "dockyard/base:bookworm",\n  "runArgs": ["--env", "A=1", "--privileged"],\n'
        '  "mounts": ["source=/etc,target=/host-etc,type=bind"]\n}',
        ".devcontainer/devcontainer.json asks for what Dockyard cannot honour.",
        [
            ("runArgs[2]", "'--privileged' runs the container privileged, which workspaces may not", 3),
            (
                "mounts[0]",
                "binds from the host are refused: /etc is not in a folder an admin allows "
                "(dockyard server --devcontainer-allow-host-bind PATH)",
                4,
            ),
        ],
    ),
    (
        '{\n  "dockerComposeFile": "compose.yml",\n  "service": "app"\n}',
        ".devcontainer/devcontainer.json asks for what Dockyard cannot honour.",
        [
            (
                "dockerComposeFile",
                "Docker Compose is not available on this server (neither `docker compose` nor "
                "`docker-compose`); use an image or a Dockerfile",
                2,
            )
        ],
    ),
    (
        '{\n  "image": "x",\n  "initializeCommand": "make creds",\n  "remoteUser": "root"\n}',
        ".devcontainer/devcontainer.json asks for what Dockyard cannot honour.",
        [
            (
                "initializeCommand",
                "runs on the machine that starts the container, here Dockyard's control plane, which runs no "
                "template's commands; move it to onCreateCommand",
                3,
            ),
            (
                "remoteUser",
                "workspaces run as an unprivileged user; name a non-root user or leave it out",
                4,
            ),
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "message", "validations"),
    CASES,
    ids=["not-an-object", "unknown-variable", "oci-feature", "unsafe-properties", "compose", "host-side"],
)
def test_a_configuration_dockyard_cannot_honour_is_refused_at_push(
    h: Harness, text: str, message: str, validations: list[tuple[str, str, int]]
) -> None:
    error = _refused(h, {CONFIG: text})
    assert error.status_code == 422
    assert error.message == message
    assert [(v.field, v.detail, v.line) for v in error.validations] == validations
    assert {v.file for v in error.validations} == {CONFIG}


def test_a_local_feature_without_its_install_script_is_refused(h: Harness) -> None:
    error = _refused(
        h,
        {
            CONFIG: '{"image": "x",\n "features": {"./tool": {}}}',
            ".devcontainer/tool/devcontainer-feature.json": '{"id": "tool"}',
        },
    )
    assert [(v.field, v.detail, v.line) for v in error.validations] == [
        ('features["./tool"]', ".devcontainer/tool needs devcontainer-feature.json and install.sh", 2)
    ]


def test_an_oci_feature_is_fetched_at_push_into_the_data_dir(h: Harness, registry: str) -> None:
    """The server fetches the feature from its registry (a real one on loopback, tests/oci_registry.py) when the
    template is pushed, keeps it per digest under its data dir, and reads it again when a workspace starts."""
    ref = f"{registry}/features/hello:1"
    config = {"image": "dockyard/base:bookworm", "features": {ref: {"greeting": "pushed"}}}
    created = h.admin.create_template(tar_gz({"dockyard.yaml": _manifest(), CONFIG: json.dumps(config)}))
    assert created.active_version is not None
    digest = "sha256-" + hashlib.sha256(feature_tar()).hexdigest()
    cached = h.data_dir / "devcontainer-features" / digest
    assert sorted(p.name for p in cached.iterdir()) == ["devcontainer-feature.json", "install.sh"]
    ws = h.workspace("dc", name="oci-ws")
    assert ws.latest_build.status == "succeeded"


def test_a_version_starts_with_the_features_it_was_pushed_with(h: Harness, registry: str) -> None:
    """The push writes the lockfile of what the feature's tag resolved to into the version's files (as the
    devcontainer CLI writes it into the repository). The tag is then pushed again with other contents and the
    registry becomes unreachable: a workspace of the version still starts, with the feature as it was pushed."""
    push(registry, "features/pinned", "1", feature_tar())
    ref = f"{registry}/features/pinned:1"
    files = {
        "dockyard.yaml": _manifest(),
        CONFIG: json.dumps({"image": "dockyard/base:bookworm", "features": {ref: {"greeting": "pushed"}}}),
    }
    created = h.admin.create_template(tar_gz(files))
    assert created.active_version is not None
    version = str(created.active_version.number)
    lock = json.loads(h.admin.get_template_file("dc", version, LOCKFILE))
    pin = lock["features"][ref]
    assert pin["version"] == "1.0.0"
    assert pin["resolved"] == f"{registry}/features/pinned@{pin['integrity']}"
    # The same files pushed again resolve to the same lockfile: the same version, not a new one.
    assert h.admin.create_template_version("dc", tar_gz(files)).number == created.active_version.number

    push(registry, "features/pinned", "1", feature_tar().replace(b"$GREETING", b"moved"))
    oci.set_outbound(OutboundPolicy.with_denied(["127.0.0.0/8"]))
    contexts: list[bytes] = []
    runtime = h.runtime
    assert isinstance(runtime, FakeRuntime)
    ensure_image = runtime.ensure_image

    def recorded(spec: ImageSpec, log: LogSink) -> str:
        if spec.archive is not None and spec.template.endswith("-devcontainer"):
            contexts.append(spec.archive)
        return ensure_image(spec, log)

    runtime.ensure_image = recorded  # type: ignore[method-assign]
    ws = h.workspace("dc", name="pinned-ws")
    assert ws.latest_build.status == "succeeded"
    assert len(contexts) == 1
    with tarfile.open(fileobj=io.BytesIO(contexts[0]), mode="r:gz") as tar:
        script = tar.extractfile("features/0/install.sh").read()  # type: ignore[union-attr]
    assert script == b'#!/bin/sh\necho "$GREETING" > /opt/hello.txt\n'

    # Without the lockfile the moved tag is what a push resolves, and here the registry is out of reach.
    error = _refused_version(h, files)
    assert [v.field for v in error.validations] == [f'features["{ref}"]']


def _refused_version(h: Harness, files: dict[str, str]) -> ApiError:
    with pytest.raises(ApiError) as info:
        h.admin.create_template_version("dc", tar_gz(files))
    return info.value


def test_an_unknown_oci_feature_tag_is_refused_at_push(h: Harness, registry: str) -> None:
    ref = f"{registry}/features/hello:2"
    error = _refused(
        h, {CONFIG: json.dumps({"image": "dockyard/base:bookworm", "features": {ref: {}}}, indent=1)}
    )
    assert error.status_code == 422
    assert [(v.field, v.detail, v.line) for v in error.validations] == [
        (
            f'features["{ref}"]',
            f"feature {ref} cannot be fetched from its registry {registry}: features/hello:2 is not in the registry",
            4,
        )
    ]
    assert not (h.data_dir / "devcontainer-features").exists()


def test_an_oci_feature_in_a_denied_range_is_refused_at_push(
    tmp_path: Path, database_url: str, registry: str
) -> None:
    # The operator denies loopback (`--outbound-deny`), where the registry listens; so is a registry that
    # redirects there (tests/security/test_outbound.py).
    h = make_harness(tmp_path, database_url, outbound_deny=["127.0.0.0/8", "::1"])
    try:
        ref = f"{registry}/features/hello:1"
        error = _refused(
            h, {CONFIG: json.dumps({"image": "dockyard/base:bookworm", "features": {ref: {}}}, indent=1)}
        )
        assert error.status_code == 422
        assert [(v.field, v.detail) for v in error.validations] == [
            (
                f'features["{ref}"]',
                f"feature {ref} cannot be fetched from its registry {registry}: 127.0.0.1 is in 127.0.0.0/8, a "
                "range this server does not connect to for its users",
            )
        ]
        assert not (h.data_dir / "devcontainer-features").exists()
    finally:
        h.close()

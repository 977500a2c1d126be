"""Images through the real engine: Dockerfile builds, missing images, images that cannot host a workspace."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from dockyard.runtimes.base import ImageBuildFailed, ImageNotFound, ImageSpec
from dockyard.runtimes.docker import DockerRuntime
from tests.runtimes.conftest import SpecFactory, tar_gz

pytestmark = pytest.mark.docker

BuildFactory = Callable[..., ImageSpec]


@pytest.fixture
def image_spec(runtime: DockerRuntime) -> Iterator[BuildFactory]:
    """An ImageSpec for a Dockerfile build with a fresh content hash; its images are removed afterwards."""
    templates: list[str] = []

    def make(files: dict[str, str], **overrides: object) -> ImageSpec:
        template = f"test-{uuid.uuid4().hex[:8]}"
        templates.append(template)
        values: dict[str, object] = {
            "template": template,
            "content_hash": uuid.uuid4().hex * 2,
            "dockerfile": "Dockerfile",
            "archive": tar_gz(files),
        }
        values.update(overrides)
        return ImageSpec(**values)  # type: ignore[arg-type]

    yield make
    for template in templates:
        for image in runtime.client.images.list(name=f"dockyard/template-{template}"):
            runtime.client.images.remove(image.id, force=True)


def test_a_dockerfile_build_is_tagged_by_content_logged_and_reused(
    runtime: DockerRuntime, image_spec: BuildFactory, base_image: str
) -> None:
    spec = image_spec(
        {"Dockerfile": f'FROM {base_image}\nARG GREETING\nRUN echo "$GREETING" > /greeting\n'},
        build_args={"GREETING": "hello from the build"},
    )
    log: list[str] = []

    tag = runtime.ensure_image(spec, log.append)

    assert tag.startswith(f"dockyard/template-{spec.template}:")
    assert len(tag.rsplit(":", 1)[1]) == 16
    output = runtime.client.containers.run(tag, ["cat", "/greeting"], remove=True)
    assert output == b"hello from the build\n"
    assert any(line.startswith("Step 1/") and line.endswith(f"FROM {base_image}") for line in log)
    assert any("Successfully tagged" in line for line in log)
    assert runtime.client.images.get(tag).labels["dockyard.template"] == spec.template
    assert runtime.client.images.get(tag).labels["dockyard.deployment"] == runtime.deployment

    again: list[str] = []
    assert runtime.ensure_image(spec, again.append) == tag
    assert again == [f"Using image {tag}, built before from the same template files"]
    # Other build args make another image.
    other = ImageSpec(**{**spec.__dict__, "build_args": {"GREETING": "other"}})
    assert runtime.ensure_image(other, lambda line: None) != tag


def test_a_build_context_folder_is_the_root_of_the_build(
    runtime: DockerRuntime, image_spec: BuildFactory, base_image: str
) -> None:
    spec = image_spec(
        {
            "dockyard.yaml": "name: x\n",
            "docker/Dockerfile": f"FROM {base_image}\nCOPY hello.txt /hello.txt\n",
            "docker/hello.txt": "from the context folder\n",
        },
        context="docker",
    )

    tag = runtime.ensure_image(spec, lambda line: None)

    assert (
        runtime.client.containers.run(tag, ["cat", "/hello.txt"], remove=True) == b"from the context folder\n"
    )


def test_a_failing_build_raises_with_the_engine_output(
    runtime: DockerRuntime, image_spec: BuildFactory, base_image: str
) -> None:
    spec = image_spec({"Dockerfile": f"FROM {base_image}\nRUN echo about to fail && false\n"})
    log: list[str] = []

    with pytest.raises(ImageBuildFailed) as failure:
        runtime.ensure_image(spec, log.append)

    assert failure.value.message == (
        f"Building the image of template {spec.template} failed: "
        "The command '/bin/sh -c echo about to fail && false' returned a non-zero code: 1"
    )
    assert "about to fail" in log
    assert (
        log[-1] == "ERROR: The command '/bin/sh -c echo about to fail && false' returned a non-zero code: 1"
    )
    assert "about to fail" in failure.value.detail.splitlines()
    assert runtime.client.images.list(name=f"dockyard/template-{spec.template}") == []


def test_a_dockerfile_missing_from_the_context_fails_the_build(
    runtime: DockerRuntime, image_spec: BuildFactory
) -> None:
    spec = image_spec({"README": "no Dockerfile here\n"})

    with pytest.raises(ImageBuildFailed, match="Cannot locate specified Dockerfile"):
        runtime.ensure_image(spec, lambda line: None)


def test_a_named_image_present_locally_is_used(runtime: DockerRuntime, base_image: str) -> None:
    log: list[str] = []
    spec = ImageSpec(template="t", content_hash="0" * 64, image=base_image)

    assert runtime.ensure_image(spec, log.append) == base_image
    assert log == [f"Using image {base_image}"]


def test_a_missing_image_that_cannot_be_pulled_is_image_not_found(runtime: DockerRuntime) -> None:
    # A registry on loopback where nothing listens: the pull fails at once without leaving this machine.
    image = "127.0.0.1:9/dockyard-test/missing:1"
    log: list[str] = []

    with pytest.raises(ImageNotFound) as failure:
        runtime.ensure_image(ImageSpec(template="t", content_hash="0" * 64, image=image), log.append)

    assert failure.value.message.startswith(
        f"Image {image} is not available locally and could not be pulled: "
    )
    assert "127.0.0.1:9" in failure.value.message
    assert log == [f"Pulling image {image}"]


def test_a_missing_image_is_not_pulled_when_pulling_is_off(runtime: DockerRuntime) -> None:
    offline = DockerRuntime(runtime.base_url, pull=False, deployment=runtime.deployment)
    spec = ImageSpec(template="t", content_hash="0" * 64, image="dockyard-test/missing:1")
    try:
        with pytest.raises(ImageNotFound, match="pulling is turned off"):
            offline.ensure_image(spec, lambda line: None)
    finally:
        offline.close()


def test_starting_on_an_image_the_engine_lacks_is_image_not_found(
    runtime: DockerRuntime, new_spec: SpecFactory
) -> None:
    spec = new_spec(image="dockyard-test/missing:1")

    with pytest.raises(ImageNotFound, match=r"dockyard-test/missing:1 is not available"):
        runtime.start(spec, lambda line: None)


def test_an_image_without_a_shell_cannot_host_a_workspace(
    runtime: DockerRuntime, image_spec: BuildFactory, new_spec: SpecFactory
) -> None:
    tag = runtime.ensure_image(
        image_spec({"Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n", "hello.txt": "hi\n"}),
        lambda line: None,
    )

    with pytest.raises(ImageBuildFailed) as failure:
        runtime.start(new_spec(image=tag), lambda line: None)

    assert failure.value.message == (
        f"Image {tag} cannot run a workspace: it has no /bin/sh for the setup step."
    )


def test_an_image_without_useradd_cannot_create_the_user(
    runtime: DockerRuntime, image_spec: BuildFactory, new_spec: SpecFactory, base_image: str
) -> None:
    tag = runtime.ensure_image(
        image_spec({"Dockerfile": f"FROM {base_image}\nRUN rm /usr/sbin/useradd\n"}), lambda line: None
    )

    with pytest.raises(ImageBuildFailed) as failure:
        runtime.start(new_spec(image=tag, user="alice"), lambda line: None)

    assert failure.value.message == (
        f"Image {tag} cannot run a workspace: "
        "the image has no useradd (package passwd), needed to create user alice."
    )
    assert "dockyard-setup: error: the image has no useradd" in failure.value.detail

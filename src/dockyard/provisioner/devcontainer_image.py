"""A dev container template's image and settings: the configuration's image (or Dockerfile build), then
Dockyard's layer with its local features and the repository's files, each cached by content."""

from __future__ import annotations

import hashlib
import posixpath

from dockyard.runtimes.base import ImageSpec
from dockyard.templates.archive import TemplateFiles
from dockyard.templates.devcontainer import layer
from dockyard.templates.devcontainer.plan import Plan
from dockyard_sdk.manifest import App, Resources, TemplateManifest


def base_spec(plan: Plan, files: TemplateFiles, *, template: str) -> ImageSpec:
    """The configuration's own image: named, or built from its Dockerfile with its context, args and target."""
    if plan.dockerfile is None:
        return ImageSpec(template=template, content_hash=files.content_hash, image=plan.image)
    return ImageSpec(
        template=template,
        content_hash=files.content_hash,
        dockerfile=posixpath.relpath(plan.dockerfile, plan.context),
        context=plan.context,
        build_args=dict(plan.build_args),
        target=plan.target,
        cache_from=plan.cache_from,
        archive=files.to_tar_gz(),
    )


def layer_spec(plan: Plan, files: TemplateFiles, *, template: str, base_image: str) -> ImageSpec:
    data = {path: f.data for path, f in files.files.items() if f.link is None}
    modes = {path: f.mode for path, f in files.files.items()}
    archive = layer.context(plan, data, base_image=base_image, modes=modes)
    return ImageSpec(
        template=f"{template}-devcontainer",
        content_hash=hashlib.sha256(archive).hexdigest(),
        dockerfile=layer.DOCKERFILE,
        archive=archive,
    )


def apply(plan: Plan, manifest: TemplateManifest) -> TemplateManifest:
    """The rendered manifest with what the configuration decides: its user, its environment,
    hostRequirements where the template left a resource at its default, and its forwarded ports as apps."""
    defaults = Resources()
    resources = manifest.resources.model_copy(
        update={
            key: value
            for key, value in plan.resources.items()
            if getattr(manifest.resources, key) == getattr(defaults, key)
        }
    )
    return manifest.model_copy(
        update={
            "user": plan.user or manifest.user,
            "env": {**plan.container_env, **plan.remote_env, **manifest.env},
            "resources": resources,
            "apps": [*manifest.apps, *port_apps(plan, manifest.apps)],
        }
    )


def port_apps(plan: Plan, apps: list[App]) -> list[App]:
    """`forwardPorts` (labelled by `portsAttributes`) as the workspace's apps, `port-N`, opened by their owner
    through the apps proxy; a port the template already serves as an app, or marked `"onAutoForward":
    "ignore"`, is left out."""
    taken = {app.port for app in apps}
    slugs = {app.slug for app in apps}
    found = []
    for port in plan.ports:
        slug = f"port-{port.port}"
        if port.port in taken or slug in slugs or port.on_auto_forward == "ignore":
            continue
        taken.add(port.port)
        found.append(App(slug=slug, display_name=port.label or f"Port {port.port}", port=port.port))
    return found

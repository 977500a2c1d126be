"""Rendering a template version into a build's plan, once: the worker stores it on the build row, and the
worker, a retried build and the agent's welcome read it from there (runtimes/plan.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dockyard.provisioner import devcontainer_image
from dockyard.runtimes.plan import (
    AgentLink,
    AgentPlan,
    AppPort,
    AppProcess,
    Egress,
    ExtraMount,
    GitPlan,
    Home,
    ImageBuild,
    NetworkPolicy,
    Resources,
    WorkspacePlan,
)
from dockyard.store.models import TemplateVersion, User, Workspace, WorkspaceBuild
from dockyard.templates import formats, render
from dockyard.templates import service as templates
from dockyard.templates.devcontainer.plan import Plan as DevcontainerPlan
from dockyard_sdk.manifest import GitPush, GitSpec, TemplateManifest
from dockyard_sdk.units import parse_duration, parse_size


def render_for(
    manifest: TemplateManifest, values: dict[str, Any], *, workspace: Workspace, owner: User
) -> TemplateManifest:
    return render.render(
        manifest,
        values,
        workspace={"name": workspace.name, "id": workspace.id or "", "owner": owner.username},
        owner={"username": owner.username, "email": owner.email},
    )


def git_plan(spec: GitSpec | None, *, workspace: Workspace) -> GitPlan | None:
    if spec is None or not spec.repo:
        return None
    # The template's limit, or the one of the token that created the workspace: either one is enough.
    limited = GitPush.TASK_BRANCH in (spec.push, workspace.git_push)
    # A template may write the repository literally rather than through a `git-url` parameter: the same
    # checks apply, so no value reaches git as an option or a remote helper.
    try:
        return GitPlan(
            repo=formats.git_url(spec.repo),
            branch=formats.git_ref(spec.branch),
            path=spec.path,
            push=(GitPush.TASK_BRANCH if limited else GitPush.ANY).value,
            mirror=spec.mirror,
        )
    except ValueError as exc:
        return GitPlan(error=f"git: {exc}")


def make_plan(
    build: WorkspaceBuild,
    *,
    workspace: Workspace,
    owner: User,
    version: TemplateVersion,
    link: Callable[[Egress], AgentLink | None] | None,
    devcontainer: DevcontainerPlan | None = None,
) -> WorkspacePlan:
    """The plan of a start build; `link` says how its agent gets in, given the workspace's egress (None: the
    workspace runs no agent). A dev container's configuration decides the user, the environment and resources
    the template left at default."""
    manifest = templates.version_to_wire(version).manifest
    rendered = render_for(manifest, build.parameters, workspace=workspace, owner=owner)
    if devcontainer is not None:
        rendered = devcontainer_image.apply(devcontainer, rendered)
    resources = rendered.resources
    egress = Egress(rendered.network.egress.value)
    agent_link = link(egress) if link is not None else None
    agent = None
    if agent_link is not None:
        agent = AgentPlan(
            link=agent_link,
            startup_script=rendered.startup_script,
            startup_timeout_seconds=parse_duration(rendered.startup_timeout).total_seconds(),
            shutdown_script=rendered.shutdown_script,
            apps=tuple(
                AppProcess(slug=app.slug, command=app.command) for app in rendered.apps if app.command
            ),
            git=git_plan(rendered.git, workspace=workspace),
        )
    build_spec = rendered.build
    return WorkspacePlan(
        workspace_id=workspace.id,
        name=workspace.name,
        owner=owner.username,
        owner_id=owner.id,
        template=workspace.template.name,
        build_id=build.id,
        content_hash=version.content_hash,
        image=rendered.image or "",
        build=(
            ImageBuild(dockerfile=build_spec.dockerfile, context=build_spec.context, args=build_spec.args)
            if build_spec is not None
            else None
        ),
        resources=Resources(
            cpu=float(resources.cpu),
            memory_bytes=parse_size(resources.memory),
            pids=resources.pids,
            disk_bytes=parse_size(resources.disk) if resources.disk is not None else None,
            gpu=int(resources.gpu),
        ),
        home=Home(user=rendered.user, sudo=rendered.sudo),
        network=NetworkPolicy(egress=egress, allow=tuple(rendered.network.allow)),
        env={
            **rendered.env,
            "DOCKYARD_WORKSPACE_NAME": workspace.name,
            "DOCKYARD_WORKSPACE_OWNER": owner.username,
        },
        agent=agent,
        apps=tuple(AppPort(slug=app.slug, port=app.port, share=app.share.value) for app in rendered.apps),
        kubernetes_pod=dict(rendered.kubernetes.pod) if rendered.kubernetes is not None else {},
        mounts=tuple(
            ExtraMount(
                target=m.target,
                volume=m.source if m.kind == "volume" else "",
                host_path=m.source if m.kind == "bind" else "",
                read_only=m.read_only,
            )
            for m in (devcontainer.mounts if devcontainer is not None else ())
        ),
    )

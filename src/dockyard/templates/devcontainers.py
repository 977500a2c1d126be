"""Dev container configurations as a template source: the plan of a version whose manifest names one."""

from __future__ import annotations

import threading

from sqlalchemy.orm import Session

from dockyard.store.models import TemplateVersion
from dockyard.templates import service
from dockyard.templates.archive import TemplateFiles
from dockyard.templates.devcontainer import plan as plans
from dockyard_sdk.manifest import TemplateManifest

# Versions never change, so neither do their plans; reading one means unpacking the version's archive.
_cache: dict[str, plans.Plan] = {}
_lock = threading.Lock()


def plan_of(files: TemplateFiles, manifest: TemplateManifest) -> plans.Plan | None:
    """The plan of the manifest's `devcontainer`, or None when it has none; ValidationFailed when it cannot be
    honoured. `${localEnv:…}` reads nothing of the server's environment: the server is not the user's machine."""
    config_file = manifest.devcontainer_file
    if config_file is None:
        return None
    data = {path: f.data for path, f in files.files.items() if f.link is None}
    # Binds were checked against the admin's folders when the version was pushed.
    return plans.read(data, config_file, workspace_name=manifest.name, env={}, host_binds=None)


def plan_for(db: Session, version: TemplateVersion) -> plans.Plan | None:
    manifest = service.version_to_wire(version).manifest
    if manifest.devcontainer is None:
        return None
    cached = _cache.get(version.id)
    if cached is not None:
        return cached
    plan = plan_of(service.files_of(db, version), manifest)
    assert plan is not None
    with _lock:
        if len(_cache) > 1000:
            _cache.clear()
        _cache[version.id] = plan
    return plan

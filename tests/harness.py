"""The in-process test harness: a full Dockyard server per test, reached through the SDK.

def test_something(h: Harness) -> None:
    alice = h.user("alice")
    template = h.template(name="py")
    ...
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from dockyard.api.app import create_app
from dockyard.config import Settings
from dockyard.runtimes.base import Runtime
from dockyard.runtimes.docker import DockerRuntime
from dockyard.store.models import Workspace
from dockyard_sdk import ApiError, Client
from dockyard_sdk import models as m
from tests.fakes import FakeRuntime

BASE_MANIFEST: dict[str, Any] = {
    "name": "tmpl",
    "description": "a test template",
    "image": "dockyard/base:bookworm",
    "parameters": [
        {"name": "branch", "type": "string", "default": "main"},
        {"name": "ttl_hours", "type": "number", "default": 4, "validation": {"min": 1, "max": 24}},
    ],
    "startup_script": "echo {{ parameters.branch | quote }}",
    "lifetime": {"ttl": "{{ parameters.ttl_hours }}h"},
}


def tar_gz(files: dict[str, str | bytes], *, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for path, target in (links or {}).items():
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def manifest_yaml(**overrides: Any) -> str:
    manifest = {**BASE_MANIFEST, **overrides}
    return yaml.safe_dump({k: v for k, v in manifest.items() if v is not None}, sort_keys=False)


@dataclass
class Harness:
    app: FastAPI
    settings: Settings
    data_dir: Path
    admin: Client
    runtime: Runtime
    lifespan: TestClient
    _clients: list[Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> Client:
        client = Client("http://testserver", token, http=self.http())
        self._clients.append(client)
        return client

    def http(self) -> TestClient:
        """A test client whose requests run on the server's event loop (see `_on_loop_of`)."""
        return _on_loop_of(self.app, self.lifespan)

    def user(
        self,
        username: str,
        *,
        role: m.Role = m.Role.MEMBER,
        scopes: list[m.Scope] | None = None,
        allow_list: list[str] | None = None,
        password: str = "correct-horse-battery",  # noqa: S107 - a test user's password
    ) -> Client:
        """Create a user (if new) and return a client holding a fresh token for it."""
        try:
            self.admin.get_user(username)
        except Exception:  # noqa: BLE001 - any lookup failure means "create it"
            self.admin.create_user(
                m.CreateUserRequest(
                    username=username, email=f"{username}@example.com", password=password, role=role
                )
            )
        created = self.admin.create_token(
            m.CreateTokenRequest(
                name=f"t{len(self._clients)}", scopes=scopes or [m.Scope.ALL], allow_list=allow_list or []
            ),
            user=username,
        )
        return self.client(created.key)

    def template(self, files: dict[str, str | bytes] | None = None, **manifest: Any) -> m.Template:
        files = dict(files or {})
        files.setdefault("dockyard.yaml", manifest_yaml(**manifest))
        return self.admin.create_template(tar_gz(files))

    def workspace(self, template: str = "tmpl", name: str | None = None, **parameters: Any) -> m.Workspace:
        """Create a workspace (pushing a default template first if needed) and wait for its build."""
        try:
            self.admin.get_template(template)
        except ApiError:
            self.template(name=template)
        created = self.admin.create_workspace(
            m.CreateWorkspaceRequest(template=template, name=name, parameters=parameters)
        )
        return self.await_build(created.id)

    def await_build(
        self, workspace: str, *, client: Client | None = None, timeout: float = 30
    ) -> m.Workspace:
        """Block until the workspace's latest build is no longer pending or running."""
        return (client or self.admin).get_workspace(workspace, wait="done", timeout=timeout)

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.admin.close()
        self.lifespan.__exit__(None, None, None)
        if isinstance(self.runtime, FakeRuntime):
            self.runtime.close()
        # The app's own engine: its pooled connections (PostgreSQL's count against max_connections) go with it.
        self.app.state.engine.dispose()
        self.data_dir.unlink(missing_ok=True)


def _on_loop_of(app: FastAPI, lifespan: TestClient) -> TestClient:
    """A TestClient that runs requests on the event loop the lifespan started, as uvicorn runs everything on
    one loop. A fresh TestClient would run each request on a loop of its own, and objects bound to the
    server's loop (agent connections) would be unusable from there."""
    client = TestClient(app, base_url="http://testserver")
    client.portal = lifespan.portal
    return client


def make_harness(
    tmp_path: Path,
    database_url: str,
    *,
    builtin_templates: bool = False,
    runtime: Runtime | None = None,
    workers: int = 2,
    reconcile_interval: float = 3600,
    warm_networks: dict[str, int] | None = None,
    agent_url: str = "",
    relay_url: str = "",
    egress_hosts: dict[str, str] | None = None,
    egress_proxy_port: int = 3128,
    egress_intercept_port: int = 3129,
    outbound_deny: list[str] | None = None,
    git_mirrors: bool = True,
) -> Harness:
    """A server on `database_url` with a fake runtime unless one is given; the lifecycle loop is slow by
    default so tests drive it with `h.app.state.background.tick()`."""
    # The agent socket inside the data dir must fit the kernel's 108-byte limit for unix socket paths, which
    # pytest's tmp_path can exceed: a short link (the same for the same tmp_path, so a restarted harness
    # finds its data again) stands for it.
    data_dir = Path(tempfile.gettempdir()) / f"dy-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]}"
    (tmp_path / "data").mkdir(exist_ok=True)
    if not data_dir.is_symlink():
        data_dir.symlink_to(tmp_path / "data")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        access_log=False,
        builtin_templates=builtin_templates,
        provisioner_workers=workers,
        reconcile_interval=reconcile_interval,
        # No SSH listener: tests run side by side and next to a real server on the default port. The
        # gateway still serves `/ssh` WebSockets.
        ssh_listen="",
        # No warm networks unless a test asks: they would change which ids and networks workspaces get.
        warm_networks=warm_networks or {},
        agent_url=agent_url,
        relay_url=relay_url,
        egress_hosts=egress_hosts or {},
        egress_proxy_port=egress_proxy_port,
        egress_intercept_port=egress_intercept_port,
        outbound_deny=outbound_deny or [],
        git_mirrors=git_mirrors,
    )
    runtime = runtime or FakeRuntime()
    app = create_app(settings, runtime=runtime)
    # Entering the client runs the app's lifespan: provisioner workers and lifecycle loops start.
    lifespan = TestClient(app, base_url="http://testserver")
    lifespan.__enter__()
    token = (data_dir / "admin-token").read_text().strip()
    admin = Client("http://testserver", token, http=_on_loop_of(app, lifespan))
    return Harness(
        app=app, settings=settings, data_dir=data_dir, admin=admin, runtime=runtime, lifespan=lifespan
    )


@contextmanager
def docker_harness(
    tmp_path: Path, database_url: str, *, subnet_pool: str, ready_timeout: float = 60, **options: Any
) -> Iterator[Harness]:
    """`make_harness(**options)` whose workspaces run on the real Docker engine, networks from `subnet_pool` (one
    of the test's own); every workspace it made is deleted afterwards."""
    runtime = DockerRuntime(subnet_pool=subnet_pool, ready_timeout=ready_timeout)
    harness = make_harness(tmp_path, database_url, runtime=runtime, **options)
    try:
        yield harness
    finally:
        with harness.app.state.sessions() as db:
            ids = list(db.scalars(select(Workspace.id)))
        harness.close()
        for workspace_id in ids:
            runtime.delete(workspace_id, lambda line: None)
        runtime.close()

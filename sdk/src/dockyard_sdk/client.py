"""The Python client for the Dockyard REST API, used by the CLI, the tests and users.

    from dockyard_sdk import Client
    client = Client("http://127.0.0.1:3000", token="dy_...")
    for template in client.list_templates():
        print(template.name)

One method per endpoint; every non-2xx reply raises `ApiError` carrying the server's message and validations.
"""

from __future__ import annotations

import builtins
import io
import ssl
import tarfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic
from httpx_sse import ServerSentEvent, connect_sse
from pydantic import BaseModel, TypeAdapter

from dockyard_sdk import credentials
from dockyard_sdk import models as m
from dockyard_sdk.errors import ApiError, ConnectionFailed, Timeout, error_for
from dockyard_sdk.lazy import load_later
from dockyard_sdk.version import __version__
from dockyard_sdk.workspace import Workspace, check_timeout, check_wait

if TYPE_CHECKING:
    from dockyard_sdk import streams
else:
    # websockets loads when a stream is first opened: a REST call never needs it.
    streams = load_later("dockyard_sdk.streams")

T = TypeVar("T")

# Files a template folder should never upload: VCS data and editor/OS litter.
_SKIP = {".git", ".hg", ".svn", "__pycache__", ".DS_Store", ".venv", "node_modules"}


def pack_template(folder: Path) -> bytes:
    """A template folder as a tar.gz, paths relative to the folder; symlinks are kept as links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if any(part in _SKIP for part in relative.parts):
                continue
            if path.is_symlink() or path.is_file():
                tar.add(path, arcname=relative.as_posix(), recursive=False)
    return buffer.getvalue()


def _plain_http_context() -> ssl.SSLContext:
    """The TLS setup of a client for a plain-http server: it trusts no CA at all, so it costs nothing to make
    (loading a trust store takes tens of milliseconds, on every CLI command), and an https URL reached through
    such a client anyway fails verification instead of going unchecked."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _segment(value: str) -> str:
    return quote(value, safe="")


class Client:
    """A connection to one Dockyard server.

    `Client()` finds its server and token in `DOCKYARD_URL`/`DOCKYARD_TOKEN`, else in what `dockyard login`
    stored; `Client(url, token)` names them. `create`, `get` and `list` return `Workspace` handles; the other
    methods map one to one onto REST endpoints and take and return the wire models of `dockyard_sdk.models`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        if token is not None and not isinstance(token, str):
            raise TypeError(f"token must be a str, not {type(token).__name__}")
        if url is None or token is None:
            url, token = credentials.resolve(url, token)
        if not url:
            raise ValueError(
                "no Dockyard server given: pass Client(url, token), set DOCKYARD_URL and DOCKYARD_TOKEN, "
                "or run `dockyard login`"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.verify = verify
        self._ssl_context: ssl.SSLContext | None = None
        headers = {"User-Agent": f"dockyard-sdk/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if http is None:
            tls = self.ssl_context if self.url.startswith("https://") else _plain_http_context()
            http = httpx.Client(base_url=self.url, timeout=timeout, verify=tls)
        http.headers.update(headers)
        self.http = http

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """One TLS setup for REST and WebSockets alike (httpx's defaults: certifi, SSL_CERT_FILE)."""
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context(verify=self.verify)
        return self._ssl_context

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ----------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise Timeout(f"Dockyard at {self.url} did not answer {method} {path} in time: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"Cannot reach Dockyard at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    @staticmethod
    def _error(response: httpx.Response) -> ApiError:
        try:
            body = m.ErrorResponse.model_validate_json(response.content)
        except ValueError:
            body = m.ErrorResponse(message=f"HTTP {response.status_code}", detail=response.text[:500])
        return error_for(
            response.status_code,
            body.message,
            detail=body.detail,
            validations=body.validations,
            method=response.request.method,
            url=str(response.request.url),
            retry_after=response.headers.get("Retry-After"),
        )

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """A GET answered with the decoded JSON rather than a wire model (as `dockyard_sdk.plain` answers it)."""
        response = self.request(
            "GET", path, params={k: v for k, v in (params or {}).items() if v is not None}
        )
        return response.json()

    def _get(self, path: str, model: type[T], params: Mapping[str, Any] | None = None) -> T:
        response = self.request(
            "GET", path, params={k: v for k, v in (params or {}).items() if v is not None}
        )
        return TypeAdapter(model).validate_json(response.content)

    def _send(
        self, method: str, path: str, model: type[T], body: BaseModel | None = None, **kwargs: Any
    ) -> T:
        if body is not None:
            kwargs["content"] = body.model_dump_json(exclude_unset=True)
            kwargs["headers"] = {"Content-Type": "application/json"}
        response = self.request(method, path, **kwargs)
        return TypeAdapter(model).validate_json(response.content)

    # --- server ------------------------------------------------------------------------------------------------

    def health(self) -> m.Health:
        return self._get("/healthz", m.Health)

    def buildinfo(self) -> m.BuildInfo:
        return self._get("/api/v2/buildinfo", m.BuildInfo)

    # --- users -------------------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> m.LoginResponse:
        result = self._send(
            "POST",
            "/api/v2/users/login",
            m.LoginResponse,
            m.LoginRequest(username=username, password=password),
        )
        self.token = result.token
        self.http.headers["Authorization"] = f"Bearer {result.token}"
        self.http.cookies.clear()
        return result

    def logout(self) -> None:
        self.request("POST", "/api/v2/users/logout")

    def me(self) -> m.User:
        return self._get("/api/v2/users/me", m.User)

    def get_user(self, user: str) -> m.User:
        return self._get(f"/api/v2/users/{_segment(user)}", m.User)

    def list_users(self, *, q: str | None = None, limit: int = 100, offset: int = 0) -> m.UserList:
        return self._get("/api/v2/users", m.UserList, {"q": q, "limit": limit, "offset": offset})

    def create_user(self, request: m.CreateUserRequest) -> m.User:
        return self._send("POST", "/api/v2/users", m.User, request)

    def update_user(self, user: str, request: m.UpdateUserRequest) -> m.User:
        return self._send("PATCH", f"/api/v2/users/{_segment(user)}", m.User, request)

    # --- tokens ------------------------------------------------------------------------------------------------

    def list_tokens(self, user: str = "me") -> builtins.list[m.ApiToken]:
        return self._get(f"/api/v2/users/{_segment(user)}/tokens", list[m.ApiToken])

    def create_token(self, request: m.CreateTokenRequest, user: str = "me") -> m.CreatedToken:
        return self._send("POST", f"/api/v2/users/{_segment(user)}/tokens", m.CreatedToken, request)

    def get_token(self, token: str, user: str = "me") -> m.ApiToken:
        return self._get(f"/api/v2/users/{_segment(user)}/tokens/{_segment(token)}", m.ApiToken)

    def revoke_token(self, token: str, user: str = "me") -> None:
        self.request("DELETE", f"/api/v2/users/{_segment(user)}/tokens/{_segment(token)}")

    def get_user_quota(self, user: str = "me") -> m.Quota:
        return self._get(f"/api/v2/users/{_segment(user)}/quota", m.Quota)

    def set_user_quota(self, user: str, limits: m.QuotaLimits) -> m.Quota:
        """Replace a user's limits (owners only); fields left out mean no limit."""
        return self._send("PUT", f"/api/v2/users/{_segment(user)}/quota", m.Quota, limits)

    def get_token_quota(self, token: str, user: str = "me") -> m.Quota:
        return self._get(f"/api/v2/users/{_segment(user)}/tokens/{_segment(token)}/quota", m.Quota)

    def set_token_quota(self, token: str, limits: m.QuotaLimits, user: str = "me") -> m.Quota:
        """Replace a token's limits (its user, with another credential, or an owner)."""
        return self._send(
            "PUT", f"/api/v2/users/{_segment(user)}/tokens/{_segment(token)}/quota", m.Quota, limits
        )

    # --- templates ---------------------------------------------------------------------------------------------

    def list_templates(self) -> builtins.list[m.Template]:
        return self._get("/api/v2/templates", list[m.Template])

    def get_template(self, template: str) -> m.Template:
        return self._get(f"/api/v2/templates/{_segment(template)}", m.Template)

    def prebuilds(self, template: str | None = None) -> m.PrebuildList:
        """Warm pool presets: of one template, or of every template you may see."""
        if template is not None:
            return self._get(f"/api/v2/templates/{_segment(template)}/prebuilds", m.PrebuildList)
        return self._get("/api/v2/prebuilds", m.PrebuildList)

    def create_template(
        self, source: Path | bytes, *, name: str | None = None, message: str = ""
    ) -> m.Template:
        """Create a template from a folder (packed here) or from tar/tar.gz bytes."""
        data = pack_template(source) if isinstance(source, Path) else source
        params = {"message": message, **({"name": name} if name else {})}
        return self._send(
            "POST",
            "/api/v2/templates",
            m.Template,
            content=data,
            params=params,
            headers={"Content-Type": "application/gzip"},
        )

    def create_template_version(
        self, template: str, source: Path | bytes, *, message: str = "", activate: bool = True
    ) -> m.TemplateVersion:
        data = pack_template(source) if isinstance(source, Path) else source
        return self._send(
            "POST",
            f"/api/v2/templates/{_segment(template)}/versions",
            m.TemplateVersion,
            content=data,
            params={"message": message, "activate": str(activate).lower()},
            headers={"Content-Type": "application/gzip"},
        )

    def update_template(self, template: str, request: m.UpdateTemplateRequest) -> m.Template:
        return self._send("PATCH", f"/api/v2/templates/{_segment(template)}", m.Template, request)

    def delete_template(self, template: str) -> None:
        self.request("DELETE", f"/api/v2/templates/{_segment(template)}")

    def list_template_versions(self, template: str) -> builtins.list[m.TemplateVersion]:
        return self._get(f"/api/v2/templates/{_segment(template)}/versions", list[m.TemplateVersion])

    def get_template_version(self, template: str, version: str) -> m.TemplateVersion:
        return self._get(
            f"/api/v2/templates/{_segment(template)}/versions/{_segment(version)}", m.TemplateVersion
        )

    def list_template_files(self, template: str, version: str) -> builtins.list[m.TemplateFile]:
        return self._get(
            f"/api/v2/templates/{_segment(template)}/versions/{_segment(version)}/files", list[m.TemplateFile]
        )

    def get_template_file(self, template: str, version: str, path: str) -> bytes:
        return self.request(
            "GET",
            f"/api/v2/templates/{_segment(template)}/versions/{_segment(version)}/files/{quote(path)}",
        ).content

    def get_template_archive(self, template: str, version: str) -> bytes:
        return self.request(
            "GET", f"/api/v2/templates/{_segment(template)}/versions/{_segment(version)}/archive"
        ).content

    def check_parameters(
        self, template: str, parameters: Mapping[str, Any], *, version: str | None = None
    ) -> m.ParameterCheckResponse:
        return self._send(
            "POST",
            f"/api/v2/templates/{_segment(template)}/parameters/check",
            m.ParameterCheckResponse,
            m.ParameterCheckRequest(parameters=dict(parameters)),
            params={"version": version} if version else {},
        )

    # --- workspaces --------------------------------------------------------------------------------------------

    def create(
        self,
        template: str,
        *,
        name: str | None = None,
        ttl: str | int | None = None,
        parameters: Mapping[str, Any] | None = None,
        wait: str | None = "ready",
        timeout: float = 300,
        keep: bool = False,
    ) -> Workspace:
        """Create a workspace from a template (id or name) and return its handle once it is `wait`.

        `ttl` is a duration (`"1h"`) or seconds; `wait` is `"ready"` (the agent ran the startup script),
        `"running"`, `"done"` or None (return at once). Used as a context manager, the handle deletes the
        workspace on exit unless `keep=True`.
        """
        if not isinstance(template, str) or not template:
            raise TypeError("template must be a template id or name (a non-empty str)")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise TypeError(
                f"parameters must be a mapping of names to values, not {type(parameters).__name__}"
            )
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, str | int)):
            raise TypeError(f"ttl must be a duration such as '1h' or seconds, not {type(ttl).__name__}")
        wanted = check_wait(wait)
        check_timeout(timeout)
        fields: dict[str, Any] = {"template": template, "parameters": dict(parameters or {})}
        if name is not None:
            fields["name"] = name
        if isinstance(ttl, int):
            fields["ttl_ms"] = ttl * 1000
        elif ttl is not None:
            fields["ttl"] = ttl
        try:
            request = m.CreateWorkspaceRequest.model_validate(fields)
        except pydantic.ValidationError as exc:
            raise ValueError(str(exc)) from exc
        handle = Workspace(self, self.create_workspace(request), keep=keep)
        if wanted is not None:
            try:
                handle.wait(wanted, timeout=timeout)
            except BaseException:
                # A workspace nobody will get a handle to must not be left behind.
                if not keep:
                    handle.delete(wait=False)
                raise
        return handle

    def get(self, workspace: str) -> Workspace:
        """A handle on an existing workspace by id, name or owner/name (kept on a `with` block's exit)."""
        if not isinstance(workspace, str) or not workspace:
            raise TypeError("workspace must be an id, a name or owner/name (a non-empty str)")
        return Workspace(self, self.get_workspace(workspace))

    def list(
        self,
        *,
        owner: str | None = None,
        template: str | None = None,
        status: m.WorkspaceStatus | str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Workspace]:
        """Handles on the workspaces this token can see, filtered as given."""
        wanted = m.WorkspaceStatus(status) if status is not None else None
        found = self.list_workspaces(owner=owner, template=template, status=wanted, name=name, limit=limit)
        return [Workspace(self, info) for info in found.workspaces]

    def report_task(self, workspace: str, report: m.TaskReport) -> m.Workspace:
        """Set the workspace's task state from outside it (inside, `dockyard-agent report` does this)."""
        return self._send("POST", f"/api/v2/workspaces/{_segment(workspace)}/task", m.Workspace, report)

    def set_ttl(self, workspace: str, ttl: str | int | float) -> m.Workspace:
        """Set a workspace's TTL; a running workspace's deadline moves to `ttl` from now, without a restart."""
        body = m.TtlRequest(ttl_ms=int(ttl * 1000)) if isinstance(ttl, int | float) else m.TtlRequest(ttl=ttl)
        return self._send("PUT", f"/api/v2/workspaces/{_segment(workspace)}/ttl", m.Workspace, body)

    def create_workspace(
        self, request: m.CreateWorkspaceRequest, *, idempotency_key: str | None = None
    ) -> m.Workspace:
        """With `idempotency_key`, a retry of the same request returns the workspace the first one made."""
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self._send(
            "POST",
            "/api/v2/workspaces",
            m.Workspace,
            content=request.model_dump_json(exclude_unset=True, by_alias=False),
            headers=headers,
        )

    def set_autostart(self, workspace: str, schedule: str | None, timezone: str = "UTC") -> m.Workspace:
        """Start the stopped workspace on a cron schedule in `timezone`; None turns autostart off."""
        body = m.ScheduleRequest(autostart=schedule, timezone=timezone)
        return self._send("PUT", f"/api/v2/workspaces/{_segment(workspace)}/autostart", m.Workspace, body)

    def list_workspaces(
        self,
        *,
        owner: str | None = None,
        template: str | None = None,
        status: m.WorkspaceStatus | None = None,
        name: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> m.WorkspaceList:
        return self._get(
            "/api/v2/workspaces",
            m.WorkspaceList,
            {
                "owner": owner,
                "template": template,
                "status": status.value if status else None,
                "name": name,
                "limit": limit,
                "offset": offset,
            },
        )

    def get_workspace(self, workspace: str, *, wait: str | None = None, timeout: float = 120) -> m.Workspace:
        """A workspace by id, name or owner/name.

        `wait="done"` blocks until no build is in progress; `"running"` until it runs (or its build failed);
        `"ready"` until it runs and its agent finished the startup script (ready, start_error or start_timeout).
        A wait that times out returns the workspace as it is then.
        """
        if "/" in workspace:
            owner, _, name = workspace.partition("/")
            workspace = self.get_user_workspace(owner, name).id
        params: dict[str, Any] = {"wait": wait, "timeout": timeout} if wait else {}
        response = self.request(
            "GET",
            f"/api/v2/workspaces/{_segment(workspace)}",
            params=params,
            timeout=timeout + 10 if wait else httpx.USE_CLIENT_DEFAULT,
        )
        return m.Workspace.model_validate_json(response.content)

    def get_user_workspace(self, user: str, name: str) -> m.Workspace:
        return self._get(f"/api/v2/users/{_segment(user)}/workspace/{_segment(name)}", m.Workspace)

    def update_workspace(self, workspace: str, request: m.UpdateWorkspaceRequest) -> m.Workspace:
        return self._send("PATCH", f"/api/v2/workspaces/{_segment(workspace)}", m.Workspace, request)

    def create_build(self, workspace: str, request: m.CreateBuildRequest) -> m.WorkspaceBuild:
        return self._send(
            "POST", f"/api/v2/workspaces/{_segment(workspace)}/builds", m.WorkspaceBuild, request
        )

    def start_workspace(self, workspace: str) -> m.WorkspaceBuild:
        return self.create_build(workspace, m.CreateBuildRequest(transition=m.Transition.START))

    def stop_workspace(self, workspace: str) -> m.WorkspaceBuild:
        return self.create_build(workspace, m.CreateBuildRequest(transition=m.Transition.STOP))

    def delete_workspace(self, workspace: str) -> m.WorkspaceBuild:
        return self._send("DELETE", f"/api/v2/workspaces/{_segment(workspace)}", m.WorkspaceBuild)

    def list_apps(self, workspace: str) -> m.WorkspaceApps:
        """The workspace's template apps, their URLs and health."""
        return self._get(f"/api/v2/workspaces/{_segment(workspace)}/apps", m.WorkspaceApps)

    def list_builds(self, workspace: str) -> builtins.list[m.WorkspaceBuild]:
        return self._get(f"/api/v2/workspaces/{_segment(workspace)}/builds", list[m.WorkspaceBuild])

    def egress_events(self, workspace: str, *, limit: int = 100, offset: int = 0) -> m.EgressEventList:
        """The workspace's egress log (allowed and denied connections through the proxy), newest first."""
        return self._get(
            f"/api/v2/workspaces/{_segment(workspace)}/egress",
            m.EgressEventList,
            {"limit": limit, "offset": offset},
        )

    def get_build(self, build: str) -> m.WorkspaceBuild:
        return self._get(f"/api/v2/workspacebuilds/{_segment(build)}", m.WorkspaceBuild)

    def cancel_build(self, build: str) -> m.WorkspaceBuild:
        return self._send("POST", f"/api/v2/workspacebuilds/{_segment(build)}/cancel", m.WorkspaceBuild)

    def build_logs(self, build: str, *, after: int = 0) -> builtins.list[m.BuildLogLine]:
        return self._get(
            f"/api/v2/workspacebuilds/{_segment(build)}/logs", list[m.BuildLogLine], {"after": after}
        )

    def follow_build_logs(self, build: str, *, after: int = 0) -> Iterator[m.BuildLogLine]:
        """Yield log lines as they are written until the build ends."""
        path = f"/api/v2/workspacebuilds/{_segment(build)}/logs"
        for event in self._events(path, {"follow": "true", "after": after}):
            if event.event == "log":
                yield m.BuildLogLine.model_validate_json(event.data)
            elif event.event == "end":
                return

    def watch_workspace(self, workspace: str) -> Iterator[m.Workspace]:
        """Yield the workspace each time its status or build changes (until it is deleted)."""
        for event in self._events(f"/api/v2/workspaces/{_segment(workspace)}/watch", {}):
            if event.event == "workspace":
                yield m.Workspace.model_validate_json(event.data)

    def watch_events(self, workspace: str) -> Iterator[m.Workspace | m.LifetimeWarning]:
        """Like `watch_workspace`, and also the warning sent shortly before an automatic idle or TTL stop."""
        for event in self._events(f"/api/v2/workspaces/{_segment(workspace)}/watch", {}):
            if event.event == "workspace":
                yield m.Workspace.model_validate_json(event.data)
            elif event.event == "warning":
                yield m.LifetimeWarning.model_validate_json(event.data)

    def _events(self, path: str, params: Mapping[str, Any]) -> Iterator[ServerSentEvent]:
        try:
            with connect_sse(
                self.http, "GET", path, params=params, timeout=httpx.Timeout(30, read=None)
            ) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise self._error(source.response)
                yield from source.iter_sse()
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"Cannot reach Dockyard at {self.url}: {exc}") from exc

    # --- connecting: exec, files, streams ----------------------------------------------------------------------

    def exec(self, workspace: str, request: m.ExecRequest) -> m.ExecResult:
        """Run a command to its end and return its output (kept up to `request.max_output_bytes` each)."""
        return self._send(
            "POST",
            f"/api/v2/workspaces/{_segment(workspace)}/exec",
            m.ExecResult,
            request,
            # The server kills the command at request.timeout; the reply may follow a little later.
            timeout=request.timeout + 30,
        )

    def read_file(self, workspace: str, path: str) -> bytes:
        return self.request(
            "GET", f"/api/v2/workspaces/{_segment(workspace)}/files", params={"path": path}
        ).content

    def write_file(self, workspace: str, path: str, data: bytes, *, mode: int | None = None) -> m.FileWritten:
        """Write a file (replacing it whole); `mode` is the permission bits, e.g. 0o755."""
        params = {"path": path, **({"mode": f"{mode:04o}"} if mode is not None else {})}
        return self._send(
            "PUT",
            f"/api/v2/workspaces/{_segment(workspace)}/files",
            m.FileWritten,
            content=data,
            params=params,
            headers={"Content-Type": "application/octet-stream"},
        )

    def delete_file(self, workspace: str, path: str, *, recursive: bool = False) -> None:
        params = {"path": path, **({"recursive": "true"} if recursive else {})}
        self.request("DELETE", f"/api/v2/workspaces/{_segment(workspace)}/files", params=params)

    def list_files(self, workspace: str, path: str) -> m.FileList:
        return self._get(f"/api/v2/workspaces/{_segment(workspace)}/files/list", m.FileList, {"path": path})

    def open_websocket(self, path: str, params: Mapping[str, Any] | None = None) -> streams.Socket:
        """A WebSocket to `path` on this server with this client's token and TLS settings."""
        headers = {"User-Agent": str(self.http.headers.get("User-Agent", f"dockyard-sdk/{__version__}"))}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return streams.open_websocket(
            self.url,
            path,
            params,
            headers=headers,
            ssl_context=self.ssl_context if self.url.startswith("https://") else None,
        )

    def exec_stream(
        self, workspace: str, request: m.ExecRequest, *, pty: streams.PtySize | None = None
    ) -> streams.ExecStream:
        """Start a command and stream its stdin, stdout and stderr; see `streams.ExecStream`."""
        socket = self.open_websocket(f"/api/v2/workspaces/{_segment(workspace)}/exec/stream")
        try:
            return streams.start_exec(socket, request, pty=pty)
        except BaseException:
            socket.close()
            raise

    def pty(
        self,
        workspace: str,
        *,
        reconnect: str | None = None,
        width: int = 80,
        height: int = 24,
        command: str | None = None,
    ) -> streams.Pty:
        """Attach to a terminal: a new one, or the one `reconnect` names (which still runs after a drop)."""
        reconnect = reconnect or streams.new_reconnect_id()
        socket = self.open_websocket(
            f"/api/v2/workspaces/{_segment(workspace)}/pty",
            {"reconnect": reconnect, "width": width, "height": height, "command": command},
        )
        return streams.Pty(socket, reconnect)

    def dial(self, workspace: str, port: int, *, host: str | None = None) -> streams.ByteStream:
        """A TCP connection to `port` inside the workspace (on its loopback unless `host` is given)."""
        return streams.ByteStream(
            self.open_websocket(
                f"/api/v2/workspaces/{_segment(workspace)}/dial", {"port": port, "host": host}
            )
        )

    def ssh_tunnel(self, workspace: str) -> streams.ByteStream:
        """The raw SSH protocol to the gateway, for the workspace: what an SSH client's ProxyCommand carries."""
        return streams.ByteStream(self.open_websocket(f"/api/v2/workspaces/{_segment(workspace)}/ssh"))

    # --- git credentials and webhooks -------------------------------------------------------------------------

    def list_git_auth(self, user: str = "me") -> builtins.list[m.GitAuth]:
        return self._get(f"/api/v2/users/{_segment(user)}/git-auth", list[m.GitAuth])

    def add_git_auth(self, request: m.CreateGitAuthRequest, *, user: str = "me") -> m.GitAuth:
        return self._send("POST", f"/api/v2/users/{_segment(user)}/git-auth", m.GitAuth, request)

    def remove_git_auth(self, host: str, *, user: str = "me") -> None:
        self.request("DELETE", f"/api/v2/users/{_segment(user)}/git-auth/{_segment(host)}")

    def list_webhooks(self, user: str = "me") -> builtins.list[m.Webhook]:
        return self._get(f"/api/v2/users/{_segment(user)}/webhooks", list[m.Webhook])

    def add_webhook(self, request: m.CreateWebhookRequest, *, user: str = "me") -> m.CreatedWebhook:
        return self._send("POST", f"/api/v2/users/{_segment(user)}/webhooks", m.CreatedWebhook, request)

    def remove_webhook(self, webhook: str, *, user: str = "me") -> None:
        self.request("DELETE", f"/api/v2/users/{_segment(user)}/webhooks/{_segment(webhook)}")

    # --- SSH keys and certificates ---------------------------------------------------------------------------

    def list_ssh_keys(self, user: str = "me") -> builtins.list[m.SshKey]:
        return self._get(f"/api/v2/users/{_segment(user)}/sshkeys", list[m.SshKey])

    def add_ssh_key(self, user: str, request: m.CreateSshKeyRequest) -> m.SshKey:
        return self._send("POST", f"/api/v2/users/{_segment(user)}/sshkeys", m.SshKey, request)

    def remove_ssh_key(self, user: str, key_id: str) -> None:
        self.request("DELETE", f"/api/v2/users/{_segment(user)}/sshkeys/{_segment(key_id)}")

    def create_ssh_certificate(self, user: str, request: m.SshCertificateRequest) -> m.SshCertificate:
        return self._send("POST", f"/api/v2/users/{_segment(user)}/sshcert", m.SshCertificate, request)

    def ssh_gateway(self) -> m.SshGateway:
        return self._get("/api/v2/deployment/ssh", m.SshGateway)

    # --- deployment ----------------------------------------------------------------------------------------------

    def doctor(self) -> m.DoctorReport:
        return self._get("/api/v2/doctor", m.DoctorReport)

    def prune(self, *, timeout: float = 600) -> m.DoctorReport:
        """Remove orphaned resources; each is a runtime call, so hundreds can take minutes."""
        return self._send("POST", "/api/v2/doctor/prune", m.DoctorReport, timeout=timeout)

    # --- audit -------------------------------------------------------------------------------------------------

    def audit(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> m.AuditLogList:
        return self._get(
            "/api/v2/audit",
            m.AuditLogList,
            {
                "user": user,
                "action": action,
                "resource_type": resource_type,
                "resource": resource,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "limit": limit,
                "offset": offset,
            },
        )

"""`dockyard server` and `dockyard db migrate`: the only commands that import the server side."""

from __future__ import annotations

import gc
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dockyard.cli import kubernetes_options as kubeflags
from dockyard.config import Settings, default_data_dir

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="DOCKYARD_DATA_DIR", help="Where Dockyard keeps its state.")
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DOCKYARD_DATABASE_URL",
        help="SQLAlchemy URL; default: SQLite in the data dir. Use postgresql://… in production.",
    ),
]
OutboundDeny = Annotated[
    list[str] | None,
    typer.Option(
        "--outbound-deny",
        envvar="DOCKYARD_OUTBOUND_DENY",
        help="An address range (CIDR) that webhooks, the git proxy and template fetches (dev container "
        "repositories, OCI features) must not connect to, e.g. loopback or your private networks "
        "(repeatable, or comma-separated). Link-local ranges (cloud metadata) are always denied.",
        show_default=False,
    ),
]
GitMirrors = Annotated[
    bool,
    typer.Option(
        "--git-mirrors/--no-git-mirrors",
        envvar="DOCKYARD_GIT_MIRRORS",
        help="Let templates with `git.mirror: true` clone their repository from a mirror this process fetches "
        "once for many starts (Docker runtime; in the data dir, one per owner and repository). Off: every "
        "workspace clones over the network.",
    ),
]

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


def server(
    listen: Annotated[
        str, typer.Option("--listen", envvar="DOCKYARD_LISTEN", help="HOST:PORT for the HTTP API.")
    ] = "127.0.0.1:3000",
    data_dir: DataDir = default_data_dir(),
    database_url: DatabaseUrl = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log", envvar="DOCKYARD_ACCESS_LOG", help="Log one line per request."
        ),
    ] = True,
    log_format: Annotated[
        str, typer.Option("--log-format", envvar="DOCKYARD_LOG_FORMAT", help="auto, json or console.")
    ] = "auto",
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime", envvar="DOCKYARD_RUNTIME", help="Where workspaces run: docker or kubernetes."
        ),
    ] = "docker",
    workspace_subnets: Annotated[
        str,
        typer.Option(
            "--workspace-subnets",
            envvar="DOCKYARD_WORKSPACE_SUBNETS",
            help="Address range cut into one small subnet per workspace network ('' for Docker's own pools).",
        ),
    ] = "10.213.0.0/16",
    workspace_bridge: Annotated[
        str,
        typer.Option(
            "--workspace-bridge",
            envvar="DOCKYARD_WORKSPACE_BRIDGE",
            help="Egress-all workspaces: shared (one bridge, veths plugged in by the server; needs root on the "
            "engine's host), own (a Docker network each), or auto (shared where possible).",
        ),
    ] = "auto",
    provisioner_workers: Annotated[
        str,
        typer.Option(
            "--provisioner-workers",
            envvar="DOCKYARD_PROVISIONER_WORKERS",
            help="Build workers inside the server: auto (32 per CPU, 16 to 64), a number, or 0 when "
            "`dockyard provisioner` processes run them.",
        ),
    ] = "auto",
    trusted_proxies: Annotated[
        int,
        typer.Option(
            "--trusted-proxies",
            envvar="DOCKYARD_TRUSTED_PROXIES",
            help="Number of reverse proxies whose X-Forwarded-For to trust.",
        ),
    ] = 0,
    ssh_listen: Annotated[
        str,
        typer.Option(
            "--ssh-listen",
            envvar="DOCKYARD_SSH_LISTEN",
            help="HOST:PORT for the SSH gateway ('' to turn it off; `dockyard ssh --stdio` still works).",
        ),
    ] = "127.0.0.1:2222",
    ssh_hostname: Annotated[
        str,
        typer.Option(
            "--ssh-hostname",
            envvar="DOCKYARD_SSH_HOSTNAME",
            help="Host name clients reach the SSH gateway by (default: the --ssh-listen host).",
        ),
    ] = "",
    warm_networks: Annotated[
        str,
        typer.Option(
            "--warm-networks",
            envvar="DOCKYARD_WARM_NETWORKS",
            help="Workspace networks made ahead of demand: N of each class, or open=N,internal=M (0: none).",
        ),
    ] = "16",
    access_url: Annotated[
        str,
        typer.Option(
            "--access-url",
            envvar="DOCKYARD_ACCESS_URL",
            help="The URL users reach the server by (e.g. behind a proxy); its origin may use session cookies.",
        ),
    ] = "",
    wildcard_access_url: Annotated[
        str,
        typer.Option(
            "--wildcard-access-url",
            envvar="DOCKYARD_WILDCARD_ACCESS_URL",
            help="A wildcard host (e.g. '*.apps.example' or 'http://*.apps.example:8080') whose subdomains serve "
            "workspace apps on their own origins.",
        ),
    ] = "",
    allowed_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-origin",
            envvar="DOCKYARD_ALLOWED_ORIGINS",
            help="Another origin (scheme://host[:port]) allowed to send cookie-authenticated requests; repeat.",
        ),
    ] = None,
    metrics_token: Annotated[
        str,
        typer.Option(
            "--metrics-token",
            envvar="DOCKYARD_METRICS_TOKEN",
            help="Require `Authorization: Bearer TOKEN` on /metrics (prefer the environment variable).",
            show_default=False,
        ),
    ] = "",
    allow_open_data_dir: Annotated[
        bool,
        typer.Option(
            "--allow-open-data-dir",
            envvar="DOCKYARD_ALLOW_OPEN_DATA_DIR",
            help="Start even if other local users can enter the data dir (it holds secrets).",
        ),
    ] = False,
    agent_url: Annotated[
        str,
        typer.Option(
            "--agent-url",
            envvar="DOCKYARD_AGENT_URL",
            help="The server's URL as workspace containers reach it (several replicas comma-separated): "
            "agents of workspaces with egress then dial it instead of their unix socket.",
        ),
    ] = "",
    relay_url: Annotated[
        str,
        typer.Option(
            "--relay-url",
            envvar="DOCKYARD_RELAY_URL",
            help="This replica's URL as other replicas reach it, to relay streams to agents it holds "
            "(default: from --listen).",
        ),
    ] = "",
    egress_hosts: Annotated[
        list[str] | None,
        typer.Option(
            "--egress-host",
            envvar="DOCKYARD_EGRESS_HOSTS",
            help="NAME=IPV4: a static entry the egress proxy resolves before the host's resolver "
            "(repeatable, or comma-separated).",
            show_default=False,
        ),
    ] = None,
    egress_proxy_port: Annotated[
        int,
        typer.Option(
            "--egress-proxy-port",
            envvar="DOCKYARD_EGRESS_PROXY_PORT",
            min=1,
            max=65535,
            help="The egress proxy's port on the gateway address of each allowlist workspace.",
        ),
    ] = 3128,
    egress_intercept_port: Annotated[
        int,
        typer.Option(
            "--egress-intercept-port",
            envvar="DOCKYARD_EGRESS_INTERCEPT_PORT",
            min=1,
            max=65535,
            help="The port on each allowlist workspace's gateway address where the host firewall redirects "
            "the workspace's other TCP connections (checked by TLS SNI, HTTP Host or address).",
        ),
    ] = 3129,
    kubeconfig: kubeflags.Kubeconfig = None,
    namespace: kubeflags.Namespace = "dockyard-workspaces",
    storage_class: kubeflags.StorageClass = "dockyard-local",
    runtime_class: kubeflags.RuntimeClass = "",
    image_pull_secrets: kubeflags.PullSecrets = None,
    kubernetes_host_paths: kubeflags.HostPaths = False,
    kubernetes_allow_privileged: kubeflags.AllowPrivileged = False,
    kubernetes_policies_enforced: kubeflags.PoliciesEnforced = False,
    deployment_id: kubeflags.DeploymentId = "",
    devcontainer_host_binds: Annotated[
        list[str] | None,
        typer.Option(
            "--devcontainer-allow-host-bind",
            envvar="DOCKYARD_DEVCONTAINER_ALLOW_HOST_BIND",
            help="A host folder that dev container `mounts` may bind (it and what is under it; repeatable). "
            "Binds from the host are refused by default.",
        ),
    ] = None,
    outbound_deny: OutboundDeny = None,
    git_mirrors: GitMirrors = True,
) -> None:
    """Run the Dockyard control plane (API server)."""
    import uvicorn

    from dockyard import datadir, logs
    from dockyard.api.app import create_app
    from dockyard.api.origins import parse_origin
    from dockyard.apps.routing import Wildcard
    from dockyard.warmpool.pool import parse_sizes

    try:
        warm_sizes = parse_sizes(warm_networks)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--warm-networks") from None
    workers = _workers(provisioner_workers, "--provisioner-workers")
    _bridge_mode(workspace_bridge)
    origins = _entries(allowed_origins)
    for value, hint in [(access_url, "--access-url"), *((o, "--allowed-origin") for o in origins)]:
        if value and parse_origin(value.strip()) is None:
            raise typer.BadParameter(f"{value!r} is not scheme://host[:port]", param_hint=hint)
    if wildcard_access_url:
        try:
            Wildcard.parse(wildcard_access_url)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--wildcard-access-url") from None
    denied = _outbound_deny(outbound_deny)
    hosts: dict[str, str] = {}
    for entry in _entries(egress_hosts):
        name, _, address = entry.partition("=")
        try:
            hosts[name.strip().lower()] = str(ipaddress.IPv4Address(address.strip()))
        except ValueError:
            raise typer.BadParameter(f"{entry!r} is not NAME=IPV4", param_hint="--egress-host") from None
    logs.configure(log_format)
    settings = Settings(
        egress_hosts=hosts,
        egress_proxy_port=egress_proxy_port,
        egress_intercept_port=egress_intercept_port,
        wildcard_access_url=wildcard_access_url.strip(),
        listen=listen,
        data_dir=data_dir,
        database_url=database_url,
        access_log=access_log,
        log_format=log_format,
        trusted_proxies=trusted_proxies,
        runtime=runtime,
        provisioner_workers=workers,
        workspace_subnets=workspace_subnets,
        workspace_bridge=workspace_bridge,
        ssh_listen=ssh_listen,
        ssh_hostname=ssh_hostname,
        warm_networks=warm_sizes,
        access_url=access_url.strip(),
        allowed_origins=origins,
        metrics_token=metrics_token,
        allow_open_data_dir=allow_open_data_dir,
        agent_url=agent_url.strip(),
        deployment_id=deployment_id,
        relay_url=relay_url.strip(),
        kubeconfig=kubeconfig,
        kubernetes_namespace=namespace,
        kubernetes_storage_class=storage_class,
        kubernetes_runtime_class=runtime_class,
        kubernetes_image_pull_secrets=_entries(image_pull_secrets),
        kubernetes_host_paths=kubernetes_host_paths,
        kubernetes_allow_privileged=kubernetes_allow_privileged,
        kubernetes_policies_enforced=kubernetes_policies_enforced,
        devcontainer_host_binds=_entries(devcontainer_host_binds),
        outbound_deny=denied,
        git_mirrors=git_mirrors,
    )
    try:
        host, port = settings.host_port
    except ValueError:
        raise typer.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen") from None
    try:
        warning = datadir.prepare(settings.data_dir, allow_open=allow_open_data_dir)
    except datadir.DataDirOpen as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if warning is not None:
        logs.get("dockyard.server").warning(f"INSECURE: {warning}", data_dir=str(settings.data_dir))
    from dockyard.store.keys import DeploymentIdMismatch

    try:
        app = create_app(settings)
    except DeploymentIdMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    # Everything allocated so far lives as long as the process; freezing it keeps the collector from
    # rescanning it, and a higher first threshold trades a little memory for fewer pauses under load.
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, 20, 20)
    logs.get("dockyard.server").info(
        "listening", url=f"http://{host}:{port}", data_dir=str(settings.data_dir)
    )
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, server_header=False, proxy_headers=False
    )


@db_app.command("migrate")
def migrate_command(data_dir: DataDir = default_data_dir(), database_url: DatabaseUrl = None) -> None:
    """Apply database migrations and exit."""
    from dockyard import datadir
    from dockyard.store.db import make_engine
    from dockyard.store.migrate import migrate

    settings = Settings(data_dir=data_dir, database_url=database_url)
    # Migrating is a one-off by an operator: a warning is enough here; the server refuses to run on it.
    warning = datadir.prepare(settings.data_dir, allow_open=True)
    if warning is not None:
        typer.echo(f"warning: {warning}", err=True)
    datadir.protect(settings.data_dir, database_url=settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    before, after = migrate(engine)
    engine.dispose()
    typer.echo(
        f"database at {after}" + (f" (was {before or 'empty'})" if before != after else " (up to date)"),
        err=True,
    )


def provisioner(
    data_dir: DataDir = default_data_dir(),
    database_url: DatabaseUrl = None,
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime", envvar="DOCKYARD_RUNTIME", help="Where workspaces run: docker or kubernetes."
        ),
    ] = "docker",
    workspace_subnets: Annotated[
        str,
        typer.Option("--workspace-subnets", envvar="DOCKYARD_WORKSPACE_SUBNETS", help="As for the server."),
    ] = "10.213.0.0/16",
    workspace_bridge: Annotated[
        str,
        typer.Option("--workspace-bridge", envvar="DOCKYARD_WORKSPACE_BRIDGE", help="As for the server."),
    ] = "auto",
    workers: Annotated[
        str,
        typer.Option(
            "--workers",
            envvar="DOCKYARD_PROVISIONER_WORKERS",
            help="Concurrent builds: auto (32 per CPU, 16 to 64) or a number.",
        ),
    ] = "auto",
    log_format: Annotated[
        str, typer.Option("--log-format", envvar="DOCKYARD_LOG_FORMAT", help="auto, json or console.")
    ] = "auto",
    agent_url: Annotated[
        str,
        typer.Option("--agent-url", envvar="DOCKYARD_AGENT_URL", help="As for the server."),
    ] = "",
    kubeconfig: kubeflags.Kubeconfig = None,
    namespace: kubeflags.Namespace = "dockyard-workspaces",
    storage_class: kubeflags.StorageClass = "dockyard-local",
    runtime_class: kubeflags.RuntimeClass = "",
    image_pull_secrets: kubeflags.PullSecrets = None,
    kubernetes_host_paths: kubeflags.HostPaths = False,
    kubernetes_allow_privileged: kubeflags.AllowPrivileged = False,
    kubernetes_policies_enforced: kubeflags.PoliciesEnforced = False,
    deployment_id: kubeflags.DeploymentId = "",
    outbound_deny: OutboundDeny = None,
    git_mirrors: GitMirrors = True,
) -> None:
    """Run provisioner workers alone, against the same database as the server."""
    import signal
    import threading

    from dockyard import logs
    from dockyard.events import Bus, make_pubsub
    from dockyard.gitauth import mirrors
    from dockyard.lifecycle.runner import Background
    from dockyard.provisioner.sizing import worker_count
    from dockyard.runtimes.factory import runtime_for
    from dockyard.store.db import libpq_url, make_engine, make_sessionmaker
    from dockyard.store.migrate import current_revision, head_revision
    from dockyard.templates.devcontainer import oci as oci_features
    from dockyard.tunnel.install import install_agent
    from dockyard.tunnel.links import AgentLinks

    count = worker_count(_workers(workers, "--workers"))
    _bridge_mode(workspace_bridge)
    denied = _outbound_deny(outbound_deny)
    if count < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--workers")
    logs.configure(log_format)
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        runtime=runtime,
        workspace_subnets=workspace_subnets,
        workspace_bridge=workspace_bridge,
        kubeconfig=kubeconfig,
        kubernetes_namespace=namespace,
        kubernetes_storage_class=storage_class,
        kubernetes_runtime_class=runtime_class,
        kubernetes_image_pull_secrets=_entries(image_pull_secrets),
        kubernetes_host_paths=kubernetes_host_paths,
        kubernetes_allow_privileged=kubernetes_allow_privileged,
        kubernetes_policies_enforced=kubernetes_policies_enforced,
        agent_url=agent_url.strip(),
        deployment_id=deployment_id,
        outbound_deny=denied,
        git_mirrors=git_mirrors,
    )
    # Workspaces this process starts mount the agent from its own data dir (another host's, or a fresh one).
    install_agent(settings.agent_dir)
    # A workspace start reads its dev container plan again, OCI features included, as the server does.
    oci_features.set_cache_dir(Path(settings.data_dir) / "devcontainer-features")
    oci_features.set_outbound(settings.outbound)
    engine = make_engine(settings.resolved_database_url, pool_size=count)
    if current_revision(engine) != head_revision():
        typer.echo(
            "error: the database is not migrated; start the server or run `dockyard db migrate`", err=True
        )
        raise typer.Exit(1)
    from dockyard.egress import service as egress_service
    from dockyard.store import keys

    # The pubsub tells this process's workers about builds queued by any server, and tells waiting requests on
    # every server about this process's builds.
    bus = Bus(make_pubsub(libpq_url(settings.resolved_database_url)))
    sessions = make_sessionmaker(engine, bus=bus)
    engine_runtime = runtime_for(settings)
    with sessions() as db:
        try:
            engine_runtime.bind_deployment(keys.deployment_id(db, configured=settings.deployment_id))
        except keys.DeploymentIdMismatch as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    # The server runs the lifecycle loops; extra provisioner processes only take builds off the queue.
    background = Background(
        sessions,
        engine_runtime,
        workers=count,
        lifecycle=False,
        agent_dir=settings.agent_dir,
        agent_links=AgentLinks(settings.agent_links_dir),
        data_dir=settings.data_dir,
        agent_url=settings.agent_url,
        egress=egress_service.start(sessions, settings),
        mirrors=mirrors.of(settings),
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    background.start()
    logs.get("dockyard.provisioner").info("provisioner started", workers=count, runtime=runtime)
    stopped.wait()
    background.stop()
    bus.close()
    engine.dispose()


def gateway(
    listen: Annotated[
        str, typer.Option("--listen", envvar="DOCKYARD_SSH_LISTEN", help="HOST:PORT for the SSH gateway.")
    ] = "127.0.0.1:2222",
    url: Annotated[
        str,
        typer.Option("--url", envvar="DOCKYARD_URL", help="The Dockyard server that the agents connect to."),
    ] = "http://127.0.0.1:3000",
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="DOCKYARD_GATEWAY_TOKEN_FILE",
            help="File holding an API token with deployment:admin (default: $DOCKYARD_GATEWAY_TOKEN).",
        ),
    ] = None,
    data_dir: DataDir = default_data_dir(),
    database_url: DatabaseUrl = None,
    log_format: Annotated[
        str, typer.Option("--log-format", envvar="DOCKYARD_LOG_FORMAT", help="auto, json or console.")
    ] = "auto",
) -> None:
    """Run the SSH gateway alone, against the same database as the server and reaching agents through it."""
    import asyncio
    import os

    from dockyard import logs
    from dockyard.accounts import tokens
    from dockyard.errors import DockyardError
    from dockyard.gateway import ca
    from dockyard.store.db import make_engine, make_sessionmaker
    from dockyard.store.migrate import current_revision, head_revision
    from dockyard_sdk import ApiError, Client
    from dockyard_sdk.errors import ConnectionFailed
    from dockyard_sdk.models import Scope

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(1)

    logs.configure(log_format)
    try:
        ca.parse_listen(listen)
    except ValueError:
        raise typer.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen") from None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise fail(f"cannot read the token file: {exc}") from None
    else:
        token = os.environ.get("DOCKYARD_GATEWAY_TOKEN", "").strip()
    if not token:
        raise fail(
            "the gateway needs an API token with deployment:admin (--token-file or DOCKYARD_GATEWAY_TOKEN)"
        )
    settings = Settings(
        data_dir=data_dir, database_url=database_url, ssh_listen=listen, log_format=log_format
    )
    engine = make_engine(settings.resolved_database_url)
    if current_revision(engine) != head_revision():
        raise fail("the database is not migrated; start the server or run `dockyard db migrate`")
    sessions = make_sessionmaker(engine)
    try:
        with Client(url, token) as client:
            client.me()
    except ConnectionFailed as exc:
        raise fail(f"cannot reach the Dockyard server at {url}: {exc}") from None
    except ApiError as exc:
        raise fail(f"the server refused the gateway's token: {exc.message}") from None
    try:
        # The server just accepted the token; the database must know it too, or the two are not one deployment.
        with sessions() as db:
            tokens.authenticate(db, token).require(Scope.DEPLOYMENT_ADMIN)
    except DockyardError as exc:
        raise fail(f"the gateway's token cannot be used: {exc.message} {exc.detail}".strip()) from None
    try:
        asyncio.run(_serve_gateway(settings, sessions, url, token))
    except OSError as exc:
        raise fail(f"cannot listen on {listen}: {exc}") from None
    finally:
        engine.dispose()


async def _serve_gateway(settings: Settings, sessions: sessionmaker[Session], url: str, token: str) -> None:
    import asyncio
    import signal

    from dockyard import logs
    from dockyard.gateway.server import Gateway
    from dockyard.tunnel.remote import RemoteHub

    hub = RemoteHub(sessions, url, token)
    await hub.start()
    gateway = Gateway(sessions, hub, settings)
    try:
        await gateway.start()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        logs.get("dockyard.gateway").info("ssh gateway started", address=settings.ssh_listen, server=url)
        await stopped.wait()
    finally:
        await gateway.close()
        await hub.close()


def _bridge_mode(value: str) -> None:
    from dockyard.runtimes.docker.bridge import MODES

    if value not in MODES:
        raise typer.BadParameter(
            f"{value!r} is not one of {', '.join(MODES)}", param_hint="--workspace-bridge"
        )


def _outbound_deny(values: list[str] | None) -> list[str]:
    from dockyard.outbound import parse_networks

    denied = _entries(values)
    try:
        parse_networks(denied)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--outbound-deny") from None
    return denied


def _entries(values: list[str] | None) -> list[str]:
    """A repeatable option's values, each of which may also list several, comma-separated."""
    return [entry.strip() for value in values or [] for entry in value.split(",") if entry.strip()]


def _workers(text: str, option: str) -> int | None:
    from dockyard.provisioner.sizing import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None

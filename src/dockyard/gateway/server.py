"""The SSH gateway: asyncssh on `--ssh-listen`, and on sockets handed over by the WebSocket route.

One `_Connection` per SSH connection authenticates the client (registered key or Dockyard certificate),
resolves the SSH user name to a workspace on the first session or forward, starts the workspace if needed, and
carries each channel to an agent stream (`gateway/sessions.py`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import asyncssh
from sqlalchemy.orm import Session, sessionmaker

from dockyard import logs
from dockyard.accounts import sshkeys
from dockyard.accounts.limits import AuthLimiter, Verdict
from dockyard.config import Settings
from dockyard.errors import DockyardError, Forbidden, NotFound
from dockyard.gateway import auth, ca, keys
from dockyard.gateway.auth import Identity, Refused
from dockyard.gateway.sessions import ForwardSession, SessionRefused, WorkspaceSession
from dockyard.tunnel import bridge, connect, state
from dockyard.tunnel.frames import FrameStream, ProtocolError
from dockyard.workspaces import service as workspaces
from dockyard.workspaces.status import derive
from dockyard_sdk import models as wire

log = logs.get(__name__)

LOGIN_TIMEOUT = 30.0
KEEPALIVE_INTERVAL = 30.0
KEEPALIVE_COUNT_MAX = 3
# A deep window keeps a fast link busy across round trips; asyncssh allocates nothing up front for it.
WINDOW = 8 * 1024 * 1024
DIAL_ANSWER_TIMEOUT = 15.0
# OpenSSH clients pick the first of their own list that we offer. Leaving chacha20-poly1305 out steers them to
# AES (AES-NI through OpenSSL), which is about twice as fast in asyncssh; AES-CTR stays for old clients.
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]
_STARTABLE = {wire.WorkspaceStatus.STOPPED, wire.WorkspaceStatus.CANCELED, wire.WorkspaceStatus.FAILED}
# Keys one connection may offer before it is cut off (OpenSSH's MaxAuthTries is 6; agents hold a few keys).
MAX_KEYS_PER_CONNECTION = 10


class Gateway:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        hub: connect.Hub,
        settings: Settings,
        *,
        limiter: AuthLimiter | None = None,
    ) -> None:
        self.sessions = sessions
        self.hub = hub
        self.settings = settings
        # Shared with the API's password logins when both run in one process.
        self.limiter = limiter or AuthLimiter()
        self._authority: ca.Authority | None = None
        self._options: asyncssh.SSHServerConnectionOptions | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.connections: set[_Connection] = set()
        self._tasks: set[asyncio.Future[Any]] = set()

    @property
    def authority(self) -> ca.Authority:
        if self._authority is None:
            raise RuntimeError("the SSH gateway has not been started")
        return self._authority

    def info(self) -> wire.SshGateway:
        return ca.gateway_info(self.settings, self.authority)

    async def start(self) -> None:
        self._authority = await asyncio.to_thread(self._load_authority)
        # asyncssh logs every channel at INFO; the gateway logs what an operator needs itself.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        self._options = asyncssh.SSHServerConnectionOptions(
            config=None,
            server_host_keys=[(self._authority.host_key, self._authority.host_certificate)],
            # A certificate's principal is a Dockyard user while the SSH user name names a workspace, so
            # asyncssh must not match the two: `principals="*"` accepts any principal here, and
            # `auth.identify_certificate` checks the principal against the key id and the token instead.
            authorized_client_keys=asyncssh.import_authorized_keys(
                f'cert-authority,principals="*" {self._authority.ca_public_key}\n'
            ),
            public_key_auth=True,
            password_auth=False,
            kbdint_auth=False,
            host_based_auth=False,
            gss_auth=False,
            gss_kex=False,
            # Forwarded agents and X11 would open sockets on the control plane's host, not in the workspace.
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            line_editor=False,
            encoding=None,
            encryption_algs=ENCRYPTION_ALGS,
            window=WINDOW,
            login_timeout=LOGIN_TIMEOUT,
            keepalive_interval=KEEPALIVE_INTERVAL,
            keepalive_count_max=KEEPALIVE_COUNT_MAX,
        )
        if self.settings.ssh_listen:
            host, port = ca.parse_listen(self.settings.ssh_listen)
            try:
                self._acceptor = await asyncssh.listen(
                    host, port, options=self._options, server_factory=self._factory(None), reuse_address=True
                )
            except OSError as exc:
                raise RuntimeError(
                    f"the SSH gateway cannot listen on {self.settings.ssh_listen}: {exc.strerror or exc} "
                    "(choose another address with --ssh-listen, or --ssh-listen '' to turn the listener off)"
                ) from exc
            log.info("ssh gateway listening", address=self.settings.ssh_listen)

    def _load_authority(self) -> ca.Authority:
        with self.sessions() as db:
            return ca.load(db)

    def _factory(self, pinned: str | None, source: str = "") -> Callable[[], asyncssh.SSHServer]:
        return lambda: _Connection(self, pinned, source)

    async def serve_socket(
        self, sock: socket.socket, *, workspace_id: str | None = None, source: str = ""
    ) -> None:
        """Run one SSH connection on `sock` until it ends, and let go of `sock` (its caller must not close it).
        With `workspace_id` that workspace is the target, whatever the SSH user name (the WebSocket route
        already chose it); `source` is the address of the client behind the socket, for the abuse limits."""
        if self._options is None:
            raise RuntimeError("the SSH gateway has not been started")
        inode = os.fstat(sock.fileno()).st_ino
        try:
            conn = await asyncssh.run_server(
                sock, options=self._options, server_factory=self._factory(workspace_id, source)
            )
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            log.info("ssh connection ended before login", error=str(exc) or exc.__class__.__name__)
            return
        else:
            await conn.wait_closed()
        finally:
            let_go(sock, inode)

    async def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        for connection in list(self.connections):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- database work, run in threads ------------------------------------------------------------------------

    def identify(self, key_data: bytes) -> Identity:
        with self.sessions() as db:
            return auth.identify(db, self.authority.ca, key_data)

    def still_valid(self, identity: Identity) -> bool:
        with self.sessions() as db:
            return auth.still_valid(db, identity)

    def resolve(
        self, identity: Identity, ssh_user: str, pinned: str | None
    ) -> tuple[auth.Target, str | None]:
        """The target, and a progress line when it has to be started or waited for first."""
        with self.sessions() as db:
            target = auth.resolve(db, identity.actor, ssh_user, pinned=pinned)
            if self.hub.connected(target.workspace_id):
                return target, None
            loaded = workspaces.load_id(db, target.workspace_id)
            status, _ = derive(loaded.workspace, loaded.build)
        if status in _STARTABLE:
            return target, f"workspace {target.label} is {status.value}; starting it…"
        return target, f"waiting for workspace {target.label} ({status.value})…"

    def mark_key_used(self, key_id: str) -> None:
        with self.sessions() as db:
            sshkeys.mark_used(db, key_id)

    def audit_failure(self, source: str, account: str, *, status_code: int, detail: dict[str, Any]) -> None:
        with self.sessions() as db:
            auth.record_failure(db, source, account, status_code=status_code, detail=detail)


class _Connection(asyncssh.SSHServer):
    def __init__(self, gateway: Gateway, pinned: str | None, source: str = "") -> None:
        self._gateway = gateway
        self._pinned = pinned
        self._conn: asyncssh.SSHServerConnection | None = None
        self._username = ""
        self._peer = ""
        # The client's address, for the abuse limits (the peer's host; for a WebSocket, the API client's).
        self._source = source
        self._began = False
        self._refused_keys = 0
        # The Dockyard user the last refused or unproven credential belonged to, when it named one.
        self._account: str | None = None
        self._candidate: tuple[bytes, Identity] | None = None
        self._identity: Identity | None = None
        self._workspace_id: str | None = None
        # Marks the workspace active for as long as this SSH connection has reached it (tunnel/bridge.py).
        self._heartbeat: asyncio.Task[None] | None = None

    # --- authentication ---------------------------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._gateway.connections.add(self)
        peer = conn.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "websocket"
        if not self._source:
            self._source = str(peer[0]) if isinstance(peer, tuple) and peer else "websocket"
        check = conn.validate_public_key

        # asyncssh shows SSHServer callbacks only the CA key of a certificate, never the certificate with its
        # principals and key id. Every offered key and certificate passes through this connection method
        # first, so wrapping it is the one place that sees the credential and whether its signature held.
        async def validate(username: str, key_data: bytes, msg: bytes, signature: bytes) -> bool:
            identity = await self._identify(key_data)
            if identity is None:
                self._key_refused()
                return False
            valid = await check(username, key_data, msg, signature)
            if valid and msg:
                self._identity = identity
            elif msg:
                # A registered key or our certificate without its private key: someone has the public half.
                self._account = identity.actor.username
                self._key_refused()
            return valid

        conn.validate_public_key = validate  # type: ignore[method-assign]

    async def _identify(self, key_data: bytes) -> Identity | None:
        if self._candidate is not None and self._candidate[0] == key_data:
            return self._candidate[1]
        try:
            identity = await asyncio.to_thread(self._gateway.identify, key_data)
        except Refused as exc:
            log.info("ssh key refused", peer=self._peer, user=self._username, reason=str(exc))
            return None
        account = identity.actor.username
        verdict = self._gateway.limiter.check(source=self._source, account=account)
        if verdict.refused:
            self._refuse(verdict, account)
            return None
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        self._candidate = (key_data, identity)
        return identity

    def _key_refused(self) -> None:
        self._refused_keys += 1
        if self._refused_keys >= MAX_KEYS_PER_CONNECTION and self._conn is not None:
            self._conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                f"dockyard: too many authentication attempts ({self._refused_keys}) on one connection",
            )

    def _refuse(self, verdict: Verdict, account: str | None) -> None:
        """Cut the connection off with the reason the client shows: too many recent failures."""
        seconds = max(1, math.ceil(verdict.retry_after))
        log.warning("ssh login refused", peer=self._peer, reason=verdict.reason, retry_after=seconds)
        if verdict.announce:
            self._gateway.spawn(
                asyncio.to_thread(
                    self._gateway.audit_failure,
                    self._source,
                    account or "",
                    status_code=429,
                    detail={"reason": verdict.reason, "retry_after": seconds},
                )
            )
        # Counted once, below, as the refusal it is; the disconnect must not count again.
        self._began = False
        if self._conn is not None:
            self._conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                f"dockyard: too many failed authentications from your address; try again in {seconds} s",
            )

    def begin_auth(self, username: str) -> bool:
        self._username = username
        verdict = self._gateway.limiter.check(source=self._source)
        if verdict.refused:
            self._refuse(verdict, None)
            return True
        self._began = True
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Reached for plain keys only, after `_identify` found this one registered.
        candidate = self._candidate[1] if self._candidate is not None else None
        return (
            candidate is not None
            and candidate.method == "publickey"
            and candidate.fingerprint == keys.fingerprint(key)
        )

    def auth_completed(self) -> None:
        identity = self._identity
        assert identity is not None
        self._gateway.limiter.succeeded(source=self._source, account=identity.actor.username)
        log.info(
            "ssh login",
            peer=self._peer,
            user=identity.actor.username,
            method=identity.method,
            fingerprint=identity.fingerprint,
            target=self._pinned or self._username,
        )
        if identity.ssh_key_id is not None:
            self._gateway.spawn(asyncio.to_thread(self._gateway.mark_key_used, identity.ssh_key_id))

    def connection_lost(self, exc: Exception | None) -> None:
        self._gateway.connections.discard(self)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._began and self._identity is None:
            # One failure per connection that tried and never got in (each refused key counts, so that one
            # connection cannot try many for the price of one); a successful login costs nothing.
            account = self._account
            self._gateway.limiter.failed(
                source=self._source, account=account, count=max(1, self._refused_keys)
            )
            if account is not None:
                self._gateway.spawn(
                    asyncio.to_thread(
                        self._gateway.audit_failure,
                        self._source,
                        account,
                        status_code=401,
                        detail={"reason": "credential not proven", "peer": self._peer},
                    )
                )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # --- what sessions and forwards need (sessions.Link) ------------------------------------------------------

    async def open_stream(
        self, kind: str, progress: Callable[[str], None] | None, **params: Any
    ) -> FrameStream:
        identity = self._identity
        if identity is None:
            raise SessionRefused("not authenticated")
        if not await asyncio.to_thread(self._gateway.still_valid, identity):
            raise SessionRefused(
                "your SSH key or token was revoked or expired; log in again (dockyard login)"
            )
        try:
            target, waiting = await asyncio.to_thread(
                self._gateway.resolve, identity, self._username, self._pinned
            )
        except (NotFound, Forbidden) as exc:
            raise SessionRefused(exc.message) from None
        hub = self._gateway.hub
        try:
            if waiting is not None:
                if progress is not None:
                    progress(waiting)
                await connect.ensure_ready(self._gateway.sessions, hub, identity.actor, target.workspace_id)
            self._workspace_id = target.workspace_id
            await asyncio.to_thread(
                state.record_use,
                self._gateway.sessions,
                identity.actor,
                target.workspace_id,
                "workspace.ssh",
                {"kind": kind, "peer": self._peer},
            )
            if self._heartbeat is None:
                reason = "port_forward" if kind == "dial" else "ssh"
                self._heartbeat = asyncio.ensure_future(
                    bridge.keep_active(self._gateway.sessions, target.workspace_id, reason)
                )
            return await hub.open(target.workspace_id, kind, **params)
        except DockyardError as exc:
            # Starting or reaching the workspace failed (a failed build, an agent that never connected, …):
            # the client gets the same message an API client would.
            raise SessionRefused(f"{exc.message} {exc.detail}".strip()) from None

    def activity(self) -> None:
        # Bytes flowing need no write of their own: the connection's heartbeat marks the workspace active
        # for as long as the connection is open, at most once every few seconds.
        return

    def refused(self) -> None:
        # Queued after the refusal's message and exit status, so the client sees both before the disconnect.
        if self._conn is not None:
            asyncio.get_running_loop().call_soon(self._conn.close)

    def environment(self) -> dict[str, str]:
        if self._conn is None:
            return {}
        peer = self._conn.get_extra_info("peername")
        local = self._conn.get_extra_info("sockname")
        if not (isinstance(peer, tuple) and isinstance(local, tuple) and len(peer) >= 2 and len(local) >= 2):
            return {}
        return {
            "SSH_CONNECTION": f"{peer[0]} {peer[1]} {local[0]} {local[1]}",
            "SSH_CLIENT": f"{peer[0]} {peer[1]} {local[1]}",
        }

    # --- channels ---------------------------------------------------------------------------------------------

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return WorkspaceSession(self)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Coroutine[Any, Any, ForwardSession]:
        return self._forward(dest_host, dest_port)

    async def _forward(self, host: str, port: int) -> ForwardSession:
        if not host or len(host) > 253 or not 0 < port < 65536:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED, f"invalid destination {host}:{port}"
            )
        try:
            stream = await self.open_stream("dial", None, host=host, port=port)
        except SessionRefused as exc:
            self.refused()
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"dockyard: {exc}"
            ) from None
        try:
            answer = await asyncio.wait_for(stream.read_json(), DIAL_ANSWER_TIMEOUT)
        except (TimeoutError, EOFError, ProtocolError, ValueError):
            answer = {"type": "error", "error": "the workspace's agent did not answer"}
        if answer.get("type") != "ok":
            await stream.close()
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_CONNECT_FAILED,
                f"dockyard: cannot connect to {host}:{port} in the workspace: {answer.get('error', '')}",
            )
        return ForwardSession(self, stream)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        # Remote forwarding would listen inside the workspace; the agent protocol has no such stream.
        return False


def let_go(sock: socket.socket, inode: int) -> None:
    """Close a socket handed to the event loop, unless the loop already closed its descriptor.

    uvloop (uvicorn's loop) closes the descriptor of a transport made from a socket object and then detaches
    the object, except when the connection fails right after it was made: asyncssh writes its version line
    in `connection_made`, and a client that hung up already makes that write fail. The object then still
    holds the number, and its finalizer would close it again later, whatever it has become by then (the
    SQLite database: "disk I/O error"; a connection to the engine: "Bad file descriptor"). Whether the number
    is still this socket tells the cases apart: the loop runs on this thread, so nothing reused it between
    the loop's close and this check unless the inode differs. tests/gateway/test_hangups.py holds to it.
    """
    fd = sock.fileno()
    if fd < 0:
        return
    try:
        ours = os.fstat(fd).st_ino == inode
    except OSError:
        ours = False
    if ours:
        sock.close()
    else:
        sock.detach()

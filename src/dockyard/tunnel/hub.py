"""The control plane's end of the agent protocol (docs/AGENT_PROTOCOL.md).

Agents dial the hub's socket in their workspace's private link folder (tunnel/links.py); the listener that
accepted a connection is its origin, the workspace the transport proves it comes from, and the token it presents
must name that same workspace. The first connection of an agent is its control connection: the hub keeps it,
pings it, and records what the agent reports (lifecycle, startup-script output, stats). A live control
connection is never displaced: a second hello for its workspace is refused unless the first one fails a ping.
Every client that needs a stream calls `open`, which asks the agent over the control connection to dial a new
connection for that stream, through the same private socket.

Agents may also dial over the network (`/api/v2/agents/link`, a WebSocket carrying the same bytes). There no
listener names the workspace, so `network_origin` derives it from the token and, where the runtime can tell
which address the workspace's connections come from, checks the connection's source address against it.

With several replicas, the one that admits an agent records that it holds it (tunnel/replicas.py); `open` on a
replica that does not hold the agent relays the stream through the one that does, so a client may arrive at any
replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dockyard import __version__
from dockyard import logs as logging
from dockyard.errors import Conflict
from dockyard.gitauth import proxy as gitproxy
from dockyard.gitauth.pktline import RefUpdate
from dockyard.outbound import OutboundPolicy
from dockyard.provisioner import events
from dockyard.tunnel import frames, relay, replicas, state, tokens
from dockyard.tunnel.frames import FrameStream, ProtocolError
from dockyard.tunnel.links import AgentLinks, Origin
from dockyard.tunnel.listeners import LinkSockets
from dockyard_sdk.streams import websocket_url

log = logging.get(__name__)

HELLO_TIMEOUT = 10.0
# How long a live control connection has to answer a ping before a newcomer from its workspace replaces it.
PROBE_TIMEOUT = 2.0
# Refusals are audited at most this often per workspace and reason, so a looping process cannot flood the log.
AUDIT_EVERY = 10.0
# How long a workspace's addresses, as the runtime reported them, are trusted before asking again. A mismatch
# always asks again, so a container restarted with a new address is never refused for a stale answer.
ADDRESS_TTL = 10.0
# How often the map of which replica holds which agent is re-read (a miss in `open` reads it at once).
HOLDERS_REFRESH = 0.5
# How long a stream waits for an agent whose replica died to come back (as tunnel/connect.CONNECT_GRACE).
RELAY_GRACE = 15.0

# The source addresses a workspace's connections may come from, or None where the runtime cannot tell.
Locate = Callable[[str], frozenset[str] | None]


class Refused(Exception):
    """A connection the hub turns away; the message goes to the agent and the audit log."""

    def __init__(self, reason: str, *, claimed: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed = claimed


class AgentUnavailable(Conflict):
    """The workspace's agent has no live connection to this server."""


class _SessionGone(AgentUnavailable):
    """The request was never sent: the agent's connection closed under it (the agent is re-dialing)."""


class _Unreachable(Exception):
    """The replica that holds an agent did not answer a relay."""


@dataclass
class AgentSession:
    workspace_id: str
    stream: FrameStream
    version: str
    origin: Origin
    connected_at: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    # Frames received so far; a probe looks for this to move after its ping.
    frames: int = 0
    closed: bool = False
    lifecycle: str = "created"
    welcome: dict[str, Any] = field(default_factory=dict)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.stream.send_json(message)

    def heard(self) -> None:
        self.frames += 1
        self.last_seen = time.monotonic()

    async def probe(self, timeout: float) -> bool:
        """Whether the connection answers a ping within `timeout` (a half-open one never does)."""
        before = self.frames
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.send({"type": "ping"}), timeout)
        except (TimeoutError, ConnectionError, OSError):
            return False
        while not self.closed and time.monotonic() < deadline:
            if self.frames > before:
                return True
            await asyncio.sleep(0.02)
        return False


class AgentHub:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        links: AgentLinks,
        *,
        heartbeat: float = 15.0,
        stats_interval: float = 15.0,
        open_timeout: float = 10.0,
        probe_timeout: float = PROBE_TIMEOUT,
        locate: Locate | None = None,
        relay_url: str = "",
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.locate = locate
        # This process among the replicas; without a relay URL it neither registers nor relays (one process).
        self.replica_id = replicas.new_replica_id()
        self.relay_url = relay_url
        # Where the git proxy may connect with a user's credential.
        self.outbound = outbound or OutboundPolicy()
        self._holders: dict[str, replicas.Holder] = {}
        # Replicas a relay could not reach lately (dead before their heartbeat went stale): not relayed to.
        self._unreachable: dict[str, float] = {}
        self._relay_key = b""
        self._addresses: dict[str, tuple[float, frozenset[str] | None]] = {}
        self.links = links
        self.heartbeat = heartbeat
        self.stats_interval = stats_interval
        self.open_timeout = open_timeout
        self.probe_timeout = probe_timeout
        self.sockets = LinkSockets(links, self._accept)
        self._agents: dict[str, AgentSession] = {}
        # Per workspace: one hello at a time, so two newcomers cannot both pass the liveness check, and the
        # connection state written in the order the connections came and went.
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, tuple[str, asyncio.Future[FrameStream]]] = {}
        self._audited: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._key: bytes = b""
        # Set by the application: dev container workspaces become ready when their lifecycle hooks say so.
        self.on_ready: Callable[[str], Awaitable[bool]] | None = None

    # --- serving ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._key = await asyncio.to_thread(self._load_key)
        if self.relay_url:
            await asyncio.to_thread(replicas.register, self.sessions, self.replica_id, self.relay_url)
            self._spawn(self._replica_loop())
        # Links of workspaces deleted while no server ran (a delete build removes its own).
        present = await asyncio.to_thread(self.links.workspace_ids)
        live = await asyncio.to_thread(state.live_workspaces, self.sessions, present)
        for workspace_id in present - live:
            await asyncio.to_thread(self.links.remove, workspace_id)
        await self.sockets.start()
        self._spawn(self.sockets.run())
        self._spawn(self._ping_loop())
        log.info("agent hub listening", links=str(self.links.root), workspaces=len(live))

    def _load_key(self) -> bytes:
        with self.sessions() as db:
            self._relay_key = replicas.load_key(db)
            return tokens.load_key(db)

    async def close(self) -> None:
        await self.sockets.close()
        for session in list(self._agents.values()):
            await session.stream.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.relay_url:
            # Other replicas stop relaying here at once instead of after our heartbeat goes stale.
            await asyncio.to_thread(replicas.unregister, self.sessions, self.replica_id)

    async def _replica_loop(self) -> None:
        beat = 0.0
        while True:
            try:
                if time.monotonic() - beat >= replicas.HEARTBEAT_INTERVAL:
                    await asyncio.to_thread(
                        replicas.heartbeat, self.sessions, self.replica_id, self.relay_url
                    )
                    beat = time.monotonic()
                self._holders = await asyncio.to_thread(replicas.holders, self.sessions)
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end the heartbeat
                log.warning("cannot refresh the replica registry", error=str(exc))
            await asyncio.sleep(HOLDERS_REFRESH)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def token_for(self, workspace_id: str) -> str:
        return tokens.issue(self._key, workspace_id)

    def connected(self, workspace_id: str) -> bool:
        """Whether this replica holds the agent, or another live replica does (then streams are relayed)."""
        if workspace_id in self._agents:
            return True
        return self._live_holder(workspace_id, self._holders) is not None

    async def tell(self, workspace_id: str, message: dict[str, Any]) -> bool:
        """Send a control message to an agent this replica holds; False when it holds none."""
        session = self._agents.get(workspace_id)
        if session is None or session.closed:
            return False
        await session.send(message)
        return True

    async def relay_message(self, workspace_id: str, kind: str, message: dict[str, Any]) -> bool:
        """Hand `message` to the replica that holds the workspace's agent, whose relay endpoint acts on `kind`
        (`claim`: tunnel/claims.py); False when no live replica holds it or the holder no longer does."""
        if not self.relay_url:
            return False
        holder = self._live_holder(workspace_id, self._holders)
        if holder is None:
            found = await asyncio.to_thread(replicas.holders, self.sessions, workspace_id)
            holder = self._live_holder(workspace_id, found)
        if holder is None:
            return False
        try:
            stream = await self._open_relayed(holder, workspace_id, kind, {"message": message})
        except _Unreachable as exc:
            self._unreachable[holder.replica_id] = time.monotonic()
            log.warning("the replica holding an agent did not answer", workspace=workspace_id, error=str(exc))
            return False
        except AgentUnavailable:
            return False  # it answered, but holds the agent no more
        try:
            # The holder answers one byte, then closes: 1 when its agent got the message.
            answer = await asyncio.wait_for(stream.reader.read(), self.open_timeout)
        except (TimeoutError, ConnectionError):
            return False
        finally:
            await stream.close()
        return answer == b"1"

    def verify_relay(self, token: str, workspace_id: str) -> str | None:
        """The replica that signed a relay token for this workspace, or None."""
        return replicas.verify_relay_token(self._relay_key, token, workspace_id)

    def connected_workspaces(self) -> set[str]:
        return set(self._agents)

    # --- opening streams -------------------------------------------------------------------------------------

    async def open(self, workspace_id: str, kind: str, **params: Any) -> FrameStream:
        """A stream of `kind` from the workspace's agent, held here or by another replica (relayed).

        When the replica holding the agent cannot be reached (it died a moment ago and its heartbeat is not
        stale yet), its agents are re-dialing: wait for this one to reappear here or on another replica.
        """
        if not self.relay_url:
            return await self.open_local(workspace_id, kind, **params)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RELAY_GRACE
        lost: str | None = None
        while True:
            if workspace_id in self._agents:
                try:
                    return await self.open_local(workspace_id, kind, **params)
                except _SessionGone as exc:
                    if loop.time() >= deadline:
                        raise
                    lost = str(exc)
                    await asyncio.sleep(0.1)
                    continue
            holder = self._live_holder(workspace_id, self._holders)
            if holder is None:
                # It may have connected since the last refresh.
                found = await asyncio.to_thread(replicas.holders, self.sessions, workspace_id)
                holder = self._live_holder(workspace_id, found)
                if holder is None and lost is None:
                    # Another request already found its holder dead: wait for the agent as that one does.
                    lost = self._skipped(workspace_id, found)
            if holder is not None:
                try:
                    return await self._open_relayed(holder, workspace_id, kind, params)
                except _Unreachable as exc:
                    self._unreachable[holder.replica_id] = time.monotonic()
                    lost = str(exc)
            elif lost is None:
                return await self.open_local(workspace_id, kind, **params)
            if loop.time() >= deadline:
                raise AgentUnavailable(
                    "The replica holding the workspace's agent cannot be reached.",
                    detail=f"{lost}; the agent did not reconnect within {RELAY_GRACE:.0f} s.",
                )
            await asyncio.sleep(0.1)

    def _skipped(self, workspace_id: str, known: dict[str, replicas.Holder]) -> str | None:
        """Why the workspace's holder is being skipped (it did not answer a moment ago), or None."""
        holder = known.get(workspace_id)
        if holder is None or holder.replica_id == self.replica_id:
            return None
        failed = self._unreachable.get(holder.replica_id)
        if failed is None or time.monotonic() - failed >= replicas.STALE_AFTER.total_seconds():
            return None
        return f"{holder.relay_url} did not answer"

    def _live_holder(self, workspace_id: str, known: dict[str, replicas.Holder]) -> replicas.Holder | None:
        holder = known.get(workspace_id)
        if holder is None or holder.replica_id == self.replica_id:
            return None
        failed = self._unreachable.get(holder.replica_id)
        if failed is not None and time.monotonic() - failed < replicas.STALE_AFTER.total_seconds():
            return None
        return holder

    async def _open_relayed(
        self, holder: replicas.Holder, workspace_id: str, kind: str, params: dict[str, Any]
    ) -> FrameStream:
        url = websocket_url(
            holder.relay_url,
            f"/api/v2/replicas/relay/{workspace_id}",
            {"kind": kind, "params": json.dumps(params, separators=(",", ":"))},
        )
        token = replicas.relay_token(self._relay_key, self.replica_id, workspace_id)
        try:
            return await relay.open_stream(
                url, token=token, user_agent=f"dockyard-relay/{__version__}", spawn=self._spawn
            )
        except relay.StreamRefused as exc:
            raise AgentUnavailable(
                "The workspace's agent is not connected.",
                detail=f"The replica holding it answered HTTP {exc.status}: {exc.body[:300]!r}.",
            ) from None
        except ConnectionError as exc:
            raise _Unreachable(f"{holder.relay_url}: {exc}") from None

    async def open_local(self, workspace_id: str, kind: str, **params: Any) -> FrameStream:
        """Ask the workspace's agent, held by this replica, for a stream of `kind`."""
        session = self._agents.get(workspace_id)
        if session is None:
            raise AgentUnavailable(
                "The workspace's agent is not connected.",
                detail="It connects a moment after the workspace starts; wait for the workspace to be ready.",
            )
        stream_id = secrets.token_urlsafe(18)
        future: asyncio.Future[FrameStream] = asyncio.get_running_loop().create_future()
        self._pending[stream_id] = (workspace_id, future)
        try:
            try:
                await session.send({"type": "open", "stream": stream_id, "kind": kind, **params})
            except ConnectionError as exc:
                raise _SessionGone(
                    "The workspace's agent connection closed.", detail="It is reconnecting; try again."
                ) from exc
            return await asyncio.wait_for(future, self.open_timeout)
        except (TimeoutError, ConnectionError, EOFError) as exc:
            raise AgentUnavailable(
                "The workspace's agent did not answer.",
                detail=f"No {kind} stream within {self.open_timeout} s.",
            ) from exc
        finally:
            self._pending.pop(stream_id, None)

    # --- connections from agents -----------------------------------------------------------------------------

    async def network_origin(self, token: str | None, address: str) -> Origin:
        """The origin of a connection that arrived over the network from `address` with `token`.

        The token names the workspace. Where the runtime knows the workspace's address, the connection must come
        from it: a token copied out of a workspace is then worth nothing anywhere else. Raises Refused (audited
        on the workspace the token names, when it names one).
        """
        claimed = tokens.verify(self._key, token) if token else None
        if claimed is None:
            raise Refused("unknown or revoked agent token")
        allowed = await self._workspace_addresses(claimed, fresh=False)
        if allowed is not None and address not in allowed:
            allowed = await self._workspace_addresses(claimed, fresh=True)
        if allowed is None:
            return Origin(claimed, "network (token only)")
        if address not in allowed:
            refusal = Refused(
                f"connection from {address or 'an unknown address'}, not from the workspace", claimed=claimed
            )
            await self._audit_refusal(Origin(claimed, f"network from {address}"), refusal)
            log.warning("agent connection refused", workspace=claimed, address=address, reason=refusal.reason)
            raise refusal
        return Origin(claimed, f"network from {address}")

    async def _workspace_addresses(self, workspace_id: str, *, fresh: bool) -> frozenset[str] | None:
        if self.locate is None:
            return None
        now = time.monotonic()
        cached = self._addresses.get(workspace_id)
        if not fresh and cached is not None and now - cached[0] < ADDRESS_TTL:
            return cached[1]
        addresses = await asyncio.to_thread(self.locate, workspace_id)
        if len(self._addresses) > 4096:
            self._addresses = {k: v for k, v in self._addresses.items() if now - v[0] < ADDRESS_TTL}
        self._addresses[workspace_id] = (now, addresses)
        return addresses

    def serve(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve a connection whose origin its transport established (here: the network link), in the
        background: an attached stream outlives its hello, in the hands of whoever opened it."""
        self._spawn(self._accept(origin, reader, writer))

    async def _accept(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        stream = FrameStream(reader, writer)
        try:
            first = await asyncio.wait_for(stream.read_json(), HELLO_TIMEOUT)
            kind = first.get("type")
            if kind == "hello":
                await self._control(origin, stream, first)
            elif kind == "attach":
                await self._attach(origin, stream, first)
            else:
                raise ProtocolError(f"unexpected first message {kind!r}")
        except Refused as exc:
            log.warning(
                "agent connection refused",
                origin=origin.describe(),
                reason=exc.reason,
                claimed=exc.claimed,
            )
            await self._audit_refusal(origin, exc)
            await stream.send_json({"type": "reject", "error": exc.reason})
            await stream.close()
        except (TimeoutError, EOFError, ConnectionError, ProtocolError, ValueError) as exc:
            log.info(
                "agent connection ended", origin=origin.describe(), error=str(exc) or exc.__class__.__name__
            )
            await stream.close()

    async def _audit_refusal(self, origin: Origin, refusal: Refused) -> None:
        key = (origin.workspace_id, refusal.reason)
        now = time.monotonic()
        if now - self._audited.get(key, -AUDIT_EVERY) < AUDIT_EVERY:
            return
        self._audited[key] = now
        if len(self._audited) > 4096:
            self._audited = {k: t for k, t in self._audited.items() if now - t < AUDIT_EVERY}
        await asyncio.to_thread(state.refused, self.sessions, origin, refusal.reason, claimed=refusal.claimed)

    def _lock(self, workspace_id: str) -> asyncio.Lock:
        return self._locks.setdefault(workspace_id, asyncio.Lock())

    def _authenticate(self, origin: Origin, message: dict[str, Any]) -> str:
        """The workspace a connection may act for: its origin's, and only if its token names that one too."""
        token = message.get("token")
        claimed = tokens.verify(self._key, token) if isinstance(token, str) else None
        if claimed is None:
            raise Refused("unknown or revoked agent token")
        if claimed != origin.workspace_id:
            # A token is not enough: it must come from where its workspace's agent lives.
            raise Refused("this agent token belongs to another workspace", claimed=claimed)
        return claimed

    async def _attach(self, origin: Origin, stream: FrameStream, message: dict[str, Any]) -> None:
        workspace_id = self._authenticate(origin, message)
        stream_id = str(message.get("stream", ""))
        pending = self._pending.get(stream_id)
        # A stream id is only good for the agent it was sent to: another workspace's agent cannot take it.
        if pending is None or workspace_id != pending[0] or pending[1].done():
            raise ProtocolError("attach to an unknown stream")
        pending[1].set_result(stream)

    async def _admit(self, origin: Origin, stream: FrameStream, hello: dict[str, Any]) -> AgentSession:
        workspace_id = self._authenticate(origin, hello)
        welcome = await asyncio.to_thread(state.welcome, self.sessions, workspace_id)
        if welcome is None:
            raise Refused("unknown or revoked agent token")
        async with self._lock(workspace_id):
            previous = self._agents.get(workspace_id)
            if previous is not None:
                if await previous.probe(self.probe_timeout):
                    raise Refused(
                        "another agent is already connected for this workspace", claimed=workspace_id
                    )
                # A restarted agent whose old connection is dead or half-open: the newcomer takes over.
                log.info("replacing an unresponsive agent connection", workspace=workspace_id)
                await previous.stream.close()
            session = AgentSession(workspace_id, stream, str(hello.get("version", ""))[:32], origin)
            session.welcome = {
                "type": "welcome",
                "workspace_id": workspace_id,
                **welcome,
                "heartbeat": self.heartbeat,
                "stats_interval": self.stats_interval,
            }
            # Welcomed before it is findable: a stream request that overtook the welcome (a client waiting for
            # this agent to come back from a dead replica) made the agent drop the new connection.
            await session.send(session.welcome)
            self._agents[workspace_id] = session
            try:
                await asyncio.to_thread(state.connected, self.sessions, workspace_id, session.version)
                if self.relay_url:
                    await asyncio.to_thread(replicas.hold, self.sessions, self.replica_id, workspace_id)
            except BaseException:
                del self._agents[workspace_id]
                raise
        return session

    async def _control(self, origin: Origin, stream: FrameStream, hello: dict[str, Any]) -> None:
        session = await self._admit(origin, stream, hello)
        workspace_id, version = session.workspace_id, session.version
        try:
            events.changed(self.sessions, workspace_id)
            log.info("agent connected", workspace=workspace_id, version=version, origin=origin.describe())
            while True:
                kind, payload = await stream.read()
                session.heard()
                if kind == frames.JSON:
                    await self._report(session, json.loads(payload))
        except (EOFError, ConnectionError):
            pass
        except (ProtocolError, ValueError) as exc:
            log.warning("agent sent a bad message", workspace=workspace_id, error=str(exc))
        finally:
            session.closed = True
            await stream.close()
            async with self._lock(workspace_id):
                if self._agents.get(workspace_id) is session:
                    del self._agents[workspace_id]
                    # Unless the agent is already back on another replica, which then holds it.
                    moved = self.relay_url and not await asyncio.to_thread(
                        replicas.release, self.sessions, self.replica_id, workspace_id
                    )
                    if not moved:
                        await asyncio.to_thread(state.disconnected, self.sessions, workspace_id)
                    events.changed(self.sessions, workspace_id)
                    log.info("agent disconnected", workspace=workspace_id, moved=bool(moved))

    async def _report(self, session: AgentSession, message: dict[str, Any]) -> None:
        kind = message.get("type")
        workspace_id = session.workspace_id
        if kind == "lifecycle":
            lifecycle = str(message.get("state", ""))
            exit_code = message.get("exit_code")
            error = message.get("error")
            session.lifecycle = lifecycle
            if lifecycle == "ready" and self.on_ready is not None and await self.on_ready(workspace_id):
                return  # dev container hooks run now, and their waitFor decides when the agent is ready
            await asyncio.to_thread(
                state.lifecycle,
                self.sessions,
                workspace_id,
                lifecycle,
                exit_code if isinstance(exit_code, int) else None,
                error=error if isinstance(error, str) else None,
            )
            events.changed(self.sessions, workspace_id)
        elif kind == "log":
            lines = message.get("lines")
            if isinstance(lines, list) and lines:
                source = str(message.get("source", "agent"))[:32]
                await asyncio.to_thread(
                    state.append_log, self.sessions, workspace_id, source, [str(line) for line in lines]
                )
        elif kind == "stats":
            await asyncio.to_thread(state.stats, self.sessions, workspace_id, message)
        elif kind == "task":
            await asyncio.to_thread(state.task, self.sessions, workspace_id, message)
            events.changed(self.sessions, workspace_id)
        elif kind == "git_credential":
            # Answered off the read loop: a slow database must not hold up the agent's other messages.
            self._spawn(self._git_credential(session, message))
        elif kind == "git_proxy":
            self._spawn(self._git_proxy(session, message))

    async def _git_credential(self, session: AgentSession, message: dict[str, Any]) -> None:
        answer = await asyncio.to_thread(
            state.git_credential,
            self.sessions,
            session.workspace_id,
            protocol=str(message.get("protocol", "")),
            host=str(message.get("host", "")),
        )
        with contextlib.suppress(ConnectionError, OSError):
            await session.send({"type": "git_credential", "id": str(message.get("id", "")), **answer})

    async def _git_proxy(self, session: AgentSession, message: dict[str, Any]) -> None:
        """Git in the workspace opened a connection to the agent's git proxy port: take a stream for it and
        serve git's smart HTTP on it here, where the credential is (gitauth/proxy.py)."""
        workspace_id = session.workspace_id
        connection = str(message.get("id", ""))[:32]
        try:
            stream = await self.open_local(workspace_id, "git_proxy", connection=connection)
        except AgentUnavailable as exc:
            log.info("git proxy: no stream from the agent", workspace=workspace_id, error=exc.message)
            return
        try:
            answer = await stream.read_json()
            if answer.get("type") != "ok":
                return
            upstream = await asyncio.to_thread(state.git_upstream, self.sessions, workspace_id)

            async def on_push(updates: tuple[RefUpdate, ...], refused: dict[str, str]) -> None:
                await asyncio.to_thread(state.git_push, self.sessions, workspace_id, updates, refused)

            await gitproxy.serve(
                stream.reader, stream.writer, upstream, on_push=on_push, outbound=self.outbound
            )
        except (EOFError, ConnectionError, ProtocolError, ValueError) as exc:
            log.info(
                "git proxy connection ended", workspace=workspace_id, error=str(exc) or type(exc).__name__
            )
        finally:
            await stream.close()

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            now = time.monotonic()
            for session in list(self._agents.values()):
                if now - session.last_seen > 2 * self.heartbeat + 1:
                    log.warning("agent stopped answering", workspace=session.workspace_id)
                    await session.stream.close()
                    continue
                try:
                    await asyncio.wait_for(session.send({"type": "ping"}), self.heartbeat)
                except (TimeoutError, ConnectionError, OSError):
                    await session.stream.close()

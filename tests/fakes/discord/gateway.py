"""Gateway half of the fake Discord: HELLO, heartbeats, IDENTIFY → READY + GUILD_CREATE, RESUME, op 7/9.

Why: discord.py's reconnect logic (resume after a drop, re-identify after an invalid session, replay of
missed events) is part of the bot's behaviour in production, so the fake drives it for real. Frames are
uncompressed JSON text: discord.py only inflates binary frames, whatever ``compress=`` it asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.fakes.discord.models import StoredMessage, iso

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

log = logging.getLogger(__name__)

GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
HISTORY_LIMIT = 1000


class Connection:
    """One websocket; a sender task writes queued frames in order so dispatch can stay synchronous."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.sender = asyncio.create_task(self._send_loop())
        self.session: Session | None = None

    async def _send_loop(self) -> None:
        while (frame := await self.queue.get()) is not None:
            try:
                await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return

    def put(self, payload: dict[str, Any]) -> None:
        self.queue.put_nowait(json.dumps(payload))

    async def close(self, code: int) -> None:
        self.queue.put_nowait(None)
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(self.sender, 2)
            await asyncio.wait_for(self.ws.close(code=code), 2)


@dataclass(eq=False)
class Session:
    id: str
    shard: tuple[int, int]
    intents: int
    seq: int = 0
    history: list[tuple[int, str]] = field(default_factory=list)
    conn: Connection | None = None

    def dispatch(self, event: str, data: Any) -> None:
        self.seq += 1
        frame = json.dumps({"op": 0, "s": self.seq, "t": event, "d": data})
        self.history = [*self.history[-HISTORY_LIMIT:], (self.seq, frame)]
        if self.conn is not None:
            self.conn.queue.put_nowait(frame)


class Gateway:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.sessions: dict[str, Session] = {}
        self.connections: list[Connection] = []
        self.received: list[dict[str, Any]] = []
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0
        self._session_counter = 0

    # ---------------------------------------------------------------- websocket handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("v") != "10" or request.query.get("encoding") != "json":
            return web.Response(status=400, text="expected ?v=10&encoding=json")
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = Connection(ws)
        self.connections.append(conn)
        conn.put({"op": 10, "d": {"heartbeat_interval": self.fake.heartbeat_interval}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                self.received.append(payload)
                close_code = self._on_frame(conn, payload)
                self.fake.notify()
                if close_code is not None:
                    await conn.close(close_code)
                    break
        finally:
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            conn.queue.put_nowait(None)
            if conn in self.connections:
                self.connections.remove(conn)
            self.fake.notify()
        return ws

    def _on_frame(self, conn: Connection, payload: dict[str, Any]) -> int | None:
        """Handle one client frame; returns a close code when Discord would close the socket."""
        op, d = payload.get("op"), payload.get("d")
        if op == 1:
            self.heartbeat_count += 1
            conn.put({"op": 11, "d": None, "s": None, "t": None})
            return None
        if op == 2:
            return self._identify(conn, d or {})
        if op == 6:
            return self._resume(conn, d or {})
        if conn.session is None:
            return 4003  # Not authenticated
        if op in (3, 4, 8):  # presence, voice state, request members: accepted, not simulated
            return None
        return 4001  # Unknown opcode

    def _identify(self, conn: Connection, d: dict[str, Any]) -> int | None:
        fake = self.fake
        if conn.session is not None:
            return 4005  # Already authenticated
        if d.get("token") != fake.token:
            return 4004
        if "intents" not in d:
            return 4013
        shard_given = "shard" in d
        shard_id, count = d.get("shard") or (0, 1)
        if not 0 <= shard_id < count:
            return 4010
        self.identify_count += 1
        self._session_counter += 1
        session = Session(f"fake-session-{self._session_counter}", (shard_id, count), int(d["intents"]))
        self.sessions[session.id] = session
        session.conn = conn
        conn.session = session
        guilds = [g for g in fake.guilds.values() if (g.id >> 22) % count == shard_id]
        ready: dict[str, Any] = {
            "v": 10,
            "user": fake.bot_user.payload() | {"verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "resume_gateway_url": fake.gateway_url,
            "application": {"id": str(fake.app_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "session_type": "normal",
        }
        if shard_given:
            ready["shard"] = [shard_id, count]
        session.dispatch("READY", ready)
        joined = iso(fake.clock.now())
        for g in guilds:
            session.dispatch("GUILD_CREATE", g.payload(joined))
        return None

    def _resume(self, conn: Connection, d: dict[str, Any]) -> int | None:
        session = self.sessions.get(str(d.get("session_id")))
        if session is None or d.get("token") != self.fake.token:
            conn.put({"op": 9, "d": False, "s": None, "t": None})
            return None
        self.resume_count += 1
        old = session.conn
        if old is not None and old is not conn:
            old.queue.put_nowait(None)
        session.conn = conn
        conn.session = session
        since = int(d.get("seq") or 0)
        for seq, frame in session.history:
            if seq > since:
                conn.queue.put_nowait(frame)
        session.dispatch("RESUMED", {})
        return None

    # ---------------------------------------------------------------- server-side actions

    def session_for(self, guild_id: int | None) -> Session:
        """The session of the shard that owns ``guild_id`` (DMs: shard 0), as Discord routes events."""
        if not self.sessions:
            raise RuntimeError("no gateway session: is the discord.py client connected to the fake?")
        for session in reversed(list(self.sessions.values())):
            shard_id, count = session.shard
            if ((guild_id or 0) >> 22) % count == shard_id:
                return session
        raise RuntimeError(f"no gateway session owns guild {guild_id}")

    def dispatch(self, event: str, data: Any, *, guild_id: int | None = None) -> None:
        self.session_for(guild_id).dispatch(event, data)

    def message_event(self, event: str, msg: StoredMessage) -> None:
        """MESSAGE_CREATE/UPDATE/DELETE as Discord sends them, if the intents ask for them."""
        if not self.sessions or msg.ephemeral:
            return
        session = self.session_for(msg.guild_id)
        needed = GUILD_MESSAGES if msg.guild_id else DIRECT_MESSAGES
        if not session.intents & needed:
            return
        if event == "MESSAGE_DELETE":
            data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id:
                data["guild_id"] = str(msg.guild_id)
        else:
            data = msg.payload()
            if event == "MESSAGE_CREATE" and msg.nonce is not None:
                data["nonce"] = msg.nonce  # echoed on creation only, like the create response
            own = msg.author_id == self.fake.app_id
            exempt = own or msg.guild_id is None or self.fake.app_id in msg.pinged_user_ids
            if not (session.intents & MESSAGE_CONTENT or exempt):  # privileged intent missing
                data |= {"content": "", "embeds": [], "attachments": [], "components": []}
        session.dispatch(event, data)

    async def disconnect(self, code: int = 4000) -> None:
        for conn in list(self.connections):
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None  # from now on events wait in the history for a RESUME
            await conn.close(code)

    def send_op(self, payload: dict[str, Any]) -> None:
        for conn in self.connections:
            if conn.session is not None:
                conn.put(payload)

    def invalidate(self, resumable: bool) -> None:
        for conn in self.connections:
            if conn.session is not None:
                if not resumable:
                    self.sessions.pop(conn.session.id, None)
                conn.put({"op": 9, "d": resumable, "s": None, "t": None})

    async def close(self) -> None:
        await asyncio.gather(*(conn.close(1001) for conn in list(self.connections)), return_exceptions=True)

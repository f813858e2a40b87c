"""A loopback fake Discord (gateway + REST on 127.0.0.1) for driving the real discord.py client in tests.

Why: discord.py is tested for real, with no mocks. The fake serves what discord.py 2.7.1 needs (every key
its ``parse_*`` methods read), records everything the bot sends, and is strict where Discord is: 3 s to
acknowledge and only once, 15 min tokens, body limits, channel permissions on bot-token routes, nonces only
on channel posts, 401/403/413/429/5xx on demand. Time is the injectable ``clock`` so tests expire tokens by
``fake.clock.advance(16 * 60)`` instead of sleeping.

Knobs (README.md beside this file has the full list):
- faults (``discord_faults``): ``fail_next``, ``rate_limit_next``, ``drop_next`` answer before anything is
  applied; ``fail_after_apply`` (5xx) and ``drop_after_apply`` (connection closed, no response) answer after
  the request took effect: the message exists although the client saw a failure.
- permissions: ``guilds[id].bot_permissions`` (guild default), ``set_bot_permissions(channel_id, perms)``
  (per channel, inherited by threads; ``None`` resets), ``forbid_channel``/``allow_channel``; interactions
  carry the effective value as ``app_permissions``.
- ``nonce_window`` (5 min), ``upload_limit``, ``callback_deadline`` (3 s), ``token_lifetime`` (15 min).

    async with FakeDiscord() as fake, use_fake_discord(fake):
        client = commands.Bot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1)
        task = asyncio.create_task(client.start(fake.token))
        await client.wait_until_ready()
        rec = await fake.slash("ping")
        assert (await rec.wait_callback()).type == 5
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

from aiohttp import web

from tests.fakes.discord.faults import FaultsMixin
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.interactions import InteractionRecord, InteractionsMixin
from tests.fakes.discord.models import (
    ADD_REACTIONS,
    ADMIN_ID,
    ADMIN_ROLE_ID,
    ADMIN_ROLE_PERMISSIONS,
    ADMINISTRATOR,
    ALICE_ID,
    ALL_PERMISSIONS,
    APP_ID,
    ATTACH_FILES,
    CHANNEL_ID,
    EMBED_LINKS,
    GUILD_ID,
    OWNER_ID,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    THREAD_ID,
    VIEW_CHANNEL,
    CallbackRecord,
    Clock,
    FakeChannel,
    FakeDiscordClock,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
    Fault,
    RecordedRequest,
    SnowflakeFactory,
    StoredAttachment,
    StoredMessage,
    iso,
)
from tests.fakes.discord.rest import RestApi, route_matches

__all__ = [
    "ADMIN_ID",
    "ALICE_ID",
    "APP_ID",
    "CHANNEL_ID",
    "GUILD_ID",
    "THREAD_ID",
    "FakeDiscord",
    "FakeDiscordClock",
    "InteractionRecord",
    "StoredMessage",
    "use_fake_discord",
]

T = TypeVar("T")
DM_PERMISSIONS = VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY | ADD_REACTIONS


class FakeDiscord(InteractionsMixin, FaultsMixin):
    """Gateway + REST fake; ``async with FakeDiscord() as fake`` or ``await start()`` / ``await close()``."""

    def __init__(
        self,
        *,
        token: str = "test-token",
        clock: Clock | None = None,
        heartbeat_interval: int = 41250,
        upload_limit: int = 10 * 1024 * 1024,
        strict_commands: bool = True,
        default_world: bool = True,
    ) -> None:
        self.token = token
        self.clock: Any = clock or FakeDiscordClock()
        self.new_id = SnowflakeFactory(self.clock)
        self.heartbeat_interval = heartbeat_interval
        self.upload_limit = upload_limit
        self.strict_commands = strict_commands
        self.callback_deadline = 3.0
        self.token_lifetime = 15 * 60.0
        self.nonce_window = 5 * 60.0
        self.recommended_shards = 1
        self.app_id = APP_ID
        self.bot_user = FakeUser(APP_ID, "videobot", bot=True)
        self.owner_id = OWNER_ID
        self.default_guild_id = GUILD_ID
        self.default_user_id = ALICE_ID

        self.users: dict[int, FakeUser] = {APP_ID: self.bot_user}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.channel_bot_permissions: dict[int, int] = {}
        self.dm_blocked_users: set[int] = set()
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[RecordedRequest] = []
        self.internal_errors: list[BaseException] = []
        self.faults: list[Fault] = []
        self.interactions: dict[int, InteractionRecord] = {}
        self.interactions_by_token: dict[str, InteractionRecord] = {}
        self.modals: dict[str, InteractionRecord] = {}
        self.attachments: dict[int, StoredAttachment] = {}
        self.nonces: dict[tuple[int, int, str], tuple[StoredMessage, float]] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._messages: dict[int, StoredMessage] = {}
        self._dm_channels: dict[int, FakeChannel] = {}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

        self.rest = RestApi(self)
        self.gateway = Gateway(self)
        if default_world:
            self._build_default_world()

    def _build_default_world(self) -> None:
        """App/bot 1…01, guild 2…02 with #general 3…03 and a thread, alice 4…04, admin 4…05 (Manage Server)."""
        guild = self.add_guild("Test Guild", id=GUILD_ID, channels=())
        self.add_channel("general", id=CHANNEL_ID, guild=GUILD_ID)
        self.add_channel("video-thread", id=THREAD_ID, guild=GUILD_ID, type=11, parent_id=CHANNEL_ID)
        self.add_role("Video Admin", ADMIN_ROLE_PERMISSIONS, id=ADMIN_ROLE_ID, guild=GUILD_ID)
        guild.members[APP_ID] = FakeMember(self.bot_user)
        self.add_user("owner", id=OWNER_ID)
        self.add_user("alice", id=ALICE_ID, global_name="Alice")
        self.add_user("admin", id=ADMIN_ID, global_name="Admin", roles=[ADMIN_ROLE_ID])

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_get("/", self.gateway.handle)
        app.router.add_route("*", "/api/v10/{tail:.*}", self.rest.handle)
        app.router.add_route("*", "/attachments/{tail:.*}", self.rest.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/"

    # ---------------------------------------------------------------- the world: users, guilds, channels

    def add_guild(
        self, name: str, *, id: int | None = None, premium_tier: int = 0, channels: tuple[str, ...] = ("general",)
    ) -> FakeGuild:
        guild = FakeGuild(id or self.new_id(), name, owner_id=self.owner_id, premium_tier=premium_tier)
        self.guilds[guild.id] = guild
        guild.members[self.app_id] = FakeMember(self.bot_user)
        for channel in channels:
            self.add_channel(channel, guild=guild.id)
        return guild

    def add_channel(
        self, name: str, *, guild: int | None = None, id: int | None = None, type: int = 0, parent_id: int | None = None
    ) -> FakeChannel:
        g = self.guilds[guild or self.default_guild_id]
        channel = FakeChannel(id or self.new_id(), name, type, g.id, len(g.channels), parent_id, self.default_user_id)
        self.channels[channel.id] = g.add_channel(channel)
        return channel

    def add_role(self, name: str, permissions: int = 0, *, guild: int | None = None, id: int | None = None) -> FakeRole:
        g = self.guilds[guild or self.default_guild_id]
        role = FakeRole(id or self.new_id(), name, permissions, len(g.roles))
        g.roles[role.id] = role
        return role

    def add_user(
        self,
        username: str,
        *,
        id: int | None = None,
        global_name: str | None = None,
        guild: int | None = GUILD_ID,
        roles: list[int] | None = None,
        bot: bool = False,
    ) -> FakeUser:
        """Register a user; a member of ``guild`` (default guild; ``None`` for none) with ``roles``."""
        user = FakeUser(id or self.new_id(), username, global_name, bot)
        self.users[user.id] = user
        if guild is not None and guild in self.guilds:
            self.guilds[guild].members[user.id] = FakeMember(user, list(roles or []))
        return user

    def user(self, ref: FakeUser | int | str) -> FakeUser:
        """A user by object, id or username."""
        if isinstance(ref, FakeUser):
            return ref
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return self.users[int(ref)]
        found = next((u for u in self.users.values() if u.username == ref), None)
        if found is None:
            raise KeyError(f"no user {ref!r}; known: {[u.username for u in self.users.values()]}")
        return found

    def role(self, ref: FakeRole | int | str, guild: FakeGuild | None = None) -> FakeRole:
        g = guild or self.guilds[self.default_guild_id]
        if isinstance(ref, FakeRole):
            return ref
        if isinstance(ref, int):
            return g.roles[ref]
        return next(r for r in g.roles.values() if r.name == ref)

    def member_payload(self, user: FakeUser | int | str, guild: int | None = None) -> dict[str, Any]:
        """The member object as Discord embeds it in interactions (with ``permissions``)."""
        g = self.guilds[guild or self.default_guild_id]
        u = self.user(user)
        return g.members[u.id].payload(g.permissions_of(u.id))

    def dm_channel(self, user: FakeUser | int | str) -> FakeChannel:
        u = self.user(user)
        if u.id not in self._dm_channels:
            channel = FakeChannel(self.new_id(), "", 1, recipients=[u])
            self._dm_channels[u.id] = self.channels[channel.id] = channel
        return self._dm_channels[u.id]

    def bot_permissions(self, channel: FakeChannel | int) -> int:
        """The bot's effective permissions in ``channel``: its override (a thread inherits its parent's), else
        the guild's ``bot_permissions``; DMs get what Discord allows there. Administrator means everything."""
        ch = channel if isinstance(channel, FakeChannel) else self.channels[channel]
        overrides = self.channel_bot_permissions
        if ch.id in overrides:
            perms = overrides[ch.id]
        elif ch.is_thread and ch.parent_id in overrides:
            perms = overrides[ch.parent_id]  # type: ignore[index]
        else:
            guild = self.guilds.get(ch.guild_id or 0)
            perms = guild.bot_permissions if guild else DM_PERMISSIONS
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def set_bot_permissions(self, channel_id: int, permissions: int | None) -> None:
        """Override the bot's permissions in one channel (and its threads); ``None`` restores the guild default.

        Bot-token routes check them like Discord (e.g. posting needs VIEW_CHANNEL + SEND_MESSAGES, + ATTACH_FILES
        with files, + EMBED_LINKS with embeds) and interactions in that channel carry them as ``app_permissions``.
        Interaction callbacks and webhooks ignore them, as on Discord.
        """
        if permissions is None:
            self.channel_bot_permissions.pop(channel_id, None)
        else:
            self.channel_bot_permissions[channel_id] = permissions

    def forbid_channel(self, channel_id: int) -> None:
        """No permissions at all for the bot there: bot-token routes answer 403 50001 Missing Access
        (interaction callbacks and followups still work, as on Discord)."""
        self.set_bot_permissions(channel_id, 0)

    def allow_channel(self, channel_id: int) -> None:
        self.set_bot_permissions(channel_id, None)

    def block_dms(self, user: FakeUser | int | str) -> None:
        """Messages to this user's DM channel answer 403 50007 (user closed DMs)."""
        self.dm_blocked_users.add(self.user(user).id)

    # ---------------------------------------------------------------- messages & attachments

    def attachment_url(self, channel_id: int, attachment_id: int, filename: str) -> str:
        """Where the fake serves a file, shaped like Discord's CDN URL."""
        return f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{quote(filename)}"

    def upload_attachment(
        self, filename: str, data: bytes, content_type: str | None = None, *, channel_id: int = CHANNEL_ID
    ) -> StoredAttachment:
        """A file a user attached to a command option; downloadable from its ``url`` on the fake."""
        aid = self.new_id()
        att = StoredAttachment(aid, filename, data, self.attachment_url(channel_id, aid, filename), content_type)
        att.ephemeral = True
        self.attachments[aid] = att
        return att

    def store_message(self, msg: StoredMessage) -> None:
        self._messages[msg.id] = msg
        self.message_event("MESSAGE_CREATE", msg)
        self.notify()

    def delete_message(self, msg: StoredMessage) -> None:
        msg.deleted = True
        self.message_event("MESSAGE_DELETE", msg)
        self.notify()

    def message_event(self, event: str, msg: StoredMessage) -> None:
        self.gateway.message_event(event, msg)

    @property
    def callbacks(self) -> list[CallbackRecord]:
        """Every accepted interaction callback, in interaction order."""
        return [r.callback for r in self.interactions.values() if r.callback is not None]

    def find_message(self, message_id: int) -> StoredMessage | None:
        return self._messages.get(message_id)

    def message(self, message_id: int) -> StoredMessage:
        return self._messages[message_id]

    def messages(
        self, channel_id: int | None = None, *, include_deleted: bool = False, include_ephemeral: bool = True
    ) -> list[StoredMessage]:
        """Messages in creation order, of one channel or all."""
        return [
            m
            for m in self._messages.values()
            if (channel_id is None or m.channel_id == channel_id)
            and (include_deleted or not m.deleted)
            and (include_ephemeral or not m.ephemeral)
        ]

    def bot_messages(self, channel_id: int | None = None, *, include_ephemeral: bool = True) -> list[StoredMessage]:
        return [m for m in self.messages(channel_id, include_ephemeral=include_ephemeral) if m.author_id == self.app_id]

    async def user_message(
        self, content: str, *, user: FakeUser | int | str | None = None, channel: int | None = None
    ) -> StoredMessage:
        """A message written by a user (MESSAGE_CREATE on the gateway), e.g. a target for a message command."""
        author = self.user(user if user is not None else self.default_user_id)
        ch = self.channels[channel or CHANNEL_ID]
        msg = StoredMessage(self.new_id(), ch.id, ch.guild_id, author.payload(), iso(self.clock.now()), content=content)
        self.store_message(msg)
        await asyncio.sleep(0)
        return msg

    # ---------------------------------------------------------------- requests, waiting

    def notify(self) -> None:
        """Wake every ``wait_for``; called on each recorded request, message, callback and gateway frame."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 10.0,  # noqa: ASYNC109
        *,
        what: str = "",
    ) -> T:
        """Return the first truthy ``predicate()``, re-checked whenever the fake's state changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}; {self.summary()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def requests_to(self, pattern: str) -> list[RecordedRequest]:
        """Recorded requests matching ``"POST /channels/*/messages"`` (see ``route_matches``)."""
        return [r for r in self.requests if route_matches(pattern, r.method, r.path)]

    async def wait_request(
        self,
        pattern: str,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        def seen() -> RecordedRequest | None:
            done = [r for r in self.requests_to(pattern) if r.done]
            return done[count - 1] if len(done) >= count else None

        return await self.wait_for(seen, timeout, what=f"request #{count} to {pattern}")

    def summary(self) -> str:
        last = ", ".join(f"{r.route}→{r.status}" for r in self.requests[-8:])
        extra = f"; unhandled: {[r.route for r in self.unhandled]}" if self.unhandled else ""
        return f"last requests: [{last}]{extra}"

    # ---------------------------------------------------------------- gateway controls

    @property
    def identify_count(self) -> int:
        return self.gateway.identify_count

    @property
    def resume_count(self) -> int:
        return self.gateway.resume_count

    async def disconnect(self, code: int = 4000) -> None:
        """Close every gateway socket with ``code``; discord.py resumes (4000) or gives up (4004, 4010-4014)."""
        await self.gateway.disconnect(code)

    def send_reconnect(self) -> None:
        """Op 7: the client closes and RESUMEs."""
        self.gateway.send_op({"op": 7, "d": None, "s": None, "t": None})

    def invalidate_session(self, resumable: bool = False) -> None:
        """Op 9: ``False`` forgets the session, so the client IDENTIFYs again."""
        self.gateway.invalidate(resumable)

    def request_heartbeat(self) -> None:
        self.gateway.send_op({"op": 1, "d": None, "s": None, "t": None})

    def dispatch(self, event: str, data: Any, *, guild_id: int | None = None) -> None:
        """Any gateway event, to the shard owning ``guild_id``."""
        self.gateway.dispatch(event, data, guild_id=guild_id)
        self.notify()


@contextlib.contextmanager
def use_fake_discord(fake: FakeDiscord) -> Iterator[FakeDiscord]:
    """Point discord.py's REST base and default gateway at ``fake`` (module globals), restoring them after."""
    import discord
    import yarl

    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield fake
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

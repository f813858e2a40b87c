"""State records of the fake Discord: users, guilds, messages, interactions, requests.

Why a module of its own: the REST handlers, the gateway and the test-facing facade all read and write the same
records, and each record knows how to render itself as the exact JSON discord.py 2.7.1 parses (every key whose
absence raises a KeyError in a ``parse_*`` is present).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.clock import OffsetClock

DISCORD_EPOCH_MS = 1_420_070_400_000

APP_ID = 1000000000000000001
GUILD_ID = 2000000000000000002
CHANNEL_ID = 3000000000000000003
THREAD_ID = 3000000000000000006
ALICE_ID = 4000000000000000004
ADMIN_ID = 4000000000000000005
ADMIN_ROLE_ID = 5000000000000000007
OWNER_ID = 4000000000000000009

# Permission bits (docs/topics/permissions.md).
CREATE_INSTANT_INVITE = 1 << 0
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
CHANGE_NICKNAME = 1 << 26
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 53) - 1

MEMBER_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)
ADMIN_ROLE_PERMISSIONS = MANAGE_GUILD | MANAGE_MESSAGES

EPHEMERAL = 1 << 6
LOADING = 1 << 7


class Clock(Protocol):
    def now(self) -> float: ...


class FakeDiscordClock(OffsetClock):
    """Real time plus an offset (the bot's own `OffsetClock`), settable to an absolute time as well."""

    def set(self, when: float) -> None:
        self.offset = when - time.time()


class SnowflakeFactory:
    """Snowflakes whose timestamp is the fake's clock, so ``snowflake_time(id)`` agrees with the fake."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._last = 0
        self._seq = itertools.count()

    def __call__(self) -> int:
        ms = max(0, int(self.clock.now() * 1000) - DISCORD_EPOCH_MS)
        value = (ms << 22) | (1 << 17) | (next(self._seq) & 0xFFF)
        self._last = max(value, self._last + 1)
        return self._last


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


@dataclass
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class FakeRole:
    id: int
    name: str
    permissions: int = 0
    position: int = 0
    managed: bool = False
    """Owned by an integration (a bot's own role, the booster role); nobody can be given it by hand."""

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class FakeChannel:
    """A text channel (0), DM (1), announcement (5) or thread (10/11/12)."""

    id: int
    name: str = ""
    type: int = 0
    guild_id: int | None = None
    position: int = 0
    parent_id: int | None = None
    owner_id: int | None = None
    recipients: list[FakeUser] = field(default_factory=list)

    @property
    def is_thread(self) -> bool:
        return self.type in (10, 11, 12)

    def payload(self) -> dict[str, Any]:
        if self.type in (1, 3):
            return {
                "id": str(self.id),
                "type": self.type,
                "last_message_id": None,
                "flags": 0,
                "recipients": [u.payload() for u in self.recipients],
            }
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": str(self.parent_id) if self.parent_id else None,
            "topic": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }
        if self.is_thread:
            data.update(
                owner_id=str(self.owner_id or APP_ID),
                member_count=1,
                message_count=0,
                total_message_sent=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": "2026-01-01T00:00:00+00:00",
                    "locked": False,
                },
            )
            del data["permission_overwrites"], data["position"]
        return data


@dataclass
class FakeMember:
    user: FakeUser
    roles: list[int] = field(default_factory=list)
    nick: str | None = None

    def payload(self, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user": self.user.payload(),
            "roles": [str(r) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": "2025-01-01T00:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data


@dataclass
class FakeGuild:
    id: int
    name: str
    owner_id: int = OWNER_ID
    premium_tier: int = 0
    locale: str = "en-US"
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    bot_permissions: int = MEMBER_PERMISSIONS

    def __post_init__(self) -> None:
        self.roles.setdefault(self.id, FakeRole(self.id, "@everyone", MEMBER_PERMISSIONS))

    @property
    def everyone(self) -> FakeRole:
        return self.roles[self.id]

    @property
    def text_channel(self) -> FakeChannel:
        return next(c for c in self.channels.values() if c.type == 0)

    def add_channel(self, channel: FakeChannel) -> FakeChannel:
        channel.guild_id = self.id
        self.channels[channel.id] = channel
        return channel

    def permissions_of(self, user_id: int, roles: list[int] | None = None) -> int:
        """Guild-level permissions: @everyone | roles; owner and Administrator get everything."""
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        member = self.members.get(user_id)
        role_ids = roles if roles is not None else (member.roles if member else [])
        perms = self.everyone.permissions
        for rid in role_ids:
            if rid in self.roles:
                perms |= self.roles[rid].permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def payload(self, joined_at: str) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "owner_id": str(self.owner_id),
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "member_count": len(self.members),
            "large": False,
            "unavailable": False,
            "features": [],
            "preferred_locale": self.locale,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "afk_timeout": 300,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_id": None,
            "joined_at": joined_at,
            "roles": [r.payload() for r in self.roles.values()],
            "channels": [c.payload() for c in self.channels.values() if not c.is_thread],
            "threads": [c.payload() for c in self.channels.values() if c.is_thread],
            "members": [m.payload() for m in self.members.values()],
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
        }


@dataclass
class StoredAttachment:
    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    ephemeral: bool = False
    width: int | None = None
    height: int | None = None
    """Set for images Discord could measure; absent otherwise, as on Discord."""

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.width is not None and self.height is not None:
            data["width"], data["height"] = self.width, self.height
        if self.ephemeral:
            data["ephemeral"] = True
        return data


def walk_components(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every component, depth first (rows, sections, containers, labels and their children)."""
    out: list[dict[str, Any]] = []
    for comp in components:
        out.append(comp)
        children = list(comp.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(comp.get(key), dict):
                children.append(comp[key])
        out.extend(walk_components(children))
    return out


MENTION_RE = re.compile(r"<@!?(\d+)>")


def _unknown_user(user_id: int) -> dict[str, Any]:
    return {"id": str(user_id), "username": f"unknown-{user_id}", "discriminator": "0", "avatar": None}


ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")


@dataclass
class StoredMessage:
    """A message as Discord keeps it; ``payload()`` is what the REST API and gateway hand out."""

    id: int
    channel_id: int
    guild_id: int | None
    author: dict[str, Any]
    timestamp: str
    type: int = 0
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    flags: int = 0
    tts: bool = False
    nonce: str | int | None = None
    allowed_mentions: dict[str, Any] | None = None
    message_reference: dict[str, Any] | None = None
    edited_timestamp: str | None = None
    interaction_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    webhook_id: int | None = None
    deleted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    known_users: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & LOADING)

    @property
    def author_id(self) -> int:
        return int(self.author["id"])

    @property
    def files(self) -> dict[str, bytes]:
        return {a.filename: a.data for a in self.attachments}

    def all_components(self) -> list[dict[str, Any]]:
        return walk_components(self.components)

    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.all_components() if "custom_id" in c]

    def find_component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.all_components() if c.get("custom_id") == custom_id), None)

    def _allowed(self, kind: str, ids: list[str]) -> list[str]:
        am = self.allowed_mentions
        if am is None:
            return ids
        explicit = [str(x) for x in am.get(kind, [])]
        return [i for i in ids if kind in am.get("parse", []) or i in explicit]

    @property
    def pinged_user_ids(self) -> list[int]:
        """Users this message notifies, after ``allowed_mentions`` is applied as Discord does."""
        return [int(i) for i in self._allowed("users", MENTION_RE.findall(self.content))]

    @property
    def pinged_role_ids(self) -> list[int]:
        return [int(i) for i in self._allowed("roles", ROLE_MENTION_RE.findall(self.content))]

    @property
    def mention_everyone(self) -> bool:
        am = self.allowed_mentions
        has = "@everyone" in self.content or "@here" in self.content
        return has and (am is None or "everyone" in am.get("parse", []))

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "type": self.type,
            "content": self.content,
            "author": self.author,
            "attachments": [a.payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "mentions": [self.known_users.get(i) or _unknown_user(i) for i in self.pinged_user_ids],
            "mention_roles": [str(i) for i in self.pinged_role_ids],
            "mention_everyone": self.mention_everyone,
            "pinned": False,
            "tts": self.tts,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
            data["application_id"] = str(self.webhook_id)
        if self.interaction_metadata is not None:
            data["interaction_metadata"] = self.interaction_metadata
        if self.message_reference is not None:
            data["message_reference"] = self.message_reference
        return data


@dataclass
class RecordedFile:
    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One REST call as the fake saw it (``Authorization`` left out; ``authorized`` says if it was right)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    headers: dict[str, str]
    time: float
    authorized: bool | None = None
    status: int = 0
    """HTTP status the client got; 0 while in flight and for a dropped connection (see ``dropped``)."""
    response: Any = None
    fault: str | None = None
    """Scripted fault that answered: ``"fail"``/``"drop"`` (nothing applied) or ``"fail_after_apply"``/
    ``"drop_after_apply"`` (the request took effect, then the client got a 5xx or a closed connection)."""
    applied_status: int | None = None
    """For an after-apply fault: the status the request really had (e.g. 200 with the message created)."""
    applied_response: Any = None
    """For an after-apply fault: the body Discord would have sent (e.g. the created message)."""

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def dropped(self) -> bool:
        """The connection was closed without any HTTP response."""
        return self.fault in ("drop", "drop_after_apply")

    @property
    def applied(self) -> bool:
        """The request took effect on the fake (a 2xx, or a success hidden behind an after-apply fault)."""
        return 200 <= (self.applied_status or self.status) < 300

    @property
    def done(self) -> bool:
        return bool(self.status) or self.dropped


@dataclass
class Fault:
    """A scripted failure, consumed by the next ``times`` requests whose route matches ``pattern``."""

    pattern: str | None
    status: int
    body: dict[str, Any] | None
    headers: dict[str, str]
    remaining: int
    after_apply: bool = False
    """Run the request for real first (message created…), then answer with the fault."""
    drop: bool = False
    """Close the TCP connection without an HTTP response instead of answering ``status``."""

    @property
    def kind(self) -> str:
        return ("drop" if self.drop else "fail") + ("_after_apply" if self.after_apply else "")


@dataclass
class CallbackRecord:
    """One ``POST /interactions/{id}/{token}/callback`` attempt, accepted (status 200/204) or not."""

    type: int
    data: dict[str, Any]
    time: float
    status: int
    code: int | None = None
    files: list[RecordedFile] = field(default_factory=list)
    message: StoredMessage | None = None

    @property
    def accepted(self) -> bool:
        return self.status < 300

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.data.get("flags", 0) or 0) & EPHEMERAL)

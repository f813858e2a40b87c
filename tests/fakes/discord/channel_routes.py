"""Bot-token channel routes of the fake: channels, messages, history, DMs; with Discord's permission checks.

Why strict: a worker that posts with the bot token after the interaction token expired needs real channel
permissions, which interaction webhooks never need. Discord refuses a post without VIEW_CHANNEL (403 50001
Missing Access) or without SEND_MESSAGES (SEND_MESSAGES_IN_THREADS in a thread), ATTACH_FILES for files or
EMBED_LINKS for embeds (403 50013 Missing Permissions). Reading history needs VIEW_CHANNEL and
READ_MESSAGE_HISTORY (else 50001). The bot's permissions per channel come from ``FakeDiscord.bot_permissions``
(guild default, ``set_bot_permissions`` / ``forbid_channel`` overrides).

Nonces as on Discord: ``POST /channels/{id}/messages`` with ``nonce`` and ``enforce_nonce: true`` returns the
message the same author already created with that nonce in that channel within ``nonce_window`` (5 min)
instead of creating another; without ``enforce_nonce`` the nonce is only echoed. The nonce is echoed in the
create response and the MESSAGE_CREATE event only, never by a later GET. Webhooks have no nonces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.discord.models import (
    ATTACH_FILES,
    EMBED_LINKS,
    MANAGE_MESSAGES,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
    FakeChannel,
    StoredMessage,
)
from tests.fakes.discord.validation import CHANNEL_MESSAGE_FLAGS, ApiError, check_message_body, form_error

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord
    from tests.fakes.discord.models import RecordedRequest
    from tests.fakes.discord.rest import Reply, RestApi

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 100


def missing_access() -> ApiError:
    return ApiError(403, 50001, "Missing Access")


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")


def content_permissions(body: dict[str, Any], n_files: int) -> int:
    """What a message body needs beyond being allowed to speak: files → ATTACH_FILES, embeds → EMBED_LINKS."""
    needed = ATTACH_FILES if n_files else 0
    if body.get("embeds"):
        needed |= EMBED_LINKS
    return needed


class ChannelRoutes:
    def __init__(self, fake: FakeDiscord, rest: RestApi) -> None:
        self.fake = fake
        self.rest = rest

    # ---------------------------------------------------------------- lookups and permission checks

    def channel(self, channel_id: str) -> FakeChannel:
        channel = self.fake.channels.get(int(channel_id)) if channel_id.isdigit() else None
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def visible_channel(self, channel_id: str) -> FakeChannel:
        """The channel, if the bot can see it (VIEW_CHANNEL), else 403 50001 like Discord."""
        channel = self.channel(channel_id)
        if not self.fake.bot_permissions(channel) & VIEW_CHANNEL:
            raise missing_access()
        return channel

    def require(self, channel: FakeChannel, needed: int) -> None:
        if needed & ~self.fake.bot_permissions(channel):
            raise missing_permissions()

    def require_history(self, channel: FakeChannel) -> None:
        if not self.fake.bot_permissions(channel) & READ_MESSAGE_HISTORY:
            raise missing_access()

    @staticmethod
    def send_permission(channel: FakeChannel) -> int:
        return SEND_MESSAGES_IN_THREADS if channel.is_thread else SEND_MESSAGES

    def message_in(self, channel: FakeChannel, message_id: str) -> StoredMessage:
        msg = self.fake.find_message(int(message_id)) if message_id.isdigit() else None
        if msg is None or msg.deleted or msg.channel_id != channel.id or msg.ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    @staticmethod
    def created_payload(msg: StoredMessage) -> dict[str, Any]:
        """The create response: the only REST answer that echoes the nonce."""
        data = msg.payload()
        if msg.nonce is not None:
            data["nonce"] = msg.nonce
        return data

    # ---------------------------------------------------------------- routes

    async def get_member(self, rec: RecordedRequest, guild_id: str, user_id: str) -> Reply:
        guild = self.fake.guilds.get(int(guild_id)) if guild_id.isdigit() else None
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        member = guild.members.get(int(user_id)) if user_id.isdigit() else None
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, member.payload()

    async def typing(self, rec: RecordedRequest, channel_id: str) -> Reply:
        channel = self.visible_channel(channel_id)
        self.require(channel, self.send_permission(channel))
        return 204, None

    async def get_channel(self, rec: RecordedRequest, channel_id: str) -> Reply:
        return 200, self.visible_channel(channel_id).payload()

    async def create_message(self, rec: RecordedRequest, channel_id: str) -> Reply:
        fake = self.fake
        channel = self.visible_channel(channel_id)
        if channel.type == 1 and any(u.id in fake.dm_blocked_users for u in channel.recipients):
            raise ApiError(403, 50007, "Cannot send messages to this user")
        body = rec.json if isinstance(rec.json, dict) else {}
        self.rest.check_sizes(rec.files, fake.upload_limit)
        check_message_body(body, len(rec.files), creating=True, allowed_flags=CHANNEL_MESSAGE_FLAGS)
        ref = body.get("message_reference")
        needed = self.send_permission(channel) | content_permissions(body, len(rec.files))
        self.require(channel, needed | (READ_MESSAGE_HISTORY if ref else 0))
        nonce = body.get("nonce")
        key = (channel.id, fake.app_id, str(nonce))
        if nonce is not None and body.get("enforce_nonce"):
            seen = fake.nonces.get(key)
            if seen is not None and not seen[0].deleted and fake.clock.now() - seen[1] < fake.nonce_window:
                return 200, self.created_payload(seen[0])
        if ref and ref.get("fail_if_not_exists", True):
            target = fake.find_message(int(ref.get("message_id", 0)))
            if target is None or target.deleted:
                raise form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        msg = self.rest.new_message(
            channel, body, rec.files, type=19 if ref else 0, flags=int(body.get("flags") or 0), message_reference=ref
        )
        if nonce is not None:
            msg.nonce = nonce
            fake.nonces[key] = (msg, fake.clock.now())
        fake.store_message(msg)
        return 200, self.created_payload(msg)

    async def get_message(self, rec: RecordedRequest, channel_id: str, message_id: str) -> Reply:
        channel = self.visible_channel(channel_id)
        self.require_history(channel)
        return 200, self.message_in(channel, message_id).payload()

    async def get_messages(self, rec: RecordedRequest, channel_id: str) -> Reply:
        """History, newest first, like Discord: ``limit`` 1-100 (50), one of ``before``/``after``/``around``.

        ``after=X`` gives the ``limit`` messages right after X (still newest first: discord.py takes the first
        one as its next ``after`` and reverses each page); ``around=X`` gives X and the messages next to it.
        """
        channel = self.visible_channel(channel_id)
        self.require_history(channel)
        limit, anchors = self._history_params(rec.query)
        msgs = sorted(self.fake.messages(channel.id, include_ephemeral=False), key=lambda m: m.id)
        if "before" in anchors:
            page = [m for m in msgs if m.id < anchors["before"]][-limit:]
        elif "after" in anchors:
            page = [m for m in msgs if m.id > anchors["after"]][:limit]
        elif "around" in anchors:
            older = [m for m in msgs if m.id < anchors["around"]][-(limit // 2) :] if limit >= 2 else []
            page = older + [m for m in msgs if m.id >= anchors["around"]][: limit - len(older)]
        else:
            page = msgs[-limit:]
        return 200, [m.payload() for m in reversed(page)]

    @staticmethod
    def _history_params(query: dict[str, str]) -> tuple[int, dict[str, int]]:
        raw = query.get("limit", str(HISTORY_DEFAULT_LIMIT))
        if not raw.lstrip("-").isdigit():
            raise form_error("limit", "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.')
        limit = int(raw)
        if limit < 1:
            raise form_error("limit", "NUMBER_TYPE_MIN", "int value should be greater than or equal to 1.")
        if limit > HISTORY_MAX_LIMIT:
            raise form_error("limit", "NUMBER_TYPE_MAX", "int value should be less than or equal to 100.")
        anchors: dict[str, int] = {}
        for name in ("before", "after", "around"):
            if name in query:
                if not query[name].isdigit():
                    raise form_error(name, "NUMBER_TYPE_COERCE", f'Value "{query[name]}" is not snowflake.')
                anchors[name] = int(query[name])
        if len(anchors) > 1:  # documented as mutually exclusive; discord.py never sends two
            raise form_error("around", "BASE_TYPE_BAD_LENGTH", "before, after and around are mutually exclusive.")
        return limit, anchors

    async def edit_message(self, rec: RecordedRequest, channel_id: str, message_id: str) -> Reply:
        fake = self.fake
        channel = self.visible_channel(channel_id)
        msg = self.message_in(channel, message_id)
        if msg.author_id != fake.app_id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = rec.json if isinstance(rec.json, dict) else {}
        self.rest.check_sizes(rec.files, fake.upload_limit)
        check_message_body(body, len(rec.files), creating=False, allowed_flags=CHANNEL_MESSAGE_FLAGS)
        self.require(channel, content_permissions(body, len(rec.files)))
        self.rest.edit(msg, body, rec.files)
        fake.message_event("MESSAGE_UPDATE", msg)
        return 200, msg.payload()

    async def delete_message(self, rec: RecordedRequest, channel_id: str, message_id: str) -> Reply:
        fake = self.fake
        channel = self.visible_channel(channel_id)
        msg = self.message_in(channel, message_id)
        if msg.author_id != fake.app_id and channel.guild_id is not None:
            self.require(channel, MANAGE_MESSAGES)
        fake.delete_message(msg)
        return 204, None

    async def open_dm(self, rec: RecordedRequest) -> Reply:
        body = rec.json if isinstance(rec.json, dict) else {}
        rid = str(body.get("recipient_id", ""))
        user = self.fake.users.get(int(rid)) if rid.isdigit() else None
        if user is None:
            raise ApiError(400, 50033, "Invalid Recipient(s)")
        return 200, self.fake.dm_channel(user).payload()

"""REST half of the fake Discord: routing, recording, auth, scripted faults and the message plumbing.

Why so strict: every rule here (exact ``application/json``, ``Via`` on 429, 3 s callback deadline, 15 min
token lifetime, one ack per interaction, 413 on big files) is one that discord.py or Discord enforces, and a
bot that only works against a lenient fake breaks in production.

Routes live in ``discord_channel_routes`` (bot token: channels, messages, history, permissions, nonces) and
``discord_interaction_routes`` (callbacks and interaction webhooks). Every request is recorded first, then a
scripted fault (``discord_faults``) may answer instead of the route: before it runs (nothing applied), or
after it succeeded (applied, then a 5xx or a connection closed without any response).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.helpers import parse_content_type
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from tests.fakes.discord.channel_routes import ChannelRoutes
from tests.fakes.discord.interaction_routes import InteractionRoutes
from tests.fakes.discord.models import (
    LOADING,
    MENTION_RE,
    FakeChannel,
    Fault,
    RecordedFile,
    RecordedRequest,
    StoredAttachment,
    StoredMessage,
    iso,
)
from tests.fakes.discord.validation import EDIT_FLAGS, ApiError, check_commands, form_error

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

API_PREFIX = "/api/v10"
Reply = tuple[int, Any] | web.Response
Handler = Callable[..., Awaitable[Reply]]


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    """Content-Type exactly ``application/json``: discord.py parses nothing else (``json_or_text``)."""
    if data is None and status == 204:
        return web.Response(status=204, headers=headers)
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json", headers=headers)


def media_type(request: web.Request) -> str:
    """``request.content_type``, parsed from the header's part before its parameters.

    aiohttp parses the whole header with the ``email`` package (~0.3 ms) and caches the result by the whole
    header, which a multipart upload's own random boundary makes new on every request; the media type itself
    repeats, so its parse comes from that cache."""
    raw = request.headers.get(hdrs.CONTENT_TYPE)
    if raw is None:
        return "application/octet-stream"  # what aiohttp answers for a missing header
    return parse_content_type(raw.partition(";")[0])[0]


@functools.lru_cache(maxsize=256)
def part_names(disposition: str | None) -> tuple[str | None, str | None]:
    """A form part's ``name`` and ``filename``, exactly as ``BodyPartReader.name``/``.filename`` give them.

    Each of those properties parses the Content-Disposition header anew (~35 µs, mostly aiohttp rebuilding a
    regex class per call); a client sends the same few headers on every upload, so each is parsed once."""
    _, params = parse_content_disposition(disposition)
    return content_disposition_filename(params, "name"), content_disposition_filename(params, "filename")


def route_matches(pattern: str | None, method: str, path: str) -> bool:
    """``"POST /channels/*/messages"``: method optional, ``*``/``{name}`` = one segment, trailing ``**`` = rest."""
    if pattern is None:
        return True
    want_method, _, want_path = pattern.partition(" ") if " " in pattern else ("*", "", pattern)
    if want_method.upper() not in ("*", method):
        return False
    pat = want_path.strip("/").split("/")
    segs = path.strip("/").split("/")
    if pat[-1] == "**":
        pat = pat[:-1]
        if len(segs) <= len(pat):
            return False
        segs = segs[: len(pat)]
    if len(pat) != len(segs):
        return False
    return all(p in ("*", s) or p.startswith("{") for p, s in zip(pat, segs, strict=True))


@dataclass
class Route:
    method: str
    pattern: str
    handler: Handler
    auth: bool
    # Both fixed for the route's life: split and hashed once, not on every request.
    segments: tuple[str, ...] = field(init=False, repr=False)
    bucket: str = field(init=False, repr=False)
    """The ``X-RateLimit-Bucket`` of the route's answers."""

    def __post_init__(self) -> None:
        self.segments = tuple(self.pattern.strip("/").split("/"))
        self.bucket = hashlib.md5(self.pattern.encode()).hexdigest()[:16]

    def match(self, method: str, segs: list[str]) -> dict[str, str] | None:
        """The path parameters if ``segs`` (the path split on ``/``) is this route's, else ``None``."""
        if method != self.method or len(self.segments) != len(segs):
            return None
        params: dict[str, str] = {}
        for p, s in zip(self.segments, segs, strict=True):
            if p.startswith("{"):
                params[p[1:-1]] = s
            elif p != s:
                return None
        return params


class RestApi:
    """aiohttp handler for ``/api/v10/...`` and ``/attachments/...``; state lives on the FakeDiscord."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.interactions = InteractionRoutes(fake, self)
        self.channels = ChannelRoutes(fake, self)
        i, c = self.interactions, self.channels
        self.routes: list[Route] = [
            Route("GET", "/users/@me", self.get_me, True),
            Route("GET", "/users/{user_id}", self.get_user, True),
            Route("POST", "/users/@me/channels", c.open_dm, True),
            Route("GET", "/oauth2/applications/@me", self.get_application, True),
            Route("GET", "/applications/@me", self.get_application, True),
            Route("GET", "/gateway/bot", self.gateway_bot, True),
            Route("GET", "/gateway", self.gateway, False),
            Route("PUT", "/applications/{app_id}/commands", self.put_commands, True),
            Route("GET", "/applications/{app_id}/commands", self.get_commands, True),
            Route("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands, True),
            Route("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands, True),
            Route("POST", "/interactions/{interaction_id}/{token}/callback", i.callback, False),
            Route("POST", "/webhooks/{app_id}/{token}", i.followup, False),
            Route("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", i.get_message, False),
            Route("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", i.edit_message, False),
            Route("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", i.delete_message, False),
            Route("GET", "/guilds/{guild_id}/members/{user_id}", c.get_member, True),
            Route("GET", "/channels/{channel_id}", c.get_channel, True),
            Route("POST", "/channels/{channel_id}/typing", c.typing, True),
            Route("GET", "/channels/{channel_id}/messages", c.get_messages, True),
            Route("POST", "/channels/{channel_id}/messages", c.create_message, True),
            Route("GET", "/channels/{channel_id}/messages/{message_id}", c.get_message, True),
            Route("PATCH", "/channels/{channel_id}/messages/{message_id}", c.edit_message, True),
            Route("DELETE", "/channels/{channel_id}/messages/{message_id}", c.delete_message, True),
            Route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self.download, False),
        ]

    # ---------------------------------------------------------------- plumbing

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fake = self.fake
        path = request.path
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX) :] or "/"
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        bad_body: ApiError | None = None
        try:
            body, files = await self._read_body(request)
        except ApiError as exc:
            body, files, bad_body = None, [], exc
        rec = RecordedRequest(request.method, path, dict(request.query), body, files, headers, fake.clock.now())
        fake.requests.append(rec)
        fake.notify()
        try:
            if bad_body is not None:
                raise bad_body
            fault = fake.take_fault(rec.method, rec.path) or fake.take_global_limit(
                rec, request.headers.get("Authorization")
            )
            if fault is not None:
                return self._answer_fault(request, rec, fault)
            response = await self._dispatch(request, rec)
            if 200 <= response.status < 300:
                fault = fake.take_fault(rec.method, rec.path, after_apply=True)
                if fault is not None:
                    rec.applied_status, rec.applied_response = response.status, rec.response
                    return self._answer_fault(request, rec, fault)
        except ApiError as exc:
            response = json_response(exc.status, exc.body())
            rec.response = exc.body()
        except Exception as exc:  # a bug in the fake: fail loudly, never as a 5xx discord.py would retry
            fake.internal_errors.append(exc)
            rec.response = {"message": f"fake Discord internal error: {exc!r}", "code": -1}
            response = json_response(418, rec.response)
        rec.status = response.status
        fake.notify()
        return response

    def _answer_fault(self, request: web.Request, rec: RecordedRequest, fault: Fault) -> web.Response:
        """A scripted answer: a status with its body, or a TCP connection closed without any response."""
        rec.fault = fault.kind
        if fault.drop:
            rec.response = None
            if request.transport is not None:
                request.transport.abort()  # aiohttp then has nothing to write to; the client sees a disconnect
            self.fake.notify()
            return web.Response(status=500)
        rec.response = fault.body
        rec.status = fault.status
        self.fake.notify()
        return json_response(fault.status, fault.body, fault.headers)

    async def _dispatch(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        segs = rec.path.strip("/").split("/")
        for route in self.routes:
            params = route.match(rec.method, segs)
            if params is None:
                continue
            if route.auth:
                rec.authorized = request.headers.get("Authorization") == f"Bot {self.fake.token}"
                if not rec.authorized:
                    raise ApiError(401, 0, "401: Unauthorized")
            reply = await route.handler(rec, **params)
            if isinstance(reply, web.Response):
                return reply
            status, data = reply
            rec.response = data
            return json_response(status, data, self._ratelimit_headers(route))
        self.fake.unhandled.append(rec)
        raise ApiError(404, 0, "404: Not Found")

    def _ratelimit_headers(self, route: Route) -> dict[str, str]:
        """Plausible, never-exhausted bucket headers so discord.py's bucket mapping code runs."""
        return {
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "4",
            "X-RateLimit-Reset": f"{self.fake.clock.now() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": route.bucket,
        }

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
        ctype = media_type(request)
        if ctype.startswith("multipart/"):
            payload: Any = None
            files: list[RecordedFile] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue  # only the body's own parts count: a nested multipart is skipped
                data = bytes(await part.read())
                name, filename = part_names(part.headers.get(hdrs.CONTENT_DISPOSITION))
                if name == "payload_json":
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
                elif name and name.startswith("files["):
                    files.append(RecordedFile(name, filename or "", part.headers.get(hdrs.CONTENT_TYPE), data))
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        if ctype == "application/json":
            try:
                return json.loads(raw), []
            except ValueError:
                raise ApiError(400, 50109, "The request body contains invalid JSON.") from None
        return raw.decode(errors="replace"), []

    # ---------------------------------------------------------------- messages (shared with interactions)

    def check_sizes(self, files: list[RecordedFile], limit: int) -> None:
        if any(len(f.data) > limit for f in files):
            raise ApiError(413, 40005, "Request entity too large")

    def _store_file(self, channel_id: int, file: RecordedFile, entry: dict[str, Any]) -> StoredAttachment:
        fake = self.fake
        aid = fake.new_id()
        filename = str(entry.get("filename") or file.filename or "file")
        ctype = mimetypes.guess_type(filename)[0] or file.content_type
        att = StoredAttachment(
            aid, filename, file.data, fake.attachment_url(channel_id, aid, filename), ctype, entry.get("description")
        )
        fake.attachments[aid] = att
        return att

    def apply_body(self, msg: StoredMessage, body: dict[str, Any], files: list[RecordedFile]) -> None:
        """Copy a create/edit body onto a message; ``attachments`` keeps listed old files, adds ``files[n]``."""
        if "content" in body:
            msg.content = body["content"] or ""
            users = self.fake.users
            mentioned = {int(i) for i in MENTION_RE.findall(msg.content)}
            msg.known_users = {i: users[i].payload() for i in mentioned if i in users}
        if "embeds" in body:
            msg.embeds = body["embeds"] or []
        if "components" in body:
            msg.components = body["components"] or []
        if "allowed_mentions" in body:
            msg.allowed_mentions = body["allowed_mentions"]
        by_field = {f.field: f for f in files}
        if body.get("attachments") is not None:
            kept = {str(a.id): a for a in msg.attachments}
            new: list[StoredAttachment] = []
            for entry in body["attachments"]:
                key = str(entry.get("id"))
                if key in kept:
                    new.append(kept[key])
                elif f"files[{key}]" in by_field:
                    new.append(self._store_file(msg.channel_id, by_field.pop(f"files[{key}]"), entry))
                else:
                    raise form_error("attachments", "ATTACHMENT_NOT_FOUND", f"Unknown attachment {key}")
            msg.attachments = new
        msg.attachments += [self._store_file(msg.channel_id, f, {}) for f in by_field.values()]

    def new_message(
        self, channel: FakeChannel, body: dict[str, Any], files: list[RecordedFile], **kw: Any
    ) -> StoredMessage:
        fake = self.fake
        msg = StoredMessage(
            id=fake.new_id(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=fake.bot_user.payload(),
            timestamp=iso(fake.clock.now()),
            tts=bool(body.get("tts", False)),
            **kw,
        )
        self.apply_body(msg, body, files)
        return msg

    def edit(self, msg: StoredMessage, body: dict[str, Any], files: list[RecordedFile]) -> None:
        msg.history.append(msg.payload())
        self.apply_body(msg, body, files)
        if body.get("flags") is not None:  # only these flags can change on an edit
            msg.flags = (msg.flags & ~EDIT_FLAGS) | (int(body["flags"]) & EDIT_FLAGS)
        if msg.loading:  # the deferred "thinking…" placeholder becomes the real message
            msg.flags &= ~LOADING
        else:
            msg.edited_timestamp = iso(self.fake.clock.now())

    # ---------------------------------------------------------------- identity & gateway

    async def get_me(self, rec: RecordedRequest) -> Reply:
        data = self.fake.bot_user.payload() | {"verified": True, "mfa_enabled": False, "flags": 0}
        return 200, data

    async def get_user(self, rec: RecordedRequest, user_id: str) -> Reply:
        user = self.fake.users.get(int(user_id)) if user_id.isdigit() else None
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, user.payload()

    async def get_application(self, rec: RecordedRequest) -> Reply:
        fake = self.fake
        owner = fake.users.get(fake.owner_id)
        return 200, {
            "id": str(fake.app_id),
            "name": fake.bot_user.username,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": owner.payload() if owner else fake.bot_user.payload(),
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "summary": "",
            "interactions_endpoint_url": None,
            "bot": fake.bot_user.payload(),
        }

    async def gateway_bot(self, rec: RecordedRequest) -> Reply:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return 200, {"url": self.fake.gateway_url, "shards": self.fake.recommended_shards, "session_start_limit": limit}

    async def gateway(self, rec: RecordedRequest) -> Reply:
        return 200, {"url": self.fake.gateway_url}

    # ---------------------------------------------------------------- application commands

    def _check_app(self, app_id: str) -> None:
        if app_id != str(self.fake.app_id):
            raise ApiError(403, 50001, "Missing Access")

    async def put_commands(self, rec: RecordedRequest, app_id: str, guild_id: str | None = None) -> Reply:
        self._check_app(app_id)
        fake = self.fake
        if guild_id is not None and int(guild_id) not in fake.guilds:
            raise ApiError(403, 50001, "Missing Access")
        check_commands(rec.json)
        old = fake.guild_commands.get(int(guild_id), []) if guild_id else fake.global_commands
        old_ids = {(c["name"], c["type"]): c["id"] for c in old}
        stored: list[dict[str, Any]] = []
        for cmd in rec.json:
            ctype = int(cmd.get("type", 1))
            dmp = cmd.get("default_member_permissions")
            stored.append(
                {
                    "options": [],
                    "nsfw": False,
                    "contexts": None,
                    "integration_types": None,
                    **cmd,
                    "id": old_ids.get((cmd["name"], ctype)) or str(fake.new_id()),
                    "application_id": str(fake.app_id),
                    "version": str(fake.new_id()),
                    "type": ctype,
                    "description": cmd.get("description", ""),
                    "default_member_permissions": None if dmp is None else str(dmp),
                    **({"guild_id": guild_id} if guild_id else {}),
                }
            )
        if guild_id:
            fake.guild_commands[int(guild_id)] = stored
        else:
            fake.global_commands = stored
        return 200, stored

    async def get_commands(self, rec: RecordedRequest, app_id: str, guild_id: str | None = None) -> Reply:
        self._check_app(app_id)
        fake = self.fake
        return 200, fake.guild_commands.get(int(guild_id), []) if guild_id else fake.global_commands

    async def download(self, rec: RecordedRequest, channel_id: str, attachment_id: str, filename: str) -> Reply:
        """CDN stand-in: serves uploaded files (the bot's own and test-injected ones) by URL."""
        att = self.fake.attachments.get(int(attachment_id)) if attachment_id.isdigit() else None
        if att is None or att.filename != filename:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=att.data, content_type=att.content_type or "application/octet-stream")


def rate_limit_body(retry_after: float, is_global: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """A 429 discord.py will retry: JSON body plus ``Via`` (without it discord.py assumes a Cloudflare ban)."""
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
    headers = {
        "Via": "1.1 google",
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": f"{retry_after:.3f}",
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    return body, headers

"""Posting a finished clip so that a repeat can never double it, and finding a post an earlier attempt made.

Two ways to post, in this order:
- **In the channel with the bot's token and an enforced nonce**, wherever the interaction said the bot may (view,
  send, attach, embed). Discord then returns the first message for a repeat with the same nonce (discord.py's
  own re-send after a 5xx included), for a few minutes.
- **Through the interaction's webhook** while its token lives, when the bot may not post in the channel. Webhooks
  take no nonce, so this post is sent exactly once per attempt (no library retry after a 5xx or a dropped
  connection); only a 429, which Discord documents as not applied, is retried.

After an attempt that may have gone through, the worker asks `find_post` before posting again: the clip message
carries the job id in its Delete button, so the bot looks through the channel's messages since the job was made.
Where it cannot look (no Read Message History), it posts again: a possible duplicate rather than a paid clip
that nobody sees. The README says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import discord
import httpx

from bot.clock import Clock
from bot.discord.render import clip_embed, clip_view, custom_id
from bot.discord.reply_record import reply_record
from bot.domain import Job
from bot.errors import DeliveryError
from bot.errors.said import Said
from bot.i18n import N_, Texts

log = logging.getLogger(__name__)

POST_PERMISSIONS = discord.Permissions(view_channel=True, attach_files=True, embed_links=True)
FIND_LIMIT = 500
"""Messages looked through for an earlier post; a busy channel buries it past this only after hours."""
FIND_MARGIN = 60.0
"""Look from a minute before the job was made: clocks of the bot and of Discord differ a little."""
WEBHOOK_TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=10.0)
NETWORK_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)
IN_MEMORY_UPLOAD = 16 * 1024 * 1024
"""Clips up to this size are read in one go and sent from memory: aiohttp reads a file in 64 KiB chunks, each a
hop to its thread pool and back (a hundred for a clip of a few MB). Bigger ones are streamed from the disk."""


class TooLarge(Exception):
    """Discord refused the upload as too large (413)."""


class PostForbidden(DeliveryError):
    """The bot may not post in the job's channel, and the interaction cannot post for it either."""


class TokenDead(Exception):
    """The interaction token no longer works (expired, or the interaction is unknown)."""


class ClipPoster:
    def __init__(self, client: discord.Client, clock: Clock) -> None:
        self.client = client
        self.clock = clock
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    # --- posting --------------------------------------------------------------------------------------
    async def post(self, job: Job, upload: Path, tr: Texts, *, token_fresh: bool) -> int:
        """Post the clip, its embed and buttons in the language of `tr`; returns the message's id."""
        if may_post_in_channel(job):
            try:
                return await self._post_in_channel(job, upload, tr)
            except discord.Forbidden as exc:
                if not token_fresh:
                    _raise_forbidden(job, exc)
                log.info("job %s: not allowed to post in channel %s (%s); using the interaction", job.id,
                         job.channel_id, exc.code)  # fmt: skip
        if token_fresh:
            try:
                return await self._post_by_webhook(job, upload, tr)
            except TokenDead as exc:
                log.info("job %s: interaction token refused (%s); posting with the bot token", job.id, exc)
        try:
            return await self._post_in_channel(job, upload, tr)
        except discord.Forbidden as exc:
            _raise_forbidden(job, exc)

    async def _post_in_channel(self, job: Job, upload: Path, tr: Texts) -> int:
        # The REST call itself, not `channel.send`: that would build a `Message` from the answer and keep the
        # buttons' view in the client's view store for good (one per clip, for the worker's whole life), when
        # only the id is wanted and the buttons are answered by their dynamic items.
        try:
            with discord.http.handle_message_parameters(
                content=f"<@{job.user_id}>", file=await _clip_file(upload),
                embed=clip_embed(job, self.clock.now(), tr), view=clip_view(job, tr),
                allowed_mentions=_only_requester(job), previous_allowed_mentions=self.client.allowed_mentions,
                nonce=clip_nonce(job),
            ) as params:  # fmt: skip
                message = await self.client.http.send_message(job.channel_id, params=params)
        except discord.Forbidden:
            raise
        except discord.HTTPException as exc:
            if exc.status == 413:
                raise TooLarge from exc
            raise DeliveryError(f"posting failed: {exc.status} {exc.code}", retryable=exc.status >= 500
                                or exc.status == 429) from exc  # fmt: skip
        except NETWORK_ERRORS as exc:
            raise DeliveryError(f"posting failed: {exc!r}", retryable=True) from exc
        return int(message["id"])

    async def _post_by_webhook(self, job: Job, upload: Path, tr: Texts) -> int:
        record = reply_record(job.delivery_ref)
        assert record is not None
        params = discord.http.handle_message_parameters(
            content=f"<@{job.user_id}>", embed=clip_embed(job, self.clock.now(), tr), view=clip_view(job, tr),
            allowed_mentions=_only_requester(job),
        )  # fmt: skip
        payload = dict(params.payload or {})
        payload["attachments"] = [{"id": 0, "filename": "clip.mp4"}]
        url = f"{discord.http.Route.BASE}/webhooks/{record.application_id}/{record.token}"
        for _ in range(3):
            try:
                with upload.open("rb") as body:
                    response = await self._client().post(
                        url, params={"wait": "true"},
                        data={"payload_json": json.dumps(payload, separators=(",", ":"))},
                        files={"files[0]": ("clip.mp4", body, "video/mp4")},
                    )  # fmt: skip
            except httpx.TransportError as exc:
                # Sent or not, we cannot know: the worker looks for the post before trying again.
                raise DeliveryError(f"posting through the interaction failed: {exc!r}", retryable=True) from exc
            if response.status_code == 429:
                await asyncio.sleep(min(60.0, float(_json(response).get("retry_after", 1.0))))
                continue
            break
        status, body_json = response.status_code, _json(response)
        if status < 300:
            return int(body_json["id"])
        if status == 413:
            raise TooLarge
        if status in (401, 404):
            raise TokenDead(f"{status} {body_json.get('code')}")
        raise DeliveryError(f"posting through the interaction failed: {status} {body_json.get('code')}",
                            retryable=status >= 500 or status == 429)  # fmt: skip

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT)
        return self._http

    # --- finding --------------------------------------------------------------------------------------
    async def find_post(self, job: Job) -> int | None:
        channel = self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        since = dt.datetime.fromtimestamp(job.created_at - FIND_MARGIN, tz=dt.UTC)
        me = self.client.user.id if self.client.user else None
        wanted = custom_id("delete", job.id)
        try:
            async for message in channel.history(limit=FIND_LIMIT, after=since, oldest_first=True):
                if message.author.id == me and wanted in _custom_ids(message):
                    return int(message.id)
        except (discord.Forbidden, discord.NotFound) as exc:
            log.warning("job %s: cannot look for an earlier post in channel %s (%s %s); posting again, which may "
                        "show the clip twice", job.id, job.channel_id, exc.status, exc.code)  # fmt: skip
            return None
        except discord.HTTPException as exc:
            raise DeliveryError(f"looking for an earlier post failed: {exc.status}", retryable=True) from exc
        except NETWORK_ERRORS as exc:
            raise DeliveryError(f"looking for an earlier post failed: {exc!r}", retryable=True) from exc
        return None


def may_post_in_channel(job: Job) -> bool:
    """What the interaction said of the bot's permissions in the channel; unknown counts as allowed."""
    record = reply_record(job.delivery_ref)
    perms = record.app_permissions if record else None
    if perms is None:
        return True
    granted = discord.Permissions(perms)
    return POST_PERMISSIONS.is_subset(granted) and (granted.send_messages or granted.send_messages_in_threads)


def clip_nonce(job: Job) -> str:
    return f"clip-{job.id[:19]}"  # Discord caps nonces at 25 characters


def _only_requester(job: Job) -> discord.AllowedMentions:
    return discord.AllowedMentions(users=[discord.Object(job.user_id)], everyone=False, roles=False,
                                   replied_user=False)  # fmt: skip


def _raise_forbidden(job: Job, exc: discord.HTTPException) -> NoReturn:
    """Raise the refusal the member reads (with the refused request as its cause), as an id and its facts: the
    failed job's status shows it in the language of whoever reads it."""
    log.warning("job %s: no permission to post in channel %s of guild %s (%s)", job.id, job.channel_id,
                job.guild_id, exc.code)  # fmt: skip
    channel = f"<#{job.channel_id}>"
    raise PostForbidden(
        "missing permission to post",
        retryable=False,
        user_message=Said(N_("delivery.cannot-post"), {"channel": channel}),
    ) from exc


async def _clip_file(upload: Path) -> discord.File:
    if upload.stat().st_size <= IN_MEMORY_UPLOAD:
        return discord.File(io.BytesIO(await asyncio.to_thread(upload.read_bytes)), "clip.mp4")
    return discord.File(upload, "clip.mp4")


def _custom_ids(message: discord.Message) -> set[str]:
    found: set[str] = set()
    for row in message.components:
        for child in getattr(row, "children", ()):
            if getattr(child, "custom_id", None):
                found.add(str(child.custom_id))
    return found


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

"""Discord's side of the engine's `Delivery`: status message edits (coalesced) and posting finished clips.

Works from the gateway process and from a REST-only worker alike: it needs a logged-in `discord.Client`, not a
gateway connection. Status edits go through the interaction token while it lives (15 minutes, less a margin),
then through the bot's token. How a clip is posted exactly once is in `bot.discord.posting`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from discord.webhook.async_ import async_context

from bot.clock import Clock
from bot.discord.language import public_texts
from bot.discord.posting import NETWORK_ERRORS, ClipPoster, PostForbidden, TooLarge
from bot.discord.render import status_text, status_view
from bot.discord.replies import NO_PINGS
from bot.discord.reply_record import reply_record
from bot.domain import Job, JobState
from bot.errors import DeliveryError, StoreError
from bot.errors.said import Said
from bot.faults import crash_point
from bot.i18n import N_, Texts
from bot.media import MediaError, fit_to_size
from bot.store.base import JobStore

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60.0
TOKEN_MARGIN = 90.0
"""Stop using an interaction token this long before it expires: an upload must finish inside its life."""
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
SUPPRESSED = discord.MessageFlags(suppress_embeds=True)
FIT_HEADROOM = 0.97
"""Re-encode to a little under the limit: multipart overhead counts against it on some routes."""

ServerLanguage = Callable[[int], Awaitable[str | None]]
"""A server's chosen language for public messages (`GuildSettings.language`), None when it chose none."""


@dataclass
class _StatusSlot:
    job: Job
    last_edit: float = float("-inf")
    shown: tuple[str, int, bool, int | None] | None = None
    """(state, progress step, waiting at the provider, its queue position) last shown: identical edits are
    skipped."""


class DiscordDelivery:
    def __init__(
        self,
        clock: Clock,
        *,
        store: JobStore | None = None,
        status_interval: float = 5.0,
        progress_steps: int = 4,
        tick: float = 1.0,
        server_language: ServerLanguage | None = None,
    ) -> None:
        self.clock = clock
        self.store = store
        """Where each status message's last shown state is recorded, so edits lost in a crash are redone."""
        self.server_language = server_language
        """Asked before each public message about a job; it must be cheap (`JobService.guild_settings` keeps
        the settings a few seconds). None: the requester's language alone decides."""
        self.status_interval = status_interval
        self.progress_steps = progress_steps
        self.tick = tick
        self._client: discord.Client | None = None
        self._slots: dict[str, _StatusSlot] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._clip_poster: ClipPoster | None = None

    def attach(self, client: discord.Client) -> None:
        self._client = client

    @property
    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("DiscordDelivery used before a client was attached")
        return self._client

    # --- status messages ------------------------------------------------------------------------------
    async def job_updated(self, job: Job) -> None:
        if reply_record(job.delivery_ref) is None:
            return  # a job from elsewhere (the command line): no status message to keep up to date
        slot = self._slots.get(job.id)
        if slot is None:
            slot = self._slots[job.id] = _StatusSlot(job)
        slot.job = job
        if self._shown_key(job) != slot.shown:
            self._dirty.add(job.id)
            if job.state.is_terminal:
                self._wake.set()

    async def run_status_updates(self) -> None:
        """Flush coalesced status edits: at most one edit per job per `status_interval`, and only when what the
        member would see changed (state, or progress crossing a step), so a long job costs a fixed few edits."""
        while True:
            try:
                await self.flush_status()
            except Exception:
                log.exception("status update round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.tick)

    async def flush_status(self, *, final: bool = False) -> int:
        """Make the edits that are due (`final`: every pending one, when the process stops)."""
        now = self.clock.now()
        edited = 0
        for job_id in list(self._dirty):
            slot = self._slots[job_id]
            terminal = slot.job.state.is_terminal
            if not terminal and not final and now - slot.last_edit < self.status_interval:
                continue
            self._dirty.discard(job_id)
            key = self._shown_key(slot.job)
            if key != slot.shown:
                slot.shown, slot.last_edit = key, now
                await self._edit_status(slot.job)
                edited += 1
            if terminal:
                del self._slots[job_id]
        return edited

    def _shown_key(self, job: Job) -> tuple[str, int, bool, int | None]:
        running = job.state is JobState.RUNNING
        step = int(job.progress * self.progress_steps) if running else 0
        # The provider's queue position shows while nothing has started; each new position is one more edit,
        # still at most one per `status_interval`.
        waiting = (job.remote_waiting, job.remote_position) if running and step == 0 else (False, None)
        return job.state.value, step, *waiting

    async def _edit_status(self, job: Job) -> None:
        tr = await self.texts(job)
        params = _status_params(status_text(job, tr), status_view(job, tr))
        try:
            record = reply_record(job.delivery_ref)
            if record is not None and self._token_fresh(job):
                await _edit_original(self.client, record.application_id, record.token, params)
            elif record is not None and record.status_message_id is not None:
                await self.client.http.edit_message(job.channel_id, record.status_message_id, params=params)
        except discord.HTTPException as exc:
            # Status edits are best effort: the clip itself is posted whatever happens here.
            log.info("job %s: status edit failed (%s %s)", job.id, exc.status, exc.code)
            return
        except NETWORK_ERRORS as exc:
            log.info("job %s: status edit failed (%r)", job.id, exc)
            return
        crash_point("status_edited")
        if self.store is not None:
            try:
                await self.store.mark_status_shown(job.id, job.state)
            except StoreError as exc:
                log.info("job %s: could not record the status shown (%s)", job.id, exc)

    async def refresh_stale_statuses(self, *, within: float = 24 * 3600.0) -> int:
        """After a restart: status messages whose last edit was lost with the process (a job that ended just
        before the crash still saying "Finishing up…") are brought up to date."""
        if self.store is None:
            return 0
        jobs = await self.store.jobs_with_stale_status(self.clock.now() - within)
        for job in jobs:
            await self.job_updated(job)
        if jobs:
            log.info("%d status message(s) behind their job's state; updating them", len(jobs))
            self._wake.set()
        return len(jobs)

    # --- delivery -------------------------------------------------------------------------------------
    async def deliver(self, job: Job, clip: Path) -> int | None:
        record = reply_record(job.delivery_ref)
        limit = record.attachment_size_limit if record else DEFAULT_UPLOAD_LIMIT
        tr = await self.texts(job)
        upload = await self._fit(job, clip, limit)
        try:
            for _ in range(3):
                try:
                    return await self._poster().post(job, upload, tr, token_fresh=self._token_fresh(job))
                except TooLarge:
                    # Discord's limit is lower than the interaction said: shrink under what it refused.
                    limit = int(min(limit, upload.stat().st_size) * 0.8)
                    log.warning("job %s: upload refused as too large; re-encoding to %d bytes", job.id, limit)
                    upload = await self._fit(job, clip, limit, force=True)
                except PostForbidden:
                    await self._tell_by_dm(job, tr)
                    raise
            raise DeliveryError("upload refused as too large three times", retryable=False,
                                user_message=_too_large(limit))  # fmt: skip
        finally:
            if upload != clip:
                upload.unlink(missing_ok=True)

    async def find_post(self, job: Job) -> int | None:
        return await self._poster().find_post(job)

    def _poster(self) -> ClipPoster:
        if self._clip_poster is None:
            self._clip_poster = ClipPoster(self.client, self.clock)
        return self._clip_poster

    async def aclose(self) -> None:
        if self._clip_poster is not None:
            await self._clip_poster.aclose()

    async def _fit(self, job: Job, clip: Path, limit: int, *, force: bool = False) -> Path:
        if not force and clip.stat().st_size <= limit:
            return clip
        fitted = clip.with_name(f"{clip.stem}.fit.mp4")
        try:
            await asyncio.to_thread(fit_to_size, clip, fitted, int(limit * FIT_HEADROOM))
        except MediaError as exc:
            raise DeliveryError(str(exc), retryable=False, user_message=_too_large(limit)) from exc
        log.info("job %s: re-encoded %d → %d bytes to fit %d", job.id, clip.stat().st_size,
                 fitted.stat().st_size, limit)  # fmt: skip
        return fitted

    async def _tell_by_dm(self, job: Job, tr: Texts) -> None:
        try:
            dm = await self.client.create_dm(discord.Object(job.user_id))
            channel = f"<#{job.channel_id}>"
            await dm.send(tr("delivery.dm.cannot-post", channel=channel), allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:
            log.info("job %s: could not DM the member either (%s)", job.id, exc.status)

    # --- language -------------------------------------------------------------------------------------
    async def texts(self, job: Job) -> Texts:
        """The language of the job's public messages: the server's choice, else the requester's locale."""
        record = reply_record(job.delivery_ref)
        member_locale = record.locale if record else None
        chosen: str | None = None
        if self.server_language is not None:
            try:
                chosen = await self.server_language(job.guild_id)
            except Exception as exc:  # a status edit or a clip is never lost over the language it is in
                log.info("job %s: server language unknown (%r); using the member's", job.id, exc)
        return public_texts(chosen, member_locale)

    # --- tokens ---------------------------------------------------------------------------------------
    def _token_fresh(self, job: Job) -> bool:
        record = reply_record(job.delivery_ref)
        return record is not None and self.clock.now() < record.created_at + TOKEN_LIFETIME - TOKEN_MARGIN


async def edit_original_status(
    client: discord.Client, application_id: int, token: str, content: str, view: discord.ui.View
) -> int:
    """Replace an interaction's response with a status message; returns the message's id."""
    data = await _edit_original(client, application_id, token, _status_params(content, view))
    return int(data["id"])


def _status_params(content: str, view: discord.ui.View) -> discord.http.MultipartParameters:
    # SUPPRESS_EMBEDS: a link in a prompt must not unfold into a preview on the bot's public message.
    return discord.http.handle_message_parameters(
        content=content, view=view, allowed_mentions=NO_PINGS, flags=SUPPRESSED
    )


async def _edit_original(
    client: discord.Client, application_id: int, token: str, params: discord.http.MultipartParameters
) -> Any:
    # discord.py's Webhook.edit_message cannot set flags; its adapter (same route, same rate limits) can.
    # "@original" addresses the interaction's own response.
    webhook = discord.Webhook.partial(application_id, token, client=client)
    return await async_context.get().edit_webhook_message(
        application_id, token, "@original",  # type: ignore[arg-type]
        session=webhook.session, payload=params.payload,
    )  # fmt: skip


def _too_large(limit: int) -> Said:
    """Stored with the failed job as an id and its facts: each reader sees it in their own language."""
    return Said(N_("delivery.too-large"), {"megabytes": round(limit / 1024 / 1024)})

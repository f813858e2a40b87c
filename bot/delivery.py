"""Discord's side of the engine's `Delivery`: status message edits (coalesced) and posting finished clips.

Works from the gateway process and from a REST-only worker alike: it needs a logged-in `discord.Client`, not a
gateway connection. The interaction token is used while it lives (15 minutes, less a margin); after that the
bot's own token posts and edits in the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import discord

from bot.clock import Clock
from bot.delivery_render import clip_embed, clip_view, status_text, status_view
from bot.domain import Job, JobState
from bot.errors import DeliveryError
from bot.media import MediaError, fit_to_size
from bot.replies import NO_PINGS

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60.0
TOKEN_MARGIN = 90.0
"""Stop using an interaction token this long before it expires: an upload must finish inside its life."""
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
FIT_HEADROOM = 0.97
"""Re-encode to a little under the limit: multipart overhead counts against it on some routes."""


@dataclass
class _StatusSlot:
    job: Job
    last_edit: float = float("-inf")
    shown: tuple[str, int] | None = None
    """(state, progress step) last shown, so identical edits are skipped."""


class DiscordDelivery:
    def __init__(
        self,
        clock: Clock,
        *,
        status_interval: float = 5.0,
        progress_steps: int = 4,
        tick: float = 1.0,
    ) -> None:
        self.clock = clock
        self.status_interval = status_interval
        self.progress_steps = progress_steps
        self.tick = tick
        self._client: discord.Client | None = None
        self._slots: dict[str, _StatusSlot] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def attach(self, client: discord.Client) -> None:
        self._client = client

    @property
    def client(self) -> discord.Client:
        if self._client is None:
            raise RuntimeError("DiscordDelivery used before a client was attached")
        return self._client

    # --- status messages ------------------------------------------------------------------------------
    async def job_updated(self, job: Job) -> None:
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

    async def flush_status(self) -> int:
        now = self.clock.now()
        edited = 0
        for job_id in list(self._dirty):
            slot = self._slots[job_id]
            terminal = slot.job.state.is_terminal
            if not terminal and now - slot.last_edit < self.status_interval:
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

    def _shown_key(self, job: Job) -> tuple[str, int]:
        step = int(job.progress * self.progress_steps) if job.state is JobState.RUNNING else 0
        return job.state.value, step

    async def _edit_status(self, job: Job) -> None:
        content = status_text(job)
        view = status_view(job)
        try:
            if self._token_fresh(job):
                assert job.interaction is not None
                webhook = self._webhook(job)
                # "@original" addresses the interaction's own response; discord.py types message_id as int only.
                original: int = "@original"  # type: ignore[assignment]
                await webhook.edit_message(original, content=content, view=view, allowed_mentions=NO_PINGS)
            elif job.status_message_id is not None:
                message = self.client.get_partial_messageable(job.channel_id).get_partial_message(job.status_message_id)
                await message.edit(content=content, view=view, allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:
            # Status edits are best effort: the clip itself is posted whatever happens here.
            log.info("job %s: status edit failed (%s %s)", job.id, exc.status, exc.code)

    # --- delivery -------------------------------------------------------------------------------------
    async def deliver(self, job: Job, clip: Path) -> int | None:
        limit = job.interaction.attachment_size_limit if job.interaction else DEFAULT_UPLOAD_LIMIT
        upload = await self._fit(job, clip, limit)
        try:
            for _ in range(3):
                try:
                    return await self._post(job, upload)
                except discord.HTTPException as exc:
                    if exc.status != 413:
                        raise
                    # Discord's limit is lower than the interaction said: shrink under what it refused.
                    limit = int(min(limit, upload.stat().st_size) * 0.8)
                    log.warning("job %s: upload refused as too large; re-encoding to %d bytes", job.id, limit)
                    upload = await self._fit(job, clip, limit, force=True)
            raise DeliveryError("upload refused as too large three times", retryable=False,
                                user_message=_too_large(limit))  # fmt: skip
        finally:
            if upload != clip:
                upload.unlink(missing_ok=True)

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

    async def _post(self, job: Job, upload: Path) -> int:
        content = f"<@{job.user_id}>"
        embed = clip_embed(job, self.clock.now())
        view = clip_view(job)
        only_requester = discord.AllowedMentions(
            users=[discord.Object(job.user_id)], everyone=False, roles=False, replied_user=False
        )
        if self._token_fresh(job):
            try:
                sent = await self._webhook(job).send(
                    content, file=discord.File(upload, "clip.mp4"), embed=embed, view=view,
                    allowed_mentions=only_requester, wait=True,
                )  # fmt: skip
                return int(sent.id)
            except discord.HTTPException as exc:
                if exc.status != 401:
                    raise
                log.info("job %s: interaction token refused (%s); posting with the bot token", job.id, exc.code)
        channel = self.client.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            # The nonce makes a repeat (after a crash between posting and recording it) return the first post.
            message = await channel.send(
                content, file=discord.File(upload, "clip.mp4"), embed=embed, view=view,
                allowed_mentions=only_requester, nonce=_nonce(job),
            )  # fmt: skip
        except discord.Forbidden as exc:
            await self._tell_by_dm(job)
            log.warning("job %s: no permission to post in channel %s of guild %s (%s)", job.id, job.channel_id,
                        job.guild_id, exc.code)  # fmt: skip
            raise DeliveryError(
                "missing permission to post", retryable=False,
                user_message=f"I am not allowed to post in <#{job.channel_id}>; your credits were returned.",
            ) from exc  # fmt: skip
        except discord.HTTPException as exc:
            if exc.status == 413:
                raise
            raise DeliveryError(f"posting failed: {exc.status} {exc.code}", retryable=exc.status >= 500) from exc
        return int(message.id)

    async def _tell_by_dm(self, job: Job) -> None:
        try:
            dm = await self.client.create_dm(discord.Object(job.user_id))
            await dm.send(
                f"Your video is ready, but I am not allowed to post in <#{job.channel_id}>. "
                "Your credits were returned; please ask a server admin to check my permissions there.",
                allowed_mentions=NO_PINGS,
            )
        except discord.HTTPException as exc:
            log.info("job %s: could not DM the member either (%s)", job.id, exc.status)

    # --- tokens ---------------------------------------------------------------------------------------
    def _token_fresh(self, job: Job) -> bool:
        ref = job.interaction
        return ref is not None and self.clock.now() < ref.created_at + TOKEN_LIFETIME - TOKEN_MARGIN

    def _webhook(self, job: Job) -> discord.Webhook:
        assert job.interaction is not None
        return discord.Webhook.partial(job.interaction.application_id, job.interaction.token, client=self.client)


def _nonce(job: Job) -> str:
    return f"clip-{job.id[:19]}"  # Discord caps nonces at 25 characters


def _too_large(limit: int) -> str:
    return (
        f"The finished video is too large to post here even after compressing it (the limit is "
        f"{limit / 1024 / 1024:.0f} MB). Try a shorter duration; your credits were returned."
    )

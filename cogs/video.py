"""`/video`, the **Animate** message menu, and the buttons on status and clip messages.

Thin on purpose: parse options into a `VideoRequest`, call the job service, render the answer. Every
interaction is answered inside Discord's 3-second deadline. A command alone is answered with its status
message (or a private refusal) as soon as its enqueue is done; if the database is slower than a short budget,
it is deferred first. In a burst (other enqueues already waiting) a command cannot be answered at once, so it
is deferred before any database work, after a private refusal of what needs no transaction (rules, model):
the acknowledgement then costs what discord.py's own does (bench/discord_ack.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import ValidationError

from bot.discord.command_texts import command_text
from bot.discord.delivery import edit_original_status
from bot.discord.language import member_texts
from bot.discord.messages import describe
from bot.discord.render import alias_choice, model_choice, status_text, status_view
from bot.discord.replies import NO_PINGS, answer
from bot.discord.reply_record import ReplyRecord
from bot.domain import (
    ASPECTS,
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    Job,
    Requester,
    VideoRequest,
)
from bot.errors import (
    AttachmentNotAnImage,
    AttachmentTooHeavy,
    AttachmentTooLarge,
    BadOption,
    ImageDownloadFailed,
    ImageNotKept,
    NoImageInMessage,
    RefusedByRule,
    UnsupportedButton,
    UserError,
)
from bot.faults import crash_point
from bot.i18n import Texts
from bot.images import MAX_IMAGE_PIXELS

if TYPE_CHECKING:
    from bot.discord.client import VideoBot

ACK_BUDGET = 1.5
"""Seconds the enqueue may take before the interaction is deferred (Discord allows 3)."""
IMAGE_TYPES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
JOB_ID = r"([0-9a-f]{32})"
"""A job id in a button's custom_id (groups by position: the button's template is `video:(action):(job id)`)."""


def request_from_options(**options: Any) -> VideoRequest:
    """Build a request from command options; the first problem pydantic finds becomes a `BadOption`."""
    try:
        return VideoRequest(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        option = str(first["loc"][0]) if first["loc"] else "request"
        raise BadOption(option, problem=first["type"], message=first["msg"]) from None


class VideoCog(commands.Cog):
    def __init__(self, bot: VideoBot) -> None:
        self.bot = bot
        self._enqueues_pending = 0
        # Its English name (`self.animate_menu.name`) is what removes it again; members see their language's.
        self.animate_menu = app_commands.ContextMenu(
            name=command_text("cmd.animate.name"),
            callback=self.animate,
            allowed_contexts=app_commands.AppCommandContext(guild=True),
        )
        bot.tree.add_command(self.animate_menu)

    @property
    def enqueues_pending(self) -> int:
        """Requests between `submit` and their enqueue's outcome: more than one means a burst."""
        return self._enqueues_pending

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.animate_menu.name, type=self.animate_menu.type)

    # --- /video ---------------------------------------------------------------------------------------
    @app_commands.command(name="video", description=command_text("cmd.video.description"))
    @app_commands.guild_only()
    @app_commands.describe(
        prompt=command_text("cmd.video.prompt"),
        model=command_text("cmd.video.model"),
        duration=command_text("cmd.video.duration"),
        aspect=command_text("cmd.video.aspect"),
        seed=command_text("cmd.video.seed"),
        negative_prompt=command_text("cmd.video.negative_prompt"),
        image=command_text("cmd.video.image"),
    )
    # Aspect ratios ("16:9") read the same in every language: their names are their values.
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    async def video(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_CHARS],
        model: str | None = None,
        duration: app_commands.Range[int, 1, 60] | None = None,
        aspect: str | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        negative_prompt: app_commands.Range[str, 1, MAX_NEGATIVE_PROMPT_CHARS] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        if image is not None:
            _check_attachment(image, self.bot.settings.max_image_bytes)
        chosen_model, default_duration = await self.bot.jobs.defaults(interaction.guild_id or 0, model)
        options = {
            "prompt": prompt, "model": chosen_model, "aspect": aspect, "seed": seed,
            "negative_prompt": negative_prompt, "duration": duration or default_duration,
        }  # fmt: skip
        request = request_from_options(**options)  # refuse bad input before anything is staged or charged
        if image is None:
            await self.submit(interaction, request)
            return
        # Fetching the image may take longer than the deadline allows: acknowledge first.
        await interaction.response.defer(thinking=True)
        staged = await self.stage_or_refuse(interaction, image)
        if staged is not None:
            await self.submit(interaction, request_from_options(**options, image_ref=staged))

    @video.autocomplete("model")
    async def model_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        guild_id = interaction.guild_id or 0
        tr = member_texts(interaction)
        needle = current.lower()
        aliases = [
            app_commands.Choice(name=alias_choice(alias, chain, tr)[:100], value=alias)
            for alias, chain in await self.bot.jobs.enabled_aliases(guild_id)
            if needle in alias.lower()
        ]
        models = await self.bot.jobs.enabled_models(guild_id)
        matches = [m for m in models if needle in m.id.lower() or needle in m.label.lower()]
        return [*aliases, *(app_commands.Choice(name=model_choice(m, tr), value=m.id) for m in matches)][:25]

    # --- Animate (message menu) -----------------------------------------------------------------------
    async def animate(self, interaction: discord.Interaction, message: discord.Message) -> None:
        image = next((a for a in message.attachments if (a.content_type or "").split(";")[0] in IMAGE_TYPES), None)
        if image is None:
            raise NoImageInMessage()
        _check_attachment(image, self.bot.settings.max_image_bytes)
        # The channel rule before the modal, so nobody types a prompt that would be refused (enqueue checks again).
        who = self.bot.requester(interaction)
        try:
            await self.bot.jobs.check_channel(who)
        except RefusedByRule as refusal:
            await self.bot.log_channel.on_refusal(who, refusal, interaction.guild_locale)
            raise
        tr = member_texts(interaction)
        await interaction.response.send_modal(PromptModal(self, tr, title=tr("modal.animate.title"), image=image))

    # --- shared by /video, Animate, Again and Remix ---------------------------------------------------
    async def submit(self, interaction: discord.Interaction, request: VideoRequest) -> Job | None:
        """Enqueue and answer with the public status message; refusals are ephemeral and cost nothing.

        A staged input image belongs to this call until the job exists, then to the job: it is deleted here on
        a refusal or an error, and by the job's end otherwise. If the member cannot be told that the job was
        queued, the job is cancelled and refunded: nobody would be waiting for it."""
        who = self.bot.requester(interaction)
        record = ReplyRecord(
            application_id=interaction.application_id,
            token=interaction.token,
            created_at=self.bot.clock.now(),
            attachment_size_limit=interaction.filesize_limit,
            app_permissions=interaction.app_permissions.value,
            locale=interaction.locale.value,
            guild_locale=interaction.guild_locale.value if interaction.guild_locale else None,
        )
        enqueue: asyncio.Future[Job] | None = None
        self._enqueues_pending += 1
        try:
            if self._enqueues_pending > 1 and not interaction.response.is_done():
                # A burst: enqueues ahead of this one mean it cannot be answered at once. Refuse privately what
                # needs no transaction, then acknowledge before any database work, so the acknowledgement does
                # not queue behind the burst; the status message (or a refusal by quota) follows.
                try:
                    await self.bot.jobs.precheck(who, request)
                except UserError as refusal:
                    try:
                        await self._refused(interaction, who, request, refusal)
                    finally:  # counted once the member has the answer: the database may be busy with the burst
                        await self.bot.jobs.refused(who, request, refusal)
                    return None
                await interaction.response.defer(thinking=True)
            enqueue = asyncio.ensure_future(self.bot.jobs.enqueue(who, request, delivery_ref=record.dumps()))
            if not interaction.response.is_done():
                await asyncio.wait({enqueue}, timeout=ACK_BUDGET)
                if not enqueue.done():
                    await interaction.response.defer(thinking=True)
            job = await enqueue
        except UserError as refusal:  # the enqueue has counted it
            await self._refused(interaction, who, request, refusal)
            return None
        except BaseException:
            _discard(request)
            if enqueue is not None and enqueue.done() and not enqueue.cancelled() and enqueue.exception() is None:
                await self.bot.jobs.abandon(enqueue.result().id)  # queued, but the defer failed
            raise
        finally:
            self._enqueues_pending -= 1
        crash_point("enqueued")
        try:
            message_id = await self._show_queued(interaction, job)
        except BaseException:
            await self.bot.jobs.abandon(job.id)
            raise
        await self.bot.jobs.record_delivery_ref(job.id, record.with_status_message(message_id).dumps())
        return job

    async def _show_queued(self, interaction: discord.Interaction, job: Job) -> int:
        entry = await self.bot.jobs.entry(job)
        tr = await self.bot.delivery.texts(job)  # public: the server's language, else the member's
        content = status_text(job, tr, position=entry.position, eta=entry.eta)
        view = status_view(job, tr)
        if interaction.response.is_done():
            return await edit_original_status(self.bot, interaction.application_id, interaction.token, content, view)
        sent = await interaction.response.send_message(
            content, view=view, allowed_mentions=NO_PINGS, suppress_embeds=True
        )
        return sent.message_id or (await interaction.original_response()).id

    async def _refused(
        self, interaction: discord.Interaction, who: Requester, request: VideoRequest, refusal: UserError
    ) -> None:
        _discard(request)
        await self._refuse(interaction, describe(refusal, member_texts(interaction)))
        if isinstance(refusal, RefusedByRule):
            await self.bot.log_channel.on_refusal(who, refusal, interaction.guild_locale)

    async def _refuse(self, interaction: discord.Interaction, reason: str) -> None:
        if not interaction.response.is_done():
            await answer(interaction, reason)
            return
        # Already acknowledged publicly (slow database, or an image upload): drop the placeholder and say
        # why privately.
        with contextlib.suppress(discord.HTTPException):
            await interaction.delete_original_response()
        await interaction.followup.send(reason, ephemeral=True, allowed_mentions=NO_PINGS)

    async def stage_or_refuse(self, interaction: discord.Interaction, image: discord.Attachment) -> str | None:
        """Store the image where every worker can read it (its id, for `VideoRequest.image_ref`), or refuse it
        privately: the interaction is already acknowledged publicly (fetching an image can outlast Discord's
        deadline), and a refusal must not show in the channel."""
        try:
            return await self._stage_image(image)
        except UserError as refusal:
            await self._refuse(interaction, describe(refusal, member_texts(interaction)))
            return None

    async def _stage_image(self, image: discord.Attachment) -> str:
        # In memory, never on this disk: the worker that runs the job may be on another machine. The service
        # checks the image and stores it in the database (a refused image is never stored).
        try:
            data = await image.read()
        except discord.HTTPException as exc:
            raise ImageDownloadFailed() from exc
        max_bytes = self.bot.settings.max_image_bytes
        if len(data) > max_bytes:  # Discord's declared size was checked; this is what actually came
            raise AttachmentTooHeavy(image.filename, size=len(data), max_bytes=max_bytes)
        return await self.bot.jobs.store_input(data, (image.content_type or "").split(";")[0])


class PromptModal(discord.ui.Modal):
    """Asks for a prompt: for Animate (with the message's image) and for Remix (prefilled)."""

    def __init__(
        self,
        cog: VideoCog,
        tr: Texts,
        *,
        title: str,
        image: discord.Attachment | None = None,
        base: Job | None = None,
    ) -> None:
        super().__init__(title=title, timeout=600)
        self.cog = cog
        self.image = image
        self.base = base
        self.prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(
            label=tr("modal.prompt.label"), style=discord.TextStyle.paragraph, max_length=MAX_PROMPT_CHARS,
            default=base.request.prompt if base else None,
        )  # fmt: skip
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        bot = self.cog.bot
        if self.base is not None:
            fields = self.base.request.model_dump()
            fields.update(prompt=self.prompt.value, seed=None, image_path=None, image_ref=None)
            await self.cog.submit(interaction, request_from_options(**fields))
            return
        assert self.image is not None
        info = await bot.jobs.image_model(interaction.guild_id or 0)
        model = info.id
        request_from_options(prompt=self.prompt.value, model=model, duration=info.default_duration)
        await interaction.response.defer(thinking=True)
        staged = await self.cog.stage_or_refuse(interaction, self.image)
        if staged is None:
            return
        await self.cog.submit(
            interaction,
            request_from_options(prompt=self.prompt.value, model=model, duration=info.default_duration,
                                 image_ref=staged),
        )  # fmt: skip

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await self.cog.bot.report_error(interaction, error)


class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"video:(\w+):" + JOB_ID):
    """Every `video:<action>:<job id>` button, parsed from its custom_id, so old messages keep working."""

    def __init__(self, action: str, job_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=f"video:{action}:{job_id}"))
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> _JobButton:
        return cls(match[1], match[2])  # the action, the job id

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: VideoBot = interaction.client  # type: ignore[assignment]
        cog = bot.get_cog(VideoCog.__name__)
        assert isinstance(cog, VideoCog)
        try:
            await self._act(cog, interaction)
        except Exception as exc:
            await bot.report_error(interaction, exc)

    async def _act(self, cog: VideoCog, interaction: discord.Interaction) -> None:
        bot = cog.bot
        if self.action == "cancel":
            is_admin = await bot.is_admin(interaction)
            job = await bot.jobs.cancel(self.job_id, by_user=interaction.user.id, is_admin=is_admin)
            tr = await bot.delivery.texts(job)  # the status message is public: its language, not the clicker's
            content = status_text(job, tr)
            if not job.state.is_terminal:
                content = tr("status.cancelling") + "\n" + content
            await interaction.response.edit_message(content=content, view=status_view(job, tr),
                                                    allowed_mentions=NO_PINGS)  # fmt: skip
        elif self.action == "again":
            job = await bot.jobs.get(self.job_id)
            if job.request.image_path or job.request.image_ref:
                raise ImageNotKept(job.id)
            fields = job.request.model_dump()
            fields.update(seed=random.randint(0, MAX_SEED), image_path=None, image_ref=None)
            await cog.submit(interaction, request_from_options(**fields))
        elif self.action == "remix":
            job = await bot.jobs.get(self.job_id)
            tr = member_texts(interaction)
            await interaction.response.send_modal(PromptModal(cog, tr, title=tr("modal.remix.title"), base=job))
        elif self.action == "delete":
            await bot.jobs.owned(self.job_id, by_user=interaction.user.id, is_admin=await bot.is_admin(interaction))
            await interaction.response.defer()
            await interaction.delete_original_response()
        else:
            raise UnsupportedButton(self.action)


def _discard(request: VideoRequest) -> None:
    if request.image_path:
        Path(request.image_path).unlink(missing_ok=True)


def _check_attachment(image: discord.Attachment, max_bytes: int) -> None:
    kind = (image.content_type or "").split(";")[0]
    if kind not in IMAGE_TYPES:
        raise AttachmentNotAnImage(image.filename)
    if image.size > max_bytes:
        raise AttachmentTooHeavy(image.filename, size=image.size, max_bytes=max_bytes)
    # Discord measures images it can read; refusing here saves the download. Files it could not measure are
    # checked when stored (`JobService.store_input`), so this is a shortcut, not the guard.
    if image.width and image.height and image.width * image.height > MAX_IMAGE_PIXELS:
        raise AttachmentTooLarge(image.width, image.height, MAX_IMAGE_PIXELS, filename=image.filename)


async def setup(bot: VideoBot) -> None:  # type: ignore[misc]
    await bot.add_cog(VideoCog(bot))
    bot.add_dynamic_items(_JobButton)

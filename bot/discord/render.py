"""What members see: status lines, the clip's embed, the buttons, and the `/queue` and `/quota` embeds, in the
language of the `tr` given (the caller knows whom a message answers: `bot.discord.language`).
`custom_id` is `video:<action>:<job id>` so buttons keep working after a restart (the cogs' dynamic items
parse it)."""

from __future__ import annotations

import discord
from babel.numbers import format_decimal

from bot.discord.messages import allowance, code, reason_text
from bot.discord.replies import progress_bar, quote, timestamp
from bot.discord.reply_record import reply_record
from bot.domain import Job, JobState, ModelInfo, QueueEntry, Usage
from bot.i18n import Texts
from bot.text import duration_range

ACTIONS = ("cancel", "again", "remix", "delete")
MAX_LISTED = 10
"""Jobs listed one by one in `/queue`; the rest are counted (an embed holds 4,096 characters)."""


def custom_id(action: str, job_id: str) -> str:
    assert action in ACTIONS
    return f"video:{action}:{job_id}"


def fallback_note(job: Job, tr: Texts) -> str:
    """For a job on a model alias that moved on: which model made it, and which could not (and why)."""
    if job.route is None or not job.route.tried:
        return ""
    first = job.route.tried[0]
    return "\n" + tr("status.fallback", alias=code(job.route.alias), model=code(job.model),
                     tried=code(first.model), reason=quote(reason_text(first.reason, tr), 160))  # fmt: skip


def status_text(job: Job, tr: Texts, *, position: int | None = None, eta: float | None = None) -> str:
    summary = tr("status.summary", prompt=quote(job.request.prompt, 120), model=code(job.model),
                 seconds=job.request.duration)  # fmt: skip
    return _state_line(job, tr, position, eta) + "\n" + summary + fallback_note(job, tr)


def _state_line(job: Job, tr: Texts, position: int | None, eta: float | None) -> str:
    """The status message's first line (the failure's, two lines): what the job is doing now."""
    state = job.state
    if state is JobState.QUEUED:
        if eta is None:
            return tr("status.queued") if position is None else tr("status.queued.position", position=position)
        ready_at = timestamp(eta)
        if position is None:
            return tr("status.queued.eta", ready_at=ready_at)
        return tr("status.queued.position-eta", position=position, ready_at=ready_at)
    if state in (JobState.SUBMITTING, JobState.RUNNING):
        if job.remote_waiting or (job.remote_position is not None and job.progress == 0):
            place = job.remote_position
            if place is None:
                return tr("status.provider-waiting")
            if place == 0:
                return tr("status.provider-waiting.next")
            return tr("status.provider-waiting.position", position=place + 1)
        return tr("status.generating", progress=progress_bar(job.progress))
    if state in (JobState.DOWNLOADING, JobState.DELIVERING):
        return tr("status.finishing")
    if state is JobState.DELIVERED:
        return tr("status.done")
    if state is JobState.CANCELLED:
        return tr.plural("status.cancelled", job.credits)
    reason = quote(reason_text(job.error, tr) or tr("status.failed.default-reason"), 400)
    return tr.plural("status.failed", job.credits, reason=reason)


def status_view(job: Job, tr: Texts) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if not job.state.is_terminal:
        view.add_item(discord.ui.Button(label=tr("button.cancel"), style=discord.ButtonStyle.danger,
                                        custom_id=custom_id("cancel", job.id)))  # fmt: skip
    return _answered_by_dynamic_items(view)


def clip_view(job: Job, tr: Texts) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label=tr("button.again"), emoji="🔁", style=discord.ButtonStyle.primary,
                                    custom_id=custom_id("again", job.id)))  # fmt: skip
    view.add_item(discord.ui.Button(label=tr("button.remix"), emoji="✏️", style=discord.ButtonStyle.secondary,
                                    custom_id=custom_id("remix", job.id)))  # fmt: skip
    view.add_item(discord.ui.Button(label=tr("button.delete"), emoji="🗑️", style=discord.ButtonStyle.secondary,
                                    custom_id=custom_id("delete", job.id)))  # fmt: skip
    return _answered_by_dynamic_items(view)


def _answered_by_dynamic_items(view: discord.ui.View) -> discord.ui.View:
    """The view stopped before it is sent: its buttons are answered by the cogs' dynamic items (which parse the
    custom id), and discord.py keeps every unstopped view it sends in the client for good, one per status
    message and per clip over the life of the process."""
    view.stop()
    return view


def clip_embed(job: Job, now: float, tr: Texts) -> discord.Embed:
    request = job.request
    embed = discord.Embed(description=quote(request.prompt, 4000), colour=discord.Colour.blurple())
    model = code(job.model)
    if job.route and job.route.tried:
        model = tr("clip.model.fallback", model=model, tried=code(job.route.tried[0].model))
    embed.add_field(name=tr("clip.field.model"), value=model)
    embed.add_field(name=tr("clip.field.duration"),
                    value=tr("clip.duration", seconds=request.duration, aspect=request.aspect))  # fmt: skip
    # A seed is an identifier to copy, not an amount: no thousands separators.
    seed = str(request.seed) if request.seed is not None else tr("clip.seed.random")
    embed.add_field(name=tr("clip.field.seed"), value=seed)
    embed.add_field(name=tr("clip.field.credits"), value=tr.number(job.credits))
    embed.add_field(name=tr("clip.field.time-taken"),
                    value=tr("clip.time-taken", seconds=round(max(0.0, now - job.created_at))))  # fmt: skip
    if request.negative_prompt:
        embed.add_field(name=tr("clip.field.negative-prompt"), value=quote(request.negative_prompt, 1000),
                        inline=False)  # fmt: skip
    return embed


def add_usage_fields(embed: discord.Embed, usage: Usage, tr: Texts) -> discord.Embed:
    """The six fields of `/quota`: credits as plain numbers, `Resets` as a timestamp."""
    policy = usage.policy
    embed.add_field(name=tr("quota.field.used"), value=tr.number(usage.used))
    embed.add_field(name=tr("quota.field.reserved"), value=tr.number(usage.reserved))
    left = tr("quota.left.unlimited") if policy.unlimited else tr.number(usage.left)
    embed.add_field(name=tr("quota.field.left"), value=left)
    embed.add_field(name=tr("quota.field.resets"), value=timestamp(usage.window_end, "R"))
    embed.add_field(name=tr("quota.field.queued"), value=tr("quota.slots", used=usage.queued, limit=policy.max_queued))
    embed.add_field(name=tr("quota.field.running"),
                    value=tr("quota.slots", used=usage.running, limit=policy.max_running))  # fmt: skip
    return embed


def quota_embed(usage: Usage, title: str, tr: Texts) -> discord.Embed:
    embed = discord.Embed(title=title, description=allowance(usage, tr), colour=discord.Colour.blurple())
    return add_usage_fields(embed, usage, tr)


def queue_embed(entries: list[QueueEntry], depth: int, guild_id: int, tr: Texts) -> discord.Embed:
    embed = discord.Embed(title=tr("queue.title"), colour=discord.Colour.blurple())
    if not entries:
        embed.description = tr("queue.empty")
    else:
        lines = [_entry_text(entry, guild_id, tr) for entry in entries[:MAX_LISTED]]
        if len(entries) > MAX_LISTED:
            lines.append(tr.plural("queue.more", len(entries) - MAX_LISTED))
        embed.description = "\n\n".join(lines)
    embed.add_field(name=tr("queue.field.server-queue"), value=tr.plural("queue.waiting", depth))
    return embed


def _entry_text(entry: QueueEntry, guild_id: int, tr: Texts) -> str:
    job = entry.job
    text = status_text(job, tr, position=entry.position, eta=entry.eta)
    record = reply_record(job.delivery_ref)
    if record is not None and record.status_message_id is not None:
        url = f"https://discord.com/channels/{guild_id}/{job.channel_id}/{record.status_message_id}"
        text += " · " + tr("queue.status-link", url=url)
    return text


def alias_choice(alias: str, chain: list[ModelInfo], tr: Texts) -> str:
    """An alias as autocomplete lists it: `fast · Veo 3.1 Fast, then Wan 2.2 (fal), then Local preview`."""
    models = tr("autocomplete.alias.then").join(m.label for m in chain)[:90]
    return tr("autocomplete.alias", alias=alias, models=models)


def model_choice(model: ModelInfo, tr: Texts) -> str:
    """A model as autocomplete lists it: `Wan 2.2 (fal) · 2 cr/s · 5-10 s · image` (Discord keeps 100 chars)."""
    # Up to three decimals, none trailing (`2`, `0.5`, `1.25`), with the locale's decimal sign.
    rate = format_decimal(model.weight, locale=tr.locale)
    parts = [model.label, tr("autocomplete.model.rate", rate=rate), duration_range(model.durations)]
    if model.supports_image:
        parts.append(tr("autocomplete.model.image"))
    return " · ".join(parts)[:100]

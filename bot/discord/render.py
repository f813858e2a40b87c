"""What members see: status lines, the clip's embed, the buttons, and the `/queue` and `/quota` embeds.
`custom_id` is `video:<action>:<job id>` so buttons keep working after a restart (the cogs' dynamic items
parse it)."""

from __future__ import annotations

import discord

from bot.discord.messages import allowance
from bot.discord.replies import progress_bar, quote, timestamp
from bot.discord.reply_record import reply_record
from bot.domain import Job, JobState, ModelInfo, QueueEntry, Usage
from bot.text import duration_range

ACTIONS = ("cancel", "again", "remix", "delete")
MAX_LISTED = 10
"""Jobs listed one by one in `/queue`; the rest are counted (an embed holds 4,096 characters)."""


def custom_id(action: str, job_id: str) -> str:
    assert action in ACTIONS
    return f"video:{action}:{job_id}"


def fallback_note(job: Job) -> str:
    """For a job on a model alias that moved on: which model made it, and which could not (and why)."""
    if job.route is None or not job.route.tried:
        return ""
    first = job.route.tried[0]
    return (f"\n↪️ `{job.route.alias}`: made with `{job.model}` instead of `{first.model}`, which could not take "
            f"it ({quote(first.reason, 160)})")  # fmt: skip


def status_text(job: Job, *, position: int | None = None, eta: float | None = None) -> str:
    what = f"**{quote(job.request.prompt, 120)}** · `{job.model}` · {job.request.duration}s" + fallback_note(job)
    state = job.state
    if state is JobState.QUEUED:
        where = f"#{position} in line" if position is not None else "waiting"
        when = f", ready {timestamp(eta)}" if eta is not None else ""
        return f"🕒 Queued ({where}{when})\n{what}"
    if state in (JobState.SUBMITTING, JobState.RUNNING):
        if job.remote_waiting or (job.remote_position is not None and job.progress == 0):
            place = job.remote_position
            ahead = "" if place is None else " (next in its queue)" if place == 0 else f" (#{place + 1} in its queue)"
            return f"🕒 Waiting at the video service{ahead}\n{what}"
        return f"🎬 Generating {progress_bar(job.progress)}\n{what}"
    if state in (JobState.DOWNLOADING, JobState.DELIVERING):
        return f"📦 Finishing up…\n{what}"
    if state is JobState.DELIVERED:
        return f"✅ Done, posted below.\n{what}"
    if state is JobState.CANCELLED:
        return f"🚫 Cancelled; your {job.credits} credits were returned.\n{what}"
    reason = quote(job.error or "the video service failed", 400)
    return f"❌ Failed: {reason}\nYour {job.credits} credits were returned.\n{what}"


def status_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if not job.state.is_terminal:
        view.add_item(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.danger,
                                        custom_id=custom_id("cancel", job.id)))  # fmt: skip
    return view


def clip_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="Again", emoji="🔁", style=discord.ButtonStyle.primary,
                                    custom_id=custom_id("again", job.id)))  # fmt: skip
    view.add_item(discord.ui.Button(label="Remix", emoji="✏️", style=discord.ButtonStyle.secondary,
                                    custom_id=custom_id("remix", job.id)))  # fmt: skip
    view.add_item(discord.ui.Button(label="Delete", emoji="🗑️", style=discord.ButtonStyle.secondary,
                                    custom_id=custom_id("delete", job.id)))  # fmt: skip
    return view


def clip_embed(job: Job, now: float) -> discord.Embed:
    request = job.request
    embed = discord.Embed(description=quote(request.prompt, 4000), colour=discord.Colour.blurple())
    fell_back = f" (fallback for `{job.route.tried[0].model}`)" if job.route and job.route.tried else ""
    embed.add_field(name="Model", value=f"`{job.model}`{fell_back}")
    embed.add_field(name="Duration", value=f"{request.duration}s · {request.aspect}")
    embed.add_field(name="Seed", value=str(request.seed) if request.seed is not None else "random")
    embed.add_field(name="Credits", value=str(job.credits))
    embed.add_field(
        name="Time taken",
        value=f"{max(0.0, now - job.created_at):.0f}s from request to clip",
    )
    if request.negative_prompt:
        embed.add_field(name="Negative prompt", value=quote(request.negative_prompt, 1000), inline=False)
    return embed


def add_usage_fields(embed: discord.Embed, usage: Usage) -> discord.Embed:
    """The six fields of `/quota`: credits as plain integers, `Resets` as a timestamp."""
    policy = usage.policy
    embed.add_field(name="Used", value=str(usage.used))
    embed.add_field(name="Reserved", value=str(usage.reserved))
    embed.add_field(name="Left", value="unlimited" if policy.unlimited else str(usage.left))
    embed.add_field(name="Resets", value=timestamp(usage.window_end, "R"))
    embed.add_field(name="Queued", value=f"{usage.queued} / {policy.max_queued}")
    embed.add_field(name="Running", value=f"{usage.running} / {policy.max_running}")
    return embed


def quota_embed(usage: Usage, title: str) -> discord.Embed:
    embed = discord.Embed(title=title, description=allowance(usage), colour=discord.Colour.blurple())
    return add_usage_fields(embed, usage)


def queue_embed(entries: list[QueueEntry], depth: int, guild_id: int) -> discord.Embed:
    embed = discord.Embed(title="Your videos", colour=discord.Colour.blurple())
    if not entries:
        embed.description = "You have no videos in progress. Start one with `/video`."
    else:
        lines = [_entry_text(entry, guild_id) for entry in entries[:MAX_LISTED]]
        if len(entries) > MAX_LISTED:
            lines.append(f"…and {len(entries) - MAX_LISTED} more.")
        embed.description = "\n\n".join(lines)
    embed.add_field(name="Server queue", value=f"{depth} {'job' if depth == 1 else 'jobs'} waiting")
    return embed


def _entry_text(entry: QueueEntry, guild_id: int) -> str:
    job = entry.job
    text = status_text(job, position=entry.position, eta=entry.eta)
    record = reply_record(job.delivery_ref)
    if record is not None and record.status_message_id is not None:
        url = f"https://discord.com/channels/{guild_id}/{job.channel_id}/{record.status_message_id}"
        text += f" · [status]({url})"
    return text


def alias_choice(alias: str, chain: list[ModelInfo]) -> str:
    """An alias as autocomplete lists it: `fast · Veo 3.1 Fast, then Wan 2.2 (fal), then Local preview`."""
    return f"{alias} · " + ", then ".join(m.label for m in chain)[:90]


def model_choice(model: ModelInfo) -> str:
    """A model as autocomplete lists it: `Wan 2.2 (fal) · 2 cr/s · 5-10 s · image` (Discord keeps 100 chars)."""
    parts = [model.label, f"{model.weight:g} cr/s", duration_range(model.durations)]
    if model.supports_image:
        parts.append("image")
    return " · ".join(parts)[:100]

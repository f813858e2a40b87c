"""What members see: status lines, the clip's embed and the buttons. `custom_id` is `video:<action>:<job id>`
so buttons keep working after a restart (the cogs' dynamic items parse it)."""

from __future__ import annotations

import discord

from bot.discord.replies import progress_bar, quote, timestamp
from bot.domain import Job, JobState

ACTIONS = ("cancel", "again", "remix", "delete")


def custom_id(action: str, job_id: str) -> str:
    assert action in ACTIONS
    return f"video:{action}:{job_id}"


def status_text(job: Job, *, position: int | None = None, eta: float | None = None) -> str:
    what = f"**{quote(job.request.prompt, 120)}** · `{job.model}` · {job.request.duration}s"
    state = job.state
    if state is JobState.QUEUED:
        where = f"#{position} in line" if position is not None else "waiting"
        when = f", ready {timestamp(eta)}" if eta is not None else ""
        return f"🕒 Queued ({where}{when})\n{what}"
    if state in (JobState.SUBMITTING, JobState.RUNNING):
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
    embed.add_field(name="Model", value=f"`{job.model}`")
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

"""`/queue` and `/quota`: what a member sees of their own jobs and credits. Both answers are ephemeral embeds;
the quota fields are shared with `/videoadmin quota show`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.render import status_text
from bot.discord.replies import answer, timestamp
from bot.domain import QueueEntry, Usage

if TYPE_CHECKING:
    from bot.discord.client import VideoBot

MAX_LISTED = 10
"""Jobs listed one by one in `/queue`; the rest are counted (an embed holds 4,096 characters)."""


def add_usage_fields(embed: discord.Embed, usage: Usage) -> discord.Embed:
    """The six fields interface.md fixes for `/quota`: credits as plain integers, `Resets` as a timestamp."""
    policy = usage.policy
    embed.add_field(name="Used", value=str(usage.used))
    embed.add_field(name="Reserved", value=str(usage.reserved))
    embed.add_field(name="Left", value="unlimited" if policy.unlimited else str(usage.left))
    embed.add_field(name="Resets", value=timestamp(usage.window_end, "R"))
    embed.add_field(name="Queued", value=f"{usage.queued} / {policy.max_queued}")
    embed.add_field(name="Running", value=f"{usage.running} / {policy.max_running}")
    return embed


def this_window(period: str) -> str:
    """ "today", "this week"…: how a member thinks of the current quota window."""
    return "today" if period == "day" else f"this {period}"


def allowance(usage: Usage) -> str:
    """One line on what the member gets per window, e.g. "60 credits per day, plus 10 granted"."""
    policy = usage.policy
    if policy.unlimited:
        return f"Unlimited credits per {policy.period}."
    text = f"{policy.credits} credits per {policy.period}"
    if usage.granted > 0:
        text += f", plus {usage.granted} granted {this_window(policy.period)}"
    elif usage.granted < 0:
        text += f", minus {-usage.granted} taken back {this_window(policy.period)}"
    return text + "."


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
    if job.status_message_id is not None:
        url = f"https://discord.com/channels/{guild_id}/{job.channel_id}/{job.status_message_id}"
        text += f" · [status]({url})"
    return text


class QueueCog(commands.Cog):
    def __init__(self, bot: VideoBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Your videos in progress and the server's queue")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction) -> None:
        guild_id = interaction.guild_id or 0
        entries = await self.bot.jobs.queue_entries(guild_id, interaction.user.id)
        depth = await self.bot.store.queue_depth(guild_id)
        await answer(interaction, embed=queue_embed(entries, depth, guild_id))

    @app_commands.command(name="quota", description="Your credits used and left, and when they refill")
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        usage = await self.bot.jobs.usage(self.bot.requester(interaction))
        await answer(interaction, embed=quota_embed(usage, "Your video quota"))


async def setup(bot: VideoBot) -> None:
    await bot.add_cog(QueueCog(bot))

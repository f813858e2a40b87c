"""`/videoadmin stats`: the server's credits and provider spend per day and model as a PNG chart, with the top
members by credits and the refusals by rule.

The command sits directly under `/videoadmin` (not in a subgroup), so the group's run-time admin check applies
to it as its parent's. The chart takes a moment (matplotlib's first import, then the drawing, in a thread): the
interaction is deferred first, inside Discord's 3-second deadline.
"""

from __future__ import annotations

import asyncio
import io
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.discord.chart import FILENAME, render_chart
from bot.discord.command_texts import command_text
from bot.discord.language import member_texts
from bot.discord.replies import NO_PINGS
from bot.discord.stats_reply import stats_embed
from bot.jobs.stats import DEFAULT_DAYS, MAX_DAYS, StatsService

if TYPE_CHECKING:
    from bot.discord.client import VideoBot

Days = app_commands.Range[int, 1, MAX_DAYS]


def stats_command(bot: VideoBot) -> app_commands.Command[Any, ..., None]:
    """A fresh `stats` command for one bot's `/videoadmin` group (a command belongs to one parent)."""
    service = StatsService(bot.store, bot.clock)

    @app_commands.command(name="stats", description=command_text("cmd.videoadmin.stats.description"))
    @app_commands.describe(days=command_text("cmd.videoadmin.stats.days"))
    async def stats(interaction: discord.Interaction, days: Days = DEFAULT_DAYS) -> None:
        tr = member_texts(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        numbers = await service.server_stats(interaction.guild_id or 0, days)
        balances = await bot.jobs.balances.current()
        png = await asyncio.to_thread(render_chart, numbers, tr)
        await interaction.followup.send(
            embed=stats_embed(numbers, balances, tr),
            file=discord.File(io.BytesIO(png), filename=FILENAME),
            ephemeral=True,
            allowed_mentions=NO_PINGS,
        )

    return stats

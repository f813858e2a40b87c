"""`/queue` and `/quota`: what a member sees of their own jobs and credits. Both answers are ephemeral embeds
(`bot.discord.render`; the quota fields are shared with `/videoadmin quota show`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.command_texts import command_text
from bot.discord.language import member_texts
from bot.discord.render import queue_embed, quota_embed
from bot.discord.replies import answer

if TYPE_CHECKING:
    from bot.discord.client import VideoBot


class QueueCog(commands.Cog):
    def __init__(self, bot: VideoBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description=command_text("cmd.queue.description"))
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction) -> None:
        guild_id = interaction.guild_id or 0
        view = await self.bot.jobs.queue(guild_id, interaction.user.id)
        await answer(interaction, embed=queue_embed(view.entries, view.depth, guild_id, member_texts(interaction)))

    @app_commands.command(name="quota", description=command_text("cmd.quota.description"))
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction) -> None:
        usage = await self.bot.jobs.usage(self.bot.requester(interaction))
        tr = member_texts(interaction)
        await answer(interaction, embed=quota_embed(usage, tr("quota.title"), tr))


async def setup(bot: VideoBot) -> None:
    await bot.add_cog(QueueCog(bot))

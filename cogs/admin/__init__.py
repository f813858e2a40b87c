"""`/videoadmin …`: server admins change quotas, block members, run the queue and pick models.

Every command is checked at run time (`AdminGroup.interaction_check`): Manage Server or the server's admin
role. The command's `default_permissions` only hides it from others, and server owners can change that.
Naming the admin role itself needs Manage Server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord.render import model_choice
from bot.discord.replies import answer
from bot.jobs.admin_settings import MAX_BUDGET, SettingsChange
from cogs.admin.quota import AdminGroup, MemberOption, QuotaGroup
from cogs.admin.rules import (
    BlocklistGroup,
    ChannelGroup,
    audit_command,
    changed_text,
    language_autocomplete,
    settings_text,
)
from cogs.admin.stats import stats_command

if TYPE_CHECKING:
    from bot.discord.client import VideoBot


async def model_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Every configured model (a disabled one must be findable to enable it again); nothing for non-admins."""
    bot = cast("VideoBot", interaction.client)
    if not await bot.is_admin(interaction):
        return []
    needle = current.lower()
    models = [m for m in bot.jobs.registry.models() if needle in m.id.lower() or needle in m.label.lower()]
    return [app_commands.Choice(name=model_choice(m), value=m.id) for m in models[:25]]


class MemberGroup(AdminGroup, name="user", description="Block or unblock a member"):
    @app_commands.command(name="block", description="Stop a member from generating videos on this server")
    @app_commands.describe(user="The member to block")
    async def block(self, interaction: discord.Interaction, user: MemberOption) -> None:
        await self.bot.admin.block(interaction.guild_id or 0, user.id, by=interaction.user.id)
        await answer(interaction, f"{user.mention} is now blocked: their `/video` requests are refused. "
                                  "Jobs already queued still run; `/videoadmin queue clear` cancels them.")  # fmt: skip

    @app_commands.command(name="unblock", description="Let a blocked member generate videos again")
    @app_commands.describe(user="The member to unblock")
    async def unblock(self, interaction: discord.Interaction, user: MemberOption) -> None:
        await self.bot.admin.unblock(interaction.guild_id or 0, user.id, by=interaction.user.id)
        await answer(interaction, f"{user.mention} is no longer blocked and can use `/video` again.")


class QueueGroup(AdminGroup, name="queue", description="Pause, resume or clear the server's video queue"):
    @app_commands.command(name="pause", description="Refuse new videos and hold waiting ones")
    async def pause(self, interaction: discord.Interaction) -> None:
        await self.bot.admin.pause(interaction.guild_id or 0, by=interaction.user.id)
        await answer(interaction, "The video queue is paused: new `/video` requests are refused and waiting jobs "
                                  "stay queued. Videos already generating finish.")  # fmt: skip

    @app_commands.command(name="resume", description="Accept videos again and start waiting ones")
    async def resume(self, interaction: discord.Interaction) -> None:
        await self.bot.admin.resume(interaction.guild_id or 0, by=interaction.user.id)
        await answer(interaction, "The video queue is running again.")

    @app_commands.command(name="clear", description="Cancel and refund every waiting video on this server")
    async def clear(self, interaction: discord.Interaction) -> None:
        cancelled = await self.bot.admin.clear_queue(interaction.guild_id or 0, by=interaction.user.id)
        if not cancelled:
            await answer(interaction, "No videos were waiting; nothing was cancelled.")
            return
        jobs = "1 waiting video" if len(cancelled) == 1 else f"{len(cancelled)} waiting videos"
        refunded = sum(job.credits for job in cancelled)
        credits = "1 credit" if refunded == 1 else f"{refunded} credits"
        await answer(interaction, f"Cancelled {jobs} and refunded {credits}. Videos already generating "
                                  "were not touched.")  # fmt: skip


class ModelGroup(AdminGroup, name="model", description="Choose which models this server may use"):
    @app_commands.command(name="enable", description="Let members use a model")
    @app_commands.describe(model="The model, provider/model")
    @app_commands.autocomplete(model=model_autocomplete)
    async def enable(self, interaction: discord.Interaction, model: str) -> None:
        await self.bot.admin.set_model_enabled(interaction.guild_id or 0, model, True, by=interaction.user.id)
        await answer(interaction, f"`{model}` is enabled on this server.")

    @app_commands.command(name="disable", description="Stop members from using a model")
    @app_commands.describe(model="The model, provider/model")
    @app_commands.autocomplete(model=model_autocomplete)
    async def disable(self, interaction: discord.Interaction, model: str) -> None:
        settings = await self.bot.admin.set_model_enabled(
            interaction.guild_id or 0, model, False, by=interaction.user.id
        )
        default = settings.default_model or self.bot.jobs.registry.default_model
        note = "" if default != model else " Pick another default with `/videoadmin model default`."
        await answer(interaction, f"`{model}` is disabled on this server: `/video` refuses it.{note}")

    @app_commands.command(name="default", description="The model /video uses when none is given")
    @app_commands.describe(model="The model, provider/model")
    @app_commands.autocomplete(model=model_autocomplete)
    async def default(self, interaction: discord.Interaction, model: str) -> None:
        await self.bot.admin.set_default_model(interaction.guild_id or 0, model, by=interaction.user.id)
        await answer(interaction, f"`{model}` is now this server's default model for `/video`.")

    @app_commands.command(name="list", description="Every configured model, enabled or not")
    async def list_models(self, interaction: discord.Interaction) -> None:
        lines = []
        for info, enabled, is_default in await self.bot.admin.models(interaction.guild_id or 0):
            marks = [info.label, "enabled" if enabled else "**disabled**"] + (["⭐ default"] if is_default else [])
            lines.append(f"{'✅' if enabled else '🚫'} `{info.id}` · {' · '.join(marks)}")
        embed = discord.Embed(title="Models", description="\n".join(lines)[:4096], colour=discord.Colour.blurple())
        await answer(interaction, embed=embed)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class VideoAdmin(AdminGroup, name="videoadmin", description="Video bot settings for server admins"):
    @app_commands.command(name="settings", description="Server settings; with no option, shows them")
    @app_commands.describe(
        admin_role="Members with this role count as video admins (besides Manage Server)",
        log_channel="Where admin changes and refusals by rule are posted",
        monthly_budget="US dollars the server may spend on providers per calendar month, by list price (0: off)",
        language="The language of public messages (auto: the server's own locale)",
        clear="Drop a setting: the admin role, or the log channel",
    )
    @app_commands.autocomplete(language=language_autocomplete)
    @app_commands.choices(clear=[app_commands.Choice(name="admin role", value="admin_role"),
                                 app_commands.Choice(name="log channel", value="log_channel")])  # fmt: skip
    async def settings(
        self,
        interaction: discord.Interaction,
        admin_role: discord.Role | None = None,
        log_channel: discord.TextChannel | None = None,
        monthly_budget: app_commands.Range[float, 0, MAX_BUDGET] | None = None,
        language: str | None = None,
        clear: app_commands.Choice[str] | None = None,
    ) -> None:
        guild_id = interaction.guild_id or 0
        change = SettingsChange(
            admin_role_id=admin_role.id if admin_role is not None else None,
            admin_role_managed=admin_role is not None and admin_role.managed,
            log_channel_id=log_channel.id if log_channel is not None else None,
            monthly_budget=monthly_budget,
            language=language,
            clear=clear.value if clear is not None else None,
        )
        if change.is_empty:
            await answer(interaction, settings_text(await self.bot.admin.settings(guild_id)))
            return
        saved = await self.bot.admin.change_settings(
            guild_id, change, by_manage_server=interaction.permissions.manage_guild, by=interaction.user.id
        )
        await answer(interaction, changed_text(change, saved))


class AdminCog(commands.Cog):
    def __init__(self, bot: VideoBot) -> None:
        self.bot = bot
        self.group = VideoAdmin(bot)
        for subgroup in (QuotaGroup, MemberGroup, QueueGroup, ModelGroup):
            subgroup(bot, parent=self.group)
        self.group.add_command(stats_command(bot))  # /videoadmin stats
        for rules in (BlocklistGroup, ChannelGroup):  # /videoadmin blocklist …, channel …
            rules(bot, parent=self.group)
        self.group.add_command(audit_command(bot))  # /videoadmin audit

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.group)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.group.name)


async def setup(bot: VideoBot) -> None:
    await bot.add_cog(AdminCog(bot))

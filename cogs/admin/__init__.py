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

from bot.discord.command_texts import command_text
from bot.discord.language import member_texts
from bot.discord.messages import code, credits
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
    tr = member_texts(interaction)
    needle = current.lower()
    models = [m for m in bot.jobs.registry.models() if needle in m.id.lower() or needle in m.label.lower()]
    return [app_commands.Choice(name=model_choice(m, tr), value=m.id) for m in models[:25]]


class MemberGroup(AdminGroup, name="user", description=command_text("cmd.videoadmin.user.description")):
    @app_commands.command(name="block", description=command_text("cmd.videoadmin.user.block.description"))
    @app_commands.describe(user=command_text("cmd.videoadmin.user.block.user"))
    async def block(self, interaction: discord.Interaction, user: MemberOption) -> None:
        tr = member_texts(interaction)
        await self.bot.admin.block(interaction.guild_id or 0, user.id, by=interaction.user.id)
        await answer(interaction, tr("admin.user.blocked", member=user.mention))

    @app_commands.command(name="unblock", description=command_text("cmd.videoadmin.user.unblock.description"))
    @app_commands.describe(user=command_text("cmd.videoadmin.user.unblock.user"))
    async def unblock(self, interaction: discord.Interaction, user: MemberOption) -> None:
        tr = member_texts(interaction)
        await self.bot.admin.unblock(interaction.guild_id or 0, user.id, by=interaction.user.id)
        await answer(interaction, tr("admin.user.unblocked", member=user.mention))


class QueueGroup(AdminGroup, name="queue", description=command_text("cmd.videoadmin.queue.description")):
    @app_commands.command(name="pause", description=command_text("cmd.videoadmin.queue.pause.description"))
    async def pause(self, interaction: discord.Interaction) -> None:
        tr = member_texts(interaction)
        await self.bot.admin.pause(interaction.guild_id or 0, by=interaction.user.id)
        await answer(interaction, tr("admin.queue.paused"))

    @app_commands.command(name="resume", description=command_text("cmd.videoadmin.queue.resume.description"))
    async def resume(self, interaction: discord.Interaction) -> None:
        tr = member_texts(interaction)
        await self.bot.admin.resume(interaction.guild_id or 0, by=interaction.user.id)
        await answer(interaction, tr("admin.queue.resumed"))

    @app_commands.command(name="clear", description=command_text("cmd.videoadmin.queue.clear.description"))
    async def clear(self, interaction: discord.Interaction) -> None:
        tr = member_texts(interaction)
        cancelled = await self.bot.admin.clear_queue(interaction.guild_id or 0, by=interaction.user.id)
        if not cancelled:
            await answer(interaction, tr("admin.queue.cleared.nothing"))
            return
        jobs = tr.plural("admin.queue.waiting-videos", len(cancelled))
        refunded = credits(tr, sum(job.credits for job in cancelled))
        await answer(interaction, tr("admin.queue.cleared", videos=jobs, credits=refunded))


class ModelGroup(AdminGroup, name="model", description=command_text("cmd.videoadmin.model.description")):
    @app_commands.command(name="enable", description=command_text("cmd.videoadmin.model.enable.description"))
    @app_commands.describe(model=command_text("cmd.videoadmin.model.enable.model"))
    @app_commands.autocomplete(model=model_autocomplete)
    async def enable(self, interaction: discord.Interaction, model: str) -> None:
        tr = member_texts(interaction)
        await self.bot.admin.set_model_enabled(interaction.guild_id or 0, model, True, by=interaction.user.id)
        await answer(interaction, tr("admin.model.enabled", model=code(model)))

    @app_commands.command(name="disable", description=command_text("cmd.videoadmin.model.disable.description"))
    @app_commands.describe(model=command_text("cmd.videoadmin.model.disable.model"))
    @app_commands.autocomplete(model=model_autocomplete)
    async def disable(self, interaction: discord.Interaction, model: str) -> None:
        tr = member_texts(interaction)
        settings = await self.bot.admin.set_model_enabled(
            interaction.guild_id or 0, model, False, by=interaction.user.id
        )
        default = settings.default_model or self.bot.jobs.registry.default_model
        if default == model:
            await answer(interaction, tr("admin.model.disabled.was-default", model=code(model)))
        else:
            await answer(interaction, tr("admin.model.disabled", model=code(model)))

    @app_commands.command(name="default", description=command_text("cmd.videoadmin.model.default.description"))
    @app_commands.describe(model=command_text("cmd.videoadmin.model.default.model"))
    @app_commands.autocomplete(model=model_autocomplete)
    async def default(self, interaction: discord.Interaction, model: str) -> None:
        tr = member_texts(interaction)
        await self.bot.admin.set_default_model(interaction.guild_id or 0, model, by=interaction.user.id)
        await answer(interaction, tr("admin.model.default", model=code(model)))

    @app_commands.command(name="list", description=command_text("cmd.videoadmin.model.list.description"))
    async def list_models(self, interaction: discord.Interaction) -> None:
        tr = member_texts(interaction)
        lines = []
        for info, enabled, is_default in await self.bot.admin.models(interaction.guild_id or 0):
            state = tr("admin.model.list.enabled") if enabled else tr("admin.model.list.disabled")
            marks = [info.label, state] + ([tr("admin.model.list.default")] if is_default else [])
            lines.append(f"{'✅' if enabled else '🚫'} {code(info.id)} · {' · '.join(marks)}")
        embed = discord.Embed(
            title=tr("admin.model.list.title"), description="\n".join(lines)[:4096], colour=discord.Colour.blurple()
        )
        await answer(interaction, embed=embed)


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class VideoAdmin(AdminGroup, name="videoadmin", description=command_text("cmd.videoadmin.description")):
    @app_commands.command(name="settings", description=command_text("cmd.videoadmin.settings.description"))
    @app_commands.describe(
        admin_role=command_text("cmd.videoadmin.settings.admin_role"),
        log_channel=command_text("cmd.videoadmin.settings.log_channel"),
        monthly_budget=command_text("cmd.videoadmin.settings.monthly_budget"),
        language=command_text("cmd.videoadmin.settings.language"),
        clear=command_text("cmd.videoadmin.settings.clear"),
    )
    @app_commands.autocomplete(language=language_autocomplete)
    @app_commands.choices(clear=[app_commands.Choice(name=command_text("cmd.choice.admin-role"), value="admin_role"),
                                 app_commands.Choice(name=command_text("cmd.choice.log-channel"),
                                                     value="log_channel")])  # fmt: skip
    async def settings(
        self,
        interaction: discord.Interaction,
        admin_role: discord.Role | None = None,
        log_channel: discord.TextChannel | None = None,
        monthly_budget: app_commands.Range[float, 0, MAX_BUDGET] | None = None,
        language: str | None = None,
        clear: app_commands.Choice[str] | None = None,
    ) -> None:
        tr = member_texts(interaction)
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
            await answer(interaction, settings_text(await self.bot.admin.settings(guild_id), tr))
            return
        saved = await self.bot.admin.change_settings(
            guild_id, change, by_manage_server=interaction.permissions.manage_guild, by=interaction.user.id
        )
        await answer(interaction, changed_text(change, saved, tr))


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

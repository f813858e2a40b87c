"""The base every `/videoadmin` group shares (the run-time admin check) and the `/videoadmin quota …` commands.

Only the options an admin gives change: they become a `QuotaLimits` whose unset fields are `None`, which the
store merges into the existing row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.discord.command_texts import command_text
from bot.discord.language import member_texts
from bot.discord.messages import credits as credits_text
from bot.discord.messages import credits_left, describe_limits
from bot.discord.render import quota_embed
from bot.discord.replies import answer
from bot.domain import Period, QuotaLimits, Requester
from bot.errors import ClearWithLimits, NotAdmin, NothingToChange
from bot.jobs.admin import MAX_LIMIT

if TYPE_CHECKING:
    from bot.discord.client import VideoBot

Credits = app_commands.Range[int, 0, MAX_LIMIT]
Queued = app_commands.Range[int, 0, MAX_LIMIT]
Running = app_commands.Range[int, 1, MAX_LIMIT]
MemberOption = discord.Member | discord.User


class AdminOnly(NotAdmin, app_commands.CheckFailure):
    """A member who is not an admin tried `/videoadmin`. A `UserError` (the error handler explains it) and a
    `CheckFailure` (so discord.py hands it to the tree's error handler instead of dropping it)."""


class AdminGroup(app_commands.Group):
    """A `/videoadmin` group. Every command in it is checked at run time: the command's default permissions are
    only a hint that server owners can override. (discord.py runs the check of the group a command is bound
    to, so each group carries it.)"""

    def __init__(self, bot: VideoBot, **options: Any) -> None:
        super().__init__(**options)
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if not await self.bot.is_admin(interaction):
            raise AdminOnly()
        return True


def member_requester(interaction: discord.Interaction, user: MemberOption) -> Requester:
    """The member an admin named, with their roles (role quotas apply to them)."""
    roles = tuple(role.id for role in user.roles) if isinstance(user, discord.Member) else ()
    return Requester(guild_id=interaction.guild_id or 0, user_id=user.id, role_ids=roles)


PERIOD_CHOICES = [
    app_commands.Choice(name=command_text("cmd.choice.hour"), value="hour"),
    app_commands.Choice(name=command_text("cmd.choice.day"), value="day"),
    app_commands.Choice(name=command_text("cmd.choice.week"), value="week"),
    app_commands.Choice(name=command_text("cmd.choice.month"), value="month"),
]
"""`period`'s choices with names in the admin's language (the values are `Period`'s)."""


class QuotaGroup(AdminGroup, name="quota", description=command_text("cmd.videoadmin.quota.description")):
    @app_commands.command(name="default", description=command_text("cmd.videoadmin.quota.default.description"))
    @app_commands.describe(
        credits=command_text("cmd.videoadmin.quota.default.credits"),
        period=command_text("cmd.videoadmin.quota.default.period"),
        max_queued=command_text("cmd.videoadmin.quota.default.max_queued"),
        max_running=command_text("cmd.videoadmin.quota.default.max_running"),
    )
    @app_commands.choices(period=PERIOD_CHOICES)
    async def default(
        self,
        interaction: discord.Interaction,
        credits: Credits | None = None,
        period: Period | None = None,
        max_queued: Queued | None = None,
        max_running: Running | None = None,
    ) -> None:
        tr = member_texts(interaction)
        limits = QuotaLimits(credits=credits, period=period, max_queued=max_queued, max_running=max_running)
        merged = await self.bot.admin.set_default_quota(interaction.guild_id or 0, limits, by=interaction.user.id)
        await answer(interaction, tr("admin.quota.default.done", limits=describe_limits(merged, tr)))

    @app_commands.command(name="role", description=command_text("cmd.videoadmin.quota.role.description"))
    @app_commands.describe(
        role=command_text("cmd.videoadmin.quota.role.role"),
        credits=command_text("cmd.videoadmin.quota.role.credits"),
        max_queued=command_text("cmd.videoadmin.quota.role.max_queued"),
        max_running=command_text("cmd.videoadmin.quota.role.max_running"),
        clear=command_text("cmd.videoadmin.quota.role.clear"),
    )
    async def role(
        self,
        interaction: discord.Interaction,
        role: discord.Role,
        credits: Credits | None = None,
        max_queued: Queued | None = None,
        max_running: Running | None = None,
        clear: bool | None = None,
    ) -> None:
        tr = member_texts(interaction)
        guild_id = interaction.guild_id or 0
        limits = QuotaLimits(credits=credits, max_queued=max_queued, max_running=max_running)
        if clear:
            if limits != QuotaLimits():
                raise ClearWithLimits()
            await self.bot.admin.set_role_quota(guild_id, role.id, None, by=interaction.user.id)
            await answer(interaction, tr("admin.quota.role.cleared", role=role.mention))
            return
        if limits == QuotaLimits():
            raise NothingToChange(("credits", "max_queued", "max_running", "clear"))
        merged = await self.bot.admin.set_role_quota(guild_id, role.id, limits, by=interaction.user.id)
        await answer(interaction, tr("admin.quota.role.done", role=role.mention,
                                     limits=describe_limits(merged or limits, tr)))  # fmt: skip

    @app_commands.command(name="user", description=command_text("cmd.videoadmin.quota.user.description"))
    @app_commands.describe(
        user=command_text("cmd.videoadmin.quota.user.user"),
        credits=command_text("cmd.videoadmin.quota.user.credits"),
        unlimited=command_text("cmd.videoadmin.quota.user.unlimited"),
        max_queued=command_text("cmd.videoadmin.quota.user.max_queued"),
        max_running=command_text("cmd.videoadmin.quota.user.max_running"),
        clear=command_text("cmd.videoadmin.quota.user.clear"),
    )
    async def user(
        self,
        interaction: discord.Interaction,
        user: MemberOption,
        credits: Credits | None = None,
        unlimited: bool | None = None,
        max_queued: Queued | None = None,
        max_running: Running | None = None,
        clear: bool | None = None,
    ) -> None:
        tr = member_texts(interaction)
        guild_id = interaction.guild_id or 0
        limits = QuotaLimits(credits=credits, unlimited=unlimited, max_queued=max_queued, max_running=max_running)
        if clear:
            if limits != QuotaLimits():
                raise ClearWithLimits()
            await self.bot.admin.set_user_quota(guild_id, user.id, None, by=interaction.user.id)
            await answer(interaction, tr("admin.quota.user.cleared", member=user.mention))
            return
        if limits == QuotaLimits():
            raise NothingToChange(("credits", "unlimited", "max_queued", "max_running", "clear"))
        merged = await self.bot.admin.set_user_quota(guild_id, user.id, limits, by=interaction.user.id)
        await answer(interaction, tr("admin.quota.user.done", member=user.mention,
                                     limits=describe_limits(merged or limits, tr)))  # fmt: skip

    @app_commands.command(name="grant", description=command_text("cmd.videoadmin.quota.grant.description"))
    @app_commands.describe(
        user=command_text("cmd.videoadmin.quota.grant.user"), credits=command_text("cmd.videoadmin.quota.grant.credits")
    )
    async def grant(
        self,
        interaction: discord.Interaction,
        user: MemberOption,
        credits: app_commands.Range[int, -MAX_LIMIT, MAX_LIMIT],
    ) -> None:
        tr = member_texts(interaction)
        usage = await self.bot.admin.grant(member_requester(interaction, user), credits, by=interaction.user.id)
        left = credits_left(usage, tr)
        if credits > 0:
            said = tr("admin.quota.granted", member=user.mention, credits=credits_text(tr, credits), left=left)
        else:
            said = tr("admin.quota.taken-back", member=user.mention, credits=credits_text(tr, -credits), left=left)
        await answer(interaction, said)

    @app_commands.command(name="reset", description=command_text("cmd.videoadmin.quota.reset.description"))
    @app_commands.describe(user=command_text("cmd.videoadmin.quota.reset.user"))
    async def reset(self, interaction: discord.Interaction, user: MemberOption) -> None:
        tr = member_texts(interaction)
        usage = await self.bot.admin.reset(member_requester(interaction, user), by=interaction.user.id)
        await answer(interaction, tr("admin.quota.reset.done", member=user.mention, left=credits_left(usage, tr)))

    @app_commands.command(name="show", description=command_text("cmd.videoadmin.quota.show.description"))
    @app_commands.describe(user=command_text("cmd.videoadmin.quota.show.user"))
    async def show(self, interaction: discord.Interaction, user: MemberOption) -> None:
        tr = member_texts(interaction)
        shown = await self.bot.admin.show(member_requester(interaction, user))
        embed = quota_embed(shown.usage, tr("admin.quota.show.title", member=user.display_name), tr)
        override = describe_limits(shown.override, tr) if shown.override else tr("admin.quota.show.no-override")
        embed.add_field(name=tr("admin.quota.field.override"), value=override)
        blocked = tr("admin.quota.show.blocked") if shown.blocked else tr("admin.quota.show.not-blocked")
        embed.add_field(name=tr("admin.quota.field.blocked"), value=blocked)
        await answer(interaction, embed=embed)

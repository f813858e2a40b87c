"""The base every `/videoadmin` group shares (the run-time admin check) and the `/videoadmin quota …` commands.

Only the options an admin gives change: they become a `QuotaLimits` whose unset fields are `None`, which the
store merges into the existing row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

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


def _credits(amount: int) -> str:
    return "1 credit" if amount == 1 else f"{amount} credits"


class QuotaGroup(AdminGroup, name="quota", description="Credits and job limits for the server, roles and members"):
    @app_commands.command(name="default", description="Change the server's default quota (only the options given)")
    @app_commands.describe(
        credits="Credits per period (one credit per second of video times the model's weight)",
        period="How often credits refill (calendar-aligned, UTC)",
        max_queued="Jobs a member may have waiting",
        max_running="Jobs a member may have running at once",
    )
    async def default(
        self,
        interaction: discord.Interaction,
        credits: Credits | None = None,
        period: Period | None = None,
        max_queued: Queued | None = None,
        max_running: Running | None = None,
    ) -> None:
        limits = QuotaLimits(credits=credits, period=period, max_queued=max_queued, max_running=max_running)
        merged = await self.bot.admin.set_default_quota(interaction.guild_id or 0, limits, by=interaction.user.id)
        await answer(interaction, f"Default quota is now {describe_limits(merged)}.")

    @app_commands.command(name="role", description="Set or clear a role's quota (a member gets their best role's)")
    @app_commands.describe(
        role="The role",
        credits="Credits per period for members with this role",
        max_queued="Jobs waiting per member",
        max_running="Jobs running at once per member",
        clear="Drop this role's quota",
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
        guild_id = interaction.guild_id or 0
        limits = QuotaLimits(credits=credits, max_queued=max_queued, max_running=max_running)
        if clear:
            if limits != QuotaLimits():
                raise ClearWithLimits()
            await self.bot.admin.set_role_quota(guild_id, role.id, None, by=interaction.user.id)
            await answer(interaction, f"Removed the quota of {role.mention}; its members get the server default "
                                      "or their other roles' quota.")  # fmt: skip
            return
        if limits == QuotaLimits():
            raise NothingToChange(("credits", "max_queued", "max_running", "clear"))
        merged = await self.bot.admin.set_role_quota(guild_id, role.id, limits, by=interaction.user.id)
        await answer(interaction, f"Members with {role.mention} now get {describe_limits(merged or limits)} "
                                  "(a member gets the highest of their roles' limits).")  # fmt: skip

    @app_commands.command(name="user", description="Set or drop one member's own quota")
    @app_commands.describe(
        user="The member",
        credits="Credits per period for this member",
        unlimited="No credit limit for this member",
        max_queued="Jobs this member may have waiting",
        max_running="Jobs this member may have running at once",
        clear="Drop this member's override",
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
        guild_id = interaction.guild_id or 0
        limits = QuotaLimits(credits=credits, unlimited=unlimited, max_queued=max_queued, max_running=max_running)
        if clear:
            if limits != QuotaLimits():
                raise ClearWithLimits()
            await self.bot.admin.set_user_quota(guild_id, user.id, None, by=interaction.user.id)
            await answer(interaction, f"Dropped the quota override of {user.mention}; their roles' and the "
                                      "server's quota apply again.")  # fmt: skip
            return
        if limits == QuotaLimits():
            raise NothingToChange(("credits", "unlimited", "max_queued", "max_running", "clear"))
        merged = await self.bot.admin.set_user_quota(guild_id, user.id, limits, by=interaction.user.id)
        await answer(interaction, f"Quota override of {user.mention} is now {describe_limits(merged or limits)}.")

    @app_commands.command(name="grant", description="Give a member extra credits in this window (negative takes back)")
    @app_commands.describe(user="The member", credits="Extra credits; negative takes credits back")
    async def grant(
        self,
        interaction: discord.Interaction,
        user: MemberOption,
        credits: app_commands.Range[int, -MAX_LIMIT, MAX_LIMIT],
    ) -> None:
        usage = await self.bot.admin.grant(member_requester(interaction, user), credits, by=interaction.user.id)
        if credits > 0:
            done = f"Gave {user.mention} {_credits(credits)} extra"
        else:
            done = f"Took {_credits(-credits)} back from {user.mention}"
        await answer(interaction, f"{done}; they have {credits_left(usage)}.")

    @app_commands.command(name="reset", description="Set a member's usage in the current window back to zero")
    @app_commands.describe(user="The member")
    async def reset(self, interaction: discord.Interaction, user: MemberOption) -> None:
        usage = await self.bot.admin.reset(member_requester(interaction, user), by=interaction.user.id)
        await answer(interaction, f"Usage of {user.mention} is back to zero; they have {credits_left(usage)}.")

    @app_commands.command(name="show", description="A member's credits, limits, override and block")
    @app_commands.describe(user="The member")
    async def show(self, interaction: discord.Interaction, user: MemberOption) -> None:
        shown = await self.bot.admin.show(member_requester(interaction, user))
        embed = quota_embed(shown.usage, f"Video quota of {user.display_name}")
        embed.add_field(name="Override", value=describe_limits(shown.override) if shown.override else "none")
        embed.add_field(name="Blocked", value="yes" if shown.blocked else "no")
        await answer(interaction, embed=embed)

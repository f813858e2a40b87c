"""`/videoadmin blocklist …` and `/videoadmin channel …`: what members may ask for and where; and how the
server's settings and audit trail are shown (`/videoadmin settings` and `/videoadmin audit` live on the root
group, in `cogs.admin`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import discord
from discord import app_commands

from bot.discord.log_channel import audit_listing
from bot.discord.messages import code
from bot.discord.replies import answer
from bot.domain import GuildSettings
from bot.jobs.admin_settings import AUTO_LANGUAGE, LANGUAGES, SettingsChange
from bot.jobs.audit import MAX_AUDIT_LIMIT
from bot.jobs.moderation import MAX_PATTERN_CHARS, is_regex
from cogs.admin.quota import AdminGroup

if TYPE_CHECKING:
    from bot.discord.client import VideoBot

ChannelOption = discord.TextChannel | discord.VoiceChannel | discord.ForumChannel | discord.Thread
"""Where members can run `/video` (a forum's posts are its threads); categories are not channels to allow."""
Pattern = app_commands.Range[str, 1, MAX_PATTERN_CHARS]
DEFAULT_AUDIT_LIMIT = 20
AuditLimit = app_commands.Range[int, 1, MAX_AUDIT_LIMIT]


async def pattern_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """The server's blocklist, for `remove`; nothing for non-admins (the list is theirs to see)."""
    bot = cast("VideoBot", interaction.client)
    if not await bot.is_admin(interaction):
        return []
    listed = await bot.admin.blocklist(interaction.guild_id or 0)
    needle = current.lower()
    return [app_commands.Choice(name=p[:100], value=p) for p in listed if needle in p.lower()][:25]


async def language_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    needle = current.lower()
    return [app_commands.Choice(name=c, value=c) for c in (AUTO_LANGUAGE, *LANGUAGES) if needle in c.lower()][:25]


class BlocklistGroup(AdminGroup, name="blocklist", description="Words, phrases or /regex/ refused in prompts"):
    @app_commands.command(name="add", description="Refuse prompts containing a word, a phrase or a /regex/")
    @app_commands.describe(pattern="A word or phrase (any case, look-alike letters too), or /regex/")
    async def add(self, interaction: discord.Interaction, pattern: Pattern) -> None:
        # A regex is tried against long prompts in a child process first, which may take a few seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        stored = await self.bot.admin.add_blocked_pattern(interaction.guild_id or 0, pattern, by=interaction.user.id)
        kind = "regex" if is_regex(stored) else "word or phrase"
        await answer(interaction, f"Added the {kind} {code(stored)} to the blocklist: `/video` and Animate now "
                                  "refuse prompts and negative prompts that contain it.")  # fmt: skip

    @app_commands.command(name="remove", description="Take a pattern off the blocklist")
    @app_commands.describe(pattern="The pattern, as the list shows it")
    @app_commands.autocomplete(pattern=pattern_autocomplete)
    async def remove(self, interaction: discord.Interaction, pattern: str) -> None:
        gone = await self.bot.admin.remove_blocked_pattern(interaction.guild_id or 0, pattern, by=interaction.user.id)
        await answer(interaction, f"Removed {code(gone)} from the blocklist.")

    @app_commands.command(name="list", description="Every pattern on the blocklist")
    async def list_patterns(self, interaction: discord.Interaction) -> None:
        listed = await self.bot.admin.blocklist(interaction.guild_id or 0)
        if not listed:
            await answer(interaction, "The blocklist is empty: `/videoadmin blocklist add` refuses a word, a "
                                      "phrase or a `/regex/` in prompts.")  # fmt: skip
            return
        lines = [f"{n}. {code(p)}" + (" (regex)" if is_regex(p) else "") for n, p in enumerate(listed, 1)]
        embed = discord.Embed(title="Blocklist", description="\n".join(lines)[:4096], colour=discord.Colour.red())
        embed.set_footer(text="Members are told a word or phrase they used; a regex only by its number.")
        await answer(interaction, embed=embed)


class ChannelGroup(AdminGroup, name="channel", description="Channels where /video and Animate work"):
    @app_commands.command(name="allow", description="Let members make videos in this channel (and its threads)")
    @app_commands.describe(channel="The channel; once one is allowed, the others are not")
    async def allow(self, interaction: discord.Interaction, channel: ChannelOption) -> None:
        settings = await self.bot.admin.allow_channel(interaction.guild_id or 0, channel.id, by=interaction.user.id)
        await answer(interaction, f"{channel.mention} is allowed. `/video` and Animate now work only in "
                                  f"{channels(settings)} and their threads.")  # fmt: skip

    @app_commands.command(name="remove", description="Stop allowing a channel")
    @app_commands.describe(channel="The channel to take off the list")
    async def remove(self, interaction: discord.Interaction, channel: ChannelOption) -> None:
        settings = await self.bot.admin.remove_channel(interaction.guild_id or 0, channel.id, by=interaction.user.id)
        rest = f"only in {channels(settings)}" if settings.allowed_channels else "in every channel again"
        await answer(interaction, f"{channel.mention} is no longer allowed; videos can be made {rest}.")

    @app_commands.command(name="list", description="The channels where videos can be made")
    async def list_channels(self, interaction: discord.Interaction) -> None:
        settings = await self.bot.admin.settings(interaction.guild_id or 0)
        if not settings.allowed_channels:
            await answer(interaction, "No channel is singled out: videos can be made in every channel.")
            return
        await answer(interaction, f"Videos can be made only in {channels(settings)} and their threads.")


def channels(settings: GuildSettings) -> str:
    return ", ".join(f"<#{channel_id}>" for channel_id in sorted(settings.allowed_channels))


def settings_text(settings: GuildSettings) -> str:
    """Every setting of `/videoadmin settings` and the rules, as they are now."""
    role = f"<@&{settings.admin_role_id}>" if settings.admin_role_id is not None else "none"
    log_channel = f"<#{settings.log_channel_id}>" if settings.log_channel_id is not None else "none"
    budget = f"${settings.monthly_budget:,.2f} a month, by list price" if settings.monthly_budget else "off"
    language = code(settings.language) if settings.language else "the server's own locale"
    patterns = len(settings.blocklist)
    return "\n".join([
        f"Admin role: {role}. Members with Manage Server are always admins.",
        f"Log channel: {log_channel}",
        f"Monthly budget: {budget}",
        f"Language: {language}",
        f"Allowed channels: {channels(settings) or 'every channel'}",
        f"Blocklist: {patterns} pattern{'' if patterns == 1 else 's'} (`/videoadmin blocklist list`)",
        "Give `admin_role`, `log_channel`, `monthly_budget` or `language` to change them.",
    ])  # fmt: skip


def changed_text(change: SettingsChange, saved: GuildSettings) -> str:
    """What `/videoadmin settings` changed, one sentence per setting given."""
    said = []
    if change.admin_role_id is not None:
        said.append(f"Members with <@&{change.admin_role_id}> now count as video admins, as do members with "
                    "Manage Server.")  # fmt: skip
    if change.log_channel_id is not None:
        said.append(f"Admin changes and refusals by rule are now posted in <#{change.log_channel_id}>.")
    if change.monthly_budget is not None:
        if saved.monthly_budget:
            said.append(f"The monthly budget is now ${saved.monthly_budget:,.2f} of provider spend by list price.")
        else:
            said.append("The monthly budget is off: provider spend is not capped.")
    if change.language is not None:
        language = code(saved.language) if saved.language else "the server's own locale"
        said.append(f"Public messages now follow {language}.")
    if change.clear == "admin_role":
        said.append("There is no admin role now: only members with Manage Server count as video admins.")
    elif change.clear == "log_channel":
        said.append("Admin changes and refusals by rule are no longer posted in a channel.")
    return " ".join(said)


def audit_command(bot: VideoBot) -> app_commands.Command[Any, ..., None]:
    """A fresh `audit` command for one bot's `/videoadmin` group (a command belongs to one parent; the group's
    run-time admin check applies to it as its parent's)."""

    @app_commands.command(name="audit", description="The latest admin changes: who made them, when and what")
    @app_commands.describe(limit=f"How many (default {DEFAULT_AUDIT_LIMIT}, at most {MAX_AUDIT_LIMIT})")
    async def audit(interaction: discord.Interaction, limit: AuditLimit = DEFAULT_AUDIT_LIMIT) -> None:
        entries = await bot.admin.audit_entries(interaction.guild_id or 0, limit)
        title = f"Latest admin changes ({len(entries)})" if entries else "Admin changes"
        embed = discord.Embed(title=title, description=audit_listing(entries), colour=discord.Colour.blurple())
        await answer(interaction, embed=embed)

    return audit

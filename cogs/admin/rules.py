"""`/videoadmin blocklist …` and `/videoadmin channel …`: what members may ask for and where; and how the
server's settings and audit trail are shown (`/videoadmin settings` and `/videoadmin audit` live on the root
group, in `cogs.admin`)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

import discord
from babel import Locale
from discord import app_commands

from bot.discord.command_texts import command_text
from bot.discord.language import member_texts
from bot.discord.log_channel import audit_listing
from bot.discord.messages import code
from bot.discord.replies import answer
from bot.domain import GuildSettings
from bot.i18n import Texts
from bot.jobs.admin_settings import AUTO_LANGUAGE, LANGUAGES, OTHER_SPELLINGS, SettingsChange
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
    """Each language by its own name (`日本語 (ja)`), found by its code, its own name or its English one."""
    tr = member_texts(interaction)
    needle = current.lower()
    auto = tr("admin.language.auto")
    choices = [app_commands.Choice(name=auto[:100], value=AUTO_LANGUAGE)] if needle in auto.lower() else []
    for spelling in (*LANGUAGES, *OTHER_SPELLINGS):
        own, english = _language_names(spelling)
        if any(needle in name.lower() for name in (spelling, own, english)):
            choices.append(app_commands.Choice(name=f"{own} ({spelling})"[:100], value=spelling))
    return choices[:25]


@functools.cache
def _language_names(spelling: str) -> tuple[str, str]:
    """A language's name in itself and in English (Babel's CLDR data)."""
    locale = Locale.parse(spelling, sep="-")
    return locale.display_name or spelling, locale.english_name or spelling


class BlocklistGroup(AdminGroup, name="blocklist", description=command_text("cmd.videoadmin.blocklist.description")):
    @app_commands.command(name="add", description=command_text("cmd.videoadmin.blocklist.add.description"))
    @app_commands.describe(pattern=command_text("cmd.videoadmin.blocklist.add.pattern"))
    async def add(self, interaction: discord.Interaction, pattern: Pattern) -> None:
        tr = member_texts(interaction)
        # A regex is tried against long prompts in a child process first, which may take a few seconds.
        await interaction.response.defer(ephemeral=True, thinking=True)
        stored = await self.bot.admin.add_blocked_pattern(interaction.guild_id or 0, pattern, by=interaction.user.id)
        if is_regex(stored):
            await answer(interaction, tr("admin.blocklist.added.regex", pattern=code(stored)))
        else:
            await answer(interaction, tr("admin.blocklist.added.word", pattern=code(stored)))

    @app_commands.command(name="remove", description=command_text("cmd.videoadmin.blocklist.remove.description"))
    @app_commands.describe(pattern=command_text("cmd.videoadmin.blocklist.remove.pattern"))
    @app_commands.autocomplete(pattern=pattern_autocomplete)
    async def remove(self, interaction: discord.Interaction, pattern: str) -> None:
        tr = member_texts(interaction)
        gone = await self.bot.admin.remove_blocked_pattern(interaction.guild_id or 0, pattern, by=interaction.user.id)
        await answer(interaction, tr("admin.blocklist.removed", pattern=code(gone)))

    @app_commands.command(name="list", description=command_text("cmd.videoadmin.blocklist.list.description"))
    async def list_patterns(self, interaction: discord.Interaction) -> None:
        tr = member_texts(interaction)
        listed = await self.bot.admin.blocklist(interaction.guild_id or 0)
        if not listed:
            await answer(interaction, tr("admin.blocklist.empty"))
            return
        lines = [
            tr("admin.blocklist.line.regex", number=n, pattern=code(p))
            if is_regex(p)
            else tr("admin.blocklist.line", number=n, pattern=code(p))
            for n, p in enumerate(listed, 1)
        ]
        embed = discord.Embed(
            title=tr("admin.blocklist.title"), description="\n".join(lines)[:4096], colour=discord.Colour.red()
        )
        embed.set_footer(text=tr("admin.blocklist.footer"))
        await answer(interaction, embed=embed)


class ChannelGroup(AdminGroup, name="channel", description=command_text("cmd.videoadmin.channel.description")):
    @app_commands.command(name="allow", description=command_text("cmd.videoadmin.channel.allow.description"))
    @app_commands.describe(channel=command_text("cmd.videoadmin.channel.allow.channel"))
    async def allow(self, interaction: discord.Interaction, channel: ChannelOption) -> None:
        tr = member_texts(interaction)
        settings = await self.bot.admin.allow_channel(interaction.guild_id or 0, channel.id, by=interaction.user.id)
        await answer(interaction, tr("admin.channel.allowed", channel=channel.mention, allowed=channels(settings, tr)))

    @app_commands.command(name="remove", description=command_text("cmd.videoadmin.channel.remove.description"))
    @app_commands.describe(channel=command_text("cmd.videoadmin.channel.remove.channel"))
    async def remove(self, interaction: discord.Interaction, channel: ChannelOption) -> None:
        tr = member_texts(interaction)
        settings = await self.bot.admin.remove_channel(interaction.guild_id or 0, channel.id, by=interaction.user.id)
        if settings.allowed_channels:
            said = tr("admin.channel.removed", channel=channel.mention, allowed=channels(settings, tr))
        else:
            said = tr("admin.channel.removed.last", channel=channel.mention)
        await answer(interaction, said)

    @app_commands.command(name="list", description=command_text("cmd.videoadmin.channel.list.description"))
    async def list_channels(self, interaction: discord.Interaction) -> None:
        tr = member_texts(interaction)
        settings = await self.bot.admin.settings(interaction.guild_id or 0)
        if not settings.allowed_channels:
            await answer(interaction, tr("admin.channel.list.all"))
            return
        await answer(interaction, tr("admin.channel.list", allowed=channels(settings, tr)))


def channels(settings: GuildSettings, tr: Texts) -> str:
    return tr("list-separator").join(f"<#{channel_id}>" for channel_id in sorted(settings.allowed_channels))


def settings_text(settings: GuildSettings, tr: Texts) -> str:
    """Every setting of `/videoadmin settings` and the rules, as they are now."""
    role_id, channel_id = settings.admin_role_id, settings.log_channel_id
    role = f"<@&{role_id}>" if role_id is not None else tr("admin.settings.no-admin-role")
    log_channel = f"<#{channel_id}>" if channel_id is not None else tr("admin.settings.no-log-channel")
    if settings.monthly_budget:
        budget = tr("admin.settings.budget.amount", amount=tr.money(settings.monthly_budget))
    else:
        budget = tr("admin.settings.budget.off")
    language = code(settings.language) if settings.language else tr("admin.settings.language.auto")
    return "\n".join([
        tr("admin.settings.admin-role", role=role),
        tr("admin.settings.log-channel", channel=log_channel),
        tr("admin.settings.budget", budget=budget),
        tr("admin.settings.language", language=language),
        tr("admin.settings.channels", channels=channels(settings, tr) or tr("admin.settings.channels.all")),
        tr.plural("admin.settings.blocklist", len(settings.blocklist)),
        tr("admin.settings.hint"),
    ])  # fmt: skip


def changed_text(change: SettingsChange, saved: GuildSettings, tr: Texts) -> str:
    """What `/videoadmin settings` changed, one sentence per setting given."""
    said = []
    if change.admin_role_id is not None:
        role = f"<@&{change.admin_role_id}>"
        said.append(tr("admin.settings.changed.admin-role", role=role))
    if change.log_channel_id is not None:
        channel = f"<#{change.log_channel_id}>"
        said.append(tr("admin.settings.changed.log-channel", channel=channel))
    if change.monthly_budget is not None:
        if saved.monthly_budget:
            said.append(tr("admin.settings.changed.budget", amount=tr.money(saved.monthly_budget)))
        else:
            said.append(tr("admin.settings.changed.budget-off"))
    if change.language is not None:
        language = code(saved.language) if saved.language else tr("admin.settings.language.auto")
        said.append(tr("admin.settings.changed.language", language=language))
    if change.clear == "admin_role":
        said.append(tr("admin.settings.cleared.admin-role"))
    elif change.clear == "log_channel":
        said.append(tr("admin.settings.cleared.log-channel"))
    return tr.sentences(said)


def audit_command(bot: VideoBot) -> app_commands.Command[Any, ..., None]:
    """A fresh `audit` command for one bot's `/videoadmin` group (a command belongs to one parent; the group's
    run-time admin check applies to it as its parent's)."""

    @app_commands.command(name="audit", description=command_text("cmd.videoadmin.audit.description"))
    @app_commands.describe(limit=command_text("cmd.videoadmin.audit.limit"))
    async def audit(interaction: discord.Interaction, limit: AuditLimit = DEFAULT_AUDIT_LIMIT) -> None:
        tr = member_texts(interaction)
        entries = await bot.admin.audit_entries(interaction.guild_id or 0, limit)
        title = tr("admin.audit.title.latest", count=len(entries)) if entries else tr("admin.audit.title")
        embed = discord.Embed(title=title, description=audit_listing(entries, tr), colour=discord.Colour.blurple())
        await answer(interaction, embed=embed)

    return audit

"""The server's settings and rules as admins change them: the settings command, the blocklist and the allowed
channels, and the one way any setting changes (`_update_settings`: one transaction, one audit entry). The base of
`AdminService` (`bot.jobs.admin`), which adds quotas, members, the queue and models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from bot.clock import Clock
from bot.domain import AuditEntry, GuildSettings
from bot.errors import (
    AdminRoleNeedsManageServer,
    BlocklistFull,
    BudgetOutOfRange,
    ChannelAlreadyAllowed,
    ChannelListFull,
    ChannelNotListed,
    EveryoneAsAdminRole,
    ManagedRoleAsAdminRole,
    NothingToChange,
    PatternAlreadyListed,
    PatternNotListed,
    SetAndClear,
    TooManyRegexes,
    UnknownLanguage,
)
from bot.i18n.languages import DISCORD_LOCALES
from bot.jobs.audit import AuditTrail, settings_changes
from bot.jobs.moderation import MAX_PATTERNS, MAX_REGEXES, is_regex, same_pattern, vet_pattern
from bot.jobs.service import JobService
from bot.store.base import AdminStore

MAX_BUDGET = 1_000_000
"""US dollars a month: a larger budget is a typo, not a plan."""
MAX_CHANNELS = 100
LANGUAGES = tuple(DISCORD_LOCALES.values())
"""The languages a server may choose for public messages: those the bot has catalogues for, in Discord's
spelling (`en-US`, `pt-BR`…), as the settings command offers them."""
OTHER_SPELLINGS = ("en-GB", "es-419")
"""Discord's other locales of those languages, accepted and stored as Discord spells them (their messages come
from the same catalogue: `bot.i18n.language_of`); not listed among the choices a refusal names."""
AUTO_LANGUAGE = "auto"
"""As `language`: no language of the server's own; its locale decides."""


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """What the settings command changes: only the fields given (not None)."""

    admin_role_id: int | None = None
    admin_role_managed: bool = False
    """The role is handed out by an integration (a bot, boosts, a subscription)."""
    log_channel_id: int | None = None
    monthly_budget: float | None = None
    """US dollars per calendar month; 0 turns the budget off."""
    language: str | None = None
    """One of `LANGUAGES`, or `AUTO_LANGUAGE` to let the server's locale decide."""
    clear: str | None = None
    """`admin_role` or `log_channel`: drop that setting (a role or channel option can only name a new one)."""

    @property
    def is_empty(self) -> bool:
        values = (self.admin_role_id, self.log_channel_id, self.monthly_budget, self.language, self.clear)
        return all(value is None for value in values)


class SettingsAdmin:
    def __init__(self, store: AdminStore, jobs: JobService, clock: Clock) -> None:
        self.store = store
        self.jobs = jobs
        self.clock = clock
        self.audit = AuditTrail(store, clock)

    async def settings(self, guild_id: int) -> GuildSettings:
        return await self.store.guild_settings(guild_id)

    # --- settings -------------------------------------------------------------------------------------
    async def set_admin_role(
        self, guild_id: int, role_id: int, *, by_manage_server: bool, managed: bool = False, by: int | None = None
    ) -> GuildSettings:
        """Name the role whose members count as admins (see `change_settings`)."""
        change = SettingsChange(admin_role_id=role_id, admin_role_managed=managed)
        return await self.change_settings(guild_id, change, by_manage_server=by_manage_server, by=by)

    async def change_settings(
        self, guild_id: int, change: SettingsChange, *, by_manage_server: bool, by: int | None = None
    ) -> GuildSettings:
        """Change the settings given, in one transaction and one audit entry.

        Holders of the admin role run every admin command, but moving the role would let them hand admin to
        anyone: only Manage Server may (`by_manage_server`). The role everyone has would make every member an
        admin, and a role an integration hands out (`managed`) is not the admins' to give."""
        if change.is_empty:
            raise NothingToChange(("admin_role", "log_channel", "monthly_budget", "language", "clear"))
        if change.clear not in (None, *CLEARABLE):
            raise ValueError(f"only {CLEARABLE} can be cleared, not {change.clear!r}")  # the command offers no other
        if change.clear is not None and f"{change.clear}_id" in _given(change):
            raise SetAndClear(change.clear)
        if change.clear == "admin_role" and not by_manage_server:
            raise AdminRoleNeedsManageServer()
        role_id = change.admin_role_id
        if role_id is not None:
            if not by_manage_server:
                raise AdminRoleNeedsManageServer()
            if role_id == guild_id:
                raise EveryoneAsAdminRole()
            if change.admin_role_managed:
                raise ManagedRoleAsAdminRole(role_id)
        budget = change.monthly_budget
        if budget is not None and not 0 <= budget <= MAX_BUDGET:  # NaN fails too
            raise BudgetOutOfRange(MAX_BUDGET)
        language = _language(change.language)

        def apply(settings: GuildSettings) -> GuildSettings:
            if role_id is not None:
                settings = replace(settings, admin_role_id=role_id)
            if change.log_channel_id is not None:
                settings = replace(settings, log_channel_id=change.log_channel_id)
            if budget is not None:
                settings = replace(settings, monthly_budget=budget or None)
            if change.language is not None:
                settings = replace(settings, language=language)
            if change.clear == "admin_role":
                settings = replace(settings, admin_role_id=None)
            elif change.clear == "log_channel":
                settings = replace(settings, log_channel_id=None)
            return settings

        return await self._update_settings(guild_id, apply, "settings", by)

    # --- rules: the blocklist and the allowed channels ------------------------------------------------
    async def add_blocked_pattern(self, guild_id: int, pattern: str, *, by: int | None = None) -> str:
        """Add a word, phrase or `/regex/` to the blocklist once it passed its checks (`vet_pattern`: a regex is
        tried in a child process first, which may take up to a few seconds); returns it as stored."""
        stored = await vet_pattern(pattern)

        def change(settings: GuildSettings) -> GuildSettings:
            listed = next((p for p in settings.blocklist if same_pattern(p, stored)), None)
            if listed is not None:
                raise PatternAlreadyListed(listed)
            if len(settings.blocklist) >= MAX_PATTERNS:
                raise BlocklistFull(MAX_PATTERNS)
            if is_regex(stored) and sum(map(is_regex, settings.blocklist)) >= MAX_REGEXES:
                raise TooManyRegexes(MAX_REGEXES)
            return replace(settings, blocklist=(*settings.blocklist, stored))

        await self._update_settings(guild_id, change, "blocklist add", by, target=("pattern", stored))
        return stored

    async def remove_blocked_pattern(self, guild_id: int, pattern: str, *, by: int | None = None) -> str:
        """Remove a pattern (a word in any case or form); returns it as it was stored."""
        typed = pattern.strip()
        removed: list[str] = []

        def change(settings: GuildSettings) -> GuildSettings:
            listed = next((p for p in settings.blocklist if same_pattern(p, typed)), None)
            if listed is None:
                raise PatternNotListed(typed)
            removed[:] = [listed]
            return replace(settings, blocklist=tuple(p for p in settings.blocklist if p != listed))

        await self._update_settings(guild_id, change, "blocklist remove", by, target=("pattern", typed))
        return removed[0]

    async def blocklist(self, guild_id: int) -> tuple[str, ...]:
        return (await self.store.guild_settings(guild_id)).blocklist

    async def allow_channel(self, guild_id: int, channel_id: int, *, by: int | None = None) -> GuildSettings:
        def change(settings: GuildSettings) -> GuildSettings:
            if channel_id in settings.allowed_channels:
                raise ChannelAlreadyAllowed(channel_id)
            if len(settings.allowed_channels) >= MAX_CHANNELS:
                raise ChannelListFull(MAX_CHANNELS)
            return replace(settings, allowed_channels=settings.allowed_channels | {channel_id})

        return await self._update_settings(guild_id, change, "channel allow", by, target=("channel", channel_id))

    async def remove_channel(self, guild_id: int, channel_id: int, *, by: int | None = None) -> GuildSettings:
        """Take a channel off the allowed list (with none left, every channel is allowed again)."""

        def change(settings: GuildSettings) -> GuildSettings:
            if channel_id not in settings.allowed_channels:
                raise ChannelNotListed(channel_id)
            return replace(settings, allowed_channels=settings.allowed_channels - {channel_id})

        return await self._update_settings(guild_id, change, "channel remove", by, target=("channel", channel_id))

    async def audit_entries(self, guild_id: int, limit: int = 20) -> list[AuditEntry]:
        """The latest admin changes of the server, newest first."""
        return await self.audit.latest(guild_id, limit)

    # --- the one way settings change ------------------------------------------------------------------
    async def _update_settings(
        self,
        guild_id: int,
        change: Callable[[GuildSettings], GuildSettings],
        action: str,
        by: int | None,
        *,
        target: tuple[str, str | int] | None = None,
    ) -> GuildSettings:
        """One transaction per change, with `change` run on the row as it is then: two admins changing different
        settings at once both keep theirs. Checks that depend on the current settings belong inside `change`.
        The audit entry gets the fields that changed, as the transaction saw them before and after."""
        draft = self.audit.draft(guild_id, action, by=by, target=target, describe=settings_changes)
        settings = await self.store.update_guild_settings(guild_id, change, audit=draft)
        self.jobs.forget_settings(guild_id)
        await self.audit.publish(draft)
        return settings


CLEARABLE = ("admin_role", "log_channel")


def _given(change: SettingsChange) -> set[str]:
    return {name for name in ("admin_role_id", "log_channel_id") if getattr(change, name) is not None}


def _language(language: str | None) -> str | None:
    """A language as stored, in Discord's spelling (one of `LANGUAGES` or `OTHER_SPELLINGS`), or None for `auto`
    (and when not given). Any case, `-` or `_`; a catalogue's own code (`en`, `es`, `pt_BR`) names its Discord
    locale (`en-US`, `es-ES`, `pt-BR`)."""
    if language is None or language.strip().lower() == AUTO_LANGUAGE:
        return None
    known = {code.lower(): code for code in (*LANGUAGES, *OTHER_SPELLINGS)}
    known |= {catalogue.lower().replace("_", "-"): code for catalogue, code in DISCORD_LOCALES.items()}
    chosen = known.get(language.strip().lower().replace("_", "-"))
    if chosen is None:
        raise UnknownLanguage(language, languages=LANGUAGES)
    return chosen

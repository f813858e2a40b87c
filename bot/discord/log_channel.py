"""The audit trail and refusals by rule as admins read them: one line per entry for `/videoadmin audit`, and
the poster that sends each to the server's log channel.

Posting is best effort and never slows a command: entries wait in a small queue that one task drains in order,
with no pings whatever a value holds; a post that fails is logged and dropped (the database keeps the entry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.discord.language import channel_texts
from bot.discord.messages import code, describe
from bot.discord.replies import NO_PINGS, timestamp
from bot.domain import AuditEntry, JsonValue, Requester
from bot.errors import RefusedByRule
from bot.i18n import N_, Texts

if TYPE_CHECKING:
    from bot.discord.client import VideoBot

log = logging.getLogger(__name__)

MAX_PENDING = 200
"""Posts waiting at most; past that (Discord unreachable for long) new ones are dropped and logged."""
MAX_LINE = 600
CLOSE_SECONDS = 5.0

# --- one line per entry -------------------------------------------------------------------------------------
_NAMES = {
    "admin_role_id": N_("audit.field.admin-role"),
    "log_channel_id": N_("audit.field.log-channel"),
    "monthly_budget": N_("audit.field.monthly-budget"),
    "language": N_("audit.field.language"),
    "allowed_channels": N_("audit.field.allowed-channels"),
    "disabled_models": N_("audit.field.disabled-models"),
    "default_model": N_("audit.field.default-model"),
    "blocklist": N_("audit.field.blocklist"),
    "paused": N_("audit.field.paused"),
    "credits": N_("audit.field.credits"),
    "unlimited": N_("audit.field.unlimited"),
    "period": N_("audit.field.period"),
    "max_queued": N_("audit.field.max-queued"),
    "max_running": N_("audit.field.max-running"),
    "granted": N_("audit.field.granted"),
    "left": N_("audit.field.left"),
    "used": N_("audit.field.used"),
    "blocked": N_("audit.field.blocked"),
    "queued": N_("audit.field.queued"),
    "refunded": N_("audit.field.refunded"),
}
"""The fields the audit trail records (`bot.jobs.audit`, `bot.jobs.admin`); another shows as its own name."""
_PERIODS = {"hour": N_("cmd.choice.hour"), "day": N_("cmd.choice.day"), "week": N_("cmd.choice.week"),
            "month": N_("cmd.choice.month")}  # fmt: skip
"""A quota period by the name the `period` option's choices give it."""
_EMPTY = {"language": N_("audit.value.server-locale"), "monthly_budget": N_("audit.value.off")}
"""How a field with no value reads; `audit.value.none` for the others."""


def _role(value: Any, tr: Texts) -> str:
    return f"<@&{value}>"


def _channel(value: Any, tr: Texts) -> str:
    return f"<#{value}>"


def _budget(value: Any, tr: Texts) -> str:
    return tr.money(value) if isinstance(value, int | float) else tr("audit.value.off")


def _code(value: Any, tr: Texts) -> str:
    return code(str(value))


def _plain(value: Any, tr: Texts) -> str:
    return str(value)


def _period(value: Any, tr: Texts) -> str:
    return tr(_PERIODS[value]) if value in _PERIODS else str(value)


_SHOW: dict[str, Callable[[Any, Texts], str]] = {
    "admin_role_id": _role,
    "log_channel_id": _channel,
    "allowed_channels": _channel,
    "monthly_budget": _budget,
    "language": _code,
    "default_model": _code,
    "disabled_models": _code,
    "blocklist": _code,
    "period": _period,
}
_TARGETS: dict[str, Callable[[Any, Texts], str]] = {
    "user": lambda value, tr: f"<@{value}>",
    "role": _role,
    "channel": _channel,
    "model": _code,
    "pattern": _code,
}


def _value(name: str, value: JsonValue, tr: Texts) -> str:
    # Whole numbers are written as they are (ids and counts alike), not the locale's way: an id must stay whole.
    if value is None:
        return tr(_EMPTY[name]) if name in _EMPTY else tr("audit.value.none")
    if isinstance(value, bool):
        return tr("audit.value.yes") if value else tr("audit.value.no")
    if isinstance(value, list):
        return tr("list-separator").join(_value(name, item, tr) for item in value) or tr("audit.value.none")
    return _SHOW.get(name, _plain)(value, tr)


def _change(name: str, old: JsonValue, new: JsonValue, tr: Texts) -> str:
    shown = tr(_NAMES[name]) if name in _NAMES else name.replace("_", " ")
    if isinstance(old, list) and isinstance(new, list):  # a list: what came and went, not all of it
        added = [item for item in new if item not in old]
        removed = [item for item in old if item not in new]
        parts = [f"+{_value(name, item, tr)}" for item in added] + [f"−{_value(name, item, tr)}" for item in removed]
        return tr("audit.change.list", field=shown, changes=" ".join(parts) or tr("audit.unchanged"))
    return tr("audit.change", field=shown, before=_value(name, old, tr), after=_value(name, new, tr))


def describe_change(before: JsonValue, after: JsonValue, tr: Texts) -> str:
    """What an entry changed, e.g. "credits 60 → 100, max queued 3 → 5" or "blocklist +`word`"."""
    if isinstance(before, dict | None) and isinstance(after, dict | None):
        old, new = before or {}, after or {}
        names = [*new, *(name for name in old if name not in new)]
        changes = [_change(name, old.get(name), new.get(name), tr) for name in names if old.get(name) != new.get(name)]
        if before is not None and after is None:
            changes.append(tr("audit.cleared"))
        return tr("list-separator").join(changes) or tr("audit.no-change")
    return f"{_value('', before, tr)} → {_value('', after, tr)}"


def audit_line(entry: AuditEntry, tr: Texts) -> str:
    """One entry: when, who, what, on what, and the change. Values are the admins' own (patterns, names), in
    code spans; mentions render as names and ping nobody (`NO_PINGS`). The action is the command's path
    (`quota grant`), as admins type it."""
    facts = {
        "when": timestamp(entry.at, "f"),
        "who": f"<@{entry.actor_id}>" if entry.actor_id is not None else tr("audit.no-member"),
        "action": entry.action,
        "change": describe_change(entry.before, entry.after, tr),
    }
    if entry.target_kind is not None and entry.target is not None:
        target = _TARGETS.get(entry.target_kind, _code)(entry.target, tr)
        line = tr("audit.line.target", target=target, **facts)
    else:
        line = tr("audit.line", **facts)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def refusal_line(who: Requester, refusal: RefusedByRule, tr: Texts) -> str:
    """A request refused by a server rule, with what the member was told (never their prompt)."""
    member, channel = f"<@{who.user_id}>", f"<#{who.channel_id}>"
    return tr("log.refusal", member=member, channel=channel, told=describe(refusal, tr))


def audit_listing(entries: list[AuditEntry], tr: Texts, limit: int = 4096) -> str:
    """Entries newest first, as many as fit in `limit` characters (an embed's description), then how many more."""
    lines = [audit_line(entry, tr) for entry in entries]

    def listing(shown: int) -> str:
        more = "\n" + tr.plural("audit.more", len(lines) - shown) if shown < len(lines) else ""
        return "\n".join(lines[:shown]) + more

    shown = len(lines)
    while shown > 0 and len(listing(shown)) > limit:
        shown -= 1
    return listing(shown).strip() or tr("audit.empty")


# --- the poster ---------------------------------------------------------------------------------------------
class LogChannel:
    """Posts audit entries and refusals by rule to each server's `log_channel`, in the server's chosen language,
    else its own locale (`channel_texts`)."""

    def __init__(self, bot: VideoBot) -> None:
        self.bot = bot
        self._pending: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue(MAX_PENDING)
        self._task: asyncio.Task[None] | None = None

    async def on_audit(self, entry: AuditEntry) -> None:
        await self._post(entry.guild_id, lambda tr: "🛠️ " + audit_line(entry, tr))

    async def on_refusal(self, who: Requester, refusal: RefusedByRule, guild_locale: object = None) -> None:
        """`guild_locale`: the server's locale when the caller has it (`interaction.guild_locale`)."""
        try:
            await self._post(who.guild_id, lambda tr: refusal_line(who, refusal, tr), guild_locale)
        except Exception:  # the member's refusal must reach them whatever happens here
            log.exception("guild %s: could not queue a refusal for the log channel", who.guild_id)

    async def _post(self, guild_id: int, line: Callable[[Texts], str], guild_locale: object = None) -> None:
        settings = await self.bot.jobs.guild_settings(guild_id)
        if settings.log_channel_id is None:
            return
        text = line(channel_texts(settings.language, guild_locale or self._guild_locale(guild_id)))
        try:
            self._pending.put_nowait((guild_id, settings.log_channel_id, text))
        except asyncio.QueueFull:
            log.warning("guild %s: %d posts wait for the log channel; dropping one", guild_id, MAX_PENDING)
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="log-channel")

    def _guild_locale(self, guild_id: int) -> str | None:
        """The server's own locale from discord.py's cache (an audit entry carries no interaction); None, hence
        English, for a server not cached."""
        guild = self.bot.get_guild(guild_id)
        return guild.preferred_locale.value if guild is not None else None

    async def _drain(self) -> None:
        while True:
            guild_id, channel_id, line = await self._pending.get()
            try:
                channel = self.bot.get_partial_messageable(channel_id, guild_id=guild_id)
                await channel.send(line, allowed_mentions=NO_PINGS, suppress_embeds=True)
            except discord.HTTPException as exc:
                log.warning("guild %s: could not post to log channel %s (%s)", guild_id, channel_id, exc)
            except Exception:
                log.exception("guild %s: posting to log channel %s failed", guild_id, channel_id)
            finally:
                self._pending.task_done()

    async def close(self) -> None:
        """Let the posts already queued go out (for a few seconds at most), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), CLOSE_SECONDS)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

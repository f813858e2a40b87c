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

from bot.discord.messages import code, describe
from bot.discord.replies import NO_PINGS, timestamp
from bot.domain import AuditEntry, JsonValue, Requester
from bot.errors import RefusedByRule

if TYPE_CHECKING:
    from bot.discord.client import VideoBot

log = logging.getLogger(__name__)

MAX_PENDING = 200
"""Posts waiting at most; past that (Discord unreachable for long) new ones are dropped and logged."""
MAX_LINE = 600
CLOSE_SECONDS = 5.0

# --- one line per entry -------------------------------------------------------------------------------------
_NAMES = {
    "admin_role_id": "admin role",
    "log_channel_id": "log channel",
    "monthly_budget": "monthly budget",
    "allowed_channels": "allowed channels",
    "disabled_models": "disabled models",
    "default_model": "default model",
    "max_queued": "max queued",
    "max_running": "max running",
}


def _role(value: Any) -> str:
    return f"<@&{value}>"


def _channel(value: Any) -> str:
    return f"<#{value}>"


def _budget(value: Any) -> str:
    return f"${value:,.2f}" if isinstance(value, int | float) else "off"


_SHOW: dict[str, Callable[[Any], str]] = {
    "admin_role_id": _role,
    "log_channel_id": _channel,
    "allowed_channels": _channel,
    "monthly_budget": _budget,
    "language": lambda value: code(str(value)),
    "default_model": lambda value: code(str(value)),
    "disabled_models": lambda value: code(str(value)),
    "blocklist": lambda value: code(str(value)),
}
_TARGETS: dict[str, Callable[[Any], str]] = {
    "user": lambda value: f"<@{value}>",
    "role": _role,
    "channel": _channel,
    "model": lambda value: code(str(value)),
    "pattern": lambda value: code(str(value)),
}


def _value(name: str, value: JsonValue) -> str:
    if value is None:
        return "server locale" if name == "language" else "off" if name == "monthly_budget" else "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_value(name, item) for item in value) or "none"
    return _SHOW.get(name, str)(value)


def _change(name: str, old: JsonValue, new: JsonValue) -> str:
    shown = _NAMES.get(name, name.replace("_", " "))
    if isinstance(old, list) and isinstance(new, list):  # a list: what came and went, not all of it
        added = [item for item in new if item not in old]
        removed = [item for item in old if item not in new]
        parts = [f"+{_value(name, item)}" for item in added] + [f"−{_value(name, item)}" for item in removed]
        return f"{shown} {' '.join(parts) or 'unchanged'}"
    return f"{shown} {_value(name, old)} → {_value(name, new)}"


def describe_change(before: JsonValue, after: JsonValue) -> str:
    """What an entry changed, e.g. "credits 60 → 100, max queued 3 → 5" or "blocklist +`word`"."""
    if isinstance(before, dict | None) and isinstance(after, dict | None):
        old, new = before or {}, after or {}
        names = [*new, *(name for name in old if name not in new)]
        changes = [_change(name, old.get(name), new.get(name)) for name in names if old.get(name) != new.get(name)]
        if before is not None and after is None:
            changes.append("cleared")
        return ", ".join(changes) or "no change"
    return f"{_value('', before)} → {_value('', after)}"


def audit_line(entry: AuditEntry) -> str:
    """One entry: when, who, what, on what, and the change. Values are the admins' own (patterns, names), in
    code spans; mentions render as names and ping nobody (`NO_PINGS`)."""
    who = f"<@{entry.actor_id}>" if entry.actor_id is not None else "(no member)"
    line = f"{timestamp(entry.at, 'f')} {who} **{entry.action}**"
    if entry.target_kind is not None and entry.target is not None:
        line += " " + _TARGETS.get(entry.target_kind, lambda value: code(str(value)))(entry.target)
    line += ": " + describe_change(entry.before, entry.after)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def refusal_line(who: Requester, refusal: RefusedByRule) -> str:
    """A request refused by a server rule, with what the member was told (never their prompt)."""
    return f"🚫 A request by <@{who.user_id}> in <#{who.channel_id}> was refused by a rule. They were told: " + (
        describe(refusal)
    )


def audit_listing(entries: list[AuditEntry], limit: int = 4096) -> str:
    """Entries newest first, as many as fit in `limit` characters (an embed's description), then how many more."""
    lines = [audit_line(entry) for entry in entries]

    def listing(shown: int) -> str:
        more = f"\n… and {len(lines) - shown} older entries." if shown < len(lines) else ""
        return "\n".join(lines[:shown]) + more

    shown = len(lines)
    while shown > 0 and len(listing(shown)) > limit:
        shown -= 1
    return listing(shown).strip() or "No admin changes recorded yet."


# --- the poster ---------------------------------------------------------------------------------------------
class LogChannel:
    """Posts audit entries and refusals by rule to each server's `log_channel`."""

    def __init__(self, bot: VideoBot) -> None:
        self.bot = bot
        self._pending: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue(MAX_PENDING)
        self._task: asyncio.Task[None] | None = None

    async def on_audit(self, entry: AuditEntry) -> None:
        await self._post(entry.guild_id, "🛠️ " + audit_line(entry))

    async def on_refusal(self, who: Requester, refusal: RefusedByRule) -> None:
        try:
            await self._post(who.guild_id, refusal_line(who, refusal))
        except Exception:  # the member's refusal must reach them whatever happens here
            log.exception("guild %s: could not queue a refusal for the log channel", who.guild_id)

    async def _post(self, guild_id: int, line: str) -> None:
        channel_id = (await self.bot.jobs.guild_settings(guild_id)).log_channel_id
        if channel_id is None:
            return
        try:
            self._pending.put_nowait((guild_id, channel_id, line))
        except asyncio.QueueFull:
            log.warning("guild %s: %d posts wait for the log channel; dropping one", guild_id, MAX_PENDING)
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="log-channel")

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

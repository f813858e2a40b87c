"""The audit trail: every admin change, with who made it, when, what and the value before and after.

`AdminService` drafts each change's entry here; the store writes it in the change's own transaction (the truth:
the audit command reads it back), and once committed it is handed to the subscribers, such as the Discord
log-channel poster. A subscriber that fails is logged and skipped: telling others about a change never undoes or
fails the change.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.clock import Clock
from bot.domain import AuditDraft, AuditEntry, GuildSettings, JsonValue, QuotaLimits
from bot.store.base import AuditStore

log = logging.getLogger(__name__)

MAX_AUDIT_LIMIT = 100
OnAudit = Callable[[AuditEntry], Awaitable[None]]


class AuditTrail:
    def __init__(self, store: AuditStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._subscribers: list[OnAudit] = []

    def subscribe(self, subscriber: OnAudit) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: OnAudit) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def draft(
        self,
        guild_id: int,
        action: str,
        *,
        by: int | None,
        target: tuple[str, str | int] | None = None,
        before: JsonValue = None,
        after: JsonValue = None,
        describe: Callable[[Any, Any], tuple[JsonValue, JsonValue]] | None = None,
    ) -> AuditDraft:
        """The entry of a change about to be made, for the store to write in the change's own transaction
        (`describe` turns what that transaction saw before and after into the entry's values)."""
        kind, subject = target if target is not None else (None, None)
        entry = AuditEntry(guild_id=guild_id, actor_id=by, at=self.clock.now(), action=action, target_kind=kind,
                           target=None if subject is None else str(subject), before=before, after=after)  # fmt: skip
        return AuditDraft(entry, describe)

    async def publish(self, draft: AuditDraft) -> AuditEntry | None:
        """Tell the subscribers of an entry the store wrote with its change (nothing when none was written)."""
        entry = draft.written
        if entry is not None:
            log.info("guild %s: %s by %s (audit entry %s)", entry.guild_id, entry.action, entry.actor_id, entry.id)
            await self._tell(entry)
        return entry

    async def _tell(self, entry: AuditEntry) -> None:
        for subscriber in self._subscribers:
            try:
                await subscriber(entry)
            except Exception:
                log.exception("guild %s: a subscriber to audit entry %s failed", entry.guild_id, entry.id)

    async def latest(self, guild_id: int, limit: int = 20) -> list[AuditEntry]:
        """The server's latest entries, newest first (at most `MAX_AUDIT_LIMIT`)."""
        return await self.store.audit_entries(guild_id, limit=max(1, min(limit, MAX_AUDIT_LIMIT)))


# --- values as the trail keeps them (JSON) ------------------------------------------------------------------
def limits_value(limits: QuotaLimits | None) -> JsonValue:
    """A quota layer: the fields it sets (None: no such layer)."""
    if limits is None:
        return None
    return {name: value for name, value in dataclasses.asdict(limits).items() if value is not None}


def settings_changes(before: GuildSettings, after: GuildSettings) -> tuple[JsonValue, JsonValue]:
    """The settings fields a change touched, before and after (all of them compared, so a side effect such as a
    default model dropped along with its model is recorded too)."""
    old, new = _settings_value(before), _settings_value(after)
    changed = [name for name in new if old[name] != new[name]]
    return {name: old[name] for name in changed}, {name: new[name] for name in changed}


def _settings_value(settings: GuildSettings) -> dict[str, JsonValue]:
    values: dict[str, JsonValue] = {}
    for field in dataclasses.fields(settings):
        if field.name == "guild_id":
            continue
        value: Any = getattr(settings, field.name)
        if isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = list(value)
        values[field.name] = value
    return values

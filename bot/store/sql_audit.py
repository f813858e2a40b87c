"""The audit trail in SQL, once for every dialect: entries are only ever added, and read newest first."""

from __future__ import annotations

import json
from dataclasses import replace

from bot.domain import AuditEntry
from bot.store.dialect import Dialect, Row, fetch, one


class AuditSql:
    dialect: Dialect

    async def add_audit_entry(self, entry: AuditEntry) -> AuditEntry:
        rows = await self.dialect.write_one(
            "insert_audit_entry",
            guild_id=entry.guild_id,
            actor_id=entry.actor_id,
            at=entry.at,
            action=entry.action,
            target_kind=entry.target_kind,
            target=entry.target,
            before_json=json.dumps(entry.before, sort_keys=True),  # JSON text in both dialects
            after_json=json.dumps(entry.after, sort_keys=True),
        )
        return replace(entry, id=int(one(rows[0] if rows else None, "insert_audit_entry")["id"]))

    async def audit_entries(self, guild_id: int, *, limit: int) -> list[AuditEntry]:
        return [_entry(row) for row in await fetch(self.dialect, "audit_entries", guild_id=guild_id, limit=limit)]


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(
        guild_id=int(row["guild_id"]),
        actor_id=None if row["actor_id"] is None else int(row["actor_id"]),
        at=float(row["at"]),
        action=str(row["action"]),
        target_kind=row["target_kind"],
        target=row["target"],
        before=json.loads(row["before_json"]),
        after=json.loads(row["after_json"]),
        id=int(row["id"]),
    )

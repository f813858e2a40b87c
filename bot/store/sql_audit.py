"""The audit trail in SQL, once for every dialect: entries are only ever added, and read newest first."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from bot.domain import AuditDraft, AuditEntry
from bot.store.dialect import Connection, Dialect, Row, fetch, one


class AuditSql:
    dialect: Dialect

    async def add_audit_entry(self, entry: AuditEntry) -> AuditEntry:
        draft = AuditDraft(entry)
        await self.dialect.write(lambda conn: write_audit(conn, draft))
        assert draft.written is not None
        return draft.written

    async def audit_entries(self, guild_id: int, *, limit: int) -> list[AuditEntry]:
        return [_entry(row) for row in await fetch(self.dialect, "audit_entries", guild_id=guild_id, limit=limit)]


async def write_audit(conn: Connection, draft: AuditDraft | None, before: Any = None, after: Any = None) -> None:
    """Write a change's audit entry in the change's own transaction (`before`/`after`: what the transaction saw,
    for the draft's `describe`)."""
    if draft is None:
        return
    entry = draft.entry
    if draft.describe is not None:
        described, now = draft.describe(before, after)
        entry = replace(entry, before=described, after=now)
    row = await conn.fetchrow(
        "insert_audit_entry", guild_id=entry.guild_id, actor_id=entry.actor_id, at=entry.at, action=entry.action,
        target_kind=entry.target_kind, target=entry.target,
        before_json=json.dumps(entry.before, sort_keys=True),  # JSON text in both dialects
        after_json=json.dumps(entry.after, sort_keys=True),
    )  # fmt: skip
    draft.written = replace(entry, id=int(one(row, "insert_audit_entry")["id"]))


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

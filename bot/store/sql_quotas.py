"""Quota policies, blocks, the ledger and server settings in SQL, once for every dialect."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from bot.domain import AuditDraft, GuildSettings, QuotaLimits
from bot.store.base import Admission, PolicyLayers
from bot.store.dialect import Connection, Dialect, fetch, fetchrow, one
from bot.store.rows import admission_from_row, layers_from_rows, limits_from_row, settings_from_row
from bot.store.sql_audit import write_audit


class QuotasSql:
    dialect: Dialect

    async def policy_layers(self, guild_id: int, user_id: int, role_ids: Sequence[int]) -> PolicyLayers:
        rows = await fetch(self.dialect, "policy_layers", guild_id=guild_id, user_id=user_id, role_ids=list(role_ids))
        return layers_from_rows(rows)

    async def admission(self, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission:
        row = await fetchrow(
            self.dialect, "admission", guild_id=guild_id, user_id=user_id, start=window[0], end=window[1]
        )
        return admission_from_row(one(row, "admission"))

    async def update_policy(
        self, guild_id: int, scope: str, target_id: int, limits: QuotaLimits | None, *, audit: AuditDraft | None = None
    ) -> QuotaLimits | None:
        key = {"guild_id": guild_id, "scope": scope, "target_id": target_id}

        async def merge(conn: Connection) -> QuotaLimits | None:
            await conn.execute("ensure_policy", **key)
            before = limits_from_row(one(await conn.fetchrow("policy_for_update", **key), "policy"))
            if limits is None:
                await conn.execute("delete_policy", **key)
                merged = None
            else:
                merged = before.overlaid(limits)
                await conn.execute(
                    "save_policy", **key, credits=merged.credits, unlimited=merged.unlimited, period=merged.period,
                    max_queued=merged.max_queued, max_running=merged.max_running,
                )  # fmt: skip
            await write_audit(conn, audit, before if before != QuotaLimits() else None, merged)
            return merged

        return await self.dialect.write(merge)

    async def add_ledger(
        self, guild_id: int, user_id: int, kind: str, credits: int, *, at: float, audit: AuditDraft | None = None
    ) -> None:
        async def add(conn: Connection) -> None:
            await conn.execute("insert_ledger", guild_id=guild_id, user_id=user_id, job_id=None, kind=kind,
                               credits=credits, at=at)  # fmt: skip
            await write_audit(conn, audit)

        await self.dialect.write(add)

    async def set_blocked(
        self, guild_id: int, user_id: int, blocked: bool, *, now: float, audit: AuditDraft | None = None
    ) -> None:
        async def change(conn: Connection) -> None:
            if blocked:
                await conn.execute("block_member", guild_id=guild_id, user_id=user_id, now=now)
            else:
                await conn.execute("unblock_member", guild_id=guild_id, user_id=user_id)
            await write_audit(conn, audit)

        await self.dialect.write(change)

    async def is_blocked(self, guild_id: int, user_id: int) -> bool:
        row = await fetchrow(self.dialect, "is_blocked", guild_id=guild_id, user_id=user_id)
        return bool(one(row, "is_blocked")["n"])


class SettingsSql:
    dialect: Dialect

    async def guild_settings(self, guild_id: int) -> GuildSettings:
        return settings_from_row(guild_id, await fetchrow(self.dialect, "guild_settings", guild_id=guild_id))

    async def save_guild_settings(self, settings: GuildSettings) -> None:
        await self.dialect.write_one("save_guild_settings", **_settings_params(settings))

    async def update_guild_settings(
        self, guild_id: int, change: Callable[[GuildSettings], GuildSettings], *, audit: AuditDraft | None = None
    ) -> GuildSettings:
        # Read, change and write in one transaction that holds the row (PostgreSQL) or the database's write lock
        # (SQLite): no other writer, in this process or another, saves in between, so no change is lost.
        async def update(conn: Connection) -> GuildSettings:
            await conn.execute("ensure_guild_settings", guild_id=guild_id)
            row = await conn.fetchrow("guild_settings_for_update", guild_id=guild_id)
            changed = change(settings_from_row(guild_id, row))
            if changed.guild_id != guild_id:
                raise ValueError(f"a settings change moved guild {guild_id} to {changed.guild_id}")
            await conn.execute("save_guild_settings", **_settings_params(changed))
            await write_audit(conn, audit, settings_from_row(guild_id, row), changed)
            return changed

        return await self.dialect.write(update)


def _settings_params(settings: GuildSettings) -> dict[str, Any]:
    return {
        "guild_id": settings.guild_id,
        "paused": settings.paused,
        "default_model": settings.default_model,
        "disabled_models": json.dumps(sorted(settings.disabled_models)),  # JSON text in both dialects
        "admin_role_id": settings.admin_role_id,
        "log_channel_id": settings.log_channel_id,
        "monthly_budget": settings.monthly_budget,
        "language": settings.language,
        "blocklist": json.dumps(list(settings.blocklist)),
        "allowed_channels": json.dumps(sorted(settings.allowed_channels)),
    }

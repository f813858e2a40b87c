"""`SqlStore`: the store's logic, once, over a thin dialect adapter (SQLite or PostgreSQL).

The logic lives in `sql_jobs.py` (enqueue, claim, the state machine, views), `sql_workers.py` (the registry and
leases) and `sql_quotas.py` (quotas, settings), as `async` transaction bodies over named queries. A dialect
(`bot/store/dialects/`) only runs bodies, runs named queries from its `.sql` file, and translates its driver's
errors; `bot/store/dialect.py` says why bodies are coroutines that SQLite drives synchronously on its thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from bot.store.dialect import Dialect, fetchrow
from bot.store.sql_audit import AuditSql
from bot.store.sql_inputs import InputsSql
from bot.store.sql_jobs import JobsSql
from bot.store.sql_quotas import QuotasSql, SettingsSql
from bot.store.sql_ratelimit import RateLimitSql
from bot.store.sql_stats import StatsSql
from bot.store.sql_workers import WorkersSql

D = TypeVar("D", bound=Dialect)


class SqlStore(JobsSql, WorkersSql, QuotasSql, SettingsSql, StatsSql, AuditSql, InputsSql, RateLimitSql, Generic[D]):
    """Implements `bot.store.base.Store` (every narrow protocol) on the dialect it is given, opened and migrated."""

    def __init__(self, dialect: D) -> None:
        self.dialect: D = dialect

    # --- maintenance ----------------------------------------------------------------------------------
    async def migrate(self) -> None:
        await self.dialect.migrate()

    async def schema(self) -> list[tuple[str, str]]:
        return await self.dialect.schema()

    async def listen(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        return await self.dialect.listen(callback)

    async def drop_schema(self) -> None:
        await self.dialect.drop_schema()

    async def close(self) -> None:
        await self.dialect.close()

    async def get_meta(self, key: str) -> str | None:
        row = await fetchrow(self.dialect, "get_meta", key=key)
        return None if row is None else str(row["value"])

    async def set_meta(self, key: str, value: str) -> None:
        await self.dialect.write_one("set_meta", key=key, value=value)

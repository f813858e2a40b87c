"""Storage: one `SqlStore` over the dialect `DATABASE_URL` names, SQLite embedded or PostgreSQL to scale out."""

from __future__ import annotations

from bot.store.base import Store
from bot.store.sql_store import SqlStore


async def open_store(url: str) -> Store:
    """Open (and migrate) the store a URL names."""
    if url.startswith("sqlite:"):
        from bot.store.dialects.sqlite import SqliteDialect

        return SqlStore(await SqliteDialect.open(url))
    from bot.store.dialects.postgres import PostgresDialect  # asyncpg is an optional extra

    return SqlStore(await PostgresDialect.open(url))


__all__ = ["SqlStore", "Store", "open_store"]

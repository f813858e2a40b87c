"""Storage behind one protocol, chosen by `DATABASE_URL`: SQLite embedded, PostgreSQL to scale out."""

from __future__ import annotations

from bot.store.base import Store


async def open_store(url: str) -> Store:
    """Open (and migrate) the store a URL names."""
    if url.startswith("sqlite:"):
        from bot.store.sqlite import SqliteStore

        return await SqliteStore.open(url)
    from bot.store.postgres import PostgresStore

    return await PostgresStore.open(url)


__all__ = ["Store", "open_store"]

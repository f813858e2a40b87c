"""A fresh database equals every migration applied in order, and migrating again changes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.store import migrations
from bot.store.dialects.sqlite import SqliteDialect
from bot.store.sql_store import SqlStore


async def test_fresh_sqlite_database_equals_all_migrations_applied(tmp_path: Path) -> None:
    store = SqlStore(await SqliteDialect.open(str(tmp_path / "a.db")))
    try:
        migrated = await store.schema()
        await store.migrate()
        assert await store.schema() == migrated, "migrating twice must be a no-op"
    finally:
        await store.close()

    raw = sqlite3.connect(tmp_path / "b.db")
    for migration in migrations.load("sqlite"):
        raw.executescript(migration.sql)
    expected = raw.execute(
        "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    raw.close()
    assert migrated == [tuple(row) for row in expected]
    assert {name for name, _ in migrated} >= {"jobs", "job_events", "guild_settings", "quota_policies",
                                             "quota_blocks", "usage_ledger", "meta"}  # fmt: skip


def test_migrations_are_numbered_without_gaps() -> None:
    for backend in ("sqlite", "postgres"):
        versions = [m.version for m in migrations.load(backend)]
        assert versions == list(range(1, len(versions) + 1)), backend

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


async def test_jobs_queued_before_the_delivery_record_keep_their_discord_answer(tmp_path: Path) -> None:
    """Migration 0003 builds the opaque delivery record of older rows from their interaction columns."""
    from bot.discord.reply_record import reply_record

    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    for migration in migrations.load("sqlite")[:2]:
        raw.executescript(migration.sql)
        raw.execute("INSERT INTO schema_migrations VALUES (?, ?)", (migration.version, migration.name))
    raw.execute(
        "INSERT INTO jobs (id, guild_id, user_id, channel_id, model, provider, request_json, credits, max_running,"
        " state, fair_rank, created_at, updated_at, application_id, interaction_token, interaction_created_at,"
        " attachment_size_limit, status_message_id, app_permissions) VALUES ('a' || hex(randomblob(15)), 1, 2, 3,"
        " 'local/preview', 'local', ?, 2, 1, 'queued', 1, 10.0, 10.0, 77, 'tok', 9.5, 1048576, 555, 3072)",
        ('{"prompt": "old", "model": "local/preview", "duration": 2}',),
    )
    raw.commit()
    raw.close()
    store = SqlStore(await SqliteDialect.open(str(path)))
    try:
        (job,) = await store.unfinished_jobs()
    finally:
        await store.close()
    record = reply_record(job.delivery_ref)
    assert record is not None
    assert (record.application_id, record.token, record.created_at) == (77, "tok", 9.5)
    assert (record.attachment_size_limit, record.status_message_id, record.app_permissions) == (1048576, 555, 3072)

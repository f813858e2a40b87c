"""`python -m bot migrate`: a real SQLite database, with a row in every table and jobs in every state, copied to a
real PostgreSQL and back, verified table by table; refusals leave the target without a row; a queued job is
finished by the engine on the new database. PostgreSQL cases skip without TEST_DATABASE_URL."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.cli.migrate import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, migrate
from bot.clock import FakeClock
from bot.domain import AuditEntry, GuildSettings, JobState, QuotaLimits, Requester, VideoRequest, WorkerInfo
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store, Transition
from bot.store.copy import CopyRefused, copy_database
from bot.store.dialects.sqlite import SqliteDialect
from bot.store.sql_store import SqlStore
from tests.conftest import TEST_DATABASE_URL, make_worker
from tests.fakes.scripted_provider import CLIP_BYTES, ScriptedProvider
from tests.store_moves import path

REPO = Path(__file__).resolve().parent.parent
GUILD = 987_654_321_098_765_432  # a snowflake past 2**53: must survive JSON, BIGINT and back
CHANNEL = 555_000_000_000_000_001
MESSAGE = 1_234_567_890_123_456_789
needs_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")


def sqlite_url(file: Path) -> str:
    return f"sqlite:///{file}"


def pg_url(schema: str, password: str | None = None) -> str:
    assert TEST_DATABASE_URL is not None
    base = TEST_DATABASE_URL
    if password is not None:  # the test server trusts 127.0.0.1 and ignores it: only its printing is tested
        scheme, rest = base.split("://", 1)
        base = f"{scheme}://{rest.split('@', 1)[0].split(':', 1)[0]}:{password}@{rest.split('@', 1)[1]}"
    return f"{base}{'&' if '?' in base else '?'}search_path={schema}"


@pytest.fixture
async def pg_schemas() -> AsyncIterator[Callable[[], str]]:
    """Names for fresh PostgreSQL schemas (the URL's search_path picks one), dropped afterwards."""
    made: list[str] = []

    def fresh() -> str:
        made.append(f"test_{uuid.uuid4().hex[:12]}")
        return made[-1]

    yield fresh
    if made:
        import asyncpg

        conn = await asyncpg.connect(TEST_DATABASE_URL)
        try:
            for schema in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def create_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await conn.close()


async def open_sqlite(file: Path) -> Store:
    return SqlStore(await SqliteDialect.open(str(file)))


async def open_pg(schema: str) -> Store:
    from bot.store.dialects.postgres import PostgresDialect

    assert TEST_DATABASE_URL is not None
    return SqlStore(await PostgresDialect.open(TEST_DATABASE_URL, schema=schema))


def request(n: int) -> VideoRequest:
    return VideoRequest(prompt=f"clip {n}: a fox, ünïcode ✓", model="fake/video", duration=4)


async def move(store: Store, job_id: str, goal: JobState, now: float) -> None:
    """Through legal moves, recording what each kind of move records (remote id, vendor credits, errors…)."""
    records: dict[JobState, dict[str, Any]] = {
        JobState.RUNNING: {"remote_id": f"remote-{job_id[:6]}", "vendor_credits": 12.5},
        JobState.DOWNLOADING: {"result_path": f"/data/staging/{job_id}.mp4"},
        JobState.DELIVERED: {"delivered_message_id": MESSAGE},
        JobState.FAILED: {"error": "the provider said no", "refund": True},
        JobState.CANCELLED: {"refund": True},
    }
    for step in path(JobState.QUEUED, goal):
        await store.transition(job_id, Transition(step, **records.get(step, {})), now=now)


async def seed(store: Store, clock: FakeClock) -> dict[JobState, str]:
    """A row in every table, through the store's own methods; returns a job id per state."""
    await store.update_policy(GUILD, "default", 0, QuotaLimits(100, False, "week", 5, 2))
    await store.update_policy(GUILD, "role", 777, QuotaLimits(credits=500, unlimited=True))
    await store.update_policy(GUILD, "user", 1001, QuotaLimits(max_queued=9, period="month"))
    service = JobService(store, ProviderRegistry([ScriptedProvider()]), clock)
    jobs: dict[JobState, str] = {}
    for n, state in enumerate(JobState):
        job = await service.enqueue(Requester(GUILD, 1000 + n, CHANNEL), request(n))
        await store.set_delivery_ref(job.id, '{"token": "t", "status_message_id": 42}')
        clock.advance(1.25)
        await move(store, job.id, state, clock.now())
        jobs[state] = job.id
    await store.request_cancel(jobs[JobState.DOWNLOADING], now=clock.now())  # flags cancel_requested (a boolean)
    await store.add_ledger(GUILD, 1000, "grant", 30, at=clock.now())
    await store.add_ledger(GUILD, 1001, "reset", 0, at=clock.now())
    await store.set_blocked(GUILD, 1009, True, now=clock.now())
    await store.save_guild_settings(
        GuildSettings(GUILD, paused=True, default_model="fake/video", disabled_models=frozenset({"x/y", "a/b"}),
                      admin_role_id=777, log_channel_id=CHANNEL, monthly_budget=12.75, language="fr",
                      blocklist=("bad", "/re+gex/"), allowed_channels=frozenset({CHANNEL}))
    )  # fmt: skip
    await store.save_guild_settings(GuildSettings(42))  # every field at its default
    await store.add_audit_entry(AuditEntry(GUILD, 7, clock.now(), "quota grant", "user", "1000", {"a": 1}, None))
    await store.add_audit_entry(AuditEntry(GUILD, None, clock.now(), "pause", after=True))
    await store.record_refusal(GUILD, 1003, "quota", at=clock.now())
    # Keys whose order differs between byte order and a linguistic collation: rows are compared in key order.
    for key in ("discord.commands_hash", "Zeta", "alpha", "_under", "émoji ✓"):
        await store.set_meta(key, f"value of {key}")
    await store.register_worker(WorkerInfo("w-old", "host|boot|ns", 4242, "123.45", clock.now(), clock.now()))
    await store.put_input("0" * 32 + ".png", bytes(range(256)) * 40, content_type="image/png", now=clock.now())
    await store.pause_discord(clock.now() + 30)
    return jobs


def tables(file: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted; with the implicit rowid where no key is declared (it orders job_events' rows),
    and AUTOINCREMENT's counters (sqlite_sequence)."""
    raw = sqlite3.connect(file)
    try:
        names = [row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = {}
        for name in names:
            keyed = name == "sqlite_sequence" or any(c[5] for c in raw.execute(f'PRAGMA table_info("{name}")'))
            rows = raw.execute(f'SELECT {"" if keyed else "rowid, "}* FROM "{name}"').fetchall()
            found[name] = sorted(rows, key=repr)
        return found
    finally:
        raw.close()


async def seeded_sqlite(file: Path, clock: FakeClock) -> dict[JobState, str]:
    store = await open_sqlite(file)
    try:
        jobs = await seed(store, clock)
    finally:
        await store.close()
    empty = [name for name, rows in tables(file).items() if not rows and name != "schema_migrations"]
    assert not empty, f"seed() must put a row in every table, so the copy is shown to cover it: {empty}"
    return jobs


# --- round trips ----------------------------------------------------------------------------------------------
@needs_postgres
async def test_sqlite_to_postgres_and_back_keeps_every_table(
    tmp_path: Path, clock: FakeClock, pg_schemas: Callable[[], str]
) -> None:
    first, last, schema = tmp_path / "first.db", tmp_path / "last.db", pg_schemas()
    jobs = await seeded_sqlite(first, clock)
    await create_schema(schema)

    up = await copy_database(sqlite_url(first), pg_url(schema), batch_rows=3)  # several batches per table
    assert up.ok and up.rounded == {}, up
    copied = {t.name: t for t in up.tables}
    assert set(copied) == set(tables(first)) - {"schema_migrations", "sqlite_sequence"}
    assert all(t.target_rows > 0 for t in up.tables)
    assert copied["jobs"].target_rows == len(JobState) == 8

    down = await copy_database(pg_url(schema), sqlite_url(last), batch_rows=3)
    assert down.ok, down
    # The checksum is the same on both dialects: the three databases hold the same rows.
    assert {t.name: t.target_sha256 for t in down.tables} == {t.name: t.source_sha256 for t in up.tables}
    before, after = tables(first), tables(last)
    for name in before:
        assert after[name] == before[name], name

    pg = await open_pg(schema)
    try:
        delivered = await pg.get_job(jobs[JobState.DELIVERED])
        assert delivered is not None and delivered.state is JobState.DELIVERED
        assert delivered.delivered_message_id == MESSAGE and delivered.guild_id == GUILD
        flagged = await pg.get_job(jobs[JobState.DOWNLOADING])
        assert flagged is not None and flagged.cancel_requested and flagged.vendor_credits == 12.5
        settings = await pg.guild_settings(GUILD)
        assert settings.paused and settings.blocklist == ("bad", "/re+gex/") and settings.monthly_budget == 12.75
        assert settings.allowed_channels == frozenset({CHANNEL}) and settings.disabled_models == {"x/y", "a/b"}
        assert await pg.get_meta("discord.commands_hash") == "value of discord.commands_hash"
        events = await pg.job_events(jobs[JobState.DELIVERED])
        assert [e.to_state for e in events][:2] == [JobState.QUEUED, JobState.SUBMITTING]
        # Sequences were moved past the copied ids: new rows do not collide.
        entry = await pg.add_audit_entry(AuditEntry(GUILD, 7, clock.now(), "after the move"))
        assert entry.id == 3
    finally:
        await pg.close()
    back = await open_sqlite(last)
    try:
        entry = await back.add_audit_entry(AuditEntry(GUILD, 7, clock.now(), "after the way back"))
        assert entry.id == 3
    finally:
        await back.close()


async def test_sqlite_to_sqlite_copy_is_equal_and_verified(tmp_path: Path, clock: FakeClock) -> None:
    first, second = tmp_path / "first.db", tmp_path / "copy" / "second.db"
    await seeded_sqlite(first, clock)
    report = await copy_database(sqlite_url(first), sqlite_url(second))
    assert report.ok and all(t.source_rows == t.target_rows > 0 for t in report.tables), report
    assert tables(second) == tables(first)


@needs_postgres
async def test_single_precision_values_are_reported_and_still_verify(
    tmp_path: Path, clock: FakeClock, pg_schemas: Callable[[], str]
) -> None:
    """PostgreSQL's `vendor_credits REAL` holds 0.1 as 0.100000001…: compared at that precision, and counted."""
    first, schema = tmp_path / "first.db", pg_schemas()
    store = await open_sqlite(first)
    try:
        job = await JobService(store, ProviderRegistry([ScriptedProvider()]), clock).enqueue(
            Requester(GUILD, 1, CHANNEL), request(0)
        )
        await store.transition(job.id, Transition(JobState.SUBMITTING), now=clock.now())
        await store.transition(job.id, Transition(JobState.RUNNING, vendor_credits=0.1), now=clock.now())
    finally:
        await store.close()
    await create_schema(schema)
    report = await copy_database(sqlite_url(first), pg_url(schema))
    assert report.ok and report.rounded == {"jobs.vendor_credits": 1}, report


@needs_postgres
async def test_a_table_unknown_to_the_copier_is_found_and_copied_after_the_one_it_references(
    tmp_path: Path, clock: FakeClock, pg_schemas: Callable[[], str]
) -> None:
    """A table as a later migration would add it, with a foreign key to `jobs` and a name sorting before it."""
    import asyncpg

    first, schema = tmp_path / "first.db", pg_schemas()
    jobs = await seeded_sqlite(first, clock)
    raw = sqlite3.connect(first)
    raw.execute("CREATE TABLE aa_notes (id INTEGER PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs (id), ok BOOLEAN)")
    raw.execute("INSERT INTO aa_notes VALUES (7, ?, 1)", (jobs[JobState.QUEUED],))
    raw.commit()
    raw.close()
    await create_schema(schema)
    await (await open_pg(schema)).close()  # migrated
    conn = await asyncpg.connect(TEST_DATABASE_URL, server_settings={"search_path": schema})
    try:
        await conn.execute(
            "CREATE TABLE aa_notes (id BIGSERIAL PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs (id), ok BOOLEAN)"
        )
        report = await copy_database(sqlite_url(first), pg_url(schema))
        assert report.ok, report
        assert [tuple(r) for r in await conn.fetch("SELECT * FROM aa_notes")] == [(7, jobs[JobState.QUEUED], True)]
        assert await conn.fetchval("INSERT INTO aa_notes (job_id) VALUES ($1) RETURNING id", jobs[JobState.QUEUED]) == 8
    finally:
        await conn.close()


async def seeded_source_and_empty_target(
    tmp_path: Path, clock: FakeClock, backend: str, pg_schemas: Callable[[], str], password: str | None = None
) -> tuple[Path, str, str | None]:
    """A seeded SQLite source, and the URL of an empty target of the given backend, with its schema when it is a
    new PostgreSQL schema."""
    source = tmp_path / "source.db"
    await seeded_sqlite(source, clock)
    if backend == "sqlite":
        return source, sqlite_url(tmp_path / "target.db"), None
    schema = pg_schemas()
    await create_schema(schema)
    return source, pg_url(schema, password=password), schema


# --- refusals -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=needs_postgres)])
async def test_a_target_with_rows_is_refused_and_left_as_it_was(
    tmp_path: Path, clock: FakeClock, backend: str, pg_schemas: Callable[[], str]
) -> None:
    source, target_url, schema = await seeded_source_and_empty_target(tmp_path, clock, backend, pg_schemas)
    target = await (open_pg(schema) if schema else open_sqlite(tmp_path / "target.db"))
    try:
        await target.set_meta("already", "here")
        out = io.StringIO()
        assert await migrate(sqlite_url(source), target_url, stream=out) == EXIT_REFUSED
        assert "the target database is not empty: meta (1 row)" in out.getvalue(), out.getvalue()
        assert await target.get_meta("already") == "here"
        assert await target.get_meta("discord.commands_hash") is None
        assert await target.unfinished_jobs() == [] and await target.queue_depth() == 0
    finally:
        await target.close()


async def test_a_mismatch_fails_and_rolls_the_target_back(tmp_path: Path, clock: FakeClock) -> None:
    """A trigger on the target changes what it is given: the checksum sees it, and nothing is kept."""
    source, target = tmp_path / "source.db", tmp_path / "target.db"
    await seeded_sqlite(source, clock)
    await (await open_sqlite(target)).close()  # migrated and empty
    raw = sqlite3.connect(target)
    raw.execute("CREATE TRIGGER tamper AFTER INSERT ON meta BEGIN UPDATE meta SET value = 'x' WHERE key = NEW.key; END")
    raw.commit()
    raw.close()
    out = io.StringIO()
    assert await migrate(sqlite_url(source), sqlite_url(target), stream=out) == EXIT_FAILED
    assert "MISMATCH  meta" in out.getvalue() and "rolled back" in out.getvalue(), out.getvalue()
    assert all(not rows for name, rows in tables(target).items() if name != "schema_migrations")


async def test_a_source_newer_than_the_bot_is_refused_before_anything_is_touched(tmp_path: Path) -> None:
    source, target = tmp_path / "source.db", tmp_path / "target.db"
    await (await open_sqlite(source)).close()
    raw = sqlite3.connect(source)
    raw.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future')")
    raw.commit()
    raw.close()
    with pytest.raises(CopyRefused, match="schema version 9999, newer than this bot's"):
        await copy_database(sqlite_url(source), sqlite_url(target))
    assert not target.exists()
    with pytest.raises(CopyRefused, match="no SQLite database at"):
        await copy_database(sqlite_url(tmp_path / "typo.db"), sqlite_url(target))
    assert not (tmp_path / "typo.db").exists()


async def test_an_older_source_is_migrated_first(tmp_path: Path, clock: FakeClock) -> None:
    from bot.store import migrations

    source, target = tmp_path / "source.db", tmp_path / "target.db"
    raw = sqlite3.connect(source)
    raw.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    for migration in migrations.load("sqlite")[:1]:
        raw.executescript(migration.sql)
        raw.execute("INSERT INTO schema_migrations VALUES (?, ?)", (migration.version, migration.name))
    raw.execute("INSERT INTO meta VALUES ('old', 'row')")
    raw.commit()
    raw.close()
    report = await copy_database(sqlite_url(source), sqlite_url(target))
    assert report.ok and {t.name for t in report.tables} >= {"audit_log", "refusals", "workers"}
    assert tables(target)["meta"] == [("old", "row")]


# --- the command ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=needs_postgres)])
async def test_the_command_prints_progress_and_exits_0(
    tmp_path: Path, clock: FakeClock, backend: str, pg_schemas: Callable[[], str]
) -> None:
    password = "n0t-a-real-passw0rd"
    source, target_url, _ = await seeded_source_and_empty_target(tmp_path, clock, backend, pg_schemas, password)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "migrate", "--from", sqlite_url(source), "--to", target_url,
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = err.decode()
    assert proc.returncode == EXIT_OK, text
    assert "copy   jobs                 [##############################] 100.0%  8/8 rows" in text, text
    assert "verify job_events" in text and "ok        usage_ledger" in text, text
    assert "copied and verified" in text and not out, text
    assert password not in text


# --- the engine on the new database ---------------------------------------------------------------------------
@needs_postgres
async def test_a_job_queued_on_sqlite_is_finished_on_postgres(
    tmp_path: Path, clock: FakeClock, pg_schemas: Callable[[], str]
) -> None:
    source, schema = tmp_path / "source.db", pg_schemas()
    who = Requester(GUILD, 10, CHANNEL)
    store = await open_sqlite(source)
    try:
        queued = await JobService(store, ProviderRegistry([ScriptedProvider()]), clock).enqueue(who, request(1))
    finally:
        await store.close()
    await create_schema(schema)
    assert (await copy_database(sqlite_url(source), pg_url(schema))).ok

    pg = await open_pg(schema)
    try:
        registry = ProviderRegistry([ScriptedProvider()])
        service = JobService(pg, registry, clock)
        later = await service.enqueue(who, request(2))  # a new job on the new database, after the copied one
        out = tmp_path / "out"
        out.mkdir()
        sink = FileSink(out)
        await make_worker(pg, registry, sink, clock, tmp_path, worker_id="pg-worker").drain()
        for job_id in (queued.id, later.id):
            done = await pg.get_job(job_id)
            assert done is not None and done.state is JobState.DELIVERED, done
            assert sink.delivered[job_id].read_bytes() == CLIP_BYTES
        events = [e.to_state for e in await pg.job_events(queued.id)]
        assert events[0] is JobState.QUEUED and events[-1] is JobState.DELIVERED, events
        usage = await service.usage(who)
        assert (usage.used, usage.reserved) == (8, 0), usage
    finally:
        await pg.close()

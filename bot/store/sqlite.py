"""The embedded store: SQLite in WAL mode through aiosqlite.

Every write runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's single write lock up front, so a
quota check and the insert it guards (or the fair pick and the claim) cannot interleave with another writer,
in this process or another one sharing the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.domain import GuildSettings, Job, JobEvent, JobState, QuotaLimits, WorkerInfo
from bot.errors import StoreError
from bot.store import migrations
from bot.store.base import (
    Admission,
    AdmitFn,
    ClaimLimits,
    InvalidTransition,
    LeaseLost,
    PolicyLayers,
    Transition,
)
from bot.store.rows import (
    JOB_INSERT_COLUMNS,
    event_from_row,
    job_from_row,
    job_insert_values,
    layers_from_rows,
    limits_from_row,
    settings_from_row,
    worker_from_row,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_ACTIVE = "('submitting', 'running', 'downloading', 'delivering')"
_TERMINAL = "('delivered', 'failed', 'cancelled')"
_VIRTUAL_TIME = "scheduler.virtual_time"

_ADMISSION_SQL = f"""
WITH reset AS (
    -- An admin's reset: what was charged up to and including that moment no longer counts.
    SELECT COALESCE(MAX(at), -1e18) AS at FROM usage_ledger
    WHERE guild_id = :g AND user_id = :u AND kind = 'reset' AND at >= :start AND at < :end
)
SELECT
    COALESCE((SELECT paused FROM guild_settings WHERE guild_id = :g), 0) AS paused,
    EXISTS (SELECT 1 FROM quota_blocks WHERE guild_id = :g AND user_id = :u) AS blocked,
    COALESCE((SELECT SUM(credits) FROM usage_ledger WHERE guild_id = :g AND user_id = :u
              AND kind IN ('reserve', 'refund') AND at >= :start AND at < :end
              AND at > (SELECT at FROM reset)), 0) AS charged,
    COALESCE((SELECT SUM(credits) FROM jobs WHERE guild_id = :g AND user_id = :u
              AND state NOT IN {_TERMINAL} AND created_at >= :start AND created_at < :end
              AND created_at > (SELECT at FROM reset)), 0) AS reserved,
    COALESCE((SELECT SUM(credits) FROM usage_ledger WHERE guild_id = :g AND user_id = :u
              AND kind = 'grant' AND at >= :start AND at < :end), 0) AS granted,
    (SELECT COUNT(*) FROM jobs WHERE guild_id = :g AND user_id = :u AND state = 'queued') AS queued,
    (SELECT COUNT(*) FROM jobs WHERE guild_id = :g AND user_id = :u AND state IN {_ACTIVE}) AS running
"""

_PICK_SQL = f"""
SELECT * FROM jobs AS j
WHERE j.state = 'queued' {{provider_filter}}
  AND NOT EXISTS (SELECT 1 FROM guild_settings AS g WHERE g.guild_id = j.guild_id AND g.paused = 1)
  AND (SELECT COUNT(*) FROM jobs AS a WHERE a.guild_id = j.guild_id AND a.user_id = j.user_id
       AND a.state IN {_ACTIVE}) < j.max_running
ORDER BY j.priority DESC, j.fair_rank, j.seq
LIMIT 1
"""


def sqlite_path(url: str) -> str:
    """`sqlite:///data/x.db` is relative to the working directory, `sqlite:////srv/x.db` absolute."""
    if url == "sqlite://:memory:" or url == "sqlite:///:memory:":
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return url.removeprefix("sqlite:///")


class SqliteStore:
    """Each public method is one transaction run whole on aiosqlite's connection thread: one hop between the
    event loop and the thread per transaction instead of one per statement and fetch, which is what makes a
    thousand job lifecycles a second possible on one connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url_or_path: str) -> SqliteStore:
        path = sqlite_path(url_or_path) if url_or_path.startswith("sqlite:") else url_or_path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=10000",
            "PRAGMA temp_store=MEMORY",
        ):
            await db.execute(pragma)
        store = cls(db)
        await store.migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` as its own atomic unit of a write transaction on the connection's thread.

        Group commit: writes that arrive while a transaction is in flight are run together in the next one,
        each inside its own savepoint (so one failing rolls back only itself). The caller resumes only after
        the COMMIT that made its change durable.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        result: T = await future
        return result

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._db._execute(_run_batch, self._db._conn, [fn for fn, _ in batch])  # type: ignore[no-untyped-call]
            except BaseException as exc:  # the COMMIT itself failed: nothing in the batch happened
                outcomes = [(False, exc)] * len(batch)
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(_translated(value))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raw = self._db._conn
        try:
            result: T = await self._db._execute(fn, raw)  # type: ignore[no-untyped-call]
        except sqlite3.OperationalError as exc:
            raise _translated(exc) from exc
        return result

    # --- schema ---------------------------------------------------------------------------------------
    async def migrate(self) -> None:
        await self._read(_migrate)

    async def schema(self) -> list[tuple[str, str]]:
        """Every table and index with its SQL, for the migrations test."""

        def read(db: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = db.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'schema_migrations'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            return [(row[0], row[1]) for row in rows]

        return await self._read(read)

    # --- jobs -----------------------------------------------------------------------------------------
    async def insert_job(self, job: Job, *, max_running: int, window: tuple[float, float], admit: AdmitFn) -> Job:
        def insert(db: sqlite3.Connection) -> int:
            admit(_admission(db, job.guild_id, job.user_id, window))
            member_last = db.execute(
                "SELECT MAX(fair_rank) FROM jobs WHERE guild_id = ? AND user_id = ? AND state = 'queued'",
                (job.guild_id, job.user_id),
            ).fetchone()[0]
            rank = max(_virtual_time(db), member_last or 0) + 1
            placeholders = ", ".join("?" for _ in JOB_INSERT_COLUMNS)
            db.execute(
                f"INSERT INTO jobs ({', '.join(JOB_INSERT_COLUMNS)}) VALUES ({placeholders})",
                job_insert_values(job, max_running, rank),
            )
            db.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at)"
                " VALUES (?, ?, ?, 'reserve', ?, ?)",
                (job.guild_id, job.user_id, job.id, job.credits, job.created_at),
            )
            _event(db, job.id, job.created_at, None, JobState.QUEUED, "")
            return rank

        job.fair_rank = await self._write(insert)
        return job

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._read(lambda db: db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return job_from_row(row) if row else None

    async def claim_job(
        self, worker_id: str, *, now: float, lease_seconds: float, limits: ClaimLimits, holding: Sequence[str] = ()
    ) -> Job | None:
        def claim(db: sqlite3.Connection) -> Job | None:
            provider_filter, params = _provider_filter(limits.providers)
            held = f"AND id NOT IN ({', '.join('?' for _ in holding)})" if holding else ""
            row = db.execute(
                f"SELECT * FROM jobs WHERE state IN {_ACTIVE} AND lease_expires_at < ? {provider_filter} {held}"
                " ORDER BY lease_expires_at LIMIT 1",
                (now, *params, *holding),
            ).fetchone()
            if row is not None:
                return _take_over(db, row, worker_id, now, lease_seconds)

            running = dict(
                db.execute(f"SELECT provider, COUNT(*) FROM jobs WHERE state IN {_ACTIVE} GROUP BY provider").fetchall()
            )
            if limits.global_limit is not None and sum(running.values()) >= limits.global_limit:
                return None
            saturated = {p for p, n in running.items() if n >= limits.provider_limits.get(p, n + 1)}
            if limits.providers is not None:
                allowed = limits.providers - saturated
                if not allowed:
                    return None
                provider_filter, params = _provider_filter(frozenset(allowed))
            elif saturated:
                provider_filter = f"AND j.provider NOT IN ({', '.join('?' for _ in saturated)})"
                params = tuple(sorted(saturated))
            else:
                provider_filter, params = "", ()
            row = db.execute(_PICK_SQL.format(provider_filter=provider_filter), params).fetchone()
            if row is None:
                return None
            claimed = db.execute(
                "UPDATE jobs SET state = 'submitting', lease_owner = ?, lease_expires_at = ?,"
                " started_at = ?, updated_at = ? WHERE seq = ? RETURNING *",
                (worker_id, now + lease_seconds, now, now, row["seq"]),
            ).fetchone()
            if row["fair_rank"] > _virtual_time(db):
                _set_meta(db, _VIRTUAL_TIME, str(row["fair_rank"]))
            _event(db, row["id"], now, JobState.QUEUED, JobState.SUBMITTING, f"worker {worker_id}")
            return job_from_row(claimed)

        return await self._write(claim)

    # --- the worker registry --------------------------------------------------------------------------
    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO workers (id, host, pid, pid_started, started_at, heartbeat_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (worker.id, worker.host, worker.pid, worker.pid_started, worker.started_at, worker.heartbeat_at),
            )
        )

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], *, now: float, until: float) -> set[str]:
        marks = ", ".join("?" for _ in job_ids) or "NULL"

        def beat(db: sqlite3.Connection) -> set[str]:
            db.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (now, worker_id))
            rows = db.execute(
                f"UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ? AND id IN ({marks})"
                f" AND state IN {_ACTIVE} RETURNING id",
                (until, worker_id, *job_ids),
            ).fetchall()
            return {row[0] for row in rows}

        return await self._write(beat)

    async def workers(self) -> list[WorkerInfo]:
        rows = await self._read(lambda db: db.execute("SELECT * FROM workers ORDER BY started_at").fetchall())
        return [worker_from_row(row) for row in rows]

    async def reap_workers(self, worker_ids: Sequence[str]) -> list[str]:
        if not worker_ids:
            return []
        marks = ", ".join("?" for _ in worker_ids)

        def reap(db: sqlite3.Connection) -> list[str]:
            db.execute(f"DELETE FROM workers WHERE id IN ({marks})", tuple(worker_ids))
            rows = db.execute(
                f"UPDATE jobs SET lease_expires_at = 0 WHERE lease_owner IN ({marks}) AND state IN {_ACTIVE}"
                " RETURNING id",
                tuple(worker_ids),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._write(reap)

    async def unregister_worker(self, worker_id: str) -> None:
        await self._write(lambda db: db.execute("DELETE FROM workers WHERE id = ?", (worker_id,)))

    async def release_lease(self, job_id: str, worker_id: str) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = 0 WHERE id = ? AND lease_owner = ?",
                (job_id, worker_id),
            )
        )

    async def transition(self, job_id: str, change: Transition, *, now: float) -> Job:
        return await self._write(lambda db: _transition(db, job_id, change, now))

    async def set_progress(self, job_id: str, worker_id: str, progress: float, *, now: float) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND lease_owner = ?",
                (progress, now, job_id, worker_id),
            )
        )

    async def request_cancel(self, job_id: str, *, now: float) -> Job:
        def cancel(db: sqlite3.Connection) -> Job:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise InvalidTransition(f"job {job_id} does not exist")
            state = JobState(row["state"])
            if state is JobState.QUEUED:
                change = Transition(JobState.CANCELLED, refund=True, detail="cancelled while queued")
                return _transition(db, job_id, change, now)
            if state.is_active and not row["cancel_requested"]:
                row = db.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? RETURNING *", (now, job_id)
                ).fetchone()
                _event(db, job_id, now, state, state, "cancel requested")
            return job_from_row(row)

        return await self._write(cancel)

    async def cancel_queued(self, guild_id: int, *, now: float) -> list[Job]:
        change = Transition(JobState.CANCELLED, refund=True, detail="queue cleared by an admin")

        def clear(db: sqlite3.Connection) -> list[Job]:
            rows = db.execute(
                "SELECT id FROM jobs WHERE guild_id = ? AND state = 'queued' ORDER BY seq", (guild_id,)
            ).fetchall()
            return [_transition(db, row[0], change, now) for row in rows]

        return await self._write(clear)

    async def set_status_message(self, job_id: str, message_id: int) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE jobs SET status_message_id = ?, status_state = COALESCE(status_state, 'queued') WHERE id = ?",
                (message_id, job_id),
            )
        )

    async def mark_status_shown(self, job_id: str, state: JobState) -> None:
        await self._write(lambda db: db.execute("UPDATE jobs SET status_state = ? WHERE id = ?", (state.value, job_id)))

    async def jobs_with_stale_status(self, since: float) -> list[Job]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT * FROM jobs WHERE updated_at >= ? AND (status_state IS NULL OR status_state != state)"
                " ORDER BY seq",
                (since,),
            ).fetchall()
        )
        return [job_from_row(row) for row in rows]

    async def job_events(self, job_id: str) -> list[JobEvent]:
        rows = await self._read(
            lambda db: db.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY at, rowid", (job_id,)).fetchall()
        )
        return [event_from_row(row) for row in rows]

    async def member_jobs(self, guild_id: int, user_id: int, *, include_finished: bool = False) -> list[Job]:
        where = "" if include_finished else f"AND state NOT IN {_TERMINAL}"
        rows = await self._read(
            lambda db: db.execute(
                f"SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? {where} ORDER BY seq", (guild_id, user_id)
            ).fetchall()
        )
        return [job_from_row(row) for row in rows]

    async def queue_positions(self, job_ids: Sequence[str]) -> dict[str, int]:
        def positions(db: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for job_id in job_ids:
                row = db.execute(
                    "SELECT 1 + (SELECT COUNT(*) FROM jobs AS o WHERE o.state = 'queued' AND"
                    " (o.priority > j.priority OR (o.priority = j.priority AND"
                    "  (o.fair_rank < j.fair_rank OR (o.fair_rank = j.fair_rank AND o.seq < j.seq)))))"
                    " FROM jobs AS j WHERE j.id = ? AND j.state = 'queued'",
                    (job_id,),
                ).fetchone()
                if row is not None:
                    found[job_id] = int(row[0])
            return found

        return await self._read(positions)

    async def queue_depth(self, guild_id: int | None = None) -> int:
        sql = "SELECT COUNT(*) FROM jobs WHERE state = 'queued'"
        params: tuple[Any, ...] = ()
        if guild_id is not None:
            sql, params = sql + " AND guild_id = ?", (guild_id,)
        return await self._scalar(sql, params)

    async def running_count(self, provider: str | None = None) -> int:
        sql = f"SELECT COUNT(*) FROM jobs WHERE state IN {_ACTIVE}"
        params: tuple[Any, ...] = ()
        if provider is not None:
            sql, params = sql + " AND provider = ?", (provider,)
        return await self._scalar(sql, params)

    async def recent_durations(self, model: str, limit: int = 20) -> list[float]:
        rows = await self._read(
            lambda db: db.execute(
                "SELECT finished_at - started_at FROM jobs WHERE model = ? AND state = 'delivered'"
                " AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
                (model, limit),
            ).fetchall()
        )
        return [float(row[0]) for row in rows]

    async def unfinished_jobs(self) -> list[Job]:
        rows = await self._read(
            lambda db: db.execute(f"SELECT * FROM jobs WHERE state NOT IN {_TERMINAL} ORDER BY seq").fetchall()
        )
        return [job_from_row(row) for row in rows]

    # --- quotas ---------------------------------------------------------------------------------------
    async def policy_layers(self, guild_id: int, user_id: int, role_ids: Sequence[int]) -> PolicyLayers:
        marks = ", ".join("?" for _ in role_ids) or "NULL"
        rows = await self._read(
            lambda db: db.execute(
                "SELECT * FROM quota_policies WHERE guild_id = ? AND (scope = 'default'"
                f" OR (scope = 'role' AND target_id IN ({marks})) OR (scope = 'user' AND target_id = ?))",
                (guild_id, *role_ids, user_id),
            ).fetchall()
        )
        return layers_from_rows(rows)

    async def admission(self, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission:
        return await self._read(lambda db: _admission(db, guild_id, user_id, window))

    async def update_policy(
        self, guild_id: int, scope: str, target_id: int, limits: QuotaLimits | None
    ) -> QuotaLimits | None:
        key = (guild_id, scope, target_id)

        def update(db: sqlite3.Connection) -> QuotaLimits | None:
            if limits is None:
                db.execute("DELETE FROM quota_policies WHERE guild_id = ? AND scope = ? AND target_id = ?", key)
                return None
            row = db.execute(
                "SELECT * FROM quota_policies WHERE guild_id = ? AND scope = ? AND target_id = ?", key
            ).fetchone()
            merged = (limits_from_row(row) if row else QuotaLimits()).overlaid(limits)
            db.execute(
                "INSERT OR REPLACE INTO quota_policies"
                " (guild_id, scope, target_id, credits, unlimited, period, max_queued, max_running)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, merged.credits, merged.unlimited, merged.period, merged.max_queued, merged.max_running),
            )
            return merged

        return await self._write(update)

    async def add_ledger(self, guild_id: int, user_id: int, kind: str, credits: int, *, at: float) -> None:
        await self._write(
            lambda db: db.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, kind, credits, at) VALUES (?, ?, ?, ?, ?)",
                (guild_id, user_id, kind, credits, at),
            )
        )

    async def set_blocked(self, guild_id: int, user_id: int, blocked: bool, *, now: float) -> None:
        if blocked:
            sql = "INSERT OR IGNORE INTO quota_blocks (guild_id, user_id, blocked_at) VALUES (?, ?, ?)"
            params: tuple[Any, ...] = (guild_id, user_id, now)
        else:
            sql, params = "DELETE FROM quota_blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        await self._write(lambda db: db.execute(sql, params))

    async def is_blocked(self, guild_id: int, user_id: int) -> bool:
        sql = "SELECT COUNT(*) FROM quota_blocks WHERE guild_id = ? AND user_id = ?"
        return bool(await self._scalar(sql, (guild_id, user_id)))

    # --- settings -------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int) -> GuildSettings:
        row = await self._read(
            lambda db: db.execute("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)).fetchone()
        )
        return settings_from_row(guild_id, row)

    async def save_guild_settings(self, settings: GuildSettings) -> None:
        await self._write(lambda db: self._save_settings(db, settings))

    async def update_guild_settings(
        self, guild_id: int, change: Callable[[GuildSettings], GuildSettings]
    ) -> GuildSettings:
        # Read, change and write under the one write lock `_write` holds (BEGIN IMMEDIATE): no other writer,
        # in this process or another, can save in between, so no change is lost.
        def update(db: sqlite3.Connection) -> GuildSettings:
            row = db.execute("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)).fetchone()
            changed = change(settings_from_row(guild_id, row))
            if changed.guild_id != guild_id:
                raise ValueError(f"a settings change moved guild {guild_id} to {changed.guild_id}")
            self._save_settings(db, changed)
            return changed

        return await self._write(update)

    @staticmethod
    def _save_settings(db: sqlite3.Connection, settings: GuildSettings) -> None:
        db.execute(
            "INSERT OR REPLACE INTO guild_settings"
            " (guild_id, paused, default_model, disabled_models, admin_role_id) VALUES (?, ?, ?, ?, ?)",
            (
                settings.guild_id,
                int(settings.paused),
                settings.default_model,
                json.dumps(sorted(settings.disabled_models)),
                settings.admin_role_id,
            ),
        )

    async def get_meta(self, key: str) -> str | None:
        row = await self._read(lambda db: db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        await self._write(lambda db: _set_meta(db, key, value))

    async def _scalar(self, sql: str, params: Sequence[Any]) -> int:
        row = await self._read(lambda db: db.execute(sql, params).fetchone())
        return int(row[0]) if row and row[0] is not None else 0


def _translated(exc: BaseException) -> BaseException:
    """The database failing (locked past the busy timeout, disk full, I/O) is a `StoreError`, as on PostgreSQL:
    callers treat it as "try again later", not as a bug in the job."""
    if isinstance(exc, sqlite3.OperationalError):
        error = StoreError(f"database error: {exc}")
        error.__cause__ = exc
        return error
    return exc


# --- the transaction bodies (run on the connection's thread) ----------------------------------------------
def _run_batch(db: sqlite3.Connection, units: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
    """One `BEGIN IMMEDIATE` transaction; each unit in a savepoint, so a unit that raises leaves no trace."""
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for unit in units:
            db.execute("SAVEPOINT unit")
            try:
                outcomes.append((True, unit(db)))
            except Exception as exc:
                db.execute("ROLLBACK TO unit")
                outcomes.append((False, exc))
            db.execute("RELEASE unit")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return outcomes


def _migrate(db: sqlite3.Connection) -> None:
    """Apply what is missing, each migration in one `BEGIN IMMEDIATE` transaction that re-reads the applied
    versions under the write lock, so processes starting together never apply one twice."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    for migration in migrations.load("sqlite"):
        db.execute("BEGIN IMMEDIATE")
        try:
            done = db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)).fetchone()
            if done is None:
                log.info("applying sqlite migration %04d_%s", migration.version, migration.name)
                for statement in _statements(migration.sql):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (migration.version, migration.name)
                )
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise StoreError(f"migration {migration.version} failed: {exc}") from exc
        db.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript would commit the surrounding transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not all(part.strip().startswith("--") for part in current.strip().splitlines()):
        statements.append(current.strip())
    return statements


def _admission(db: sqlite3.Connection, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission:
    row = db.execute(_ADMISSION_SQL, {"g": guild_id, "u": user_id, "start": window[0], "end": window[1]}).fetchone()
    return Admission(
        paused=bool(row["paused"]),
        blocked=bool(row["blocked"]),
        charged=int(row["charged"]),
        reserved=int(row["reserved"]),
        granted=int(row["granted"]),
        queued=int(row["queued"]),
        running=int(row["running"]),
    )


def _take_over(db: sqlite3.Connection, row: sqlite3.Row, worker_id: str, now: float, lease_seconds: float) -> Job:
    taken = db.execute(
        "UPDATE jobs SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1, updated_at = ?"
        " WHERE seq = ? RETURNING *",
        (worker_id, now + lease_seconds, now, row["seq"]),
    ).fetchone()
    state = JobState(row["state"])
    previous = row["lease_owner"]
    detail = f"taken over by {worker_id} from {previous}" if previous else f"resumed by {worker_id} after a handover"
    _event(db, row["id"], now, state, state, detail)
    log.warning("job %s: lease of %s ran out, %s", row["id"], row["lease_owner"], detail)
    return job_from_row(taken)


def _transition(db: sqlite3.Connection, job_id: str, change: Transition, now: float) -> Job:
    row = db.execute(
        "SELECT state, lease_owner, guild_id, user_id, credits, created_at FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None:
        raise InvalidTransition(f"job {job_id} does not exist")
    state = JobState(row["state"])
    if change.worker_id is not None and row["lease_owner"] != change.worker_id:
        raise LeaseLost(f"job {job_id} is held by {row['lease_owner']}, not {change.worker_id}")
    if state.is_terminal or (change.from_states is not None and state not in change.from_states):
        raise InvalidTransition(f"job {job_id} is {state}, cannot move to {change.to_state}")
    sets = ["state = ?", "updated_at = ?"]
    values: list[Any] = [change.to_state.value, now]
    for column in ("remote_id", "error", "result_path", "delivered_message_id", "post_attempted_at"):
        value = getattr(change, column)
        if value is not None:
            sets.append(f"{column} = ?")
            values.append(value)
    if change.to_state.is_terminal:
        sets += ["lease_owner = NULL", "lease_expires_at = NULL", "finished_at = ?"]
        values.append(now)
        if change.to_state is JobState.DELIVERED:
            sets.append("progress = 1")
    updated = db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? RETURNING *", (*values, job_id)).fetchone()
    if change.refund:
        db.execute(
            "INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at)"
            " VALUES (?, ?, ?, 'refund', ?, ?)",  # dated at the reservation: it lands in the window that paid
            (row["guild_id"], row["user_id"], job_id, -row["credits"], row["created_at"]),
        )
    _event(db, job_id, now, state, change.to_state, change.detail or change.error or "")
    return job_from_row(updated)


def _virtual_time(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (_VIRTUAL_TIME,)).fetchone()
    return int(row[0]) if row else 0


def _set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _event(
    db: sqlite3.Connection, job_id: str, at: float, from_state: JobState | None, to_state: JobState, detail: str
) -> None:
    db.execute(
        "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?)",
        (job_id, at, from_state.value if from_state else None, to_state.value, detail),
    )


def _provider_filter(providers: frozenset[str] | None) -> tuple[str, tuple[str, ...]]:
    if providers is None:
        return "", ()
    ordered = tuple(sorted(providers))
    return f"AND provider IN ({', '.join('?' for _ in ordered)})", ordered

"""The embedded store: SQLite in WAL mode through aiosqlite.

Every write runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's single write lock up front, so a
quota check and the insert it guards (or the fair pick and the claim) cannot interleave with another writer,
in this process or another one sharing the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.domain import GuildSettings, Job, JobEvent, JobState, QuotaLimits
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
    limits_from_row,
    settings_from_row,
)

log = logging.getLogger(__name__)

_ACTIVE = "('submitting', 'running', 'downloading', 'delivering')"
_TERMINAL = "('delivered', 'failed', 'cancelled')"
_VIRTUAL_TIME = "scheduler.virtual_time"

_ADMISSION_SQL = f"""
WITH lower AS (
    SELECT MAX(:start, COALESCE((SELECT MAX(at) FROM usage_ledger WHERE guild_id = :g AND user_id = :u
                                 AND kind = 'reset' AND at >= :start AND at < :end), :start)) AS at
)
SELECT
    COALESCE((SELECT paused FROM guild_settings WHERE guild_id = :g), 0) AS paused,
    EXISTS (SELECT 1 FROM quota_blocks WHERE guild_id = :g AND user_id = :u) AS blocked,
    COALESCE((SELECT SUM(credits) FROM usage_ledger WHERE guild_id = :g AND user_id = :u
              AND kind IN ('reserve', 'refund') AND at >= (SELECT at FROM lower) AND at < :end), 0) AS charged,
    COALESCE((SELECT SUM(credits) FROM jobs WHERE guild_id = :g AND user_id = :u
              AND state NOT IN {_TERMINAL}
              AND created_at >= (SELECT at FROM lower) AND created_at < :end), 0) AS reserved,
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
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()  # a transaction's statements must not interleave with another's

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

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield self._db

    # --- schema ---------------------------------------------------------------------------------------
    async def migrate(self) -> None:
        async with self._lock:
            await self._db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
            )
            cur = await self._db.execute("SELECT version FROM schema_migrations")
            applied = {row[0] for row in await cur.fetchall()}
            for migration in migrations.load("sqlite"):
                if migration.version in applied:
                    continue
                log.info("applying sqlite migration %04d_%s", migration.version, migration.name)
                record = (
                    f"INSERT INTO schema_migrations (version, name) VALUES ({migration.version}, '{migration.name}');"
                )
                try:
                    await self._db.executescript(f"BEGIN IMMEDIATE;\n{migration.sql}\n{record}\nCOMMIT;")
                except Exception as exc:
                    await self._db.execute("ROLLBACK")
                    raise StoreError(f"migration {migration.version} failed: {exc}") from exc

    async def schema(self) -> list[tuple[str, str]]:
        """Every table and index with its SQL, for the migrations test."""
        async with self._read() as db:
            cur = await db.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'schema_migrations'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
            return [(row[0], row[1]) for row in await cur.fetchall()]

    # --- jobs -----------------------------------------------------------------------------------------
    async def insert_job(self, job: Job, *, max_running: int, window: tuple[float, float], admit: AdmitFn) -> Job:
        async with self._tx() as db:
            admit(await self._admission(db, job.guild_id, job.user_id, window))
            virtual_time = await self._virtual_time(db)
            cur = await db.execute(
                "SELECT MAX(fair_rank) FROM jobs WHERE guild_id = ? AND user_id = ? AND state = 'queued'",
                (job.guild_id, job.user_id),
            )
            member_last = (await cur.fetchone() or [None])[0] or 0
            rank = max(virtual_time, member_last) + 1
            placeholders = ", ".join("?" for _ in JOB_INSERT_COLUMNS)
            await db.execute(
                f"INSERT INTO jobs ({', '.join(JOB_INSERT_COLUMNS)}) VALUES ({placeholders})",
                job_insert_values(job, max_running, rank),
            )
            await db.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at)"
                " VALUES (?, ?, ?, 'reserve', ?, ?)",
                (job.guild_id, job.user_id, job.id, job.credits, job.created_at),
            )
            await self._event(db, job.id, job.created_at, None, JobState.QUEUED, "")
        job.fair_rank = rank
        return job

    async def get_job(self, job_id: str) -> Job | None:
        async with self._read() as db:
            cur = await db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
            row = await cur.fetchone()
        return job_from_row(row) if row else None

    async def claim_job(self, worker_id: str, *, now: float, lease_seconds: float, limits: ClaimLimits) -> Job | None:
        async with self._tx() as db:
            provider_filter, params = _provider_filter(limits.providers)
            cur = await db.execute(
                f"SELECT * FROM jobs WHERE state IN {_ACTIVE} AND lease_expires_at < ? {provider_filter}"
                " ORDER BY lease_expires_at LIMIT 1",
                (now, *params),
            )
            row = await cur.fetchone()
            if row is not None:
                return await self._take_over(db, row, worker_id, now, lease_seconds)

            cur = await db.execute(f"SELECT provider, COUNT(*) FROM jobs WHERE state IN {_ACTIVE} GROUP BY provider")
            running = {r[0]: r[1] for r in await cur.fetchall()}
            if limits.global_limit is not None and sum(running.values()) >= limits.global_limit:
                return None
            saturated = [p for p, n in running.items() if n >= limits.provider_limits.get(p, n + 1)]
            allowed = None if limits.providers is None else limits.providers - set(saturated)
            if allowed is not None and not allowed:
                return None
            if allowed is not None:
                provider_filter, params = _provider_filter(frozenset(allowed))
            elif saturated:
                marks = ", ".join("?" for _ in saturated)
                provider_filter, params = f"AND j.provider NOT IN ({marks})", tuple(saturated)
            else:
                provider_filter, params = "", ()
            cur = await db.execute(_PICK_SQL.format(provider_filter=provider_filter), params)
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await db.execute(
                "UPDATE jobs SET state = 'submitting', lease_owner = ?, lease_expires_at = ?,"
                " started_at = ?, updated_at = ? WHERE seq = ? RETURNING *",
                (worker_id, now + lease_seconds, now, now, row["seq"]),
            )
            claimed = await cur.fetchone()
            assert claimed is not None
            if row["fair_rank"] > await self._virtual_time(db):
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_VIRTUAL_TIME, str(row["fair_rank"])),
                )
            await self._event(db, row["id"], now, JobState.QUEUED, JobState.SUBMITTING, f"worker {worker_id}")
            return job_from_row(claimed)

    async def _take_over(
        self, db: aiosqlite.Connection, row: Any, worker_id: str, now: float, lease_seconds: float
    ) -> Job:
        cur = await db.execute(
            "UPDATE jobs SET lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1, updated_at = ?"
            " WHERE seq = ? RETURNING *",
            (worker_id, now + lease_seconds, now, row["seq"]),
        )
        taken = await cur.fetchone()
        assert taken is not None
        state = JobState(row["state"])
        detail = f"taken over by {worker_id} from {row['lease_owner']}"
        await self._event(db, row["id"], now, state, state, detail)
        log.warning("job %s: lease of %s ran out, %s", row["id"], row["lease_owner"], detail)
        return job_from_row(taken)

    async def renew_leases(self, worker_id: str, job_ids: Sequence[str], until: float) -> set[str]:
        if not job_ids:
            return set()
        marks = ", ".join("?" for _ in job_ids)
        async with self._tx() as db:
            cur = await db.execute(
                f"UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ? AND id IN ({marks})"
                f" AND state IN {_ACTIVE} RETURNING id",
                (until, worker_id, *job_ids),
            )
            return {row[0] for row in await cur.fetchall()}

    async def release_lease(self, job_id: str, worker_id: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = 0 WHERE id = ? AND lease_owner = ?",
                (job_id, worker_id),
            )

    async def transition(self, job_id: str, change: Transition, *, now: float) -> Job:
        async with self._tx() as db:
            return await self._transition(db, job_id, change, now)

    async def _transition(self, db: aiosqlite.Connection, job_id: str, change: Transition, now: float) -> Job:
        cur = await db.execute(
            "SELECT state, lease_owner, guild_id, user_id, credits, created_at FROM jobs WHERE id = ?",
            (job_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise InvalidTransition(f"job {job_id} does not exist")
        state = JobState(row["state"])
        if change.worker_id is not None and row["lease_owner"] != change.worker_id:
            raise LeaseLost(f"job {job_id} is held by {row['lease_owner']}, not {change.worker_id}")
        if state.is_terminal or (change.from_states is not None and state not in change.from_states):
            raise InvalidTransition(f"job {job_id} is {state}, cannot move to {change.to_state}")
        sets = ["state = ?", "updated_at = ?"]
        values: list[Any] = [change.to_state.value, now]
        for column in ("remote_id", "error", "result_path", "delivered_message_id"):
            value = getattr(change, column)
            if value is not None:
                sets.append(f"{column} = ?")
                values.append(value)
        if change.to_state.is_terminal:
            sets += ["lease_owner = NULL", "lease_expires_at = NULL", "finished_at = ?"]
            values.append(now)
            if change.to_state is JobState.DELIVERED:
                sets.append("progress = 1")
        cur = await db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? RETURNING *", (*values, job_id))
        updated = await cur.fetchone()
        assert updated is not None
        if change.refund:
            await self._refund(db, job_id, row["guild_id"], row["user_id"], row["credits"], row["created_at"])
        await self._event(db, job_id, now, state, change.to_state, change.detail or change.error or "")
        return job_from_row(updated)

    async def set_progress(self, job_id: str, worker_id: str, progress: float, *, now: float) -> None:
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ? AND lease_owner = ?",
                (progress, now, job_id, worker_id),
            )

    async def request_cancel(self, job_id: str, *, now: float) -> Job:
        async with self._tx() as db:
            cur = await db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,))
            row = await cur.fetchone()
            if row is None:
                raise InvalidTransition(f"job {job_id} does not exist")
            state = JobState(row["state"])
            if state is JobState.QUEUED:
                return await self._transition(
                    db,
                    job_id,
                    Transition(JobState.CANCELLED, refund=True, detail="cancelled while queued"),
                    now,
                )
            if state.is_active and not row["cancel_requested"]:
                cur = await db.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? RETURNING *",
                    (now, job_id),
                )
                row = await cur.fetchone()
                await self._event(db, job_id, now, state, state, "cancel requested")
            return job_from_row(row)

    async def cancel_queued(self, guild_id: int, *, now: float) -> list[Job]:
        async with self._tx() as db:
            cur = await db.execute(
                "SELECT id FROM jobs WHERE guild_id = ? AND state = 'queued' ORDER BY seq", (guild_id,)
            )
            ids = [row[0] for row in await cur.fetchall()]
            change = Transition(JobState.CANCELLED, refund=True, detail="queue cleared by an admin")
            return [await self._transition(db, job_id, change, now) for job_id in ids]

    async def set_status_message(self, job_id: str, message_id: int) -> None:
        async with self._tx() as db:
            await db.execute("UPDATE jobs SET status_message_id = ? WHERE id = ?", (message_id, job_id))

    async def job_events(self, job_id: str) -> list[JobEvent]:
        async with self._read() as db:
            cur = await db.execute("SELECT * FROM job_events WHERE job_id = ? ORDER BY at, rowid", (job_id,))
            return [event_from_row(row) for row in await cur.fetchall()]

    async def member_jobs(self, guild_id: int, user_id: int, *, include_finished: bool = False) -> list[Job]:
        where = "" if include_finished else f"AND state NOT IN {_TERMINAL}"
        async with self._read() as db:
            cur = await db.execute(
                f"SELECT * FROM jobs WHERE guild_id = ? AND user_id = ? {where} ORDER BY seq",
                (guild_id, user_id),
            )
            return [job_from_row(row) for row in await cur.fetchall()]

    async def queue_positions(self, job_ids: Sequence[str]) -> dict[str, int]:
        positions: dict[str, int] = {}
        async with self._read() as db:
            for job_id in job_ids:
                cur = await db.execute(
                    "SELECT 1 + (SELECT COUNT(*) FROM jobs AS o WHERE o.state = 'queued' AND"
                    " (o.priority > j.priority OR (o.priority = j.priority AND"
                    "  (o.fair_rank < j.fair_rank OR (o.fair_rank = j.fair_rank AND o.seq < j.seq)))))"
                    " FROM jobs AS j WHERE j.id = ? AND j.state = 'queued'",
                    (job_id,),
                )
                row = await cur.fetchone()
                if row is not None:
                    positions[job_id] = int(row[0])
        return positions

    async def queue_depth(self, guild_id: int | None = None) -> int:
        sql, params = "SELECT COUNT(*) FROM jobs WHERE state = 'queued'", ()
        if guild_id is not None:
            sql, params = sql + " AND guild_id = ?", (guild_id,)
        return await self._scalar(sql, params)

    async def running_count(self, provider: str | None = None) -> int:
        sql, params = f"SELECT COUNT(*) FROM jobs WHERE state IN {_ACTIVE}", ()
        if provider is not None:
            sql, params = sql + " AND provider = ?", (provider,)
        return await self._scalar(sql, params)

    async def recent_durations(self, model: str, limit: int = 20) -> list[float]:
        async with self._read() as db:
            cur = await db.execute(
                "SELECT finished_at - started_at FROM jobs WHERE model = ? AND state = 'delivered'"
                " AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
                (model, limit),
            )
            return [float(row[0]) for row in await cur.fetchall()]

    async def unfinished_jobs(self) -> list[Job]:
        async with self._read() as db:
            cur = await db.execute(f"SELECT * FROM jobs WHERE state NOT IN {_TERMINAL} ORDER BY seq")
            return [job_from_row(row) for row in await cur.fetchall()]

    # --- quotas ---------------------------------------------------------------------------------------
    async def policy_layers(self, guild_id: int, user_id: int, role_ids: Sequence[int]) -> PolicyLayers:
        marks = ", ".join("?" for _ in role_ids) or "NULL"
        async with self._read() as db:
            cur = await db.execute(
                "SELECT * FROM quota_policies WHERE guild_id = ? AND (scope = 'default'"
                f" OR (scope = 'role' AND target_id IN ({marks})) OR (scope = 'user' AND target_id = ?))",
                (guild_id, *role_ids, user_id),
            )
            rows = await cur.fetchall()
        by_scope: dict[str, list[QuotaLimits]] = {"default": [], "role": [], "user": []}
        for row in rows:
            by_scope[row["scope"]].append(limits_from_row(row))
        return PolicyLayers(
            default=(by_scope["default"] or [None])[0],
            roles=tuple(by_scope["role"]),
            user=(by_scope["user"] or [None])[0],
        )

    async def admission(self, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission:
        async with self._read() as db:
            return await self._admission(db, guild_id, user_id, window)

    async def _admission(
        self, db: aiosqlite.Connection, guild_id: int, user_id: int, window: tuple[float, float]
    ) -> Admission:
        cur = await db.execute(_ADMISSION_SQL, {"g": guild_id, "u": user_id, "start": window[0], "end": window[1]})
        row = await cur.fetchone()
        assert row is not None
        return Admission(
            paused=bool(row["paused"]),
            blocked=bool(row["blocked"]),
            charged=int(row["charged"]),
            reserved=int(row["reserved"]),
            granted=int(row["granted"]),
            queued=int(row["queued"]),
            running=int(row["running"]),
        )

    async def update_policy(
        self, guild_id: int, scope: str, target_id: int, limits: QuotaLimits | None
    ) -> QuotaLimits | None:
        async with self._tx() as db:
            key = (guild_id, scope, target_id)
            if limits is None:
                await db.execute("DELETE FROM quota_policies WHERE guild_id = ? AND scope = ? AND target_id = ?", key)
                return None
            cur = await db.execute(
                "SELECT * FROM quota_policies WHERE guild_id = ? AND scope = ? AND target_id = ?", key
            )
            row = await cur.fetchone()
            merged = (limits_from_row(row) if row else QuotaLimits()).overlaid(limits)
            await db.execute(
                "INSERT OR REPLACE INTO quota_policies"
                " (guild_id, scope, target_id, credits, unlimited, period, max_queued, max_running)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    *key,
                    merged.credits,
                    merged.unlimited,
                    merged.period,
                    merged.max_queued,
                    merged.max_running,
                ),
            )
            return merged

    async def add_ledger(self, guild_id: int, user_id: int, kind: str, credits: int, *, at: float) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, kind, credits, at) VALUES (?, ?, ?, ?, ?)",
                (guild_id, user_id, kind, credits, at),
            )

    async def set_blocked(self, guild_id: int, user_id: int, blocked: bool, *, now: float) -> None:
        async with self._tx() as db:
            if blocked:
                await db.execute(
                    "INSERT OR IGNORE INTO quota_blocks (guild_id, user_id, blocked_at) VALUES (?, ?, ?)",
                    (guild_id, user_id, now),
                )
            else:
                await db.execute("DELETE FROM quota_blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))

    async def is_blocked(self, guild_id: int, user_id: int) -> bool:
        return bool(
            await self._scalar(
                "SELECT COUNT(*) FROM quota_blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
        )

    # --- settings -------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int) -> GuildSettings:
        async with self._read() as db:
            cur = await db.execute("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
            row = await cur.fetchone()
        return settings_from_row(guild_id, row)

    async def save_guild_settings(self, settings: GuildSettings) -> None:
        async with self._tx() as db:
            await db.execute(
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
        async with self._read() as db:
            cur = await db.execute("SELECT value FROM meta WHERE key = ?", (key,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- helpers --------------------------------------------------------------------------------------
    async def _scalar(self, sql: str, params: Sequence[Any]) -> int:
        async with self._read() as db:
            cur = await db.execute(sql, params)
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def _virtual_time(self, db: aiosqlite.Connection) -> int:
        cur = await db.execute("SELECT value FROM meta WHERE key = ?", (_VIRTUAL_TIME,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _refund(
        self,
        db: aiosqlite.Connection,
        job_id: str,
        guild_id: int,
        user_id: int,
        credits: int,
        reserved_at: float,
    ) -> None:
        await db.execute(
            "INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at) VALUES (?, ?, ?, 'refund', ?, ?)",
            (guild_id, user_id, job_id, -credits, reserved_at),
        )

    async def _event(
        self,
        db: aiosqlite.Connection,
        job_id: str,
        at: float,
        from_state: JobState | None,
        to_state: JobState,
        detail: str,
    ) -> None:
        await db.execute(
            "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, at, from_state.value if from_state else None, to_state.value, detail),
        )


def _provider_filter(providers: frozenset[str] | None) -> tuple[str, tuple[str, ...]]:
    if providers is None:
        return "", ()
    ordered = tuple(sorted(providers))
    return f"AND provider IN ({', '.join('?' for _ in ordered)})", ordered

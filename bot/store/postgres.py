"""The scale-out store: PostgreSQL through asyncpg, shared by any number of gateway and worker processes.

SQLite gets atomicity from its single write lock; here every method is one READ COMMITTED transaction (or one
statement, which is its own) and the decisions that read and then write take explicit locks instead:

- enqueue takes a transaction-level advisory lock per member, so the admission snapshot and the insert it
  guards cannot interleave with another enqueue of the same member (other members are not held up);
- the claim takes an expired lease with `FOR UPDATE SKIP LOCKED` (no further lock: a takeover changes no
  count), and makes the fair pick under one advisory lock per schema, because the per-member, per-provider and
  global running limits are counts that two concurrent claimers could both pass. Claims take milliseconds, so
  serializing them costs little; `SKIP LOCKED` keeps them from waiting on rows a cancel is changing.

Advisory locks are released after the commit is visible, so the next holder reads what the last one wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from bot.domain import GuildSettings, Job, JobEvent, JobState, QuotaLimits, WorkerInfo
from bot.errors import StoreError
from bot.store import migrations
from bot.store.base import Admission, AdmitFn, ClaimLimits, InvalidTransition, LeaseLost, PolicyLayers, Transition
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

CHANNEL = "videobot_jobs"
"""NOTIFY channel for "a job was queued"; the payload is the schema, so deployments sharing a database (or
tests, each in its own schema) do not wake each other."""

_ACTIVE = "('submitting', 'running', 'downloading', 'delivering')"
_TERMINAL = "('delivered', 'failed', 'cancelled')"
_VIRTUAL_TIME = "scheduler.virtual_time"
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

# $1 guild, $2 user, $3 window start, $4 window end. As in SQLite: an admin's reset hides what was charged up
# to and including that moment.
_ADMISSION_SQL = f"""
WITH reset AS (
    SELECT COALESCE(MAX(at), -1e18) AS at FROM usage_ledger
    WHERE guild_id = $1 AND user_id = $2 AND kind = 'reset' AND at >= $3 AND at < $4
)
SELECT
    COALESCE((SELECT paused FROM guild_settings WHERE guild_id = $1), FALSE) AS paused,
    EXISTS (SELECT 1 FROM quota_blocks WHERE guild_id = $1 AND user_id = $2) AS blocked,
    COALESCE((SELECT SUM(credits) FROM usage_ledger WHERE guild_id = $1 AND user_id = $2
              AND kind IN ('reserve', 'refund') AND at >= $3 AND at < $4
              AND at > (SELECT at FROM reset)), 0) AS charged,
    COALESCE((SELECT SUM(credits) FROM jobs WHERE guild_id = $1 AND user_id = $2
              AND state NOT IN {_TERMINAL} AND created_at >= $3 AND created_at < $4
              AND created_at > (SELECT at FROM reset)), 0) AS reserved,
    COALESCE((SELECT SUM(credits) FROM usage_ledger WHERE guild_id = $1 AND user_id = $2
              AND kind = 'grant' AND at >= $3 AND at < $4), 0) AS granted,
    (SELECT COUNT(*) FROM jobs WHERE guild_id = $1 AND user_id = $2 AND state = 'queued') AS queued,
    (SELECT COUNT(*) FROM jobs WHERE guild_id = $1 AND user_id = $2 AND state IN {_ACTIVE}) AS running
"""

# $1 virtual-time key, $2 guild, $3 user: after the virtual time and after the member's last queued job.
_RANK_SQL = """
SELECT GREATEST(COALESCE((SELECT value::bigint FROM meta WHERE key = $1), 0),
                COALESCE((SELECT MAX(fair_rank) FROM jobs WHERE guild_id = $2 AND user_id = $3
                          AND state = 'queued'), 0)) + 1
"""

# $1 now, $2 worker, $3 lease end; the provider filter's parameter is $4.
_TAKEOVER_SQL = f"""
WITH expired AS (
    SELECT seq, lease_owner FROM jobs
    WHERE state IN {_ACTIVE} AND lease_expires_at < $1 {{provider_filter}} {{held_filter}}
    ORDER BY lease_expires_at LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET lease_owner = $2, lease_expires_at = $3, attempts = attempts + 1, updated_at = $1
FROM expired WHERE jobs.seq = expired.seq
RETURNING jobs.*, expired.lease_owner AS previous_owner
"""

# Same parameters; the same conditions and order as SQLite's `_PICK_SQL`.
_PICK_SQL = f"""
WITH pick AS (
    SELECT j.seq FROM jobs AS j
    WHERE j.state = 'queued' {{provider_filter}}
      AND NOT EXISTS (SELECT 1 FROM guild_settings AS g WHERE g.guild_id = j.guild_id AND g.paused)
      AND (SELECT COUNT(*) FROM jobs AS a WHERE a.guild_id = j.guild_id AND a.user_id = j.user_id
           AND a.state IN {_ACTIVE}) < j.max_running
    ORDER BY j.priority DESC, j.fair_rank, j.seq
    LIMIT 1
    FOR UPDATE OF j SKIP LOCKED
)
UPDATE jobs SET state = 'submitting', lease_owner = $2, lease_expires_at = $3, started_at = $1, updated_at = $1
FROM pick WHERE jobs.seq = pick.seq
RETURNING jobs.*
"""

_ADVANCE_VIRTUAL_TIME_SQL = """
INSERT INTO meta (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE meta.value::bigint < excluded.value::bigint
"""

_POSITIONS_SQL = """
SELECT j.id, 1 + (SELECT COUNT(*) FROM jobs AS o WHERE o.state = 'queued' AND
    (o.priority > j.priority OR (o.priority = j.priority AND
     (o.fair_rank < j.fair_rank OR (o.fair_rank = j.fair_rank AND o.seq < j.seq))))) AS position
FROM jobs AS j WHERE j.id = ANY($1::text[]) AND j.state = 'queued'
"""

_LEDGER_SQL = "INSERT INTO usage_ledger (guild_id, user_id, job_id, kind, credits, at) VALUES ($1, $2, $3, $4, $5, $6)"
_EVENT_SQL = "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES ($1, $2, $3, $4, $5)"
_SET_META_SQL = "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_POLICY_KEY = "guild_id = $1 AND scope = $2 AND target_id = $3"

_SAVE_SETTINGS_SQL = """
INSERT INTO guild_settings (guild_id, paused, default_model, disabled_models, admin_role_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (guild_id) DO UPDATE SET paused = excluded.paused, default_model = excluded.default_model,
    disabled_models = excluded.disabled_models, admin_role_id = excluded.admin_role_id
"""

_SCHEMA_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS dflt
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> 'schema_migrations'
ORDER BY c.relname, a.attnum
"""
_SCHEMA_CONSTRAINTS_SQL = """
SELECT c.relname, pg_get_constraintdef(k.oid) AS def
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() ORDER BY c.relname, k.conname
"""
# Without the schema qualification pg_get_indexdef adds, so two schemas migrated alike compare equal.
_SCHEMA_INDEXES_SQL = """
SELECT i.relname, replace(pg_get_indexdef(i.oid), ' ON ' || quote_ident(n.nspname) || '.', ' ON ') AS def
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND t.relname <> 'schema_migrations'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)
"""


class PostgresStore:
    def __init__(self, pool: Any, dsn: str, schema: str | None, namespace: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._schema = schema
        self._namespace = namespace
        self._listeners: set[Callable[[], Awaitable[None]]] = set()

    @property
    def namespace(self) -> str:
        """The schema this store works in."""
        return self._namespace

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10) -> PostgresStore:
        """Connect, create `schema` if given (every pooled connection then works inside it), and migrate."""
        dsn = postgres_dsn(url)
        settings = {"search_path": _quote_ident(schema)} if schema else None
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, server_settings=settings)
        except (*_DRIVER_ERRORS, ValueError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                if schema:
                    # Under the migration lock: concurrent `CREATE SCHEMA IF NOT EXISTS` can collide in the catalog.
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(schema, "migrate"))
                        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(schema)}")
                namespace = schema or str(await conn.fetchval("SELECT current_schema()") or "public")
            store = cls(pool, dsn, schema, namespace)
            await store.migrate()
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, _DRIVER_ERRORS):
                raise StoreError(f"cannot prepare the PostgreSQL schema: {exc}") from exc
            raise
        return store

    async def close(self) -> None:
        for stop in list(self._listeners):
            await stop()
        await self._pool.close()

    async def drop_schema(self) -> None:
        """Remove the store's schema and everything in it (each test gets a schema of its own)."""
        if self._schema is None:
            raise StoreError("drop_schema() needs a store opened with a schema")
        await self._fetch(f"DROP SCHEMA IF EXISTS {_quote_ident(self._schema)} CASCADE")

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[Any]:
        """One pooled connection in one transaction; driver failures surface as `StoreError`."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        """One statement on its own: atomic without BEGIN/COMMIT round trips."""
        try:
            return list(await self._pool.fetch(sql, *args))
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def _first(self, sql: str, *args: Any) -> Any:
        rows = await self._fetch(sql, *args)
        return rows[0] if rows else None

    # --- schema ---------------------------------------------------------------------------------------
    async def migrate(self) -> None:
        """Apply pending migrations, each in its own transaction under an advisory lock, so processes starting
        together apply each one exactly once (a waiter re-reads `schema_migrations` once it has the lock)."""
        key = _lock_key(self._namespace, "migrate")
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
            )
        for migration in migrations.load("postgres"):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
                    if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", migration.version):
                        continue
                    log.info("applying postgres migration %04d_%s", migration.version, migration.name)
                    await conn.execute(migration.sql)
                    record = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
                    await conn.execute(record, migration.version, migration.name)
            except _DRIVER_ERRORS as exc:
                raise StoreError(f"migration {migration.version} failed: {exc}") from exc

    async def schema(self) -> list[tuple[str, str]]:
        """Every table and index of the schema with a definition, for the migrations test. Indexes that back a
        primary key or unique constraint belong to their table's entry, as in SQLite's listing."""
        async with self._tx() as conn:
            columns = await conn.fetch(_SCHEMA_COLUMNS_SQL)
            constraints = await conn.fetch(_SCHEMA_CONSTRAINTS_SQL)
            indexes = await conn.fetch(_SCHEMA_INDEXES_SQL)
        tables: dict[str, list[str]] = {}
        for col in columns:
            text = f"{col['attname']} {col['type']}" + (" NOT NULL" if col["attnotnull"] else "")
            tables.setdefault(col["relname"], []).append(text + (f" DEFAULT {col['dflt']}" if col["dflt"] else ""))
        for con in constraints:
            if con["relname"] in tables:
                tables[con["relname"]].append(con["def"])
        found = [(name, f"CREATE TABLE {name} ({', '.join(body)})") for name, body in tables.items()]
        return sorted(found + [(str(row["relname"]), str(row["def"])) for row in indexes])

    # --- wake-ups -------------------------------------------------------------------------------------
    async def listen(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Call `callback` whenever a job is queued in this schema, by any process. Holds a dedicated
        connection (a pooled one would be kept from the claimers); returns the coroutine that stops it."""
        try:
            conn = await asyncpg.connect(self._dsn)
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"cannot listen for new jobs: {exc}") from exc

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload == self._namespace:
                callback()

        def on_terminate(_conn: Any) -> None:
            log.warning("the LISTEN connection closed; new jobs are only found by polling now")

        await conn.add_listener(CHANNEL, on_notify)
        conn.add_termination_listener(on_terminate)

        async def stop() -> None:
            if stop not in self._listeners:
                return  # stopped already
            self._listeners.discard(stop)
            conn.remove_termination_listener(on_terminate)
            try:
                await conn.remove_listener(CHANNEL, on_notify)
            except _DRIVER_ERRORS:
                pass  # the connection is gone already; closing it is all that is left
            finally:
                await conn.close()

        self._listeners.add(stop)
        return stop

    # --- jobs -----------------------------------------------------------------------------------------
    async def insert_job(self, job: Job, *, max_running: int, window: tuple[float, float], admit: AdmitFn) -> Job:
        member_lock = _lock_key(self._namespace, "member", job.guild_id, job.user_id)
        marks = ", ".join(f"${i}" for i in range(1, len(JOB_INSERT_COLUMNS) + 1))
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", member_lock)
            # Read after the lock: this snapshot includes every enqueue of this member committed before.
            admit(await _admission(conn, job.guild_id, job.user_id, window))
            rank = int(await conn.fetchval(_RANK_SQL, _VIRTUAL_TIME, job.guild_id, job.user_id))
            await conn.execute(
                f"INSERT INTO jobs ({', '.join(JOB_INSERT_COLUMNS)}) VALUES ({marks})",
                *job_insert_values(job, max_running, rank),
            )
            await conn.execute(
                _LEDGER_SQL, job.guild_id, job.user_id, job.id, "reserve", job.credits, float(job.created_at)
            )
            await _event(conn, job.id, job.created_at, None, JobState.QUEUED, "")
            # The server delivers it at commit, and never for an enqueue that rolled back.
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, self._namespace)
        job.fair_rank = rank
        return job

    async def get_job(self, job_id: str) -> Job | None:
        row = await self._first("SELECT * FROM jobs WHERE id = $1", job_id)
        return job_from_row(row) if row else None

    async def claim_job(
        self, worker_id: str, *, now: float, lease_seconds: float, limits: ClaimLimits, holding: Sequence[str] = ()
    ) -> Job | None:
        until = now + lease_seconds
        async with self._tx() as conn:
            provider_filter, params = _provider_filter("provider", limits.providers)
            held_filter = ""
            if holding:
                params = (*params, list(holding))
                held_filter = f"AND NOT (id = ANY(${3 + len(params)}::text[]))"
            row = await conn.fetchrow(
                _TAKEOVER_SQL.format(provider_filter=provider_filter, held_filter=held_filter),
                now, worker_id, until, *params,
            )  # fmt: skip
            if row is not None:
                state, previous = JobState(row["state"]), row["previous_owner"]
                detail = f"taken over by {worker_id} from {previous}"
                await _event(conn, row["id"], now, state, state, detail)
                log.warning("job %s: lease of %s ran out, %s", row["id"], previous, detail)
                return job_from_row(row)

            # Serialize fair picks (see the module docstring). The counts are read after the lock, so they
            # include every claim committed before this one.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _lock_key(self._namespace, "claim"))
            rows = await conn.fetch(f"SELECT provider, COUNT(*) AS n FROM jobs WHERE state IN {_ACTIVE} GROUP BY 1")
            running: dict[str, int] = {r["provider"]: int(r["n"]) for r in rows}
            if limits.global_limit is not None and sum(running.values()) >= limits.global_limit:
                return None
            saturated = frozenset(p for p, n in running.items() if n >= limits.provider_limits.get(p, n + 1))
            if limits.providers is not None:
                if not (allowed := limits.providers - saturated):
                    return None
                provider_filter, params = _provider_filter("j.provider", allowed)
            elif saturated:
                provider_filter, params = "AND NOT (j.provider = ANY($4::text[]))", (sorted(saturated),)
            else:
                provider_filter, params = "", ()
            claimed = await conn.fetchrow(
                _PICK_SQL.format(provider_filter=provider_filter), now, worker_id, until, *params
            )
            if claimed is None:
                return None
            await conn.execute(_ADVANCE_VIRTUAL_TIME_SQL, _VIRTUAL_TIME, str(claimed["fair_rank"]))
            await _event(conn, claimed["id"], now, JobState.QUEUED, JobState.SUBMITTING, f"worker {worker_id}")
            return job_from_row(claimed)

    # --- the worker registry --------------------------------------------------------------------------
    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._fetch(
            "INSERT INTO workers (id, host, pid, pid_started, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
            worker.id, worker.host, worker.pid, worker.pid_started, worker.started_at, worker.heartbeat_at,
        )  # fmt: skip

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], *, now: float, until: float) -> set[str]:
        async with self._tx() as conn:
            await conn.execute("UPDATE workers SET heartbeat_at = $1 WHERE id = $2", float(now), worker_id)
            rows = await conn.fetch(
                "UPDATE jobs SET lease_expires_at = $1 WHERE lease_owner = $2 AND id = ANY($3::text[])"
                f" AND state IN {_ACTIVE} RETURNING id",
                float(until), worker_id, list(job_ids),
            )  # fmt: skip
        return {str(row["id"]) for row in rows}

    async def workers(self) -> list[WorkerInfo]:
        return [worker_from_row(row) for row in await self._fetch("SELECT * FROM workers ORDER BY started_at")]

    async def reap_workers(self, worker_ids: Sequence[str]) -> list[str]:
        if not worker_ids:
            return []
        async with self._tx() as conn:
            await conn.execute("DELETE FROM workers WHERE id = ANY($1::text[])", list(worker_ids))
            rows = await conn.fetch(
                "UPDATE jobs SET lease_expires_at = 0 WHERE lease_owner = ANY($1::text[])"
                f" AND state IN {_ACTIVE} RETURNING id",
                list(worker_ids),
            )
        return [str(row["id"]) for row in rows]

    async def unregister_worker(self, worker_id: str) -> None:
        await self._fetch("DELETE FROM workers WHERE id = $1", worker_id)

    async def release_lease(self, job_id: str, worker_id: str) -> None:
        sql = "UPDATE jobs SET lease_owner = NULL, lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2"
        await self._fetch(sql, job_id, worker_id)

    async def transition(self, job_id: str, change: Transition, *, now: float) -> Job:
        async with self._tx() as conn:
            return await _transition(conn, job_id, change, now)

    async def set_progress(self, job_id: str, worker_id: str, progress: float, *, now: float) -> None:
        sql = "UPDATE jobs SET progress = $1, updated_at = $2 WHERE id = $3 AND lease_owner = $4"
        await self._fetch(sql, float(progress), float(now), job_id, worker_id)

    async def request_cancel(self, job_id: str, *, now: float) -> Job:
        async with self._tx() as conn:
            row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if row is None:
                raise InvalidTransition(f"job {job_id} does not exist")
            state = JobState(row["state"])
            if state is JobState.QUEUED:
                change = Transition(JobState.CANCELLED, refund=True, detail="cancelled while queued")
                return await _transition(conn, job_id, change, now)
            if state.is_active and not row["cancel_requested"]:
                sql = "UPDATE jobs SET cancel_requested = TRUE, updated_at = $1 WHERE id = $2 RETURNING *"
                row = await conn.fetchrow(sql, float(now), job_id)
                await _event(conn, job_id, now, state, state, "cancel requested")
            return job_from_row(row)

    async def cancel_queued(self, guild_id: int, *, now: float) -> list[Job]:
        change = Transition(JobState.CANCELLED, refund=True, detail="queue cleared by an admin")
        async with self._tx() as conn:
            # Locked in seq order, so two clears cannot deadlock; claimers skip these rows meanwhile.
            sql = "SELECT id FROM jobs WHERE guild_id = $1 AND state = 'queued' ORDER BY seq FOR UPDATE"
            return [await _transition(conn, row["id"], change, now) for row in await conn.fetch(sql, guild_id)]

    async def set_status_message(self, job_id: str, message_id: int) -> None:
        await self._fetch(
            "UPDATE jobs SET status_message_id = $1, status_state = COALESCE(status_state, 'queued') WHERE id = $2",
            message_id, job_id,
        )  # fmt: skip

    async def mark_status_shown(self, job_id: str, state: JobState) -> None:
        await self._fetch("UPDATE jobs SET status_state = $1 WHERE id = $2", state.value, job_id)

    async def jobs_with_stale_status(self, since: float) -> list[Job]:
        sql = "SELECT * FROM jobs WHERE updated_at >= $1 AND status_state IS DISTINCT FROM state ORDER BY seq"
        return [job_from_row(row) for row in await self._fetch(sql, float(since))]

    async def job_events(self, job_id: str) -> list[JobEvent]:
        rows = await self._fetch("SELECT * FROM job_events WHERE job_id = $1 ORDER BY at, id", job_id)
        return [event_from_row(row) for row in rows]

    async def member_jobs(self, guild_id: int, user_id: int, *, include_finished: bool = False) -> list[Job]:
        where = "" if include_finished else f"AND state NOT IN {_TERMINAL}"
        sql = f"SELECT * FROM jobs WHERE guild_id = $1 AND user_id = $2 {where} ORDER BY seq"
        return [job_from_row(row) for row in await self._fetch(sql, guild_id, user_id)]

    async def queue_positions(self, job_ids: Sequence[str]) -> dict[str, int]:
        rows = await self._fetch(_POSITIONS_SQL, list(job_ids)) if job_ids else []
        return {str(row["id"]): int(row["position"]) for row in rows}

    async def queue_depth(self, guild_id: int | None = None) -> int:
        if guild_id is None:
            return await self._count("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
        return await self._count("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND guild_id = $1", guild_id)

    async def running_count(self, provider: str | None = None) -> int:
        sql = f"SELECT COUNT(*) FROM jobs WHERE state IN {_ACTIVE}"
        return await (self._count(sql) if provider is None else self._count(sql + " AND provider = $1", provider))

    async def recent_durations(self, model: str, limit: int = 20) -> list[float]:
        sql = (
            "SELECT finished_at - started_at AS seconds FROM jobs WHERE model = $1 AND state = 'delivered'"
            " AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT $2"
        )
        return [float(row["seconds"]) for row in await self._fetch(sql, model, limit)]

    async def unfinished_jobs(self) -> list[Job]:
        rows = await self._fetch(f"SELECT * FROM jobs WHERE state NOT IN {_TERMINAL} ORDER BY seq")
        return [job_from_row(row) for row in rows]

    # --- quotas ---------------------------------------------------------------------------------------
    async def policy_layers(self, guild_id: int, user_id: int, role_ids: Sequence[int]) -> PolicyLayers:
        sql = (
            "SELECT * FROM quota_policies WHERE guild_id = $1 AND (scope = 'default'"
            " OR (scope = 'role' AND target_id = ANY($2::bigint[])) OR (scope = 'user' AND target_id = $3))"
        )
        rows = await self._fetch(sql, guild_id, list(role_ids), user_id)
        return layers_from_rows(rows)

    async def admission(self, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission:
        async with self._tx() as conn:
            return await _admission(conn, guild_id, user_id, window)

    async def update_policy(
        self, guild_id: int, scope: str, target_id: int, limits: QuotaLimits | None
    ) -> QuotaLimits | None:
        key = (guild_id, scope, target_id)
        if limits is None:
            await self._fetch(f"DELETE FROM quota_policies WHERE {_POLICY_KEY}", *key)
            return None
        async with self._tx() as conn:
            # An empty row first, so there is a row to lock: two concurrent merges then apply one after the other.
            sql = "INSERT INTO quota_policies (guild_id, scope, target_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            await conn.execute(sql, *key)
            row = await conn.fetchrow(f"SELECT * FROM quota_policies WHERE {_POLICY_KEY} FOR UPDATE", *key)
            merged = limits_from_row(row).overlaid(limits)
            sql = (
                "UPDATE quota_policies SET credits = $4, unlimited = $5, period = $6, max_queued = $7,"
                f" max_running = $8 WHERE {_POLICY_KEY}"
            )
            m = merged
            await conn.execute(sql, *key, m.credits, m.unlimited, m.period, m.max_queued, m.max_running)
        return merged

    async def add_ledger(self, guild_id: int, user_id: int, kind: str, credits: int, *, at: float) -> None:
        await self._fetch(_LEDGER_SQL, guild_id, user_id, None, kind, credits, float(at))

    async def set_blocked(self, guild_id: int, user_id: int, blocked: bool, *, now: float) -> None:
        if blocked:
            sql = "INSERT INTO quota_blocks (guild_id, user_id, blocked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            await self._fetch(sql, guild_id, user_id, float(now))
        else:
            await self._fetch("DELETE FROM quota_blocks WHERE guild_id = $1 AND user_id = $2", guild_id, user_id)

    async def is_blocked(self, guild_id: int, user_id: int) -> bool:
        sql = "SELECT COUNT(*) FROM quota_blocks WHERE guild_id = $1 AND user_id = $2"
        return bool(await self._count(sql, guild_id, user_id))

    # --- settings -------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int) -> GuildSettings:
        row = await self._first("SELECT * FROM guild_settings WHERE guild_id = $1", guild_id)
        return settings_from_row(guild_id, row)

    async def save_guild_settings(self, s: GuildSettings) -> None:
        disabled = json.dumps(sorted(s.disabled_models))  # JSON text, as SQLite stores it
        await self._fetch(_SAVE_SETTINGS_SQL, s.guild_id, s.paused, s.default_model, disabled, s.admin_role_id)

    async def update_guild_settings(
        self, guild_id: int, change: Callable[[GuildSettings], GuildSettings]
    ) -> GuildSettings:
        async with self._tx() as conn:
            # A row first, so there is one to lock: concurrent changes then apply one after the other, each
            # reading what the previous one committed (READ COMMITTED re-reads the row once the lock is free).
            await conn.execute("INSERT INTO guild_settings (guild_id) VALUES ($1) ON CONFLICT DO NOTHING", guild_id)
            row = await conn.fetchrow("SELECT * FROM guild_settings WHERE guild_id = $1 FOR UPDATE", guild_id)
            changed = change(settings_from_row(guild_id, row))
            if changed.guild_id != guild_id:
                raise ValueError(f"a settings change moved guild {guild_id} to {changed.guild_id}")
            disabled = json.dumps(sorted(changed.disabled_models))
            await conn.execute(
                _SAVE_SETTINGS_SQL, guild_id, changed.paused, changed.default_model, disabled, changed.admin_role_id
            )
        return changed

    async def get_meta(self, key: str) -> str | None:
        row = await self._first("SELECT value FROM meta WHERE key = $1", key)
        return None if row is None else str(row["value"])

    async def set_meta(self, key: str, value: str) -> None:
        await self._fetch(_SET_META_SQL, key, value)

    async def _count(self, sql: str, *args: Any) -> int:
        row = await self._first(sql, *args)
        return 0 if row is None or row[0] is None else int(row[0])


# --- statements shared by several transactions ------------------------------------------------------------
async def _admission(conn: Any, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission:
    row = await conn.fetchrow(_ADMISSION_SQL, guild_id, user_id, float(window[0]), float(window[1]))
    return Admission(
        paused=bool(row["paused"]),
        blocked=bool(row["blocked"]),
        charged=int(row["charged"]),
        reserved=int(row["reserved"]),
        granted=int(row["granted"]),
        queued=int(row["queued"]),
        running=int(row["running"]),
    )


async def _transition(conn: Any, job_id: str, change: Transition, now: float) -> Job:
    # FOR UPDATE: the checks must still hold at the update (a takeover or a cancel may be racing this).
    row = await conn.fetchrow(
        "SELECT state, lease_owner, guild_id, user_id, credits, created_at FROM jobs WHERE id = $1 FOR UPDATE", job_id
    )
    if row is None:
        raise InvalidTransition(f"job {job_id} does not exist")
    state = JobState(row["state"])
    if change.worker_id is not None and row["lease_owner"] != change.worker_id:
        raise LeaseLost(f"job {job_id} is held by {row['lease_owner']}, not {change.worker_id}")
    if state.is_terminal or (change.from_states is not None and state not in change.from_states):
        raise InvalidTransition(f"job {job_id} is {state}, cannot move to {change.to_state}")
    values: list[Any] = [change.to_state.value, float(now)]
    sets = ["state = $1", "updated_at = $2"]
    for column in ("remote_id", "error", "result_path", "delivered_message_id", "post_attempted_at"):
        if (value := getattr(change, column)) is not None:
            values.append(value)
            sets.append(f"{column} = ${len(values)}")
    if change.to_state.is_terminal:
        sets += ["lease_owner = NULL", "lease_expires_at = NULL", "finished_at = $2"]
        if change.to_state is JobState.DELIVERED:
            sets.append("progress = 1")
    values.append(job_id)
    updated = await conn.fetchrow(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ${len(values)} RETURNING *", *values)
    if change.refund:  # dated at the reservation: it lands in the window that paid
        await conn.execute(
            _LEDGER_SQL, row["guild_id"], row["user_id"], job_id, "refund", -row["credits"], row["created_at"]
        )
    await _event(conn, job_id, now, state, change.to_state, change.detail or change.error or "")
    return job_from_row(updated)


async def _event(conn: Any, job_id: str, at: float, old: JobState | None, new: JobState, detail: str) -> None:
    await conn.execute(_EVENT_SQL, job_id, float(at), old.value if old else None, new.value, detail)


def _provider_filter(column: str, providers: frozenset[str] | None) -> tuple[str, tuple[Any, ...]]:
    """`AND <column> IN <providers>` as the 4th parameter of the claim statements."""
    if providers is None:
        return "", ()
    return f"AND {column} = ANY($4::text[])", (sorted(providers),)


def _lock_key(*parts: object) -> int:
    """A stable signed 64-bit advisory lock key (Python's `hash()` of a string changes between processes)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def postgres_dsn(url: str) -> str:
    """asyncpg takes `postgres://` and `postgresql://`; SQLAlchemy's `postgresql+asyncpg://` is accepted too."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgres", "postgresql"):
        raise StoreError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")  # never echo a password
    return f"postgresql://{rest}"

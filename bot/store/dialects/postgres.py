"""PostgreSQL through asyncpg: the scale-out dialect, shared by any number of gateway and worker processes.

SQLite gets atomicity from its single write lock; here every body is one READ COMMITTED transaction (or one
statement, which is its own), and the decisions that read and then write take explicit locks, written in
`queries/postgres.sql` (empty queries in SQLite's file):

- enqueue takes a transaction-level advisory lock per member (`lock_member`), so the admission snapshot and
  the insert it guards cannot interleave with another enqueue of the same member;
- a claim takes no lock that every claimer shares. It picks the first claimable job of each provider from the
  partial queue index (`claim_next`, skipping locked rows), then re-counts what runs (`claim_check`) under
  locks taken in one order: the global limit's (only when one is set), the provider's, the member's. A provider
  with room for many more jobs is claimed under its shared lock and one of eight lane try-locks, and the
  re-count leaves room for the seven claims it cannot see, so such claims run side by side; a provider near its
  limit is claimed under its exclusive lock, one at a time. A claim that lost the race rolls back and tries
  again (`bot.store.sql_jobs`);
- the hot transactions (claims and enqueues) run on connections that price sequential scans and sorts out
  (`INDEX_PLANS`), so a fresh database with no planner statistics still walks the indexes
  (checked with EXPLAIN in tests/test_claim_scale.py), and JIT is off on every connection (it costs 100 ms and
  more per statement once those prices make every estimate look huge, on statements that take well under a
  millisecond);
- a state change is one statement (`transition_checked`: the checks, the change, its history
  row and any refund), so it costs one round trip instead of five.

Advisory locks are released after the commit is visible, so the next holder reads what the last one wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg

from bot.errors import StoreError
from bot.store import migrations
from bot.store.dialect import Body, Row, Stop
from bot.store.queries import QuerySet, queries

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL = "videobot_jobs"
"""NOTIFY channel for "a job was queued" (`notify_job_queued`); the payload is the schema, so deployments
sharing a database (or tests, each in its own schema) do not wake each other."""

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)

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


INDEX_PLANS = {"enable_seqscan": "off", "enable_bitmapscan": "off", "enable_sort": "off"}
"""The hot transactions' connections (claims, enqueues) plan on the indexes whatever the planner's statistics
say. On a fresh database (or with autovacuum off) the planner knows nothing of the queue's size and would scan and
sort every queued row to find the first, which the queue indexes hold in order. A plan that needs a scan or a sort
still gets one: these settings only price them out where an index serves."""


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection handed back without asyncpg's reset statement (`pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`): one more round trip on every release, a dozen per job, for state this store never
    leaves behind. Its locks are all transaction-scoped (`pg_advisory_xact_lock`), its settings are fixed at
    connect (`INDEX_PLANS` on the hot pool), it opens no cursors, and it LISTENs on a connection of its own.
    asyncpg still ends any open transaction on release."""

    def get_reset_query(self) -> str:
        return ""


class PostgresConnection:
    """The `Connection` of a body: one pooled asyncpg connection."""

    __slots__ = ("_queries", "_raw")

    def __init__(self, raw: Any, queries: QuerySet) -> None:
        self._raw = raw
        self._queries = queries

    async def fetch(self, query: str, /, **params: Any) -> list[Row]:
        q = self._queries[query]
        return list(await self._raw.fetch(q.sql, *q.args(params))) if q.sql else []

    async def fetchrow(self, query: str, /, **params: Any) -> Row | None:
        q = self._queries[query]
        row: Row | None = await self._raw.fetchrow(q.sql, *q.args(params)) if q.sql else None
        return row

    async def execute(self, query: str, /, **params: Any) -> None:
        q = self._queries[query]
        if q.sql:
            await self._raw.execute(q.sql, *q.args(params))


class PostgresDialect:
    name = "postgres"

    def __init__(
        self,
        pool: Any,
        dsn: str,
        schema: str | None,
        namespace: str,
        settings: dict[str, str] | None = None,
        max_size: int = 10,
    ) -> None:
        self._pool = pool
        self._indexed_pool: Any = None
        """Opened at the first claim or enqueue: `INDEX_PLANS` on each connection, so neither needs a statement of
        its own to set them. As large as the main pool."""
        self._indexed_pool_opening = asyncio.Lock()
        self._settings = settings or {}
        self._max_size = max_size
        self._dsn = dsn
        self._schema = schema
        self._namespace = namespace
        self._queries = queries(self.name)
        self._listeners: set[Stop] = set()

    @property
    def namespace(self) -> str:
        """The schema this store works in."""
        return self._namespace

    @classmethod
    async def open(
        cls, url: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10
    ) -> PostgresDialect:
        """Connect, create `schema` if given (every pooled connection then works inside it), and migrate."""
        dsn = postgres_dsn(url)
        # JIT compiles a plan once its estimated cost passes jit_above_cost: 100-200 ms per statement here, for
        # statements that run in well under a millisecond (and the claim's pricing-out makes every estimate huge).
        settings = {"jit": "off"}
        if schema:
            settings["search_path"] = _quote_ident(schema)
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, server_settings=settings, connection_class=_PooledConnection
            )
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
            dialect = cls(pool, dsn, schema, namespace, settings, max_size)
            await dialect.migrate()
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, _DRIVER_ERRORS):
                raise StoreError(f"cannot prepare the PostgreSQL schema: {exc}") from exc
            raise
        return dialect

    async def close(self) -> None:
        for stop in list(self._listeners):
            await stop()
        if self._indexed_pool is not None:
            await self._indexed_pool.close()
        await self._pool.close()

    async def drop_schema(self) -> None:
        """Remove the store's schema and everything in it (each test gets a schema of its own)."""
        if self._schema is None:
            raise StoreError("drop_schema() needs a store opened with a schema")
        try:
            await self._pool.execute(f"DROP SCHEMA IF EXISTS {_quote_ident(self._schema)} CASCADE")
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc

    # --- running bodies -------------------------------------------------------------------------------
    async def read(self, body: Body[T]) -> T:
        try:
            async with self._pool.acquire() as raw:
                return await body(PostgresConnection(raw, self._queries))
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def write(self, body: Body[T], *, on_indexes: bool = False) -> T:
        try:
            pool = await self._on_indexes() if on_indexes else self._pool
            async with pool.acquire() as raw, raw.transaction():
                return await body(PostgresConnection(raw, self._queries))
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def _on_indexes(self) -> Any:
        if self._indexed_pool is not None:
            return self._indexed_pool
        async with self._indexed_pool_opening:
            if self._indexed_pool is None:
                self._indexed_pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=self._max_size, server_settings=self._settings | INDEX_PLANS,
                    connection_class=_PooledConnection,
                )  # fmt: skip
        return self._indexed_pool

    def runs(self, query: str) -> bool:
        return bool(self._queries[query].sql)

    async def write_one(self, query: str, /, **params: Any) -> list[Row]:
        return await self.read(lambda conn: conn.fetch(query, **params))  # one statement is its own transaction

    # --- maintenance ----------------------------------------------------------------------------------
    async def migrate(self) -> None:
        """Apply pending migrations, each in its own transaction under an advisory lock, so processes starting
        together apply each one exactly once (a waiter re-reads `schema_migrations` once it has the lock)."""
        key = _lock_key(self._namespace, "migrate")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
                )
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc
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
        """Indexes that back a primary key or unique constraint belong to their table's entry, as in SQLite's
        listing."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                columns = await conn.fetch(_SCHEMA_COLUMNS_SQL)
                constraints = await conn.fetch(_SCHEMA_CONSTRAINTS_SQL)
                indexes = await conn.fetch(_SCHEMA_INDEXES_SQL)
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"database error: {exc}") from exc
        tables: dict[str, list[str]] = {}
        for col in columns:
            text = f"{col['attname']} {col['type']}" + (" NOT NULL" if col["attnotnull"] else "")
            tables.setdefault(col["relname"], []).append(text + (f" DEFAULT {col['dflt']}" if col["dflt"] else ""))
        for con in constraints:
            if con["relname"] in tables:
                tables[con["relname"]].append(con["def"])
        found = [(name, f"CREATE TABLE {name} ({', '.join(body)})") for name, body in tables.items()]
        return sorted(found + [(str(row["relname"]), str(row["def"])) for row in indexes])

    async def listen(self, callback: Callable[[], None]) -> Stop:
        """Holds a dedicated connection (a pooled one would be kept from the claimers)."""
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

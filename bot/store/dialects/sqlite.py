"""SQLite through aiosqlite, in WAL mode: the embedded dialect.

Every write runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's single write lock up front, so a
quota check and the insert it guards (or the fair pick and the claim) cannot interleave with another writer,
in this process or another one sharing the file. The locks PostgreSQL needs are empty queries here.

Transactions run whole on aiosqlite's connection thread, with group commit: writes that arrive while a batch
is in flight run together in the next one, each in its own savepoint (one that raises rolls back only
itself), and each caller resumes after the COMMIT that made its change durable. Bodies are the store's
`async` logic, driven to completion synchronously there (see `bot.store.dialect`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.errors import StoreError
from bot.store import migrations
from bot.store.dialect import Body, Row, Stop
from bot.store.queries import QuerySet, queries

log = logging.getLogger(__name__)
T = TypeVar("T")

_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "temp_store=MEMORY")


def sqlite_path(url: str) -> str:
    """`sqlite:///data/x.db` is relative to the working directory, `sqlite:////srv/x.db` absolute."""
    if url == "sqlite://:memory:" or url == "sqlite:///:memory:":
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    return url.removeprefix("sqlite:///")


def run_to_completion(body: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (it awaits only a `SqliteConnection`), run right here."""
    try:
        body.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    body.close()
    raise RuntimeError("a SQLite transaction body suspended: it may await only its connection")


class SqliteConnection:
    """The `Connection` of a body running on the connection thread: plain sqlite3 calls, never suspending."""

    __slots__ = ("_queries", "_raw")

    def __init__(self, raw: sqlite3.Connection, queries: QuerySet) -> None:
        self._raw = raw
        self._queries = queries.by_name

    async def fetch(self, query: str, /, **params: Any) -> list[Row]:
        cursor = self._run(query, params)
        return cursor.fetchall() if cursor else []

    async def fetchrow(self, query: str, /, **params: Any) -> Row | None:
        cursor = self._run(query, params)
        row: Row | None = cursor.fetchone() if cursor else None
        return row

    async def execute(self, query: str, /, **params: Any) -> None:
        self._run(query, params)

    def _run(self, name: str, params: dict[str, Any]) -> sqlite3.Cursor | None:
        # Every statement of every transaction passes here, on the thread that also holds the write lock: lean.
        query = self._queries[name]
        if not query.sql:
            return None
        if query.lists:  # read with json_each()
            for key in query.lists:
                if params[key] is not None:
                    params[key] = json.dumps(params[key]) if params[key] else "[]"
        return self._raw.execute(query.sql, query.args(params))


class SqliteDialect:
    name = "sqlite"

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._queries = queries(self.name)
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url_or_path: str) -> SqliteDialect:
        """Open (creating the folder and the file if need be) and migrate."""
        path = sqlite_path(url_or_path) if url_or_path.startswith("sqlite:") else url_or_path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        for pragma in _PRAGMAS:
            await db.execute(f"PRAGMA {pragma}")
        dialect = cls(db)
        await dialect.migrate()
        return dialect

    async def close(self) -> None:
        await self._db.close()

    # --- running bodies -------------------------------------------------------------------------------
    async def read(self, body: Body[T]) -> T:
        return await self._on_thread(partial(_run_body, body, self._queries))

    async def write(self, body: Body[T], *, on_indexes: bool = False) -> T:
        # on_indexes: SQLite's planner reads no statistics the queue's partial indexes would lose to.
        return await self.unit(partial(_run_body, body, self._queries))

    def runs(self, query: str) -> bool:
        return bool(self._queries[query].sql)

    async def write_one(self, query: str, /, **params: Any) -> list[Row]:
        return await self.unit(partial(_run_body, lambda conn: conn.fetch(query, **params), self._queries))

    async def unit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` as its own atomic unit of the next group-commit batch, on the connection's thread; the future
        resolves after the COMMIT that made it durable."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

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

    async def _on_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result: T = await self._db._execute(fn, self._db._conn)  # type: ignore[no-untyped-call]
        except sqlite3.OperationalError as exc:
            raise _translated(exc) from exc
        return result

    # --- maintenance ----------------------------------------------------------------------------------
    async def migrate(self) -> None:
        await self._on_thread(_migrate)

    async def schema(self) -> list[tuple[str, str]]:
        def read(raw: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = raw.execute(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'schema_migrations'"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            return [(row[0], row[1]) for row in rows]

        return await self._on_thread(read)

    async def listen(self, callback: Callable[[], None]) -> Stop:
        """Nothing to listen to: one process owns the file's queue, and `JobService` wakes its worker itself."""

        async def stop() -> None:
            return None

        return stop

    async def drop_schema(self) -> None:
        """Nothing to drop: a test's database is a file in its own temporary folder."""


def _run_body(body: Body[T], queries: QuerySet, raw: sqlite3.Connection) -> T:
    return run_to_completion(body(SqliteConnection(raw, queries)))


def _translated(exc: BaseException) -> BaseException:
    """The database failing (locked past the busy timeout, disk full, I/O) is a `StoreError`, as on PostgreSQL:
    callers treat it as "try again later", not as a bug in the job."""
    if isinstance(exc, sqlite3.OperationalError):
        error = StoreError(f"database error: {exc}")
        error.__cause__ = exc
        return error
    return exc


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

"""The two sides of a copy (`bot.store.copy`): SQLite through sqlite3, PostgreSQL through asyncpg, each read
from its own catalogue (tables, columns and their kinds, primary and foreign keys, sequences) and driven with a
few generic statements. Raw drivers rather than the store's dialects: the copy runs statements no named query
holds (any table, any column), in two long transactions.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.errors import StoreError

T = TypeVar("T")
BATCH_ROWS = 1000
BLOB_BATCH_ROWS = 4
"""Rows of a table with a BLOB/bytea column read at a time (an input image can weigh 10 MB): memory stays bounded."""


class CopyRefused(StoreError):
    """The copy did not start, and the target holds no row of it (its schema may have been migrated)."""


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: dict[str, str]
    """Column name → kind: int, float, float4 (PostgreSQL REAL), bool, text, bytes or other; in table order."""
    key: tuple[str, ...]
    """The primary key's columns, in key order (empty: none declared)."""
    rowid: bool = False
    """A SQLite table whose implicit rowid no column names: it is paired with the other side's integer key."""
    sequences: dict[str, str] = field(default_factory=dict)
    """PostgreSQL: column → the sequence that feeds it."""
    parents: frozenset[str] = frozenset()
    """Tables its foreign keys point at: copied before it."""


class Endpoint(Protocol):
    """One database, through its raw driver, as the copier needs it."""

    dialect: str

    async def versions(self) -> set[int] | None:
        """The applied migrations (None: no `schema_migrations` table, not a database of this bot)."""
        ...

    async def tables(self) -> dict[str, Table]: ...

    async def begin(self, *, write: bool) -> None: ...

    async def end(self, *, commit: bool) -> None: ...

    async def count(self, table: str) -> int: ...

    def batches(
        self, table: str, exprs: Sequence[str], order: Sequence[tuple[str, str]], size: int
    ) -> AsyncIterator[list[Any]]:
        """Rows (as tuples) in `order` (expression, kind), `size` at a time."""
        ...

    async def insert(self, table: str, exprs: Sequence[str], rows: list[tuple[Any, ...]]) -> None: ...

    async def reset_sequences(self, tables: Sequence[Table]) -> None:
        """Move every sequence past its column's largest value, so new rows do not collide with copied ones."""
        ...

    async def close(self) -> None: ...


def driver_errors() -> tuple[type[BaseException], ...]:
    """The failures of either driver, which the copy reports as `StoreError` (asyncpg only if it is installed)."""
    try:
        import asyncpg
    except ImportError:
        return (sqlite3.Error, OSError)
    return (sqlite3.Error, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def connect(url: str, *, create: bool) -> Endpoint:
    if url.startswith("sqlite:"):
        from bot.store.dialects.sqlite import sqlite_path

        try:
            path = sqlite_path(url)
        except ValueError as exc:
            raise CopyRefused(str(exc)) from None
        if path == ":memory:":
            raise CopyRefused("an in-memory SQLite database cannot be copied to or from")
        if not create and not Path(path).is_file():
            raise CopyRefused(f"there is no SQLite database at {path}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return await SqliteEndpoint.open(path)
    if url.startswith(("postgres://", "postgresql://", "postgresql+asyncpg://")):
        return await PostgresEndpoint.open(url)
    raise CopyRefused("a database URL starts with sqlite:/// or postgresql://")


_SQLITE_KINDS = (
    ("BOOL", "bool"), ("INT", "int"), ("CHAR", "text"), ("CLOB", "text"), ("TEXT", "text"), ("BLOB", "bytes")
)  # fmt: skip
_SQLITE_FLOATS = ("REAL", "FLOA", "DOUB")


def sqlite_kind(declared: str) -> str:
    """SQLite's type affinity rules, with BOOLEAN told apart (it is NUMERIC to SQLite)."""
    upper = declared.upper()
    for marker, kind in _SQLITE_KINDS:
        if marker in upper:
            return kind
    return "float" if any(marker in upper for marker in _SQLITE_FLOATS) else "other"


class SqliteEndpoint:
    """sqlite3 on a thread of its own, as aiosqlite does; transactions begun explicitly. Every call and every
    cursor's end happen on that thread: a cursor released on another one resets its cached statement, which the
    next call may be running."""

    dialect = "sqlite"

    def __init__(self, raw: sqlite3.Connection, thread: ThreadPoolExecutor) -> None:
        self._raw = raw
        self._thread = thread

    @classmethod
    async def open(cls, path: str) -> SqliteEndpoint:
        def connect() -> sqlite3.Connection:
            raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            raw.execute("PRAGMA busy_timeout=10000")
            return raw

        thread = ThreadPoolExecutor(1, thread_name_prefix="copy-sqlite")
        return cls(await asyncio.get_running_loop().run_in_executor(thread, connect), thread)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def _run(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        def run() -> list[Any]:
            cursor = self._raw.execute(sql, params)
            try:
                return cursor.fetchall()
            finally:
                cursor.close()

        return await self._call(run)

    async def versions(self) -> set[int] | None:
        if not await self._run("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"):
            return None
        return {int(row[0]) for row in await self._run("SELECT version FROM schema_migrations")}

    async def tables(self) -> dict[str, Table]:
        names = await self._run(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name != 'schema_migrations' ORDER BY name"
        )
        found = {}
        for name, sql in names:
            info = await self._run(f"PRAGMA table_info({quote(name)})")
            columns = {str(c[1]): sqlite_kind(str(c[2])) for c in info}
            key = tuple(str(c[1]) for c in sorted((c for c in info if c[5]), key=lambda c: int(c[5])))
            aliased = len(key) == 1 and next(str(c[2]) for c in info if c[1] == key[0]).upper() == "INTEGER"
            without_rowid = re.search(r"\bWITHOUT\s+ROWID\b", sql or "", re.IGNORECASE) is not None
            parents = {str(fk[2]) for fk in await self._run(f"PRAGMA foreign_key_list({quote(name)})")}
            found[name] = Table(name, columns, key, not aliased and not without_rowid, {}, frozenset(parents))
        return found

    async def begin(self, *, write: bool) -> None:
        await self._run("BEGIN IMMEDIATE" if write else "BEGIN")

    async def end(self, *, commit: bool) -> None:
        if self._raw.in_transaction:
            await self._run("COMMIT" if commit else "ROLLBACK")

    async def count(self, table: str) -> int:
        return int((await self._run(f"SELECT count(*) FROM {quote(table)}"))[0][0])

    async def batches(
        self, table: str, exprs: Sequence[str], order: Sequence[tuple[str, str]], size: int
    ) -> AsyncIterator[list[Any]]:
        sql = f"SELECT {', '.join(exprs)} FROM {quote(table)} ORDER BY {', '.join(e for e, _ in order)}"
        cursor = await self._call(lambda: self._raw.execute(sql))
        try:
            while batch := await self._call(lambda: cursor.fetchmany(size)):
                yield batch
        finally:
            await self._call(cursor.close)

    async def insert(self, table: str, exprs: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        sql = f"INSERT INTO {quote(table)} ({', '.join(exprs)}) VALUES ({', '.join('?' * len(exprs))})"
        await self._call(lambda: self._raw.executemany(sql, rows).close())

    async def reset_sequences(self, tables: Sequence[Table]) -> None:
        """Nothing to do: an explicit id raises AUTOINCREMENT's counter (sqlite_sequence) and the next rowid."""

    async def close(self) -> None:
        await self._call(self._raw.close)
        self._thread.shutdown(wait=False)


_PG_KINDS = {"boolean": "bool", "smallint": "int", "integer": "int", "bigint": "int", "double precision": "float",
             "real": "float4", "text": "text", "bytea": "bytes"}  # fmt: skip


def pg_kind(declared: str) -> str:
    return _PG_KINDS.get(declared, "text" if declared.startswith(("character", "varchar")) else "other")


_PG_COLUMNS = """
SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type,
       pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) AS sequence,
       (SELECT k.ord FROM pg_index x, unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
        WHERE x.indrelid = c.oid AND x.indisprimary AND k.attnum = a.attnum) AS key_position
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND c.relname <> 'schema_migrations'
ORDER BY c.relname, a.attnum
"""
_PG_PARENTS = """
SELECT c.relname AS table, p.relname AS parent FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid
WHERE k.contype = 'f' AND k.connamespace = current_schema()::regnamespace
"""


class PostgresEndpoint:
    """One asyncpg connection in the schema the URL's search_path names (`public` by default)."""

    dialect = "postgres"

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._transaction: Any = None

    @classmethod
    async def open(cls, url: str) -> PostgresEndpoint:
        import asyncpg  # an optional extra

        from bot.store.dialects.postgres import postgres_dsn

        try:
            return cls(await asyncpg.connect(postgres_dsn(url)))
        except (asyncpg.PostgresError, OSError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc

    async def versions(self) -> set[int] | None:
        if await self._raw.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return None
        return {int(row[0]) for row in await self._raw.fetch("SELECT version FROM schema_migrations")}

    async def tables(self) -> dict[str, Table]:
        columns = await self._raw.fetch(_PG_COLUMNS)
        parents: dict[str, set[str]] = {}
        for row in await self._raw.fetch(_PG_PARENTS):
            parents.setdefault(row["table"], set()).add(row["parent"])
        found: dict[str, Table] = {}
        for name in dict.fromkeys(row["table"] for row in columns):
            rows = [row for row in columns if row["table"] == name]
            keyed = sorted((row["key_position"], row["column"]) for row in rows if row["key_position"])
            found[name] = Table(
                name,
                {row["column"]: pg_kind(row["type"]) for row in rows},
                tuple(column for _, column in keyed),
                sequences={row["column"]: row["sequence"] for row in rows if row["sequence"]},
                parents=frozenset(parents.get(name, ())),
            )
        return found

    async def begin(self, *, write: bool) -> None:
        self._transaction = self._raw.transaction(
            isolation="read_committed" if write else "repeatable_read", readonly=not write
        )
        await self._transaction.start()

    async def end(self, *, commit: bool) -> None:
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            await (transaction.commit() if commit else transaction.rollback())

    async def count(self, table: str) -> int:
        return int(await self._raw.fetchval(f"SELECT count(*) FROM {quote(table)}"))

    async def batches(
        self, table: str, exprs: Sequence[str], order: Sequence[tuple[str, str]], size: int
    ) -> AsyncIterator[list[Any]]:
        # SQLite's order: text by code point (its UTF-8 bytes), NULL first.
        terms = [(f'{expr} COLLATE "C"' if kind == "text" else expr) + " NULLS FIRST" for expr, kind in order]
        sql = f"SELECT {', '.join(exprs)} FROM {quote(table)} ORDER BY {', '.join(terms)}"
        cursor = await self._raw.cursor(sql)
        while batch := await cursor.fetch(size):
            yield [tuple(row) for row in batch]

    async def insert(self, table: str, exprs: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        columns = [expr.strip('"').replace('""', '"') for expr in exprs]
        await self._raw.copy_records_to_table(table, records=rows, columns=columns)

    async def reset_sequences(self, tables: Sequence[Table]) -> None:
        for table in tables:
            for column, sequence in table.sequences.items():
                top = f"(SELECT max({quote(column)}) FROM {quote(table.name)})"
                await self._raw.execute(f"SELECT setval($1::regclass, COALESCE({top}, 0) + 1, false)", sequence)

    async def close(self) -> None:
        await self._raw.close()

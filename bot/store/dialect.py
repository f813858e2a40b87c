"""The seam between the store's logic and a database driver: what a dialect adapter does, and nothing more.

A dialect runs a transaction body, runs named queries (`bot/store/queries/<dialect>.sql`) with parameters
passed by name, and turns its driver's failures into `StoreError`. Everything else (the claim, the state
machine, quota admission, the worker registry) is written once, in `bot/store/sql_*.py`, as `async` bodies
over the small `Connection` below.

The shape, and why: SQLite must run each transaction whole on aiosqlite's connection thread, grouped with
the others that arrive meanwhile into one `BEGIN IMMEDIATE … COMMIT` (group commit: one hop between the event
loop and the thread per batch, not per statement, which is what makes ~1,000 job lifecycles a second). asyncpg
is asynchronous all the way. So the bodies are coroutines, and:

- PostgreSQL awaits a body on a pooled connection, in a transaction;
- SQLite drives the same body to completion synchronously, on its thread, inside the batch: its
  `Connection` methods are `async def`s that call sqlite3 directly and never suspend, so the body's coroutine
  finishes in a single `send(None)` (`bot.store.dialects.sqlite.run_to_completion`).

The one rule a body keeps: await only its connection (no sleeping, no other I/O, no locks). The SQLite runner
raises at once if a body ever suspends, so a breach fails every SQLite test instead of hanging. Rejected
alternatives: a sync and an async copy of the logic (what this replaces); generator bodies that `yield`
queries (the same effect, but results come back untyped through `send`); aiosqlite's per-statement API (a
thread hop per statement and no group commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeAlias, TypeVar

T = TypeVar("T")


class Row(Protocol):
    """A result row: sqlite3.Row and asyncpg.Record both read by column name (and position)."""

    def __getitem__(self, key: str | int, /) -> Any: ...


class Connection(Protocol):
    """What a transaction body may do: run named queries, parameters by name (see `bot.store.queries`)."""

    async def fetch(self, query: str, /, **params: Any) -> list[Row]: ...

    async def fetchrow(self, query: str, /, **params: Any) -> Row | None: ...

    async def execute(self, query: str, /, **params: Any) -> None: ...


Body: TypeAlias = Callable[[Connection], Coroutine[Any, Any, T]]
Stop: TypeAlias = Callable[[], Awaitable[None]]


class Dialect(Protocol):
    """One database behind the store. Every method turns the driver's failures into `StoreError`."""

    @property
    def name(self) -> str:
        """`sqlite` or `postgres`: which queries file it runs."""
        ...

    async def read(self, body: Body[T]) -> T:
        """Run a body that only reads."""
        ...

    async def write(self, body: Body[T], *, on_indexes: bool = False) -> T:
        """Run a body as one transaction: all of its writes, or none (if it raises, it leaves no trace).
        `on_indexes`: its statements are planned to walk indexes whatever the planner's statistics say (a claim's
        and an enqueue's: PostgreSQL runs them on connections that price sequential scans and sorts out)."""
        ...

    async def write_one(self, query: str, /, **params: Any) -> list[Row]:
        """Run one writing statement, atomic by itself (PostgreSQL spares the BEGIN/COMMIT round trips)."""
        ...

    def runs(self, query: str) -> bool:
        """Whether this dialect has a statement for the named query (an empty one does nothing)."""
        ...

    async def migrate(self) -> None: ...

    async def schema(self) -> list[tuple[str, str]]:
        """Every table and index with its definition, for the migrations test."""
        ...

    async def listen(self, callback: Callable[[], None]) -> Stop:
        """Call `callback` when another process queues a job; returns what stops listening."""
        ...

    async def drop_schema(self) -> None: ...

    async def close(self) -> None: ...


async def fetch(dialect: Dialect, query: str, /, **params: Any) -> list[Row]:
    """One reading statement's rows."""
    return await dialect.read(lambda conn: conn.fetch(query, **params))


async def fetchrow(dialect: Dialect, query: str, /, **params: Any) -> Row | None:
    """One reading statement's first row."""
    return await dialect.read(lambda conn: conn.fetchrow(query, **params))


def one(row: Row | None, what: str) -> Row:
    """A row the statement always returns (an aggregate, an UPDATE … RETURNING of a row known to exist)."""
    if row is None:
        raise AssertionError(f"{what} returned no row")
    return row

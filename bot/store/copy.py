"""Copying a whole database into an empty one, SQLite ⇄ PostgreSQL (`python -m bot migrate`).

Generic over the schema: the tables, columns, keys and foreign keys are read from the migrated target's own
catalogue, so a table a later migration adds is copied without a change here. The source is read in one
snapshot (a read transaction), the target written in one transaction that commits only when every table's
row count and checksum match; a copy that fails or does not match leaves the target without a row.

The checksum is computed in Python over the rows each side returns, normalised per column, so that it is equal
across dialects: sqlite3 returns 0/1 where asyncpg returns booleans, and PostgreSQL's REAL keeps single
precision (its values are compared at that precision; `CopyReport.rounded` counts the ones that lost digits).
Rows are hashed in primary-key order (PostgreSQL sorts text keys with the "C" collation, SQLite's byte order).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import StoreError
from bot.store import migrations
from bot.store.copy_endpoints import (
    BATCH_ROWS,
    BLOB_BATCH_ROWS,
    CopyRefused,
    Endpoint,
    Table,
    connect,
    driver_errors,
    quote,
)

__all__ = ["BATCH_ROWS", "CopyRefused", "CopyReport", "Progress", "TableReport", "copy_database"]

Progress = Callable[[str, str, int, int], None]
"""(phase: "copy" or "verify", table, rows done, rows in the table)."""


@dataclass(frozen=True, slots=True)
class TableReport:
    name: str
    source_rows: int
    target_rows: int
    source_sha256: str
    target_sha256: str

    @property
    def matches(self) -> bool:
        return self.source_rows == self.target_rows and self.source_sha256 == self.target_sha256


@dataclass(frozen=True, slots=True)
class CopyReport:
    tables: list[TableReport]
    rounded: dict[str, int]
    """"table.column" → values rounded to the target's narrower type (PostgreSQL REAL)."""

    @property
    def ok(self) -> bool:
        return all(table.matches for table in self.tables)


@dataclass(frozen=True, slots=True)
class _Plan:
    """One table's copy: the columns both sides share (as each side names them) and the order rows are read in."""

    table: str
    names: list[str]
    kinds: list[str]
    source_exprs: list[str]
    target_exprs: list[str]
    order: list[int]
    """Indexes into `names` of the columns rows are ordered by, on both sides."""
    narrowed: list[int]
    """Columns the target keeps in single precision while the source does not."""


# --- the copy ---------------------------------------------------------------------------------------------
async def copy_database(
    source_url: str, target_url: str, *, progress: Progress | None = None, batch_rows: int = BATCH_ROWS
) -> CopyReport:
    """Migrate both databases to this code's schema, then copy every table of the source into the target, which
    must hold no row. Raises `CopyRefused` before writing anything; returns the per-table verification."""
    if _same_database(source_url, target_url):
        raise CopyRefused("the source and the target are the same database")
    try:
        return await _copy_database(source_url, target_url, progress or (lambda *_: None), batch_rows)
    except driver_errors() as exc:
        raise StoreError(f"database error: {exc}") from exc


async def _copy_database(source_url: str, target_url: str, show: Progress, batch_rows: int) -> CopyReport:
    async with AsyncExitStack() as cleanup:  # run backwards: roll back (unless committed), then close
        source = await connect(source_url, create=False)
        cleanup.push_async_callback(source.close)
        await _check_versions(source, "source", required=True)
        target = await connect(target_url, create=True)
        cleanup.push_async_callback(target.close)
        await _check_versions(target, "target", required=False)
        await _migrate(source_url)
        await _migrate(target_url)
        plans, tables = _plans(await source.tables(), await target.tables())
        await source.begin(write=False)
        cleanup.push_async_callback(source.end, commit=False)
        await target.begin(write=True)
        cleanup.push_async_callback(target.end, commit=False)  # nothing left to roll back once committed
        full = [f"{t} ({n} row{'s' if n > 1 else ''})" for t in plans if (n := await target.count(t))]
        if full:
            raise CopyRefused("the target database is not empty: " + ", ".join(full))
        report = await _copy_all(source, target, plans, tables, show, batch_rows)
        if report.ok:
            await target.end(commit=True)
        return report
    raise AssertionError("unreachable")  # mypy: an exit stack may swallow exceptions


async def _copy_all(
    source: Endpoint,
    target: Endpoint,
    plans: dict[str, _Plan],
    tables: dict[str, Table],
    show: Progress,
    batch_rows: int,
) -> CopyReport:
    digests: dict[str, _Digest] = {}
    rounded: dict[str, int] = {}
    for plan in plans.values():
        total = await source.count(plan.table)
        show("copy", plan.table, 0, total)
        digest = digests[plan.table] = _Digest(plan.names, plan.kinds)
        size = min(batch_rows, BLOB_BATCH_ROWS) if "bytes" in plan.kinds else batch_rows
        async for batch in source.batches(plan.table, plan.source_exprs, _order(plan, plan.source_exprs), size):
            rows = _for_target(batch, plan.kinds)
            digest.add(batch)
            for i in plan.narrowed:
                lost = sum(1 for row in rows if isinstance(row[i], float) and row[i] != _single(row[i]))
                if lost:
                    name = f"{plan.table}.{plan.names[i]}"
                    rounded[name] = rounded.get(name, 0) + lost
            await target.insert(plan.table, plan.target_exprs, rows)
            show("copy", plan.table, digest.rows, total)
    await target.reset_sequences([tables[name] for name in plans])
    reports = []
    for plan in plans.values():
        copied = _Digest(plan.names, plan.kinds)
        show("verify", plan.table, 0, digests[plan.table].rows)
        size = min(batch_rows, BLOB_BATCH_ROWS) if "bytes" in plan.kinds else batch_rows
        async for batch in target.batches(plan.table, plan.target_exprs, _order(plan, plan.target_exprs), size):
            copied.add(batch)
            show("verify", plan.table, copied.rows, digests[plan.table].rows)
        sent = digests[plan.table]
        reports.append(TableReport(plan.table, sent.rows, copied.rows, sent.hexdigest(), copied.hexdigest()))
    return CopyReport(reports, rounded)


def _order(plan: _Plan, exprs: Sequence[str]) -> list[tuple[str, str]]:
    return [(exprs[i], plan.kinds[i]) for i in plan.order]


def _plans(source: dict[str, Table], target: dict[str, Table]) -> tuple[dict[str, _Plan], dict[str, Table]]:
    """What to copy, table by table, parents before children; refuses a source the target cannot hold."""
    if missing := sorted(set(source) - set(target)):
        raise CopyRefused(f"the target has no table {', '.join(missing)} (the source's schema is not this bot's)")
    if missing := sorted(set(target) - set(source)):
        raise CopyRefused(f"the source has no table {', '.join(missing)} (its schema is not this bot's)")
    plans: dict[str, _Plan] = {}
    for name in _parents_first(target):
        plans[name] = _plan(source[name], target[name])
    return plans, target


def _plan(src: Table, dst: Table) -> _Plan:
    names: list[str] = []
    kinds: list[str] = []
    src_exprs: list[str] = []
    dst_exprs: list[str] = []
    narrowed: list[int] = []

    def pair(name: str, src_expr: str, dst_expr: str, kind: str) -> None:
        if kind == "float4" and src.columns.get(name) != "float4":
            narrowed.append(len(names))
        names.append(name)
        kinds.append(kind)
        src_exprs.append(src_expr)
        dst_exprs.append(dst_expr)

    def integer_key(table: Table) -> str | None:
        one = table.key[0] if len(table.key) == 1 else None
        return one if one is not None and table.columns[one] == "int" else None

    for name, kind in src.columns.items():
        if name in dst.columns:
            pair(name, quote(name), quote(name), _combined(kind, dst.columns[name]))
        elif dst.rowid and name == integer_key(src):
            pair(name, quote(name), "rowid", "int")  # PostgreSQL's `id` becomes SQLite's implicit rowid
        else:
            raise CopyRefused(f"the target's table {src.name} has no column {name}: the source would lose it")
    dst_key = integer_key(dst)
    if src.rowid and dst_key is not None and dst_key not in src.columns:
        pair(dst_key, "rowid", quote(dst_key), "int")  # and back: the rowid keeps the rows' order and numbers
    elif src.rowid and dst.rowid:
        pair("rowid", "rowid", "rowid", "int")
    key = next((k for k in (dst.key, src.key) if k and set(k) <= set(names)), None)
    if key is None and "rowid" in dst_exprs:
        key = (names[dst_exprs.index("rowid")],)
    order = [names.index(k) for k in key] if key else list(range(len(names)))
    return _Plan(src.name, names, kinds, src_exprs, dst_exprs, order, narrowed)


def _parents_first(tables: dict[str, Table]) -> list[str]:
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in visiting:
            return  # a cycle is left to the database (SQLite does not enforce keys on this connection)
        visiting.add(name)
        for parent in sorted(tables[name].parents & set(tables)):
            visit(parent)
        done.append(name)

    for name in sorted(tables):
        visit(name)
    return done


# --- normalising values -----------------------------------------------------------------------------------
def _combined(a: str, b: str) -> str:
    """The kind a column is compared as when the two sides declare it differently."""
    pair = {a, b}
    if len(pair) == 1:
        return a
    for kind, fits in (("bool", {"int", "other"}), ("float4", {"float", "int", "other"}), ("float", {"int", "other"})):
        if kind in pair and pair - {kind} <= fits:
            return kind
    return (pair - {"other"}).pop() if "other" in pair else "other"


def _single(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


Convert = Callable[[Any], Any]


def _as_bool(value: Any) -> Any:
    return value if value is None else bool(value)


def _as_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _as_single(value: Any) -> Any:
    value = _as_float(value)
    return _single(value) if isinstance(value, float) else value


_FOR_TARGET: dict[str, Convert] = {"bool": _as_bool, "int": _as_int, "float": _as_float, "float4": _as_float}
"""What the target's driver takes (asyncpg wants a bool for BOOLEAN, an int for BIGINT); other kinds go as read."""
_CANONICAL: dict[str, Convert] = _FOR_TARGET | {"float4": _as_single}


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):  # an image of 10 MB: its digest, not 20 MB of hex
        return {"bytes_sha256": hashlib.sha256(value).hexdigest()}
    return str(value)


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _for_target(batch: list[Any], kinds: Sequence[str]) -> list[tuple[Any, ...]]:
    converts = [(i, _FOR_TARGET[kind]) for i, kind in enumerate(kinds) if kind in _FOR_TARGET]
    rows = []
    for row in batch:
        values = list(row)
        for i, convert in converts:
            values[i] = convert(values[i])
        rows.append(tuple(values))
    return rows


class _Digest:
    """sha256 over one canonical JSON line per row, in the order rows were read; columns by name, so the digest
    does not depend on the order a dialect's table declares them in."""

    def __init__(self, names: Sequence[str], kinds: Sequence[str]) -> None:
        order = sorted(range(len(names)), key=names.__getitem__)
        self._columns = [(i, _CANONICAL.get(kinds[i])) for i in order]
        self._sha = hashlib.sha256()
        self.rows = 0

    def add(self, batch: Sequence[Sequence[Any]]) -> None:
        columns, encode, update = self._columns, _JSON.encode, self._sha.update
        for row in batch:
            update(encode([row[i] if convert is None else convert(row[i]) for i, convert in columns]).encode())
            update(b"\n")
        self.rows += len(batch)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


# --- the two databases ---------------------------------------------------------------------------------
def _same_database(a: str, b: str) -> bool:
    if a.startswith("sqlite:///") and b.startswith("sqlite:///"):
        from bot.store.dialects.sqlite import sqlite_path

        return Path(sqlite_path(a)).resolve() == Path(sqlite_path(b)).resolve()
    return a == b


async def _check_versions(endpoint: Endpoint, side: str, *, required: bool) -> None:
    applied = await endpoint.versions()
    if applied is None:
        if required:
            raise CopyRefused(f"the {side} holds no database of this bot (it has no schema_migrations table)")
        return
    known = {m.version for m in migrations.load(endpoint.dialect)}
    if newer := sorted(applied - known):
        raise CopyRefused(
            f"the {side} database is at schema version {max(applied)}, newer than this bot's {max(known)}"
            f" (migration(s) {', '.join(map(str, newer))} unknown here): run the copy with the newer bot"
        )


async def _migrate(url: str) -> None:
    """Bring a database to this code's schema, as the bot does when it starts."""
    from bot.store import open_store

    store = await open_store(url)
    await store.close()

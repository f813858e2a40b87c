"""The SQL, by name: `-- name: claim_next` blocks, loaded once and checked at start.

- `common.sql` holds the statements both databases run as written; `sqlite.sql` and `postgres.sql` the ones
  where they differ (locks, list parameters, syntax). The two dialect files must define the same names (the
  logic in `bot.store.sql_*` runs a name on either database): a name missing from one of them is an error at
  load, naming it, and so is a name defined both in `common.sql` and in a dialect's file.
- Parameters are written `:name` in every file, so the logic passes them once, by name. They are numbered
  here, once (`?1…?n` for SQLite, `$1…$n` for asyncpg), and bound by position, which both drivers do fastest.
  A list parameter is an array for PostgreSQL (`= ANY(:ids::text[])`) and JSON text for SQLite, which reads it
  with `json_each(:ids)`.
- Lists of states and of the job columns are not written in the files: `{active_states}`, `{terminal_states}`,
  `{job_columns}` and `{job_values}` are filled in from `bot.domain.JobState` and `bot.store.rows`.
- A block with no statement (only comments) does nothing in that dialect: PostgreSQL's advisory locks, which
  SQLite's one write lock makes needless, are such blocks in `sqlite.sql`. Nothing is sent for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bot.domain import ACTIVE_STATES, TERMINAL_STATES, JobState
from bot.errors import StoreError
from bot.store.rows import JOB_INSERT_COLUMNS

DIALECTS = ("sqlite", "postgres")
COMMON = "common"
MARKERS = {"sqlite": "?", "postgres": "$"}
"""How each driver numbers a parameter: `?1` (sqlite3), `$1` (asyncpg)."""

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_QUOTED = re.compile(r"('(?:[^']|'')*')")  # string literals: a colon inside one is no parameter
_JSON_LIST = re.compile(r"json_each\(\s*:([A-Za-z_]\w*)\s*\)")
_LEFTOVER = re.compile(r"\{[a-z_]+\}")


def _states(states: frozenset[JobState]) -> str:
    # In JobState's order, always: SQLite uses a partial index only for a WHERE that matches its own text.
    return "(" + ", ".join(f"'{state.value}'" for state in JobState if state in states) + ")"


SUBSTITUTIONS: Mapping[str, str] = {
    "{active_states}": _states(ACTIVE_STATES),
    "{terminal_states}": _states(TERMINAL_STATES),
    "{job_columns}": ", ".join(JOB_INSERT_COLUMNS),
    "{job_values}": ", ".join(f":{column}" for column in JOB_INSERT_COLUMNS),
}


@dataclass(frozen=True, slots=True)
class Query:
    """One named statement of one dialect, ready for its driver."""

    name: str
    sql: str
    """Empty: nothing to do in this dialect."""
    params: tuple[str, ...]
    """Parameter names in order of first use: `?1`/`$1` is `params[0]`."""
    lists: frozenset[str]
    """Parameters read with `json_each` (SQLite): a list is bound as JSON text."""

    def args(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional arguments, from the values by name."""
        try:
            return tuple(map(values.__getitem__, self.params))  # the hot path of every statement: no genexpr
        except KeyError as missing:
            raise TypeError(f"query {self.name} needs the parameter {missing}") from None


@dataclass(frozen=True, slots=True)
class QuerySet:
    dialect: str
    by_name: Mapping[str, Query] = field(repr=False)
    """Left out of the repr: it is every statement's text, and aiosqlite logs the repr of each call at DEBUG (100 KB
    a line, run through the log redaction's patterns, slowed the whole process down)."""

    def __getitem__(self, name: str) -> Query:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} for {self.dialect}") from None


def parse(dialect: str, text: str, *, marker: str) -> QuerySet:
    """The named blocks of one file, their parameters numbered after `marker` (`?` or `$`)."""
    found: dict[str, Query] = {}
    headers = list(_HEADER.finditer(text))
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        name = header.group(1)
        if name in found:
            raise StoreError(f"{dialect}.sql defines the query {name!r} twice")
        body = text[header.end() : following.start() if following else len(text)]
        found[name] = _query(dialect, name, body, marker=marker)
    return QuerySet(dialect, found)


def _query(dialect: str, name: str, body: str, *, marker: str) -> Query:
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("--")]
    sql = "\n".join(lines).strip().removesuffix(";").strip()
    for token, value in SUBSTITUTIONS.items():
        sql = sql.replace(token, value)
    if leftover := _LEFTOVER.search(sql):
        raise StoreError(f"{dialect}.sql, query {name}: unknown placeholder {leftover.group(0)}")
    params: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in params:
            params.append(match.group(1))
        return f"{marker}{params.index(match.group(1)) + 1}"

    lists = frozenset(_JSON_LIST.findall(sql))
    # Parameters outside string literals only (the odd pieces of the split are the literals).
    pieces = _QUOTED.split(sql)
    sql = "".join(piece if i % 2 else _PARAM.sub(number, piece) for i, piece in enumerate(pieces))
    return Query(name, sql, tuple(params), lists)


def load(folder: Path | None = None) -> dict[str, QuerySet]:
    """Every dialect's queries, checked to define the same names. `folder`: another copy of the files (tests)."""
    common_text = _read(folder, COMMON)
    own = {dialect: parse(dialect, _read(folder, dialect), marker=MARKERS[dialect]) for dialect in DIALECTS}
    every = set().union(*(queries.by_name for queries in own.values()))
    missing = {dialect: sorted(every - set(q.by_name)) for dialect, q in own.items() if every - set(q.by_name)}
    if missing:
        listed = "; ".join(f"{dialect}.sql lacks {', '.join(names)}" for dialect, names in missing.items())
        raise StoreError(f"the dialects' queries differ: {listed}")
    sets = {}
    for dialect, queries in own.items():
        common = parse(COMMON, common_text, marker=MARKERS[dialect])
        if twice := sorted(set(common.by_name) & set(queries.by_name)):
            raise StoreError(f"{', '.join(twice)}: in both {COMMON}.sql and {dialect}.sql")
        sets[dialect] = QuerySet(dialect, {**common.by_name, **queries.by_name})
    return sets


@functools.cache
def queries(dialect: str) -> QuerySet:
    """The packaged queries of one dialect, loaded (and checked against the others) on first use."""
    return _packaged()[dialect]


@functools.cache
def _packaged() -> dict[str, QuerySet]:
    return load()


def _read(folder: Path | None, dialect: str) -> str:
    if folder is not None:
        return (folder / f"{dialect}.sql").read_text(encoding="utf-8")
    return resources.files(__package__).joinpath(f"{dialect}.sql").read_text(encoding="utf-8")

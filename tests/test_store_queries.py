"""The named queries: every name in both dialects (checked at load), every name the logic runs defined and
every defined one run, state lists made from `JobState`, parameters passed once by name."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from pathlib import Path

import pytest

from bot.domain import ACTIVE_STATES, TERMINAL_STATES, JobState
from bot.errors import StoreError
from bot.store import queries as queries_module
from bot.store.dialect import Connection
from bot.store.dialects.sqlite import SqliteDialect
from bot.store.queries import COMMON, DIALECTS, load, parse

STORE = Path(__file__).resolve().parent.parent / "bot" / "store"
STATE_NAMES = "|".join(state.value for state in JobState)


def copy_of_queries(tmp_path: Path) -> Path:
    folder = tmp_path / "queries"
    folder.mkdir()
    for name in (COMMON, *DIALECTS):
        source = resources.files(queries_module).joinpath(f"{name}.sql")
        (folder / f"{name}.sql").write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def without_block(text: str, name: str) -> str:
    """The file with one `-- name:` block cut out."""
    start = text.index(f"-- name: {name}\n")
    following = text.find("\n-- name: ", start + 1)
    return text[:start] + (text[following + 1 :] if following != -1 else "")


def test_the_packaged_dialects_define_the_same_names() -> None:
    loaded = load()
    assert set(loaded) == set(DIALECTS)
    names = [set(q.by_name) for q in loaded.values()]
    assert names[0] == names[1] and "claim_next" in names[0]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_name_missing_from_a_dialect_is_found_at_load(tmp_path: Path, dialect: str) -> None:
    folder = copy_of_queries(tmp_path)
    assert load(folder)  # the copy loads as it is
    file = folder / f"{dialect}.sql"
    file.write_text(without_block(without_block(file.read_text(), "claim_next"), "claim_check"))
    with pytest.raises(StoreError, match=rf"{dialect}\.sql lacks claim_check, claim_next"):
        load(folder)


def test_a_name_in_common_and_in_a_dialect_is_refused(tmp_path: Path) -> None:
    folder = copy_of_queries(tmp_path)
    common = folder / "common.sql"
    common.write_text(common.read_text() + "\n-- name: claim_next\nSELECT 1;\n")
    with pytest.raises(StoreError, match=r"claim_next: in both common\.sql and sqlite\.sql"):
        load(folder)


def test_every_query_the_logic_runs_is_defined_and_every_defined_one_is_run() -> None:
    source = "\n".join(path.read_text() for path in STORE.glob("sql_*.py"))
    # conn.fetch("x", …), fetchrow(self.dialect, "x", …), write_one("x", …)
    run = set(re.findall(r'(?:fetch|fetchrow|execute|write_one)\(\s*(?:self\.dialect,\s*)?"([a-z_]+)"', source))
    defined = set(load()["sqlite"].by_name)
    assert run - defined == set(), "the logic runs queries no file defines"
    assert defined - run == set(), "queries defined but never run"


def test_state_lists_are_made_from_the_job_states() -> None:
    sqlite = load()["sqlite"]
    active = "('submitting', 'running', 'downloading', 'delivering')"  # JobState's order: SQLite's partial index
    assert active in sqlite["running_by_provider"].sql
    assert "('delivered', 'failed', 'cancelled')" in sqlite["unfinished_jobs"].sql
    assert {s.value for s in ACTIVE_STATES} | {s.value for s in TERMINAL_STATES} | {"queued"} == set(JobState)
    # Nowhere in the store (but the migrations, which are history) is a list of states written by hand.
    # (Three state names in a row: the active and terminal lists are four and three long.)
    quoted = rf"['\"]({STATE_NAMES})['\"]"
    hand_written = re.compile(rf"{quoted}\s*,\s*{quoted}\s*,\s*{quoted}")
    sources = [p for p in STORE.rglob("*") if p.suffix in (".py", ".sql") and "migrations" not in p.parts]
    assert len(sources) > 10
    for path in sources:
        assert not hand_written.search(path.read_text()), f"{path.name} lists states by hand"


def test_parameters_are_named_once_and_numbered_for_asyncpg() -> None:
    text = "-- name: q\n-- a comment: with a colon\nSELECT ':not_a_param', :p, :q::text, CAST(:p AS BIGINT);\n"
    postgres = parse("postgres", text, marker="$")["q"]
    assert postgres.sql == "SELECT ':not_a_param', $1, $2::text, CAST($1 AS BIGINT)"
    assert postgres.params == ("p", "q") and postgres.args({"q": "b", "p": 1, "extra": 0}) == (1, "b")
    with pytest.raises(TypeError, match="needs the parameter 'q'"):
        postgres.args({"p": 1})
    sqlite = parse("sqlite", text + "-- name: nothing\n-- a comment only\n", marker="?")
    assert sqlite["q"].sql == "SELECT ':not_a_param', ?1, ?2::text, CAST(?1 AS BIGINT)"
    assert sqlite["nothing"].sql == "", "a block of comments does nothing in its dialect"
    with pytest.raises(StoreError, match="unknown placeholder"):
        parse("sqlite", "-- name: q\nSELECT {no_such_list}\n", marker="?")


async def test_a_sqlite_transaction_body_that_suspends_is_refused(tmp_path: Path) -> None:
    dialect = await SqliteDialect.open(str(tmp_path / "x.db"))
    try:

        async def suspends(conn: Connection) -> None:
            await conn.execute("set_meta", key="before", value="1")
            await asyncio.sleep(0)  # a body may await only its connection

        with pytest.raises(RuntimeError, match="suspended"):
            await dialect.write(suspends)
        assert await dialect.read(lambda conn: conn.fetchrow("get_meta", key="before")) is None, "rolled back"
    finally:
        await dialect.close()


def test_a_query_set_prints_short() -> None:
    """aiosqlite logs the repr of every call at DEBUG, the query set included: with every statement in it, each
    line was 100 KB, and redacting those lines slowed the whole bot down."""
    for dialect in load().values():
        assert len(repr(dialect)) < 100, repr(dialect)[:200]

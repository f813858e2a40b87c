"""SQLite group commit: writes that arrive together share one `BEGIN IMMEDIATE` transaction, each in its own
savepoint, so one that fails half-way leaves no trace while the others in the same batch are committed."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from bot.store.dialects.sqlite import SqliteDialect
from bot.store.sql_store import SqlStore

GUILD, MEMBER = 1, 10
WINDOW = (0.0, 1e12)


class Boom(Exception):
    """The failure of one unit of work, after it has written."""


async def test_a_failing_write_is_rolled_back_alone_while_its_batch_commits(tmp_path: Path) -> None:
    path = tmp_path / "group.db"
    store = SqlStore(await SqliteDialect.open(str(path)))
    # An independent reader of the same file: it sees only what has been committed.
    outside = sqlite3.connect(path, check_same_thread=False)
    try:

        def committed_meta(key: str) -> str | None:
            row = outside.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        def write_then_fail(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO usage_ledger (guild_id, user_id, kind, credits, at) VALUES (?, ?, 'grant', 50, 1.0)",
                (GUILD, MEMBER),
            )
            db.execute("INSERT INTO meta (key, value) VALUES ('half-done', 'yes')")
            raise Boom("failed after writing")

        def witness(db: sqlite3.Connection) -> tuple[str | None, str | None, str | None]:
            """Runs last: proves the writes before it are in this same, still open, transaction."""
            row = db.execute("SELECT value FROM meta WHERE key = 'first'").fetchone()
            return (row[0] if row else None), committed_meta("first"), committed_meta("third")

        results = await asyncio.gather(
            store.set_meta("first", "1"),
            store.dialect.unit(write_then_fail),
            store.add_ledger(GUILD, MEMBER, "grant", 5, at=2.0),
            store.set_meta("third", "3"),
            store.dialect.unit(witness),
            return_exceptions=True,
        )

        first, failed, grant, third, seen = results
        assert first is None and grant is None and third is None, results
        assert isinstance(failed, Boom), f"the failing write must raise to its caller: {failed!r}"
        # Same batch: inside the transaction the first write is visible, outside nothing is committed yet.
        assert seen == ("1", None, None), f"the writes did not share one transaction: {seen}"

        # After the COMMIT: the others' writes are durable, the failed one's partial writes are gone.
        assert committed_meta("first") == "1"
        assert committed_meta("third") == "3"
        assert committed_meta("half-done") is None, "the failed write's partial change was committed"
        grants = outside.execute(
            "SELECT credits FROM usage_ledger WHERE guild_id = ? AND user_id = ? AND kind = 'grant' ORDER BY id",
            (GUILD, MEMBER),
        ).fetchall()
        assert [row[0] for row in grants] == [5]
        assert (await store.admission(GUILD, MEMBER, WINDOW)).granted == 5
        assert await store.get_meta("half-done") is None

        # The store goes on working after the failure.
        await store.set_meta("after", "ok")
        assert committed_meta("after") == "ok"
    finally:
        with contextlib.suppress(Exception):
            outside.close()
        await store.close()

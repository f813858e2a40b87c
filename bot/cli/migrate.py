"""`python -m bot migrate --from URL --to URL`: copy the whole database into an empty one (SQLite ⇄ PostgreSQL).

Run it with the bot stopped. Both databases are first migrated to this code's schema; the copy is verified table
by table (row count and a checksum computed alike on both sides) and committed only when everything matches.
Exit codes: 0 copied and verified; 1 a table did not match or a database failed (the target keeps no row);
2 refused before copying (the target is not empty, a schema is newer than this bot, a bad URL).
"""

from __future__ import annotations

import sys
from typing import TextIO
from urllib.parse import urlsplit

from bot.errors import StoreError
from bot.logs import Redactor, redact_url
from bot.store.copy import CopyRefused, copy_database

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


class TableProgress:
    """A bar per table and phase on stderr: redrawn in place on a terminal, else a line per tenth (logs, CI)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._interactive = stream.isatty()
        self._last: tuple[str, str, int] | None = None
        self._name_width = 20

    def __call__(self, phase: str, table: str, done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        step = (phase, table, int(fraction * (self._width if self._interactive else 10)))
        finished = done >= total
        if step == self._last and not finished:
            return
        self._last = step
        filled = int(fraction * self._width)
        line = (
            f"{phase:<6} {table:<{self._name_width}} [{'#' * filled}{'.' * (self._width - filled)}] "
            f"{fraction * 100:5.1f}%  {done}/{total} rows"
        )
        if self._interactive:
            print(f"\r{line}", end="\n" if finished else "", file=self._stream, flush=True)
        else:
            print(line, file=self._stream, flush=True)


def url_passwords(*urls: str) -> list[str]:
    found = []
    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:
            continue
        if password:
            found.append(password)
    return found


async def migrate(source_url: str, target_url: str, *, stream: TextIO = sys.stderr) -> int:
    redact = Redactor(url_passwords(source_url, target_url))

    def say(text: str) -> None:
        print(redact(text), file=stream, flush=True)

    say(f"copying {redact_url(source_url)} → {redact_url(target_url)}")
    try:
        report = await copy_database(source_url, target_url, progress=TableProgress(stream))
    except CopyRefused as exc:
        say(f"videobot migrate: refused, nothing copied: {exc}")
        return EXIT_REFUSED
    except StoreError as exc:
        say(f"videobot migrate: failed, nothing copied: {exc}")
        return EXIT_FAILED
    width = max((len(table.name) for table in report.tables), default=5)
    for table in report.tables:
        verdict = "ok" if table.matches else "MISMATCH"
        detail = f"sha256 {table.target_sha256[:16]}"
        if not table.matches:
            detail = f"source sha256 {table.source_sha256[:16]}, target sha256 {table.target_sha256[:16]}"
        say(f"{verdict:<8}  {table.name:<{width}}  {table.source_rows:>9} → {table.target_rows:>9} rows  {detail}")
    for column, count in sorted(report.rounded.items()):
        say(f"note: {count} value(s) of {column} were rounded to the target's single precision (REAL)")
    if not report.ok:
        bad = [table.name for table in report.tables if not table.matches]
        say(f"videobot migrate: {', '.join(bad)} did not match; the target was rolled back and holds no row")
        return EXIT_FAILED
    rows = sum(table.target_rows for table in report.tables)
    say(f"copied and verified {len(report.tables)} tables, {rows} rows: point DATABASE_URL at {redact_url(target_url)}")
    return EXIT_OK

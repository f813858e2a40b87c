"""Discord's global rate limit across processes: 429s and delivery time with and without the shared pause, and
what the pause costs each bot-token request.

    python bench/global_rate_limit.py [--workers 4] [--concurrency 2] [--clips 12] [--per-second 2] [--pause 3]
                                      [--rounds 1] [--database-url postgresql://…]

Each round, for each variant: a fresh PostgreSQL schema and a fresh loopback fake Discord whose global limit is
scaled down to `--per-second` bot-token requests a second (a `--pause`-second pause beyond: the 4 workers' posts
never come near Discord's real 50/s); `--clips` /video queued through one gateway, then `--workers` worker
processes started together render and post them. "shared" is the bot as it is (bot/discord/ratelimit.py);
"none" runs the workers with the shared pause switched off (each process then knows only its own 429s, as
discord.py alone does). Printed: the global 429s the fake answered, the bot-token requests it saw, the ones that
arrived inside a pause (later than the in-flight allowance after it began), the pauses, and the time from
starting the workers to every job ended. Then the cost of the check before each request: reading the pause
from SQLite and from PostgreSQL, next to a plain REST request to the fake on the loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from bot.clock import SystemClock
from bot.discord.ratelimit import GlobalPause
from bot.store.base import Store
from bot.store.dialects.sqlite import SqliteDialect
from bot.store.sql_store import SqlStore
from tests.crash_checks import PostgresDatabase
from tests.fakes.discord import FakeDiscord
from tests.test_global_rate_limit import IN_FLIGHT, Outcome, deliver_at_once


async def one_variant(url: str, args: argparse.Namespace, *, shared: bool) -> Outcome:
    db = PostgresDatabase(url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with FakeDiscord() as fake:
                return await deliver_at_once(
                    fake, db, Path(tmp), workers=args.workers, clips=args.clips, per_second=args.per_second,
                    pause=args.pause, concurrency=args.concurrency, shared_pause=shared,
                )  # fmt: skip
    finally:
        await db.cleanup()


async def check_cost(store: Store, rounds: int) -> float:
    """Microseconds per check before a request (no pause in force: the common case)."""
    pause = GlobalPause(store, SystemClock())
    for _ in range(50):
        await pause.before_request()
    began = time.perf_counter()
    for _ in range(rounds):
        await pause.before_request()
    return (time.perf_counter() - began) / rounds * 1e6


async def request_cost(rounds: int) -> float:
    """Microseconds per bot-token GET to the loopback fake (a floor for a real request to Discord)."""
    async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bot {fake.token}"}
        began = time.perf_counter()
        for _ in range(rounds):
            async with http.get(f"{fake.api_base}/users/@me", headers=auth) as response:
                await response.read()
        return (time.perf_counter() - began) / rounds * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2, help="WORKER_CONCURRENCY of each worker")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--per-second", type=int, default=2)
    parser.add_argument("--pause", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL"))
    args = parser.parse_args()
    if not args.database_url:
        sys.exit("a PostgreSQL URL is needed (--database-url or TEST_DATABASE_URL): the workers share it")

    print(f"{args.workers} workers × {args.concurrency} jobs, {args.clips} clips, "
          f"fake global limit {args.per_second}/s, pause {args.pause}s")  # fmt: skip
    print(f"{'variant':8} {'429s':>5} {'requests':>9} {'in pauses':>10} {'pauses':>7} {'seconds':>8}  exactly once")
    for _ in range(args.rounds):
        for shared in (True, False):
            o = await one_variant(args.database_url, args, shared=shared)
            print(f"{'shared' if shared else 'none':8} {o.refused:>5} {o.requests:>9} {len(o.sent_in_pauses):>10} "
                  f"{len(o.pauses):>7} {o.seconds:>8.2f}  {o.report.ok}")  # fmt: skip
    print(f"(in pauses: bot-token requests that arrived more than {IN_FLIGHT}s after a pause began, before its end)")

    rounds = 2000
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqlStore(await SqliteDialect.open(str(Path(tmp) / "bench.db")))
        try:
            sqlite_us = await check_cost(sqlite, rounds)
        finally:
            await sqlite.close()
    from bot.store.dialects.postgres import PostgresDialect

    postgres = SqlStore(await PostgresDialect.open(args.database_url, schema=f"bench_{uuid.uuid4().hex[:12]}"))
    try:
        postgres_us = [await check_cost(postgres, rounds) for _ in range(3)]
    finally:
        await postgres.drop_schema()
        await postgres.close()
    request_us = await request_cost(500)
    print(f"check before a request: SQLite {sqlite_us:.0f} µs, PostgreSQL {statistics.median(postgres_us):.0f} µs "
          f"(median of 3 × {rounds}); a bot-token GET to the loopback fake: {request_us:.0f} µs")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())

"""Discord's global REST limit across processes (bot/discord/ratelimit.py): after a global 429, no process sends
with the bot token until the announced time, and every clip is still delivered exactly once.

The end-to-end case runs a gateway and four `python -m bot worker` processes on one PostgreSQL database against
the loopback fake Discord, whose global limit (`limit_globally`) is scaled down so that the workers' posts
exceed it. `deliver_at_once` is shared with bench/global_rate_limit.py, which also runs the workers without the
shared pause for comparison.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from bot.clock import FakeClock
from bot.discord.ratelimit import FRESH_FOR, MAX_PAUSE, GlobalPause, global_retry_after, uses_bot_token
from bot.store.base import Store
from bot.store.dialects.sqlite import SqliteDialect
from bot.store.sql_store import SqlStore
from tests.crash_checks import Database, PostgresDatabase, Report, verify
from tests.crash_harness import BotProcess, BotRig, gather_callbacks
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.models import RecordedRequest

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
IN_FLIGHT = 0.25
"""Seconds after a pause starts during which a request may still arrive: sent before its process could know
(read the pause, then the request crossed the loopback). Anything later inside the pause is a process that did
not wait."""

NO_SHARED_PAUSE = (
    "import runpy\n"
    "from bot.discord.ratelimit import GlobalPause\n"
    "GlobalPause.install = lambda self, trace: trace\n"
    "runpy.run_module('bot', run_name='__main__', alter_sys=True)\n"
)
"""The worker as it was before the shared pause (the benchmark's baseline; `python -c … worker`)."""


# ------------------------------------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (429, {"Retry-After": "1"}, {"retry_after": 0.4, "global": True}, 0.4),
        (429, {"X-RateLimit-Scope": "global", "Retry-After": "2"}, None, 2.0),
        (429, {"X-RateLimit-Global": "true"}, {"retry_after": "x"}, 1.0),
        (429, {"X-RateLimit-Scope": "user", "Retry-After": "1"}, {"retry_after": 0.4, "global": False}, None),
        (429, {"X-RateLimit-Scope": "shared"}, {"retry_after": 5, "global": False}, None),
        (200, {"X-RateLimit-Scope": "global"}, {"global": True}, None),
        (429, {}, {"retry_after": 3600.0, "global": True}, MAX_PAUSE),
    ],
)
def test_a_global_429_says_how_long_every_process_waits(
    status: int, headers: dict[str, str], body: object, expected: float | None
) -> None:
    assert global_retry_after(status, headers, body) == expected


def test_only_requests_with_the_bot_token_wait() -> None:
    assert uses_bot_token({"Authorization": "Bot abc"})
    assert not uses_bot_token({})  # interaction callbacks and webhooks: not bound to the global limit
    assert not uses_bot_token({"Authorization": "Bearer abc"})


async def test_the_pause_only_ever_extends(store: Store) -> None:
    assert await store.discord_paused_until() == 0.0
    await store.pause_discord(1_000.5)
    await store.pause_discord(900.0)  # a process told earlier, writing late
    assert await store.discord_paused_until() == 1_000.5
    await store.pause_discord(1_002.25)
    assert await store.discord_paused_until() == 1_002.25


async def test_a_global_429_in_one_process_holds_the_others(store: Store) -> None:
    clock = FakeClock()
    told, other = GlobalPause(store, clock, spread=0.0), GlobalPause(store, clock, spread=0.0)
    assert await other.before_request() == 0.0

    await told.after_response(429, {"Via": "1.1 google"}, {"retry_after": 2.5, "global": True})
    assert await other.before_request() == 0.0, "a read serves the next FRESH_FOR seconds"
    clock.advance(max(FRESH_FOR, 0.5))
    assert await other.before_request() == 2.0  # waited on the injected clock until the announced end
    assert clock.slept == [2.0]
    assert await other.before_request() == 0.0  # over

    await told.after_response(429, {}, {"retry_after": 2.5, "global": False})  # one route's bucket: not shared
    assert await other.before_request() == 0.0
    assert other.held == 1


async def test_held_requests_resume_spread_over_a_second(store: Store) -> None:
    """Not all at once at the end of the pause, which would start the next one straight away."""
    start = FakeClock().now()
    await store.pause_discord(start + 2.0)
    waits = [await GlobalPause(store, FakeClock(start), rng=random.Random(n)).before_request() for n in range(5)]
    assert all(2.0 <= wait < 3.0 for wait in waits) and len(set(waits)) == 5, waits


async def test_a_database_that_fails_holds_no_request(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Sent with what the process knows alone (here: its own global 429), never stuck or lost."""
    store = SqlStore(await SqliteDialect.open(str(tmp_path / "broken.db")))
    try:
        with sqlite3.connect(tmp_path / "broken.db") as raw:
            raw.execute("DROP TABLE discord_rest_pause")
        clock = FakeClock()
        pause = GlobalPause(store, clock, spread=0.0)
        assert await pause.before_request() == 0.0
        await pause.after_response(429, {"X-RateLimit-Scope": "global", "Retry-After": "2"}, None)
        assert await pause.before_request() == 2.0
        warnings = [r.getMessage() for r in caplog.records if r.name == "bot.discord.ratelimit"]
        assert any("could not read" in w for w in warnings) and any("could not share" in w for w in warnings)
    finally:
        await store.close()


async def test_discord_py_waits_before_sending_and_interactions_do_not(store: Store) -> None:
    """The hook on discord.py's session: a bot-token request waits out the pause, an interaction callback
    (no bot token) goes at once, and a global 429 answered to the session starts the shared pause."""
    clock = FakeClock()
    waiting = GlobalPause(store, clock, spread=0.0)
    async with (
        FakeDiscord() as fake,
        aiohttp.ClientSession(trace_configs=[waiting.install(aiohttp.TraceConfig())]) as http,
    ):
        fake.limit_globally(1, pause=30.0)
        auth = {"Authorization": f"Bot {fake.token}"}
        async with http.get(f"{fake.api_base}/users/@me", headers=auth) as first:
            assert first.status == 200
        async with http.get(f"{fake.api_base}/users/@me", headers=auth) as refused:
            assert refused.status == 429 and (await refused.json())["global"] is True
        paused_until = await store.discord_paused_until()
        assert paused_until == pytest.approx(clock.now() + 30.0, abs=0.1)

        async with http.get(f"{fake.api_base}/gateway") as no_token:  # no bot token: not held
            assert no_token.status == 200
        assert clock.slept == []
        async with http.get(f"{fake.api_base}/users/@me", headers=auth):
            pass
        assert clock.slept == [pytest.approx(30.0, abs=0.1)]


# ------------------------------------------------------------------------------------------------ processes


@dataclass
class Outcome:
    report: Report
    seconds: float
    """From starting the workers to every job ended."""
    pauses: list[tuple[float, float]]
    refused: int
    """Global 429s the fake answered."""
    sent_in_pauses: list[RecordedRequest]
    """Bot-token requests that arrived inside a pause, later than `IN_FLIGHT` after it began."""
    requests: int
    """Bot-token requests the fake saw, refused ones included."""


def sent_during(pauses: Iterable[tuple[float, float]], requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    return [r for r in requests if any(start + IN_FLIGHT < r.time < end for start, end in pauses)]


async def start_workers(rig: BotRig, count: int, *, shared_pause: bool = True) -> list[BotProcess]:
    """`count` worker processes at once (BotRig runs one per role), each logged in before this returns."""
    command = ["-m", "bot"] if shared_pause else ["-c", NO_SHARED_PAUSE]
    logins = sum(r.status == 200 for r in rig.fake.requests_to("GET /users/@me"))
    started: list[BotProcess] = []
    for n in range(1, count + 1):
        index = len(rig.history) + 1
        log_path = rig.logs_dir / f"{index:02d}-worker{n}.log"
        with log_path.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, *command, "worker", cwd=rig.cwd, env=rig.env(None), stdout=out,
                stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        process = BotProcess(
            "worker", index, proc, log_path, None, asyncio.get_running_loop().time(), rig.fake.clock.now()
        )
        rig.processes[f"worker{n}"] = process
        rig.history.append(process)
        started.append(process)
    await rig._wait(
        lambda: sum(r.status == 200 for r in rig.fake.requests_to("GET /users/@me")) >= logins + count,
        60.0, f"{count} workers to log in", watch=started,
    )  # fmt: skip
    return started


async def deliver_at_once(
    fake: FakeDiscord,
    db: Database,
    workdir: Path,
    *,
    workers: int = 4,
    clips: int = 12,
    per_second: int = 2,
    pause: float = 3.0,
    concurrency: int = 2,
    shared_pause: bool = True,
    log: object = print,
) -> Outcome:
    """`clips` /video queued through one gateway, then `workers` worker processes (`concurrency` jobs each)
    started together render and post them while the fake allows `per_second` bot-token requests a second (a
    `pause`-second pause beyond). Renders end at different times, so some posts come due during a pause."""
    rig = BotRig(fake, db, workdir, worker_concurrency=concurrency, log=lambda _: None)
    try:
        await rig.prepare(members=clips)
        await rig.start("gateway")
        records = await rig.send_burst((member, f"clip {n}") for n, member in enumerate(rig.members, 1))
        await gather_callbacks(records, timeout=10)
        fake.limit_globally(per_second, pause=pause)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await start_workers(rig, workers, shared_pause=shared_pause)
        await rig.wait_settled(timeout=120)
        seconds = loop.time() - began
        await asyncio.sleep(1.0)  # a late duplicate post would show by now
        await rig.stop_all()
        report = verify(await db.snapshot(), fake, rig.interactions)
    except BaseException:
        print(rig.log_tails())
        raise
    finally:
        await rig.kill_all()
    requests = fake.bot_token_requests
    return Outcome(
        report=report,
        seconds=seconds,
        pauses=list(fake.global_pauses),
        refused=sum(r.status == 429 for r in requests),
        sent_in_pauses=sent_during(fake.global_pauses, requests),
        requests=len(requests),
    )


@pytest.mark.timeout(300)
@pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set (the workers share PostgreSQL)")
async def test_after_a_global_429_no_worker_sends_until_the_announced_time(tmp_path: Path) -> None:
    assert TEST_DATABASE_URL is not None
    db = PostgresDatabase(TEST_DATABASE_URL)
    try:
        async with FakeDiscord() as fake:
            outcome = await deliver_at_once(fake, db, tmp_path)
    finally:
        await db.cleanup()
    assert outcome.pauses, "the workers never exceeded the global limit: the test proves nothing"
    assert outcome.report.ok, outcome.report.explain()
    late = [(f"{r.method} {r.path}", round(r.time - start, 3)) for r in outcome.sent_in_pauses
            for start, end in outcome.pauses if start < r.time < end]  # fmt: skip
    assert not late, f"sent during a global pause (route, seconds into it): {late}; pauses: {outcome.pauses}"

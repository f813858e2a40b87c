"""Crash tests: the bot as real subprocesses against the loopback fake Discord, killed between the side effects
of a job, restarted on the same database. The promise (README, issue #6): kill -9 or SIGTERM anywhere ends in
exactly one clip per accepted job (never two, never none), and credits end right (used = delivered seconds ×
weight, nothing left reserved).

- targeted kills: `VIDEOBOT_CRASH_AT=<point>` (bot/faults.py) makes the process SIGKILL itself right after a
  named step; one case per point on SQLite (`run`), a few on PostgreSQL (`gateway` + `worker`);
- SIGTERM while a clip upload is in flight: the upload finishes, the process exits 0 within a bound;
- random kills from outside with a fixed seed (`CRASH_SEED=<n>` replays another run; the seed and every kill
  time are printed);
- recovery: after a kill with jobs pending, the first clip comes within a bound of the restart.

Knobs: `CRASH_SEED`, `CRASH_LEASE_SECONDS` (LEASE_SECONDS for the bot; unset = the bot's default, so recovery
cannot lean on a short lease). Each process logs to `<tmp_path>/logs/NN-<role>.log`; a failure prints the tails.
PostgreSQL cases run when TEST_DATABASE_URL is set, each in a fresh schema chosen by `?search_path=` in
DATABASE_URL (see `PostgresDatabase`).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.faults import POINTS
from tests.crash_checks import PostgresDatabase, Report, SqliteDatabase, answered, verify
from tests.crash_harness import BotRig, RigError, UploadGate, gather_callbacks
from tests.fakes.discord import FakeDiscord

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
SEED = int(os.environ.get("CRASH_SEED", "20260611"))
LEASE = float(os.environ["CRASH_LEASE_SECONDS"]) if os.environ.get("CRASH_LEASE_SECONDS") else None
RECOVERY_TIMEOUT = 30.0
"""Seconds after a restart for every job to end: three times the issue's aim (first clip within 10 s)."""
FIRST_CLIP_BOUND = 20.0
"""Restart → first clip with jobs pending. Generous (the aim is 10 s) yet far below a lease wait (60 s)."""
SETTLE = 1.0
"""After the last job ended: time for a late duplicate post to show up before the checks."""

needs_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")
pytestmark = pytest.mark.timeout(240)


def say(line: str) -> None:
    print(line, flush=True)


@pytest.fixture
async def discord() -> AsyncIterator[tuple[FakeDiscord, UploadGate]]:
    fake = FakeDiscord()
    gate = UploadGate.install(fake)
    await fake.start()
    try:
        yield fake, gate
    finally:
        gate.open()
        await fake.close()


@pytest.fixture
async def sqlite_rig(discord: tuple[FakeDiscord, UploadGate], tmp_path: Path) -> AsyncIterator[BotRig]:
    rig = BotRig(discord[0], SqliteDatabase(tmp_path / "bot.db"), tmp_path, lease_seconds=LEASE, log=say)
    try:
        yield rig
    finally:
        await rig.kill_all()


@pytest.fixture
async def pg_rig(discord: tuple[FakeDiscord, UploadGate], tmp_path: Path) -> AsyncIterator[BotRig]:
    assert TEST_DATABASE_URL is not None
    db = PostgresDatabase(TEST_DATABASE_URL)
    rig = BotRig(discord[0], db, tmp_path, lease_seconds=LEASE, log=say)
    try:
        yield rig
    finally:
        await rig.kill_all()
        await db.cleanup()


def fail_with(rig: BotRig, report: Report, extra: list[str] | None = None) -> str:
    problems = [*(extra or []), *report.problems]
    head = problems[0] if problems else "?"
    body = "\n".join(f"  - {p}" for p in problems)
    table = "\n".join(f"  {t}" for t in report.table)
    return f"{head}\nall problems:\n{body}\njobs:\n{table}\n{rig.log_tails()}"


async def finish_and_verify(rig: BotRig, *, extra: list[str] | None = None) -> Report:
    """Let late posts show, stop everything, then check the database and the channel."""
    await asyncio.sleep(SETTLE)
    await rig.stop_all()
    report = verify(await rig.db.snapshot(), rig.fake, rig.interactions)
    say(f"[result] {report.summary}")
    assert report.ok and not extra, fail_with(rig, report, extra)
    return report


# ------------------------------------------------------------------------------------------------ targeted


async def targeted_kill(rig: BotRig, *, roles: list[str], victim: str, point: str) -> None:
    """Start `roles` (the victim with the crash point set), send two `/video duration:1` from two members, wait
    for the victim to die at the point, restart it without the variable, and check exactly once.

    A separate worker is started only after both commands were answered, so its kill hits jobs the members saw
    queued (which must then be delivered, not cancelled). In one `run` process the first claim (and the steps
    right after it: submitted, running, the first poll) races the answer, so those jobs may count as never
    answered; the `<point>:2` cases kill at the second passage (the second job waits for the renderer, the
    second poll comes 0.5 s later), when every member has been answered."""
    await rig.prepare(members=2)
    late = [victim] if victim == "worker" else []
    for role in roles:
        if role not in late:
            await rig.start(role, crash_at=point if role == victim else None)
    records = await rig.send_burst((member, f"crash at {point}, job {n}") for n, member in enumerate(rig.members, 1))
    if late:
        await gather_callbacks(records, 5)
        await rig.start(victim, crash_at=point)
    await rig.wait_crash(victim, point)
    at_death = await rig.db.snapshot()
    restarted = await rig.start(victim)
    await rig.wait_settled(RECOVERY_TIMEOUT)
    first = rig.first_clip_after(restarted)
    unanswered = sum(1 for r in rig.interactions if not answered(r))
    say(
        f"[targeted] {rig.db.label} {victim}@{point}: {len(at_death.jobs)} job(s) at the crash, "
        f"{len(at_death.pending)} pending; {unanswered} /video never answered; first clip "
        + (f"{first:.2f}s after the restart" if first is not None else "none after the restart")
    )
    await finish_and_verify(rig)


@pytest.mark.parametrize("point", [*POINTS, "claimed:2", "submitted:2", "running:2", "polled:2"])
async def test_kill_at_point_sqlite(sqlite_rig: BotRig, point: str) -> None:
    await targeted_kill(sqlite_rig, roles=["run"], victim="run", point=point)


@needs_postgres
@pytest.mark.parametrize(
    ("victim", "point"),
    [("gateway", "enqueued"), ("worker", "claimed"), ("worker", "posted"), ("worker", "recorded")],
)
async def test_kill_at_point_postgres(pg_rig: BotRig, victim: str, point: str) -> None:
    await targeted_kill(pg_rig, roles=["gateway", "worker"], victim=victim, point=point)


# ------------------------------------------------------------------------------------------------ SIGTERM


async def test_sigterm_during_upload_lets_it_finish(
    sqlite_rig: BotRig, discord: tuple[FakeDiscord, UploadGate]
) -> None:
    """SIGTERM arrives while the clip upload is in flight (the fake holds it for 1.5 s): the process lets the
    upload finish and records it, exits 0 within 30 s, and a restart posts nothing more."""
    rig, gate = sqlite_rig, discord[1]
    await rig.prepare(members=1)
    await rig.start("run")
    gate.close()
    await rig.send_video(rig.members[0], "a slow upload")
    try:
        await asyncio.wait_for(gate.arrived.wait(), 30)
    except TimeoutError:
        raise RigError(f"no clip upload reached the fake within 30 s\n{rig.log_tails()}") from None
    stopping = asyncio.create_task(rig.terminate("run", timeout=30))
    await asyncio.sleep(1.5)
    gate.open()
    code, seconds = await stopping
    at_exit = await rig.db.snapshot()
    states = {j["id"][:8]: j["state"] for j in at_exit.jobs}
    say(f"[sigterm] exit {code} {seconds:.2f}s after SIGTERM; jobs at exit: {states}")
    extra = []
    if code != 0:
        extra.append(f"exit code {code} after SIGTERM (wanted 0)")
    if any(j["state"] != "delivered" for j in at_exit.jobs):
        extra.append(f"the upload in flight at SIGTERM was not finished and recorded before exit: {states}")
    await rig.start("run")
    await rig.wait_settled(RECOVERY_TIMEOUT)
    await finish_and_verify(rig, extra=extra)


# ------------------------------------------------------------------------------------------------ recovery


async def test_recovery_first_clip_after_kill_sqlite(sqlite_rig: BotRig) -> None:
    """Four jobs; SIGKILL from outside while the first renders; the first clip after the restart must come
    within FIRST_CLIP_BOUND (the issue aims at 10 s; a lease wait would take 60 s). Needs no crash point."""
    rig = sqlite_rig
    await rig.prepare(members=4)
    await rig.start("run")
    await rig.send_burst((m, f"recovery job {n}") for n, m in enumerate(rig.members, 1))

    async def running() -> bool:
        return any(j["state"] == "running" for j in (await rig.db.snapshot()).jobs)

    deadline = asyncio.get_running_loop().time() + 20
    while not await running():
        if asyncio.get_running_loop().time() > deadline:
            raise RigError(f"no job reached `running` within 20 s\n{rig.log_tails()}")
        await asyncio.sleep(0.05)
    await rig.kill("run")
    pending = len((await rig.db.snapshot()).pending)
    restarted = await rig.start("run")
    await rig.wait_settled(RECOVERY_TIMEOUT)
    first = rig.first_clip_after(restarted)
    assert restarted.ready_at is not None
    ready = restarted.ready_at - restarted.spawned_at
    say(f"[recovery] sqlite: {pending} pending at the kill; restart → ready {ready:.2f}s, → first clip {first}s")
    extra = []
    if first is None or first > FIRST_CLIP_BOUND:
        extra.append(f"first clip {first}s after the restart (bound {FIRST_CLIP_BOUND:.0f}s, aim 10 s)")
    await finish_and_verify(rig, extra=extra)


# ------------------------------------------------------------------------------------------------ random kills


async def random_kills(
    rig: BotRig,
    *,
    seed: int,
    jobs: int,
    members: int,
    kills: int,
    roles: list[str],
    victims: list[str],
    gap: tuple[float, float] = (0.05, 0.6),
) -> None:
    """`jobs` `/video` from `members` members, one every `gap` seconds, while `kills` SIGKILLs hit a random
    victim at random delays (0.2–2 s after it was ready), each followed by a restart; then exactly once over
    everything. The jobs are spread over about the time the kills take, so kills land on jobs at every step."""
    producer_rng, killer_rng = random.Random(f"{seed}:producer"), random.Random(f"{seed}:killer")
    say(f"[random] {rig.db.label}: seed {seed} (replay with CRASH_SEED={seed}); {jobs} jobs, {kills} kills")
    await rig.prepare(members=members)
    for role in roles:
        await rig.start(role)
    t0 = asyncio.get_running_loop().time()

    async def produce() -> None:
        for n in range(jobs):
            await asyncio.sleep(producer_rng.uniform(*gap))
            await rig.send_video(producer_rng.choice(rig.members), f"random job {n + 1}")

    schedule = [victims[k % len(victims)] for k in range(kills)]  # each victim its share, in a random order
    killer_rng.shuffle(schedule)
    producer = asyncio.create_task(produce())
    try:
        for k, victim in enumerate(schedule, 1):
            delay = killer_rng.uniform(0.2, 2.0)
            await asyncio.sleep(delay)
            at = asyncio.get_running_loop().time() - t0
            await rig.kill(victim)
            states = Counter(j["state"] for j in (await rig.db.snapshot()).jobs)
            say(
                f"[random] kill {k}/{kills}: {victim} at +{at:.2f}s ({delay:.2f}s after it was ready); "
                f"jobs then: {dict(sorted(states.items()))}"
            )
            await rig.start(victim)
        await producer
    finally:
        producer.cancel()
    await gather_callbacks(rig.interactions, 3.5)
    await rig.wait_settled(60)
    accepted = len((await rig.db.snapshot()).jobs)
    refused = [r for r in rig.interactions if any(m is not None and m.ephemeral for m in (r.original, *r.followups))]
    deferred = [r for r in rig.interactions if r.callback is not None and not answered(r) and r not in refused]
    lost = [r for r in rig.interactions if r.callback is None]
    say(
        f"[random] {accepted} jobs accepted of {jobs} sent; {len(refused)} refused; {len(deferred)} deferred and "
        f"never answered; {len(lost)} never acknowledged"
    )
    extra = []
    if accepted < jobs // 2:
        extra.append(f"only {accepted} of {jobs} /video were accepted: the run tested too little")
    for r in refused:
        said = [m.content for m in (r.original, *r.followups) if m is not None]
        extra.append(
            f"/video {r.id} was refused (ephemeral answer; quotas are raised, so none is expected): {said!r:.200}"
        )
    await finish_and_verify(rig, extra=extra)


async def test_random_kills_sqlite(sqlite_rig: BotRig) -> None:
    await random_kills(sqlite_rig, seed=SEED, jobs=34, members=6, kills=8, roles=["run"], victims=["run"])


@needs_postgres
async def test_random_kills_postgres(pg_rig: BotRig) -> None:
    await random_kills(
        pg_rig,
        seed=SEED,
        jobs=15,
        members=4,
        kills=6,
        roles=["gateway", "worker"],
        victims=["worker", "worker", "gateway"],  # the worker does the side effects: hit it more often
        gap=(0.2, 1.2),
    )

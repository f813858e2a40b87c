"""Job throughput on PostgreSQL with 1, 2 and 4 worker processes, next to procrastinate and a bare SKIP LOCKED loop.

    pip install 'procrastinate==3.10.0'   # only for this benchmark; skipped (and said so) when absent
    python bench/scale.py [--jobs 5000] [--workers 1,2,4] [--rounds 3] [--database-url URL] [--without-discord]

Each round, for each worker count, on a fresh schema of the same database with no planner statistics (this
machine's PostgreSQL runs with autovacuum off, as a new database is):

- **engine**: the queue is filled through `JobService.enqueue` (100 members), then N `python bench/scale.py
  --child` processes start, each the real worker (`bot.cli.run.build_app`: claims, the state machine, leases,
  events) with an instant in-process provider and real delivery: every clip is posted through Discord's REST API
  to the loopback fake Discord, which runs in this (the parent) process. The figure is jobs from "go" to the
  last delivered, per second.
- **procrastinate, posting the clip** (the engine's match, left out with `--without-discord`): the same number of
  jobs deferred (`batch_defer_async`), then N processes of its worker (`run_worker_async(wait=False)`) with the
  same concurrency, whose task does the engine's delivery: it reads the instant provider's clip from disk and
  posts it to the same fake Discord in this process, as `ClipPoster._post_in_channel` does (the requester
  mentioned, `clip.mp4` attached, the clip's embed and buttons), through one REST-only discord.py client per
  process, logged in before "go" (`bench/scale_clip_task.py`).
- **procrastinate, no-op**: the same, with a task that does nothing: the match of the engine alone
  (`--without-discord`, where a clip counts as delivered without a post).
- **bare loop**: `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING` then a finishing
  UPDATE, on 1 and 4 connections of one process: the floor any queue on this database pays per job.

Per-job database cost: statements and round trips (statements, BEGIN and COMMIT) counted by the engine's worker
processes on their asyncpg connections, and transactions per job from `pg_stat_database` for every contender.
Per-job CPU: the worker processes', PostgreSQL's, and, where clips are posted, this process's (the fake Discord).
The main ratio is the engine's to procrastinate posting the clip; without Discord, to the no-op one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.scale_clip_task import ClipPosting

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MEMBERS = 100
CONCURRENCY = 16
"""Jobs in flight per worker process, for the engine and for procrastinate alike."""


class NullDelivery:
    """The engine's figure without Discord: every clip counts as posted, and no status message is edited."""

    async def deliver(self, job: object, clip: Path) -> int | None:
        return None

    async def find_post(self, job: object) -> int | None:
        return None

    async def job_updated(self, job: object) -> None:
        return None


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL server process on this machine, from /proc: the live ones' own, and the
    postmaster's count of its ended children (the backends of connections closed meanwhile)."""
    total = 0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in ("postgres", "postmaster"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


# --- the engine's worker process -----------------------------------------------------------------------------
def count_round_trips() -> Counter[str]:
    """Counts every call an asyncpg connection makes to the server (benchmark only: wraps the driver's methods):
    each is one round trip, and all but a transaction's BEGIN and COMMIT (which asyncpg sends through the same
    methods) are statements."""
    import asyncpg

    counts: Counter[str] = Counter()
    control = {"BEGIN;", "COMMIT;", "ROLLBACK;"}

    def counting(name: str) -> None:
        original = getattr(asyncpg.connection.Connection, name)

        async def wrapper(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            counts["round trips"] += 1
            counts["statements" if query not in control else "transaction control"] += 1
            return await original(self, query, *args, **kwargs)

        setattr(asyncpg.connection.Connection, name, wrapper)

    for method in ("fetch", "fetchrow", "fetchval", "execute"):
        counting(method)
    return counts


async def engine_child() -> None:
    counts = count_round_trips()
    from bot.cli.run import _run_worker_only, build_app, point_discord_at
    from bot.config import load_settings
    from bot.providers.registry import ProviderRegistry
    from tests.fakes.scripted_provider import ScriptedProvider

    settings = load_settings()
    point_discord_at(settings)
    registry = ProviderRegistry([ScriptedProvider(name="fake", max_concurrency=10_000)])
    app = await build_app(settings, with_worker=True, registry=registry)
    if os.environ.get("SCALE_NO_DISCORD"):  # the engine alone: a clip is "delivered" without a post
        app.worker.delivery = NullDelivery()  # type: ignore[union-attr]
    assert settings.discord_token is not None
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    baseline = Counter(counts)
    cpu_at_go = cpu_seconds()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await _run_worker_only(app, settings.discord_token.get_secret_value(), stop)
    finally:
        await app.aclose()
    report = dict(counts - baseline)
    report["cpu"] = cpu_seconds() - cpu_at_go
    print(json.dumps(report), flush=True)


async def procrastinate_child(conninfo: str, clip: str | None) -> None:
    """A procrastinate worker; with `clip`, its task posts that file to the fake Discord."""
    posting: ClipPosting | None = None
    try:
        if clip is not None:
            from bench.scale_clip_task import ClipPosting

            posting = ClipPosting(Path(clip))
            await posting.open(os.environ["DISCORD_TOKEN"], os.environ["DISCORD_API_BASE"])
        app = procrastinate_app(conninfo, posting)
        async with app.open_async():
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            cpu_at_go = cpu_seconds()
            await app.run_worker_async(concurrency=CONCURRENCY, wait=False, install_signal_handlers=False)
    finally:
        if posting is not None:
            await posting.close()
    print(json.dumps({"cpu": cpu_seconds() - cpu_at_go}), flush=True)


def procrastinate_app(conninfo: str, posting: ClipPosting | None = None) -> Any:
    """`posting` (a `ClipPosting`, opened) is what the post_clip task uses; only the workers run it."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    @app.task(name="post_clip")
    async def post_clip(job_id: str, user_id: int, created_at: float) -> None:
        assert posting is not None
        await posting.post(job_id, user_id, created_at)

    return app


# --- the parent ------------------------------------------------------------------------------------------------
class Processes:
    """Child processes that say "ready", wait for "go", and print one JSON line of counts when they end."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, count: int, args: list[str], env: dict[str, str]) -> None:
        for _ in range(count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, *args, env=env, cwd=str(REPO), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"a child did not start: {line!r}")

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")

    async def finish(self, *, terminate: bool) -> Counter[str]:
        total: Counter[str] = Counter()  # summed over the children; "cpu" in seconds
        for proc in self.procs:
            if terminate:
                proc.send_signal(signal.SIGTERM)
            assert proc.stdout is not None
            out = await asyncio.wait_for(proc.stdout.read(), 900)  # a slow contender, not a hung one
            await proc.wait()
            lines = [line for line in out.decode().splitlines() if line.startswith("{")]
            for key, value in (json.loads(lines[-1]) if lines else {}).items():
                total[key] += value
        return total


async def commits(conn: Any) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


async def engine_round(
    url: str, jobs: int, workers: int, workdir: Path, *, discord: bool = True
) -> tuple[float, dict[str, float]]:
    import asyncpg

    from bot.clock import SystemClock
    from bot.domain import QuotaLimits, Requester, VideoRequest
    from bot.jobs.service import JobService
    from bot.providers.registry import ProviderRegistry
    from bot.store.dialects.postgres import PostgresDialect
    from bot.store.sql_store import SqlStore
    from tests.fakes.discord import CHANNEL_ID, GUILD_ID, FakeDiscord
    from tests.fakes.scripted_provider import ScriptedProvider

    schema = f"scale_{uuid.uuid4().hex[:10]}"
    store = SqlStore(await PostgresDialect.open(url, schema=schema))
    service = JobService(store, ProviderRegistry([ScriptedProvider(name="fake")]), SystemClock())
    await store.update_policy(GUILD_ID, "default", 0, QuotaLimits(credits=10**9, max_queued=jobs, max_running=4))
    request = VideoRequest(prompt="scale", model="fake/video", duration=2)
    members = [Requester(guild_id=GUILD_ID, user_id=1000 + m, channel_id=CHANNEL_ID) for m in range(MEMBERS)]
    for start in range(0, jobs, 50):
        batch = range(start, min(jobs, start + 50))
        await asyncio.gather(*(service.enqueue(members[n % MEMBERS], request) for n in batch))
    stats = await asyncpg.connect(url)
    fake = FakeDiscord()
    await fake.start()
    children = Processes()
    try:
        env = {
            "PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "PYTHONPATH": str(REPO),
            "DISCORD_TOKEN": fake.token, "DISCORD_API_BASE": fake.api_base, "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DATABASE_URL": f"{url}{'&' if '?' in url else '?'}search_path={schema}",
            "DATA_DIR": str(workdir / "data"), "LOG_LEVEL": "WARNING", "WORKER_CONCURRENCY": str(CONCURRENCY),
        }  # fmt: skip
        if not discord:
            env["SCALE_NO_DISCORD"] = "1"
        await children.start(workers, ["--child", "engine"], env)
        before = await commits(stats)
        pg_cpu, own_cpu = postgres_cpu_seconds(), cpu_seconds()
        started = time.perf_counter()
        children.go()
        while await store.queue_depth() or await store.running_count():  # noqa: ASYNC110 (the outer wait)
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        pg_cpu, own_cpu = postgres_cpu_seconds() - pg_cpu, cpu_seconds() - own_cpu
        after = await commits(stats)
        counts = await children.finish(terminate=True)
        posted = len(fake.bot_messages())
    finally:
        await fake.close()
        await stats.close()
        await store.drop_schema()
        await store.close()
    if discord and posted != jobs:
        raise RuntimeError(f"{posted} clips posted for {jobs} jobs")
    cost = {
        "statements": counts["statements"] / jobs,
        "round trips": counts["round trips"] / jobs,
        "transactions": (after - before) / jobs,
        "ms CPU in workers": counts["cpu"] * 1000 / jobs,
        "ms CPU in PostgreSQL": pg_cpu * 1000 / jobs,
        "ms CPU in the fake Discord": own_cpu * 1000 / jobs,
    }
    return jobs / seconds, cost


async def procrastinate_round(
    url: str, jobs: int, workers: int, workdir: Path, *, post: bool
) -> tuple[float, dict[str, float]]:
    """procrastinate's run of `jobs` tasks: with `post`, each posts the clip to a fake Discord in this process."""
    import asyncpg

    from bench.scale_clip_task import write_clip
    from tests.fakes.discord import FakeDiscord

    schema = f"procrastinate_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE SCHEMA {schema}")
    conninfo = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    app = procrastinate_app(conninfo)
    fake = FakeDiscord() if post else None
    children = Processes()
    try:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            task = app.tasks["post_clip" if post else "noop"]
            for start in range(0, jobs, 1000):
                batch = range(start, min(jobs, start + 1000))
                await task.batch_defer_async(*(post_args(n) if post else {} for n in batch))
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
        args = ["--child", "procrastinate", conninfo]
        if fake is not None:
            await fake.start()
            env |= {"DISCORD_TOKEN": fake.token, "DISCORD_API_BASE": fake.api_base}
            args.append(str(write_clip(workdir)))
        await children.start(workers, args, env)
        before = await commits(admin)
        pg_cpu, own_cpu = postgres_cpu_seconds(), cpu_seconds()
        started = time.perf_counter()
        children.go()
        counts = await children.finish(terminate=False)  # wait=False: each worker stops once the queue is empty
        seconds = time.perf_counter() - started
        pg_cpu, own_cpu = postgres_cpu_seconds() - pg_cpu, cpu_seconds() - own_cpu
        after = await commits(admin)
        done = await admin.fetchval(f"SELECT COUNT(*) FROM {schema}.procrastinate_jobs WHERE status = 'succeeded'")
        posted = len(fake.bot_messages()) if fake is not None else None
    finally:
        if fake is not None:
            await fake.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    if done != jobs:
        raise RuntimeError(f"procrastinate finished {done} of {jobs} jobs")
    if post and posted != jobs:
        raise RuntimeError(f"procrastinate posted {posted} clips for {jobs} jobs")
    cost = {
        "transactions": (after - before) / jobs,
        "ms CPU in workers": counts["cpu"] * 1000 / jobs,
        "ms CPU in PostgreSQL": pg_cpu * 1000 / jobs,
    }
    if post:
        cost["ms CPU in the fake Discord"] = own_cpu * 1000 / jobs
    return jobs / seconds, cost


def post_args(n: int) -> dict[str, Any]:
    """The n-th job's arguments: its id as the engine makes one, and a requester of the engine round's members."""
    return {"job_id": uuid.uuid4().hex, "user_id": 1000 + n % MEMBERS, "created_at": time.time()}


async def bare_round(url: str, jobs: int, connections: int) -> float:
    """The floor: claim with SKIP LOCKED and finish, two autocommit statements per job, nothing else."""
    import asyncpg

    schema = f"bare_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.q (id BIGSERIAL PRIMARY KEY, "
                        f"state TEXT NOT NULL, owner TEXT); CREATE INDEX ON {schema}.q (id) WHERE state = 'queued';"
                        f"INSERT INTO {schema}.q (state) SELECT 'queued' FROM generate_series(1, {jobs})")  # fmt: skip
    conns = [await asyncpg.connect(url, server_settings={"search_path": schema}) for _ in range(connections)]
    claim = ("UPDATE q SET state = 'running', owner = $1 WHERE id = (SELECT id FROM q WHERE state = 'queued' "
             "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id")  # fmt: skip

    async def loop(conn: Any, name: str) -> None:
        while (job := await conn.fetchval(claim, name)) is not None:
            await conn.execute("UPDATE q SET state = 'done' WHERE id = $1", job)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(loop(conn, f"c{i}") for i, conn in enumerate(conns)))
        seconds = time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    return jobs / seconds


def has_procrastinate() -> bool:
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        return False
    return True


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--without-discord",
        action="store_true",
        help="the engine alone: clips count as delivered without a post to the fake Discord",
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    rival = has_procrastinate()
    if not rival:
        print("procrastinate is not installed (pip install 'procrastinate==3.10.0'): its column is left out")
    discord = not args.without_discord
    engine: dict[int, list[float]] = {n: [] for n in counts}
    noop: dict[int, list[float]] = {n: [] for n in counts}
    posting: dict[int, list[float]] = {n: [] for n in counts}
    costs: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # alternately, so a slow moment of the machine hurts all alike
            for n in counts:
                rate, cost = await engine_round(args.database_url, args.jobs, n, Path(tmp), discord=discord)
                engine[n].append(rate)
                costs.setdefault(f"engine ({n} workers)", cost)
                if not rival:
                    continue
                if discord:
                    rate, cost = await procrastinate_round(args.database_url, args.jobs, n, Path(tmp), post=True)
                    posting[n].append(rate)
                    costs.setdefault(f"procrastinate posting the clip ({n} workers)", cost)
                rate, cost = await procrastinate_round(args.database_url, args.jobs, n, Path(tmp), post=False)
                noop[n].append(rate)
                costs.setdefault(f"procrastinate no-op ({n} workers)", cost)
    bare = {c: await bare_round(args.database_url, args.jobs, c) for c in (1, 4)}
    print(f"{args.jobs:,} jobs, {MEMBERS} members, {CONCURRENCY} jobs in flight per process, "
          f"median of {args.rounds} rounds (jobs/s):")  # fmt: skip
    for n in counts:
        mine = statistics.median(engine[n])
        line = f"  {n} worker process(es): engine {mine:7.0f}"
        if rival and discord:
            theirs = statistics.median(posting[n])
            line += f"   procrastinate posting the clip {theirs:7.0f}   ratio {mine / theirs:.2f}x"
        if rival:
            theirs = statistics.median(noop[n])
            noop_part = f"procrastinate no-op {theirs:7.0f}   ratio {mine / theirs:.2f}x"
            line += f"   ({noop_part})" if discord else f"   {noop_part}"
        print(line)
    first, last = statistics.median(engine[counts[0]]), statistics.median(engine[counts[-1]])
    cores = os.cpu_count()
    print(f"  scaling {counts[0]} → {counts[-1]} processes: {last / first:.2f}x (this machine has {cores} cores)")
    print(
        f"  bare SKIP LOCKED loop: {bare[1]:.0f} jobs/s on 1 connection, {bare[4]:.0f} on 4 "
        "(2 statements, 2 round trips, 2 transactions per job)"
    )
    print("per-job database cost:")
    for name, cost in costs.items():
        print("  " + name + ": " + ", ".join(f"{value:.1f} {key}" for key, value in cost.items()))
    print("CPU is what bounds this machine: 2 cores give at most 2,000 ms of CPU a second, so the ceiling is about")
    for name, cost in costs.items():
        per_job = sum(value for key, value in cost.items() if key.startswith("ms CPU"))
        print(f"  {name}: {2000 / per_job:,.0f} jobs/s ({per_job:.1f} ms of CPU per job)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        if sys.argv[2] == "engine":
            asyncio.run(engine_child())
        else:
            asyncio.run(procrastinate_child(sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None))
    else:
        asyncio.run(main())

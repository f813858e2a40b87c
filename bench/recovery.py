"""Time from a restart to the first clip, with jobs pending, after a SIGKILL mid-job.

    python bench/recovery.py [--rounds 5] [--jobs 6] [--database-url postgresql://…] [--lease-seconds S]

Each round: a fresh database, the bot as real subprocesses against the loopback fake Discord (in this process),
`--jobs` `/video duration:1` from as many members, SIGKILL while the first job renders, restart, and measure
from the restart (spawn) to: the process taking work (gateway connected / worker logged in), the first clip
posted (as the fake saw it), and every job delivered. SQLite runs one `run` process; PostgreSQL (when
TEST_DATABASE_URL or --database-url is given) runs `gateway` + `worker` and kills and restarts the worker.
The figures include the new process's start (Python, imports, login), as an operator would see it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.crash_checks import Database, PostgresDatabase, SqliteDatabase, clip_messages, message_time, verify
from tests.crash_harness import BotRig
from tests.fakes.discord import FakeDiscord


@dataclass
class Round:
    pending: int
    ready: float
    first_clip: float
    all_delivered: float
    ok: bool


def quiet(_: str) -> None:
    return None


async def one_round(
    fake: FakeDiscord, db: Database, workdir: Path, *, jobs: int, split: bool, lease: float | None
) -> Round:
    rig = BotRig(fake, db, workdir, lease_seconds=lease, log=quiet)
    victim = "worker" if split else "run"
    try:
        await rig.prepare(members=jobs)
        for role in ["gateway", "worker"] if split else ["run"]:
            await rig.start(role)
        await rig.send_burst((m, f"bench job {n}") for n, m in enumerate(rig.members, 1))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not any(j["state"] == "running" for j in (await db.snapshot()).jobs):
            if loop.time() > deadline:
                raise RuntimeError("no job started within 30 s\n" + rig.log_tails())
            await asyncio.sleep(0.02)
        await rig.kill(victim)
        pending = len((await db.snapshot()).pending)
        restarted = await rig.start(victim)
        await rig.wait_settled(timeout=300)
        assert restarted.ready_at is not None
        clips = [message_time(m) for _, m in clip_messages(fake)]
        after = [t - restarted.spawned_clock for t in clips if t >= restarted.spawned_clock]
        await asyncio.sleep(0.5)
        await rig.stop_all()
        report = verify(await db.snapshot(), fake, rig.interactions)
        if not report.ok:
            print("  exactly-once check failed: " + report.explain().splitlines()[0])
        return Round(
            pending=pending,
            ready=restarted.ready_at - restarted.spawned_at,
            first_clip=min(after) if after else float("nan"),
            all_delivered=max(after) if after else float("nan"),
            ok=report.ok,
        )
    finally:
        await rig.kill_all()
        await db.cleanup()


async def bench(
    label: str, make_db: Callable[[Path], Database], *, rounds: int, jobs: int, split: bool, lease: float | None
) -> None:
    results: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="videobot-recovery-") as tmp:
        for n in range(rounds):
            async with FakeDiscord() as fake:
                workdir = Path(tmp) / f"round{n}"
                db = make_db(workdir)
                r = await one_round(fake, db, workdir, jobs=jobs, split=split, lease=lease)
            results.append(r)
            print(f"  round {n + 1}: {r.pending} pending at the kill; restart → ready {r.ready:.2f} s, "
                  f"→ first clip {r.first_clip:.2f} s, → all delivered {r.all_delivered:.2f} s"
                  + ("" if r.ok else "  (NOT exactly once)"))  # fmt: skip
    first = [r.first_clip for r in results if r.first_clip == r.first_clip]  # NaN: no clip after the restart
    done = [r.all_delivered for r in results if r.all_delivered == r.all_delivered]
    if not first:
        print(f"{label}: no clip was posted after any restart")
        return
    print(f"{label}: restart → first clip median {statistics.median(first):.2f} s, max {max(first):.2f} s; "
          f"→ all {jobs} delivered median {statistics.median(done):.2f} s, max {max(done):.2f} s "
          f"({rounds} rounds)")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=6, help="jobs queued (one per member) before the kill")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL"),
                        help="PostgreSQL for the gateway + worker part (default: TEST_DATABASE_URL)")  # fmt: skip
    parser.add_argument("--lease-seconds", type=float, help="LEASE_SECONDS for the bot (default: the bot's)")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    lease = args.lease_seconds
    print(f"SIGKILL mid-job with {args.jobs} jobs queued, then restart (LEASE_SECONDS={lease or 'default'}):")
    if not args.skip_sqlite:
        print("SQLite, one `run` process:")
        await bench("SQLite", lambda d: SqliteDatabase(d / "bot.db"), rounds=args.rounds, jobs=args.jobs,
                    split=False, lease=lease)  # fmt: skip
    if args.database_url:
        print("PostgreSQL, `gateway` + `worker` (the worker is killed):")
        await bench("PostgreSQL", lambda d: PostgresDatabase(args.database_url), rounds=args.rounds,
                    jobs=args.jobs, split=True, lease=lease)  # fmt: skip
    else:
        print("PostgreSQL: skipped (set TEST_DATABASE_URL or pass --database-url)")


if __name__ == "__main__":
    asyncio.run(main())

"""Acknowledgement latency and Discord REST calls per job, through the loopback fake Discord.

    python bench/discord_ack.py [--commands 500] [--members 100] [--polls 20]

A burst of `/video` commands from many members arrives at once; the figure is the time from the fake
dispatching each INTERACTION_CREATE to the bot's callback reaching it (Discord allows 3 s). Jobs then run on
an instant in-process provider that reports progress `--polls` times, and every REST call the bot made for
them is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.domain import QuotaLimits
from bot.providers.registry import ProviderRegistry
from tests.discord_harness import running_bot
from tests.fakes.discord import GUILD_ID
from tests.fakes.scripted_provider import ScriptedProvider


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--polls", type=int, default=20, help="progress reports per job (a long job)")
    args = parser.parse_args()
    provider = ScriptedProvider(polls_to_finish=args.polls)
    with tempfile.TemporaryDirectory() as tmp:
        async with running_bot(Path(tmp), registry=ProviderRegistry([provider]), worker_concurrency=16) as h:
            await h.app.admin.set_default_quota(
                GUILD_ID, QuotaLimits(credits=10**6, max_queued=args.commands, max_running=args.commands)
            )
            assert h.app.worker is not None
            h.app.worker.poll_interval = 0.01
            users = [h.fake.add_user(f"member{i}").id for i in range(args.members)]
            before = len(h.fake.requests)
            started = time.perf_counter()
            records = await asyncio.gather(
                *(
                    h.fake.slash("video", {"prompt": f"burst {n}", "duration": 2}, user=users[n % args.members])
                    for n in range(args.commands)
                )
            )
            callbacks = await asyncio.gather(*(r.wait_callback(timeout=30) for r in records))
            acked = time.perf_counter() - started
            latencies = [cb.time - r.created_at for r, cb in zip(records, callbacks, strict=True)]
            refused = sum(1 for cb in callbacks if cb.ephemeral)

            async def all_done() -> bool:
                jobs = [j for u in users for j in await h.jobs_of(u)]
                return len(jobs) == args.commands - refused and all(j.state.is_terminal for j in jobs)

            while not await all_done():  # noqa: ASYNC110 (a benchmark's outer wait; jobs live in the store)
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # let the last coalesced status edits go out
            calls = h.fake.requests[before:]
    print(f"{args.commands} /video commands from {args.members} members at once ({refused} refused):")
    print(f"  acknowledgement latency: p50 {pct(latencies, .5) * 1000:.1f} ms, p99 {pct(latencies, .99) * 1000:.1f} ms,"
          f" max {max(latencies) * 1000:.1f} ms (all acknowledged within {acked:.2f} s)")  # fmt: skip
    jobs = args.commands - refused
    kinds: dict[str, int] = {}
    for call in calls:
        kind = call.method + " " + ("/interactions/…/callback" if "/interactions/" in call.path else
                                    "/webhooks/…/@original" if "@original" in call.path else
                                    "/webhooks/… (clip)" if "/webhooks/" in call.path else call.path)  # fmt: skip
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"  Discord REST calls per job ({args.polls} progress reports each): {len(calls) / jobs:.2f}")
    for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"    {kind}: {count / jobs:.2f} per job")


if __name__ == "__main__":
    asyncio.run(main())

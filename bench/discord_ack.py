"""Acknowledgement latency of a `/video` burst: our bot next to a bare discord.py bot, each its own process.

    python bench/discord_ack.py [--commands 500] [--members 100] [--rounds 1] [--prompt-chars 200] [--mode run]
    python bench/discord_ack.py --rest-calls [--commands 500] [--members 100] [--polls 20]

A burst of `/video prompt:` commands (200-character prompts) from many members arrives at once. The fake
Discord runs in its own process (`bench/fake_discord_server.py`), so the bot under test has its event loop to
itself; the figure is the time from the fake dispatching each INTERACTION_CREATE to the bot's callback reaching
it (Discord allows 3 s). Each round runs, against a fresh fake each:

- the floor: `bench/ack_bare_bot.py`, a bare discord.py bot whose `/video` only defers;
- our bot: `python -m bot run` with SQLite in a temporary DATA_DIR, the built-in offline renderer (jobs render
  in the bot's process as the burst is acknowledged, as they would for a new user), and a default quota raised
  so that nothing is refused (refusals are counted and shown if any happen). `--mode gateway` runs
  `python -m bot gateway` instead: the same front end without a worker.

Both get one warm-up command first (a process's first interaction pays for lazy imports), then the burst.
It prints p50/p99/max of both, the CPU time their event loops spent until the last callback arrived (steadier
than the latencies on a shared machine), and the ratio of the p99s; with `--rounds N`, the median ratio.

`--rest-calls` measures something else, in one process as before: every Discord REST call the bot makes for a
burst of jobs that each report progress `--polls` times, per job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.domain import QuotaLimits  # noqa: E402
from tests.fakes.discord import GUILD_ID  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, waves breaking below, gulls circling, slow cinematic pan, warm light. "


def prompt_of(chars: int) -> str:
    """A prompt of about `chars` characters, as members write them (each command gets a number in front)."""
    return (PROMPT * (chars // len(PROMPT) + 1))[:chars].strip()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Fake:
    """A fake Discord process and its addresses."""

    process: subprocess.Popen[str]
    info: dict[str, str]
    http: aiohttp.ClientSession

    @property
    def env(self) -> dict[str, str]:
        return {
            "DISCORD_TOKEN": self.info["token"],
            "DISCORD_API_BASE": self.info["api_base"],
            "DISCORD_GATEWAY_URL": self.info["gateway_url"],
        }

    async def get(self, path: str) -> Any:
        async with self.http.get(self.info["control"] + path) as response:
            response.raise_for_status()
            return await response.json()

    async def burst(
        self,
        count: int,
        members: int,
        timeout: float = 30.0,  # noqa: ASYNC109
        prompt: str = "burst",
    ) -> list[dict[str, Any]]:
        spec = {"command": "video", "options": {"prompt": prompt}, "count": count, "members": members,
                "timeout": timeout}  # fmt: skip
        async with self.http.post(self.info["control"] + "/burst", json=spec) as response:
            response.raise_for_status()
            results: list[dict[str, Any]] = (await response.json())["results"]
            return results

    async def wait_bot_ready(self, bot: subprocess.Popen[bytes], timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Connected, `/video` synced, and answering: one warm-up command acknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            if bot.poll() is not None:
                raise RuntimeError(f"the bot exited with {bot.returncode} before it was ready")
            state = await self.get("/state")
            if state["sessions"] and "video" in state["commands"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not connect: {state}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # GUILD_CREATE parsed (discord.py waits guild_ready_timeout for more)
        warm = await self.burst(1, 1, timeout=max(1.0, deadline - time.monotonic()))
        if warm[0]["latency"] is None:
            raise TimeoutError("the bot did not answer the warm-up command")


@contextlib.asynccontextmanager
async def fake_discord(members: int, *, callback_deadline: float = 3.0) -> AsyncIterator[Fake]:
    server = ROOT / "bench" / "fake_discord_server.py"
    argv = [sys.executable, str(server), "--members", str(members), "--callback-deadline", str(callback_deadline)]
    process = spawn(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = await asyncio.to_thread(process.stdout.readline)
        if not line:
            raise RuntimeError("the fake Discord did not start")
        async with aiohttp.ClientSession() as http:
            yield Fake(process, json.loads(line), http)
    finally:
        stop(process)


def spawn(argv: list[str], **options: Any) -> subprocess.Popen[Any]:
    """Start a process, from the project's root unless `cwd` says otherwise (starting one does not wait)."""
    return subprocess.Popen(argv, **({"cwd": ROOT} | options))


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def prepare_database(tmp: Path, commands: int) -> dict[str, str]:
    """A fresh SQLite database whose default quota refuses nothing in the burst; the bot's environment."""
    from bot.store import open_store

    env = {
        "DATABASE_URL": f"sqlite:///{tmp / 'bot.db'}",
        "DATA_DIR": str(tmp / "data"),
        "DEFAULT_MODEL": "local/preview",
        "LOG_LEVEL": "INFO",
    }
    store = await open_store(env["DATABASE_URL"])
    try:
        limits = QuotaLimits(credits=10**6, max_queued=commands, max_running=commands)
        await store.update_policy(GUILD_ID, "default", 0, limits)
    finally:
        await store.close()
    return env


BARE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
"""All a bot process inherits: a developer's provider keys or `DISCORD_*` must not reach a benchmark's bot."""


@contextlib.asynccontextmanager
async def bot_process(argv: list[str], env: dict[str, str], log_path: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The bot runs in the log's folder, a temporary one: no `.env` of the project's is read."""
    inherited = {name: os.environ[name] for name in BARE_ENV if name in os.environ}
    with log_path.open("wb") as log:
        process = spawn(argv, env=inherited | env, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
        try:
            yield process
        finally:
            stop(process)


@dataclass
class Burst:
    results: list[dict[str, Any]]
    cpu: float
    """CPU seconds the bot's event loop used from the burst's start to its last callback: unlike the
    latencies, it hardly moves when other processes load the machine."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process's main thread, the one running the event loop (Linux `/proc`):
    threads (SQLite's, renders, encoders) are left out, they delay an acknowledgement only by competing."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(kind: str, args: argparse.Namespace, tmp: Path) -> Burst:
    """One fresh fake, one bot process of `kind` ("bare" or "ours"), one warm-up, one burst."""
    async with fake_discord(args.members) as fake:
        env = fake.env | {"PYTHONPATH": str(ROOT)}
        if kind == "bare":
            argv = [sys.executable, str(ROOT / "bench" / "ack_bare_bot.py")]
        else:
            env |= await prepare_database(tmp, args.commands)
            argv = [sys.executable, "-m", "bot", args.mode]
        logs = Path(args.logs) if args.logs else tmp
        async with bot_process(argv, env, logs / f"{kind}.log") as bot:
            await fake.wait_bot_ready(bot)
            before = cpu_seconds(bot.pid)
            results = await fake.burst(args.commands, args.members, prompt=prompt_of(args.prompt_chars))
            return Burst(results, cpu_seconds(bot.pid) - before)


def summary(name: str, burst: Burst) -> tuple[float, str]:
    results = burst.results
    latencies = [r["latency"] for r in results if r["latency"] is not None]
    missing = len(results) - len(latencies)
    late = sum(1 for r in results if r["latency"] is not None and not r["accepted"])
    refused = sum(1 for r in results if r["ephemeral"])
    p99 = pct(latencies, 0.99)
    notes = ", ".join(f"{n} {what}" for n, what in ((refused, "refused"), (late, "late"), (missing, "unanswered")) if n)
    line = (f"  {name:<32} p50 {pct(latencies, .5) * 1000:6.1f} ms   p99 {p99 * 1000:6.1f} ms"
            f"   max {max(latencies) * 1000:6.1f} ms   loop cpu {burst.cpu:5.2f} s"
            + (f"   ({notes})" if notes else ""))  # fmt: skip
    reasons = sorted({r["said"] for r in results if r["said"]})
    if reasons:
        line += "\n    refused with: " + " | ".join(reasons[:3])
    return p99, line


async def compare(args: argparse.Namespace) -> None:
    print(f"{args.commands} /video commands from {args.members} members at once, fake Discord in its own process:")
    ratios: list[float] = []
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            bare = await measure("bare", args, Path(tmp))
            ours = await measure("ours", args, Path(tmp))
        bare_p99, bare_line = summary("bare discord.py (defer only)", bare)
        ours_p99, ours_line = summary(f"our bot (python -m bot {args.mode})", ours)
        ratios.append(ours_p99 / bare_p99)
        if args.rounds > 1:
            print(f" round {round_no + 1}:")
        print(bare_line)
        print(ours_line)
        print(f"  p99 ratio (ours / bare): {ratios[-1]:.2f}x")
    if args.rounds > 1:
        print(f"median p99 ratio over {args.rounds} rounds: {statistics.median(ratios):.2f}x"
              f" (from {min(ratios):.2f}x to {max(ratios):.2f}x)")  # fmt: skip


async def rest_calls(args: argparse.Namespace) -> None:
    """Every Discord REST call the bot made for a burst of long jobs, per job (in one process)."""
    from bot.providers.registry import ProviderRegistry
    from tests.discord_harness import running_bot
    from tests.fakes.scripted_provider import ScriptedProvider

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
            records = await asyncio.gather(
                *(
                    h.fake.slash("video", {"prompt": f"burst {n}", "duration": 2}, user=users[n % args.members])
                    for n in range(args.commands)
                )
            )
            callbacks = await asyncio.gather(*(r.wait_callback(timeout=30) for r in records))
            refused = sum(1 for cb in callbacks if cb.ephemeral)

            async def all_done() -> bool:
                jobs = [j for u in users for j in await h.jobs_of(u)]
                return len(jobs) == args.commands - refused and all(j.state.is_terminal for j in jobs)

            while not await all_done():  # noqa: ASYNC110 (a benchmark's outer wait; jobs live in the store)
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # let the last coalesced status edits go out
            calls = h.fake.requests[before:]
    jobs = args.commands - refused
    kinds: dict[str, int] = {}
    for call in calls:
        kind = call.method + " " + ("/interactions/…/callback" if "/interactions/" in call.path else
                                    "/webhooks/…/@original" if "@original" in call.path else
                                    "/webhooks/… (clip)" if "/webhooks/" in call.path else call.path)  # fmt: skip
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{args.commands} /video commands from {args.members} members ({refused} refused):")
    print(f"  Discord REST calls per job ({args.polls} progress reports each): {len(calls) / jobs:.2f}")
    for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"    {kind}: {count / jobs:.2f} per job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1, help="bare-then-ours pairs to run")
    parser.add_argument("--prompt-chars", type=int, default=200, help="length of each command's prompt")
    parser.add_argument(
        "--mode",
        choices=("run", "gateway"),
        default="run",
        help="our bot as `python -m bot run` (renders in-process) or `gateway` (no worker)",
    )
    parser.add_argument("--logs", help="keep each bot's output in this folder (default: a temporary one)")
    parser.add_argument("--rest-calls", action="store_true", help="count REST calls per job instead")
    parser.add_argument("--polls", type=int, default=20, help="with --rest-calls: progress reports per job")
    args = parser.parse_args()
    asyncio.run(rest_calls(args) if args.rest_calls else compare(args))


if __name__ == "__main__":
    main()

"""Where the bot's event loop spends a `/video` burst: cProfile over INTERACTION_CREATE → acknowledgement.

    python bench/profile_ack.py [--commands 500] [--members 100] [--bot ours|bare] [--prompt-chars 200]
                                [--top 30] [-o /tmp/ack.prof]
    python -m pstats /tmp/ack.prof      # then e.g. `sort tottime`, `stats 30`, `callers text.py`

Same set-up as `bench/discord_ack.py` (the fake Discord in its own process, the bot in another: `python -m bot
run` with SQLite and the offline renderer, or with `--bot bare` the defer-only discord.py bot), but the bot runs
under a small wrapper that turns cProfile on when the burst starts (SIGUSR1) and off when the last callback has
arrived (SIGUSR2), so start-up and the jobs' later life stay out of the figures. The fake gives the bot 600 s to
acknowledge instead of 3: a profiled bot is slower, and late callbacks' error paths would fill the profile.

Only the event loop's thread is profiled: the thread every acknowledgement waits for (SQLite runs on its own
thread, renders on theirs, and they show only as the loop's CPU they take). It prints the time the loop spent
in garbage collection, the top functions by own time and by cumulative time, and writes the raw stats to `-o`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from discord_ack import (  # noqa: E402
    Burst,
    bot_process,
    cpu_seconds,
    fake_discord,
    prepare_database,
    prompt_of,
    summary,
)


class GcTimer:
    """Time the event loop's thread spent in garbage collection (cProfile does not show it as such)."""

    def __init__(self) -> None:
        self.on = False
        self.started = 0.0
        self.seconds = 0.0
        self.runs: dict[int, int] = {}
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self.started
            self.runs[info["generation"]] = self.runs.get(info["generation"], 0) + 1


def child(out: str, argv: list[str]) -> None:
    """Run the bot with a profiler that the parent switches with SIGUSR1 (on) and SIGUSR2 (off, write)."""
    profiler = cProfile.Profile()
    collections = GcTimer()

    def start(*_: object) -> None:
        collections.on = True
        profiler.enable()

    def write(*_: object) -> None:
        profiler.disable()
        collections.on = False
        profiler.dump_stats(out + ".tmp")
        runs = ", ".join(f"{n} of generation {g}" for g, n in sorted(collections.runs.items()))
        Path(out + ".gc").write_text(f"garbage collection: {collections.seconds * 1000:.1f} ms ({runs or 'none'})")
        os.replace(out + ".tmp", out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, write)
    if argv[0] == "bare":
        import runpy

        runpy.run_path(str(HERE / "ack_bare_bot.py"), run_name="__main__")
    else:
        from bot.cli.main import main

        sys.exit(main(["run"]))


async def profile(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.output).resolve()
        gc_line = Path(str(out) + ".gc")
        out.unlink(missing_ok=True)
        gc_line.unlink(missing_ok=True)
        # A profiled bot is slower: a late callback would be refused and its error path would fill the profile.
        async with fake_discord(args.members, callback_deadline=600) as fake:
            env = fake.env | {"PYTHONPATH": str(HERE.parent)}
            if args.bot == "ours":
                env |= await prepare_database(Path(tmp), args.commands)
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", str(out), args.bot]
            async with bot_process(argv, env, Path(tmp) / "bot.log") as bot:
                await fake.wait_bot_ready(bot)
                before = cpu_seconds(bot.pid)
                os.kill(bot.pid, signal.SIGUSR1)
                results = await fake.burst(args.commands, args.members, prompt=prompt_of(args.prompt_chars))
                os.kill(bot.pid, signal.SIGUSR2)
                burst = Burst(results, cpu_seconds(bot.pid) - before)
                for _ in range(100):  # written whole, then renamed
                    if out.exists():
                        break
                    await asyncio.sleep(0.1)
    print(f"{args.commands} /video commands from {args.members} members, {args.bot} bot under cProfile:")
    print(summary(args.bot, burst)[1])
    if gc_line.exists():
        print("  " + gc_line.read_text())
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--bot", choices=("ours", "bare"), default="ours")
    parser.add_argument("--prompt-chars", type=int, default=200, help="length of each command's prompt")
    parser.add_argument("--top", type=int, default=30, help="functions to list in each table")
    default_output = str(Path(tempfile.gettempdir()) / "ack.prof")
    parser.add_argument("-o", "--output", default=default_output, help="where to write the raw stats")
    asyncio.run(profile(parser.parse_args()))


if __name__ == "__main__":
    main()

"""`python -m bot generate`: one job through the real engine (store, quotas, worker, provider), no Discord.

It uses a throwaway in-memory database so a terminal run never touches the bot's queue or quotas.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from bot.clock import SystemClock
from bot.config import Settings
from bot.discord.messages import ENGLISH, reason_text
from bot.domain import Job, JobState, QuotaLimits, Requester, VideoRequest
from bot.errors import BadOption, ModelNotConfigured
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers import build_registry
from bot.store import open_store

CLI_MEMBER = Requester(guild_id=0, user_id=0)


class ProgressBar:
    """One line on stderr, redrawn in place: state, a bar, percent, seconds elapsed."""

    def __init__(self, width: int = 30) -> None:
        self.width = width
        self.started = time.monotonic()
        self.interactive = sys.stderr.isatty()
        self._last = ""

    def update(self, job: Job) -> None:
        filled = int(self.width * job.progress)
        line = (
            f"{job.state.value:<11} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{job.progress * 100:5.1f}%  {time.monotonic() - self.started:5.1f}s"
        )
        if line[:-7] == self._last[:-7]:
            return
        self._last = line
        if self.interactive:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif job.state is not JobState.RUNNING or filled % 5 == 0:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.interactive:
            print(file=sys.stderr)


async def generate(settings: Settings, args: argparse.Namespace) -> int:
    registry = build_registry(settings)
    await registry.start()
    output = Path(args.output).resolve()
    model_id = args.model or registry.default_model
    model = registry.model(model_id)
    if model is None:
        raise ModelNotConfigured(model_id, tuple(m.id for m in registry.models()))
    try:
        request = VideoRequest(
            prompt=args.prompt,
            model=model_id,
            duration=args.duration or model.default_duration,
            aspect=args.aspect,
            seed=args.seed,
            negative_prompt=args.negative_prompt,
            image_path=str(Path(args.image).resolve()) if args.image else None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        option = str(first["loc"][0]) if first["loc"] else "request"
        raise BadOption(option, problem=first["type"], message=first["msg"]) from None

    clock = SystemClock()
    store = await open_store("sqlite:///:memory:")
    bar = ProgressBar()
    sink = FileSink(output, on_update=bar.update)
    try:
        service = JobService(store, registry, clock)
        await store.update_policy(0, "user", 0, QuotaLimits(unlimited=True, max_queued=1))
        job = await service.enqueue(CLI_MEMBER, request)
        worker = Worker(
            store, registry, sink, clock, staging_dir=settings.data_dir / "staging", concurrency=1, poll_interval=0.25
        )
        worker.transitions.subscribe(sink.on_transition)
        await worker.drain()
        bar.close()
        final = await service.get(job.id)
    finally:
        await store.close()
        await registry.aclose()
    if final.state is not JobState.DELIVERED:
        print(f"videobot: {final.state.value}: {reason_text(final.error, ENGLISH)}", file=sys.stderr)
        return 1
    print(f"wrote {output} ({model.label}, {request.duration}s {request.aspect}, {output.stat().st_size:,} bytes)")
    return 0

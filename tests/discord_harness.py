"""The whole bot (real discord.py client, real SQLite, real worker and renderer) against the loopback fake
Discord. `async with running_bot(tmp_path) as h:` gives the fake, the bot and its services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.cli.run import App, build_app, make_bot
from bot.clock import OffsetClock
from bot.config import Settings
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.fakes.discord import ALICE_ID, GUILD_ID, FakeDiscord, use_fake_discord


@dataclass
class Harness:
    fake: FakeDiscord
    bot: Any
    app: App
    clock: OffsetClock
    settings: Settings

    @property
    def store(self) -> Store:
        return self.app.store

    async def wait_job_state(self, job_id: str, *states: str, timeout: float = 20.0) -> Any:  # noqa: ASYNC109
        """Wait until the job reaches one of `states` (polling the store; the fake's condition wakes us)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.store.get_job(job_id)
            if job is not None and job.state.value in states:
                return job
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"job {job_id} is {job.state if job else None}, wanted {states}")
            await asyncio.sleep(0.02)

    async def jobs_of(self, user_id: int = ALICE_ID) -> list[Any]:
        return await self.store.member_jobs(GUILD_ID, user_id, include_finished=True)

    async def wait_for_job(self, user_id: int = ALICE_ID, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """The member's one job, once the (possibly deferred) command has queued it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (jobs := await self.jobs_of(user_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("no job was queued")
            await asyncio.sleep(0.02)
        assert len(jobs) == 1, jobs
        return jobs[0]

    async def only_job(self, user_id: int = ALICE_ID) -> Any:
        jobs = await self.jobs_of(user_id)
        assert len(jobs) == 1, jobs
        return jobs[0]


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path,
    *,
    registry: ProviderRegistry | None = None,
    with_worker: bool = True,
    database_url: str | None = None,
    clock: OffsetClock | None = None,
    fake: FakeDiscord | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    clock = clock or OffsetClock()
    own_fake = fake is None
    fake = fake or FakeDiscord(clock=clock)
    if own_fake:
        await fake.start()
    config = Settings(
        _env_file=None,  # type: ignore[call-arg]
        discord_token=fake.token,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        database_url=database_url or f"sqlite:///{tmp_path / 'bot.db'}",
        data_dir=tmp_path / "data",
        **settings,
    )
    app = await build_app(config, with_worker=with_worker, clock=clock, registry=registry)
    app.delivery.tick = 0.05
    if app.worker is not None:
        app.worker.idle_interval = 0.05
        app.worker.poll_interval = 0.05
    with use_fake_discord(fake):
        bot = make_bot(app, guild_ready_timeout=0.1)
        runner = asyncio.create_task(bot.start(fake.token))
        try:
            ready = asyncio.create_task(bot.wait_until_ready())
            await asyncio.wait({ready, runner}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()  # the bot failed to start: raise why
            if not ready.done():
                raise TimeoutError("the bot did not become ready against the fake Discord")
            yield Harness(fake, bot, app, clock, config)
        finally:
            await bot.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(runner, timeout=5)
            await app.aclose()
            if own_fake:
                await fake.close()

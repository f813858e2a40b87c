"""The loops a bot process runs besides Discord's own: the worker, status edits and the staging sweep.

Shared by the gateway client and the REST-only worker process so both start and stop them the same way: on
start, status messages left behind by a crash are brought up to date and stranded files swept; on stop, the
worker gets its grace period to finish posts in flight before anything else is torn down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from bot.clock import Clock
from bot.discord.delivery import DiscordDelivery
from bot.jobs.staging import StagingDirs, sweep
from bot.jobs.worker import Worker
from bot.store.base import Store

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 3600.0
STOP_MARGIN = 10.0
"""Seconds beyond the worker's own grace period that stopping waits for it."""


class BackgroundLoops:
    def __init__(
        self, store: Store, delivery: DiscordDelivery, worker: Worker | None, data_dir: Path, clock: Clock
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.worker = worker
        self.dirs = StagingDirs(data_dir)
        self.clock = clock
        self._worker_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        try:
            await self.delivery.refresh_stale_statuses()
        except Exception:
            log.exception("could not look for status messages left behind; carrying on")
        self._tasks.append(asyncio.create_task(self.delivery.run_status_updates(), name="status-updates"))
        self._tasks.append(asyncio.create_task(self._sweep_forever(), name="staging-sweep"))
        if self.worker is not None:
            self._worker_task = asyncio.create_task(self.worker.run(), name="worker")

    async def stop(self) -> None:
        """Stop the worker gracefully (posts in flight finish, jobs are handed back), push the last status
        edits, then end the other loops."""
        if self.worker is not None and self._worker_task is not None:
            await self.worker.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self._worker_task), self.worker.shutdown_grace + STOP_MARGIN)
            except TimeoutError:
                log.warning("the worker did not stop in time; cancelling it")
                self._worker_task.cancel()
            except Exception:
                log.exception("the worker ended with an error")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.delivery.flush_status(final=True), STOP_MARGIN)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *(t for t in [self._worker_task] if t), return_exceptions=True)
        await self.delivery.aclose()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await sweep(self.store, self.dirs)
            except Exception:
                log.exception("staging sweep failed; next one in an hour")
            await self.clock.sleep(SWEEP_INTERVAL)

"""The engine's only window to the outside: status changes and finished clips.

The Discord layer implements `Delivery` (status message edits, posting the clip); the `generate` command and
the tests use `FileSink`. A crash between posting and recording the post leaves the job's post unknown: the
worker records its intent before each post, and after one that may have gone through it asks `find_post`
before posting again.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bot.domain import Job


class Delivery(Protocol):
    async def job_updated(self, job: Job) -> None:
        """The job changed state or progress. Called often; implementations coalesce."""
        ...

    async def deliver(self, job: Job, clip: Path) -> int | None:
        """Hand the finished clip over; return an id for the delivery (a message id) if there is one.
        Raise `DeliveryError` when it cannot be delivered."""
        ...

    async def find_post(self, job: Job) -> int | None:
        """The id of the clip post an earlier attempt made for this job, if there is one. None when there is
        none, and also when there is no way to look: the clip is then posted again (a possible duplicate
        rather than a paid clip never shown). Raise a retryable `DeliveryError` to look again later."""
        ...


class FileSink:
    """Delivers clips by copying them into a folder (or to one fixed path), for the CLI and tests."""

    def __init__(self, target: Path, *, on_update: Callable[[Job], None] | None = None) -> None:
        self.target = target
        self.delivered: dict[str, Path] = {}
        self.updates: list[tuple[str, str, float]] = []
        self._on_update = on_update

    async def job_updated(self, job: Job) -> None:
        self.updates.append((job.id, job.state.value, job.progress))
        if self._on_update is not None:
            self._on_update(job)

    async def deliver(self, job: Job, clip: Path) -> int | None:
        dest = self.target / f"{job.id}.mp4" if self.target.is_dir() else self.target
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        shutil.copyfile(clip, partial)
        os.replace(partial, dest)  # whole or absent, and a repeat just overwrites
        self.delivered[job.id] = dest
        return None

    async def find_post(self, job: Job) -> int | None:
        return None  # a repeat overwrites the same file: nothing to find, nothing to double

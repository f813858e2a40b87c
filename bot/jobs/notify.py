"""The engine's windows to the outside: committed job changes (`Transitions`) and finished clips (`Delivery`).

Every committed change of a job (a worker's step, its end, a member's cancel, an admin's clear, a progress
report) is announced once, after the commit, to the subscribers of `Transitions`: the Discord status messages,
the metrics (`bot.metrics`), the audit trail next. Nothing else pushes job updates, and each move of a state
is logged here, once, in one line.

The Discord layer implements `Delivery` (posting the clip); the `generate` command and the tests use
`FileSink`. A crash between posting and recording the post leaves the job's post unknown: the worker records
its intent before each post, and after one that may have gone through it asks `find_post` before posting again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.domain import Job, JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobTransition:
    """A committed change of a job: `job` as it is now, `old_state` the state it left. A change within a state
    (a progress report, the recorded intent to post, a cancel flagged for the worker, a takeover) comes with
    `old_state == job.state`: `moved` tells the two apart."""

    job: Job
    old_state: JobState

    @property
    def moved(self) -> bool:
        return self.job.state is not self.old_state


OnTransition = Callable[[JobTransition], Awaitable[None]]


class Transitions:
    """Subscribers to committed job changes, called in the order they subscribed. A subscriber that fails is
    logged and skipped: what watches a job never stops the job."""

    def __init__(self) -> None:
        self._subscribers: list[OnTransition] = []

    def subscribe(self, subscriber: OnTransition) -> None:
        self._subscribers.append(subscriber)

    async def fire(self, job: Job, old_state: JobState) -> None:
        event = JobTransition(job, old_state)
        if event.moved:
            log_move(event)
        for subscriber in self._subscribers:
            try:
                await subscriber(event)
            except Exception:
                log.exception("job %s: a subscriber to %s → %s failed", job.id, old_state.value, job.state.value)


def log_move(event: JobTransition) -> None:
    """The one log line of a job's move, whoever committed it (a worker's step or end, a member's cancel, an
    admin's clear). Its fields also go as `extra`, for LOG_FORMAT=json."""
    job = event.job
    fields = {
        "job_id": job.id, "guild_id": job.guild_id, "user_id": job.user_id, "model": job.model,
        "from_state": event.old_state.value, "state": job.state.value,
    }  # fmt: skip
    reason = f": {job.error}" if job.state.is_terminal and job.error else ""
    log.info("job %s: %s → %s (guild %s, member %s, %s)%s", job.id, event.old_state.value, job.state.value,
             job.guild_id, job.user_id, job.model, reason, extra=fields)  # fmt: skip


class Delivery(Protocol):
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
    """Delivers clips by copying them into a folder (or to one fixed path), for the CLI and tests. Subscribe
    `on_transition` to see the job's updates (`updates`, and `on_update` for a progress bar)."""

    def __init__(self, target: Path, *, on_update: Callable[[Job], None] | None = None) -> None:
        self.target = target
        self.delivered: dict[str, Path] = {}
        self.updates: list[tuple[str, str, float]] = []
        self._on_update = on_update

    async def on_transition(self, event: JobTransition) -> None:
        job = event.job
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

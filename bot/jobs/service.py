"""What members do with jobs: enqueue (validated, quota-checked, credits reserved in one transaction),
cancel, and look at the queue and their quota. Knows nothing of Discord."""

from __future__ import annotations

import logging
import statistics
import uuid
from collections.abc import Awaitable, Callable

from bot.clock import Clock
from bot.domain import (
    GuildSettings,
    InteractionRef,
    Job,
    JobState,
    ModelInfo,
    QueueEntry,
    Requester,
    Usage,
    VideoRequest,
)
from bot.errors import InvalidRequest, JobNotFound, NotAllowed
from bot.jobs.quotas import check_admission, resolve_policy, window_bounds
from bot.jobs.staging import StagingDirs, discard_input
from bot.providers.registry import ProviderRegistry
from bot.store.base import Admission, Store

log = logging.getLogger(__name__)

DEFAULT_JOB_SECONDS = 30.0
"""ETA guess for a model with no finished jobs yet."""
SETTINGS_TTL = 5.0
"""How long a server's settings are reused before being read again. Admin changes made in this process apply at
once; another process sees them within this time. (Pause and blocks are read inside the enqueue transaction.)"""
ETA_TTL = 10.0


class JobService:
    def __init__(
        self,
        store: Store,
        registry: ProviderRegistry,
        clock: Clock,
        *,
        on_enqueue: Callable[[], None] | None = None,
        on_change: Callable[[Job], Awaitable[None]] | None = None,
        staging: StagingDirs | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self._on_enqueue = on_enqueue
        self.on_change = on_change
        """Told of jobs that ended here rather than in a worker (cancelled while queued), for their status."""
        self.staging = staging
        self._settings: dict[int, tuple[float, GuildSettings]] = {}
        self._job_seconds: dict[str, tuple[float, float]] = {}

    async def guild_settings(self, guild_id: int) -> GuildSettings:
        """Settings read on every /video, kept briefly so a burst of commands does not re-read them each time."""
        now = self.clock.now()
        cached = self._settings.get(guild_id)
        if cached is not None and now - cached[0] < SETTINGS_TTL:
            return cached[1]
        settings = await self.store.guild_settings(guild_id)
        self._settings[guild_id] = (now, settings)
        return settings

    def forget_settings(self, guild_id: int) -> None:
        self._settings.pop(guild_id, None)

    # --- validation -----------------------------------------------------------------------------------
    async def enabled_models(self, guild_id: int) -> list[ModelInfo]:
        settings = await self.guild_settings(guild_id)
        return [m for m in self.registry.models() if m.id not in settings.disabled_models]

    async def default_model(self, guild_id: int) -> str:
        settings = await self.guild_settings(guild_id)
        return settings.default_model or self.registry.default_model

    async def validate(self, guild_id: int, request: VideoRequest) -> ModelInfo:
        """Check a request against the model's capabilities and the server's enabled models."""
        model = self.registry.model(request.model)
        if model is None:
            raise InvalidRequest(f"Unknown model `{request.model}`. Pick one from the list (`/video model:`).")
        settings = await self.guild_settings(guild_id)
        if model.id in settings.disabled_models:
            raise InvalidRequest(f"The model `{model.id}` is disabled on this server.")
        if request.duration not in model.durations:
            allowed = _describe_durations(model.durations)
            raise InvalidRequest(f"`{model.id}` makes videos of {allowed} seconds, not {request.duration}.")
        if request.aspect not in model.aspects:
            raise InvalidRequest(f"`{model.id}` supports the aspect ratios {', '.join(model.aspects)}.")
        if request.image_path is not None and not model.supports_image:
            raise InvalidRequest(f"`{model.id}` cannot start from an image; choose another model or drop the image.")
        if request.seed is not None and not model.supports_seed:
            raise InvalidRequest(f"`{model.id}` does not take a seed; leave `seed` empty.")
        if request.negative_prompt and not model.supports_negative_prompt:
            raise InvalidRequest(f"`{model.id}` does not take a negative prompt; leave it empty.")
        return model

    # --- enqueue / cancel -----------------------------------------------------------------------------
    async def enqueue(self, who: Requester, request: VideoRequest, *, interaction: InteractionRef | None = None) -> Job:
        model = await self.validate(who.guild_id, request)
        now = self.clock.now()
        policy = resolve_policy(await self.store.policy_layers(who.guild_id, who.user_id, who.role_ids))
        window = window_bounds(policy.period, now)
        cost = model.credits_for(request.duration)

        def admit(standing: Admission) -> None:
            check_admission(policy, cost, standing, resets_at=window[1])

        job = Job(
            id=uuid.uuid4().hex,
            guild_id=who.guild_id,
            user_id=who.user_id,
            channel_id=who.channel_id,
            request=request,
            credits=cost,
            state=JobState.QUEUED,
            created_at=now,
            updated_at=now,
            interaction=interaction,
        )
        job = await self.store.insert_job(job, max_running=policy.max_running, window=window, admit=admit)
        log.info("job %s: queued %s %ss for %s/%s (%d credits)", job.id, model.id, request.duration,
                 who.guild_id, who.user_id, cost)  # fmt: skip
        if self._on_enqueue is not None:
            self._on_enqueue()
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFound("That video job no longer exists.")
        return job

    async def cancel(self, job_id: str, *, by_user: int, is_admin: bool = False) -> Job:
        """Cancel at any stage: a queued job at once, a running one through its worker (which asks the
        provider to stop). Credits come back either way."""
        job = await self.get(job_id)
        if job.user_id != by_user and not is_admin:
            raise NotAllowed("Only the member who asked for this video (or an admin) can cancel it.")
        if job.state.is_terminal:
            raise InvalidRequest(f"This video is already {job.state.value}; there is nothing to cancel.")
        return await self._cancel(job_id)

    async def abandon(self, job_id: str) -> Job:
        """Cancel a job the member was never told about (answering them failed): nobody waits for it, so it
        must neither run nor cost anything."""
        log.warning("job %s: the member could not be answered; cancelling it", job_id)
        return await self._cancel(job_id)

    async def cancel_queued(self, guild_id: int) -> list[Job]:
        """Cancel and refund every queued job of a server."""
        cancelled = await self.store.cancel_queued(guild_id, now=self.clock.now())
        await self._ended(cancelled)
        return cancelled

    async def _cancel(self, job_id: str) -> Job:
        job = await self.store.request_cancel(job_id, now=self.clock.now())
        if job.state.is_terminal:  # was queued: no worker will see it, so its input and status are ours
            await self._ended([job])
        return job

    async def _ended(self, jobs: list[Job]) -> None:
        for job in jobs:
            if self.staging is not None:
                discard_input(job.request.image_path, self.staging)
            if self.on_change is not None:
                try:
                    await self.on_change(job)
                except Exception:
                    log.exception("job %s: could not report its end", job.id)

    # --- views ----------------------------------------------------------------------------------------
    async def queue_entries(self, guild_id: int, user_id: int) -> list[QueueEntry]:
        jobs = await self.store.member_jobs(guild_id, user_id)
        return [await self.entry(job) for job in jobs]

    async def entry(self, job: Job) -> QueueEntry:
        if job.state is not JobState.QUEUED:
            return QueueEntry(job=job, position=None, eta=None)
        position = (await self.store.queue_positions([job.id])).get(job.id)
        return QueueEntry(job=job, position=position, eta=await self.eta(job, position))

    async def eta(self, job: Job, position: int | None) -> float | None:
        """When the job should be done: the jobs ahead of it spread over the running slots, each taking the
        model's recent median duration, then its own run."""
        if position is None:
            return None
        per_job = await self._typical_seconds(job.model)
        slots = max(1, self.registry.concurrency_limits().get(job.provider, 1))
        rounds = (position - 1) // slots + 1
        return self.clock.now() + rounds * per_job + per_job

    async def _typical_seconds(self, model: str) -> float:
        now = self.clock.now()
        cached = self._job_seconds.get(model)
        if cached is None or now - cached[0] >= ETA_TTL:
            durations = await self.store.recent_durations(model)
            cached = self._job_seconds[model] = (
                now,
                statistics.median(durations) if durations else DEFAULT_JOB_SECONDS,
            )
        return cached[1]

    async def usage(self, who: Requester) -> Usage:
        policy = resolve_policy(await self.store.policy_layers(who.guild_id, who.user_id, who.role_ids))
        window = window_bounds(policy.period, self.clock.now())
        standing = await self.store.admission(who.guild_id, who.user_id, window)
        return Usage(
            policy=policy,
            window_start=window[0],
            window_end=window[1],
            used=standing.charged - standing.reserved,
            reserved=standing.reserved,
            granted=standing.granted,
            queued=standing.queued,
            running=standing.running,
        )


def _describe_durations(durations: tuple[int, ...]) -> str:
    if len(durations) > 3 and list(durations) == list(range(durations[0], durations[-1] + 1)):
        return f"{durations[0]} to {durations[-1]}"
    return (
        ", ".join(str(d) for d in durations[:-1]) + f" or {durations[-1]}" if len(durations) > 1 else str(durations[0])
    )

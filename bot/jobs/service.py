"""What members do with jobs: enqueue (validated, quota-checked, credits reserved in one transaction),
cancel, and look at the queue and their quota. Knows nothing of Discord."""

from __future__ import annotations

import asyncio
import io
import logging
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from bot.clock import Clock
from bot.domain import (
    AuditDraft,
    GuildSettings,
    Job,
    JobState,
    ModelInfo,
    QueueEntry,
    Requester,
    Route,
    Usage,
    VideoRequest,
)
from bot.errors import (
    AlreadyEnded,
    AspectNotOffered,
    DurationNotOffered,
    ImageNotOffered,
    ImageRequired,
    InvalidRequest,
    JobNotFound,
    ModelDisabled,
    NegativePromptNotOffered,
    NoImageModel,
    NotRequester,
    SeedNotOffered,
    StoreError,
    UnknownModel,
    UserError,
)
from bot.images import check_image
from bot.jobs.balances import VendorBalances
from bot.jobs.moderation import check_channel, check_request
from bot.jobs.notify import Transitions
from bot.jobs.quotas import check_admission, check_budget, resolve_policy, window_bounds
from bot.jobs.refusals import count_refusal
from bot.jobs.staging import StagingDirs, discard_input, discard_stored_input, new_input_ref
from bot.providers.registry import ProviderRegistry
from bot.store.base import Admission, ServiceStore

log = logging.getLogger(__name__)

DEFAULT_JOB_SECONDS = 30.0
"""ETA guess for a model with no finished jobs yet."""
SETTINGS_TTL = 5.0
"""How long a server's settings are reused before being read again. Admin changes made in this process apply at
once; another process sees them within this time. (Pause and blocks are read inside the enqueue transaction.)"""
ETA_TTL = 10.0


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a request runs: the request on its model (an alias replaced by the model chosen), that model, and
    for an alias the route of fallbacks."""

    request: VideoRequest
    model: ModelInfo
    route: Route | None


@dataclass(frozen=True, slots=True)
class QueueView:
    """The member's unfinished jobs, and how many jobs wait on the server."""

    entries: list[QueueEntry]
    depth: int


class JobService:
    def __init__(
        self,
        store: ServiceStore,
        registry: ProviderRegistry,
        clock: Clock,
        *,
        on_enqueue: Callable[[], None] | None = None,
        transitions: Transitions | None = None,
        staging: StagingDirs | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.balances = VendorBalances(registry, clock)
        """The vendors' account balances, asked at most every ten minutes (for the server's stats)."""
        self.clock = clock
        self._on_enqueue = on_enqueue
        self.transitions = transitions or Transitions()
        """Told of the changes committed here rather than in a worker: cancels (a queued job ends at once, an
        active one is flagged for its worker) and cleared queues."""
        self.staging = staging
        self._settings: dict[int, tuple[float, GuildSettings]] = {}
        self._settings_reads: dict[int, asyncio.Future[GuildSettings]] = {}
        self._job_seconds: dict[str, tuple[float, float]] = {}

    async def guild_settings(self, guild_id: int) -> GuildSettings:
        """Settings read on every request, kept briefly so a burst of commands does not re-read them each time;
        the requests that miss the cache together share one read."""
        now = self.clock.now()
        cached = self._settings.get(guild_id)
        if cached is not None and now - cached[0] < SETTINGS_TTL:
            return cached[1]
        reading = self._settings_reads.get(guild_id)
        if reading is None:
            reading = self._settings_reads[guild_id] = asyncio.ensure_future(self._read_settings(guild_id, now))
        return await asyncio.shield(reading)  # one waiter cancelled must not cancel the others' read

    async def _read_settings(self, guild_id: int, now: float) -> GuildSettings:
        try:
            settings = await self.store.guild_settings(guild_id)
        finally:
            # Kept only if no admin change forgot this read while it ran (it may predate the change).
            current = self._settings_reads.get(guild_id) is asyncio.current_task()
            if current:
                del self._settings_reads[guild_id]
        if current:
            self._settings[guild_id] = (now, settings)
        return settings

    def forget_settings(self, guild_id: int) -> None:
        self._settings.pop(guild_id, None)
        self._settings_reads.pop(guild_id, None)

    # --- validation -----------------------------------------------------------------------------------
    async def enabled_models(self, guild_id: int) -> list[ModelInfo]:
        settings = await self.guild_settings(guild_id)
        return [m for m in self.registry.models() if m.id not in settings.disabled_models]

    async def enabled_aliases(self, guild_id: int) -> list[tuple[str, list[ModelInfo]]]:
        """Each model alias with the models of its chain that are configured and enabled here (aliases with
        none are left out)."""
        enabled = {m.id: m for m in await self.enabled_models(guild_id)}
        aliases = []
        for alias, chain in self.registry.catalogue.aliases.items():
            models = [enabled[m] for m in chain if m in enabled]
            if models:
                aliases.append((alias, models))
        return aliases

    async def default_model(self, guild_id: int) -> str:
        settings = await self.guild_settings(guild_id)
        return settings.default_model or self.registry.default_model

    async def defaults(self, guild_id: int, model: str | None) -> tuple[str, int]:
        """The model a request uses (the server's default when none is named) and that model's default
        duration (5 s for a model the catalogue does not know: `validate` refuses it with the right reason)."""
        model_id = model or await self.default_model(guild_id)
        info = self.registry.model(model_id)
        return model_id, info.default_duration if info is not None else 5

    async def image_model(self, guild_id: int) -> ModelInfo:
        """The model that animates an image: the server's default if it can, else the first enabled one that can."""
        default = self.registry.model(await self.default_model(guild_id))
        if default is not None and default.supports_image:
            return default
        capable = [m for m in await self.enabled_models(guild_id) if m.supports_image]
        if not capable:
            raise NoImageModel()
        return capable[0]

    async def validate(self, guild_id: int, request: VideoRequest) -> ModelInfo:
        """Check a request against the model's capabilities and the server's enabled models (for an alias:
        the model of its chain the request would run on)."""
        return (await self.plan(guild_id, request)).model

    async def plan(self, guild_id: int, request: VideoRequest) -> Plan:
        """The model a request runs on. A model alias (`MODELS_FILE`) runs on the first model of its chain that
        is configured, enabled on this server and accepts the request; the others that do are its fallbacks,
        in order. When none does, the first refusal is the answer."""
        settings = await self.guild_settings(guild_id)
        chain = None if self.registry.offers(request.model) else self.registry.catalogue.aliases.get(request.model)
        if chain is None:
            return Plan(request, self._check(request.model, request, settings), None)
        accepted: list[ModelInfo] = []
        refusals: list[InvalidRequest] = []
        for model_id in chain:
            try:
                accepted.append(self._check(model_id, request, settings))
            except InvalidRequest as refusal:
                refusals.append(refusal)
        if not accepted:
            # What the member can change (a duration, an image) says more than a model that is not set up here.
            useful = [r for r in refusals if not isinstance(r, UnknownModel | ModelDisabled)]
            raise (useful or refusals)[0]
        first = accepted[0]
        route = Route(request.model, tuple(m.id for m in accepted[1:]))
        return Plan(request.model_copy(update={"model": first.id}), first, route)

    def _check(self, model_id: str, request: VideoRequest, settings: GuildSettings) -> ModelInfo:
        model = self.registry.model(model_id)
        if model is None:
            raise UnknownModel(model_id)
        if model.id in settings.disabled_models:
            raise ModelDisabled(model.id)
        if request.duration not in model.durations:
            raise DurationNotOffered(model.id, duration=request.duration, durations=model.durations)
        if request.aspect not in model.aspects:
            raise AspectNotOffered(model.id, aspect=request.aspect, aspects=model.aspects)
        has_image = request.image_path is not None or request.image_ref is not None
        if has_image and not model.supports_image:
            raise ImageNotOffered(model.id)
        if not has_image and model.requires_image:
            raise ImageRequired(model.id)
        if request.seed is not None and not model.supports_seed:
            raise SeedNotOffered(model.id)
        if request.negative_prompt and not model.supports_negative_prompt:
            raise NegativePromptNotOffered(model.id)
        return model

    # --- enqueue / cancel -----------------------------------------------------------------------------
    async def store_input(self, data: bytes, content_type: str) -> str:
        """Check a member's image (`ImageRejected` if it is not a whole image of its declared type within the
        pixel limit) and store it where every worker can read it; returns the id a request names it by
        (`VideoRequest.image_ref`). It belongs to the request until its job exists: a refused enqueue deletes
        it, an ended job too, and the staging sweep any that a crash or a lost answer left behind."""
        kind = content_type.split(";")[0].strip().lower()
        await asyncio.to_thread(check_image, io.BytesIO(data), kind)
        image_ref = new_input_ref(kind)
        await self.store.put_input(image_ref, data, content_type=kind, now=self.clock.now())
        return image_ref

    async def enqueue(self, who: Requester, request: VideoRequest, *, delivery_ref: str | None = None) -> Job:
        try:
            return await self._enqueue(who, request, delivery_ref=delivery_ref)
        except UserError as refusal:
            await self.refused(who, request, refusal)
            raise

    async def precheck(self, who: Requester, request: VideoRequest) -> None:
        """Raise what the server's rules and the model refuse without a transaction: the channel, the
        blocklist, the model and its options, against the briefly cached settings. For a front end that must
        acknowledge before it enqueues: it refuses these first, privately, then records them with `refused`.
        `enqueue` checks them all again; the quota, the budget, a pause and blocks are decided only inside its
        transaction."""
        check_request(await self.guild_settings(who.guild_id), who, request)
        await self.plan(who.guild_id, request)

    async def refused(self, who: Requester, request: VideoRequest, refusal: UserError) -> None:
        """Record a refusal: one by a server rule is counted for the stats (`bot.jobs.refusals`), and the
        request's stored image, which was for it only, goes."""
        await discard_stored_input(self.store, request)
        await count_refusal(self.store, who.guild_id, who.user_id, refusal, at=self.clock.now())

    async def check_channel(self, who: Requester) -> None:
        """Refuse (and count) a request from a channel the server does not allow, before any prompt is asked
        for (Animate opens a modal first)."""
        try:
            check_channel(await self.guild_settings(who.guild_id), who)
        except UserError as refusal:
            await count_refusal(self.store, who.guild_id, who.user_id, refusal, at=self.clock.now())
            raise

    async def _enqueue(self, who: Requester, request: VideoRequest, *, delivery_ref: str | None = None) -> Job:
        check_request(await self.guild_settings(who.guild_id), who, request)  # channel and blocklist rules
        plan = await self.plan(who.guild_id, request)
        request, model = plan.request, plan.model
        now = self.clock.now()
        policy = resolve_policy(await self.store.policy_layers(who.guild_id, who.user_id, who.role_ids))
        window = window_bounds(policy.period, now)
        cost = model.credits_for(request.duration)
        cost_usd = self.registry.catalogue.cost_usd(model, request.duration)
        budget = (await self.guild_settings(who.guild_id)).monthly_budget
        month = window_bounds("month", now) if budget else None

        def admit(standing: Admission) -> None:
            check_admission(policy, cost, standing, resets_at=window[1])
            if budget and month is not None:
                check_budget(budget, cost_usd, standing.spent_usd, resets_at=month[1])

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
            delivery_ref=delivery_ref,
            route=plan.route,
            cost_usd=cost_usd,
        )
        job = await self.store.insert_job(job, max_running=policy.max_running, window=window, admit=admit,
                                          budget_month=month)  # fmt: skip
        log.info("job %s: queued %s %ss for %s/%s (%d credits)", job.id, model.id, request.duration,
                 who.guild_id, who.user_id, cost)  # fmt: skip
        if self._on_enqueue is not None:
            self._on_enqueue()
        return job

    async def get(self, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def owned(self, job_id: str, *, by_user: int, is_admin: bool) -> Job:
        """The job, if `by_user` may act on it as its owner: the member who asked for it, or an admin."""
        job = await self.get(job_id)
        if job.user_id != by_user and not is_admin:
            raise NotRequester(job_id)
        return job

    async def cancel(self, job_id: str, *, by_user: int, is_admin: bool = False) -> Job:
        """Cancel at any stage: a queued job at once, a running one through its worker (which asks the
        provider to stop). Credits come back either way."""
        job = await self.owned(job_id, by_user=by_user, is_admin=is_admin)
        if job.state.is_terminal:
            raise AlreadyEnded(job_id, job.state)
        return await self._cancel(job)

    async def abandon(self, job_id: str) -> Job:
        """Cancel a job the member was never told about (answering them failed): nobody waits for it, so it
        must neither run nor cost anything."""
        log.warning("job %s: the member could not be answered; cancelling it", job_id)
        return await self._cancel(await self.get(job_id))

    async def cancel_queued(self, guild_id: int, *, audit: AuditDraft | None = None) -> list[Job]:
        """Cancel and refund every queued job of a server (with the admin's audit entry, in one transaction)."""
        cancelled = await self.store.cancel_queued(guild_id, now=self.clock.now(), audit=audit)
        for job in cancelled:
            await self._ended(job, JobState.QUEUED)
        return cancelled

    async def _cancel(self, before: Job) -> Job:
        job = await self.store.request_cancel(before.id, now=self.clock.now())
        if not job.state.is_terminal:  # flagged: its worker stops it, and records and announces the end
            await self.transitions.fire(job, job.state)
        elif before.state is JobState.QUEUED:  # ended here: no worker will see it, so its input and news are ours
            await self._ended(job, JobState.QUEUED)
        return job  # (or it had ended already, and whoever ended it announced it)

    async def _ended(self, job: Job, old_state: JobState) -> None:
        if self.staging is not None:
            discard_input(job.request.image_path, self.staging)
        await discard_stored_input(self.store, job.request, job_id=job.id)
        await self.transitions.fire(job, old_state)

    async def record_delivery_ref(self, job_id: str, delivery_ref: str) -> None:
        """Remember where the member was answered (the front end's opaque record), to edit that answer later.
        The job itself is fine without it: a failure here is logged, not raised."""
        try:
            await self.store.set_delivery_ref(job_id, delivery_ref)
        except StoreError as exc:
            log.warning("job %s: could not record its status message (%s)", job_id, exc)

    # --- views ----------------------------------------------------------------------------------------
    async def queue(self, guild_id: int, user_id: int) -> QueueView:
        return QueueView(await self.queue_entries(guild_id, user_id), await self.store.queue_depth(guild_id))

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

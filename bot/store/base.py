"""What the engine needs from a database, and nothing more, as narrow protocols: each consumer takes the one
it uses (`JobStore`, `QuotaStore`, `SettingsStore`, `Maintenance`); `Store` is all four, as `SqlStore` is.

Each method is one transaction. Decisions that must be atomic with a write (quota admission, the fair claim)
happen inside the store's transaction; the policy itself stays in `bot.jobs` and is passed in as a callback
or as plain limits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from bot.domain import (
    AuditDraft,
    AuditEntry,
    GuildSettings,
    Job,
    JobEvent,
    JobState,
    QuotaLimits,
    Route,
    VideoRequest,
    WorkerInfo,
)
from bot.errors import InvalidTransition as InvalidTransition
from bot.errors import LeaseLost as LeaseLost


@dataclass(frozen=True, slots=True)
class PolicyLayers:
    """The quota rows that apply to one member, before resolution."""

    default: QuotaLimits | None
    roles: tuple[QuotaLimits, ...]
    user: QuotaLimits | None


@dataclass(frozen=True, slots=True)
class Admission:
    """A member's standing, read inside the enqueue transaction, handed to the admission check."""

    paused: bool
    blocked: bool
    charged: int
    """Credits reserved or kept in the window (after the last reset)."""
    reserved: int
    """The part of `charged` still held by unfinished jobs."""
    granted: int
    queued: int
    running: int
    spent_usd: float = 0.0
    """The server's provider spend this calendar month by list price, jobs still running included (read only
    when the server has a monthly budget)."""


@dataclass(frozen=True, slots=True)
class ClaimLimits:
    """Concurrency caps the claim must respect, across every worker sharing the database."""

    provider_limits: Mapping[str, int] = field(default_factory=dict)
    global_limit: int | None = None
    providers: frozenset[str] | None = None
    """Only claim jobs for these providers (the ones this worker has configured)."""


@dataclass(frozen=True, slots=True)
class Reroute:
    """A job on a model alias moves on to another model of its chain (`SUBMITTING → SUBMITTING`): its request,
    credits (never more than reserved: the difference is refunded) and route change together."""

    request: VideoRequest
    credits: int
    route: Route
    cost_usd: float
    """The new model's list price for the job: spend follows the model that runs."""


@dataclass(frozen=True, slots=True)
class Transition:
    """Move a job to `to_state` (if `bot.domain.ALLOWED` lets it from where it is), optionally only while
    `worker_id` holds its lease. Fields left None keep their value. Terminal moves clear the lease; `refund`
    returns the reserved credits."""

    to_state: JobState
    worker_id: str | None = None
    detail: str = ""
    refund: bool = False
    # Recorded by a move to a working state:
    remote_id: str | None = None
    result_path: str | None = None
    post_attempted_at: float | None = None
    vendor_credits: float | None = None
    reroute: Reroute | None = None
    # Recorded by an end:
    error: str | None = None
    delivered_message_id: int | None = None

    def __post_init__(self) -> None:
        working = (self.remote_id, self.result_path, self.post_attempted_at, self.vendor_credits)
        ending = (self.error, self.delivered_message_id)
        if any(v is not None for v in (working if self.to_state.is_terminal else ending)):
            raise ValueError(f"a move to {self.to_state} cannot record {self}")
        if self.reroute is not None and self.to_state is not JobState.SUBMITTING:
            raise ValueError("only a job being submitted can move on to another model")


AdmitFn = Callable[[Admission], None]


@dataclass(frozen=True, slots=True)
class StoredInput:
    """A member's input image as the front end stored it (checked already), for a worker to write to disk."""

    id: str
    content_type: str
    data: bytes


class InputStore(Protocol):
    """Input images in the database (bounded by `MAX_IMAGE_BYTES`), so a worker on any machine can read the
    image a gateway accepted. A job's request names its input by id (`VideoRequest.image_ref`)."""

    async def put_input(self, input_id: str, data: bytes, *, content_type: str, now: float) -> None: ...

    async def get_input(self, input_id: str) -> StoredInput | None:
        """None when it was deleted (its job ended, or the sweep found it orphaned)."""
        ...

    async def delete_inputs(self, input_ids: Sequence[str]) -> int:
        """Delete these inputs (ids that are gone already are no error); returns how many were deleted."""
        ...

    async def stale_inputs(self, before: float) -> list[str]:
        """The ids of inputs stored before `before`, oldest first (the sweep keeps those a live job names)."""
        ...


class JobStore(InputStore, Protocol):
    """Jobs, their input images, their leases and the worker registry: what the service and the worker drive
    jobs with."""

    async def insert_job(
        self,
        job: Job,
        *,
        max_running: int,
        window: tuple[float, float],
        admit: AdmitFn,
        budget_month: tuple[float, float] | None = None,
    ) -> Job:
        """Insert a queued job and reserve its credits, if `admit` (called inside the transaction with the
        member's standing in `window`) does not raise. Assigns the job's fair rank. With `budget_month`, the
        server's spend in that month is read too (`Admission.spent_usd`), under a lock per server, so that
        concurrent enqueues of different members cannot pass the budget together."""
        ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def claim_job(
        self,
        worker_id: str,
        *,
        now: float,
        lease_seconds: float,
        limits: ClaimLimits,
        holding: Sequence[str] = (),
        take_over: bool = True,
    ) -> Job | None:
        """Take one job under a lease: first any active job whose lease ran out (its worker died), else the
        next queued job in fair order whose member, provider and the global cap have a free slot. Jobs in
        `holding` (the ones this worker is driving) are never taken over, even with a lapsed lease.
        `take_over=False` skips the look for lapsed leases (a worker looks at most once a second)."""
        ...

    # --- the worker registry --------------------------------------------------------------------------
    async def register_worker(self, worker: WorkerInfo) -> None: ...

    async def heartbeat(self, worker_id: str, job_ids: Sequence[str], *, now: float, until: float) -> set[str]:
        """Record that the worker lives and extend the leases it still holds; returns the ids it still holds."""
        ...

    async def workers(self) -> list[WorkerInfo]: ...

    async def reap_workers(self, worker_ids: Sequence[str]) -> list[str]:
        """Forget dead workers and let their active jobs be taken over at once; returns those jobs' ids."""
        ...

    async def unregister_worker(self, worker_id: str) -> None: ...

    async def release_lease(self, job_id: str, worker_id: str) -> None:
        """Give a job back without changing its state (graceful shutdown): another worker resumes it."""
        ...

    async def transition(self, job_id: str, change: Transition, *, now: float) -> Job:
        """Apply one state change atomically with its history row (and refund). Raises LeaseLost or
        InvalidTransition when the job is not where the caller believes it is."""
        ...

    async def set_progress(
        self,
        job_id: str,
        worker_id: str,
        progress: float,
        *,
        remote_waiting: bool = False,
        remote_position: int | None = None,
        now: float,
    ) -> None:
        """Record how far the video service is: its progress, whether the job still waits there (queued,
        throttled), and its place in the service's queue when it says."""
        ...

    async def request_cancel(self, job_id: str, *, now: float) -> Job:
        """Cancel a queued job at once (with refund); flag an active one for its worker. Terminal jobs are
        returned unchanged."""
        ...

    async def cancel_queued(self, guild_id: int, *, now: float, audit: AuditDraft | None = None) -> list[Job]:
        """Cancel and refund every queued job of a server (and write `audit`, in the same transaction)."""
        ...

    async def set_delivery_ref(self, job_id: str, delivery_ref: str) -> None:
        """The front end answered the member (its status message shows the job queued); `delivery_ref` is its
        opaque record of where the answers go."""
        ...

    async def mark_status_shown(self, job_id: str, state: JobState) -> None: ...

    async def jobs_with_stale_status(self, since: float) -> list[Job]:
        """Jobs changed since `since` whose status message does not show their current state."""
        ...

    async def job_events(self, job_id: str) -> list[JobEvent]: ...

    async def member_jobs(self, guild_id: int, user_id: int, *, include_finished: bool = False) -> list[Job]: ...

    async def queue_positions(self, job_ids: Sequence[str]) -> dict[str, int]:
        """1-based place in the global dispatch order of each queued job."""
        ...

    async def queue_depth(self, guild_id: int | None = None) -> int: ...

    async def running_count(self, provider: str | None = None) -> int: ...

    async def recent_durations(self, model: str, limit: int = 20) -> list[float]:
        """Seconds from start to delivery of the latest delivered jobs of a model."""
        ...

    async def unfinished_jobs(self) -> list[Job]:
        """Every job not in a terminal state (recovery, status refresh after a restart)."""
        ...

    # --- metrics ----------------------------------------------------------------------------------------
    async def queue_depth_by_model(self) -> dict[str, int]:
        """Queued jobs per model, across every server (models with none are left out)."""
        ...

    async def leases_held(self, worker_id: str, *, now: float) -> int:
        """Jobs `worker_id` holds under a lease that has not run out."""
        ...

    # --- refusals by rule (the server stats) -------------------------------------------------------------
    async def record_refusal(self, guild_id: int, user_id: int, rule: str, *, at: float) -> None:
        """Count one refusal of a member's request by a server rule, or of a job by the provider's content policy
        (`rule` is a short name from `bot.jobs.refusals`)."""
        ...


class QuotaStore(Protocol):
    """Quota policy layers, a member's standing, the ledger and blocks."""

    async def policy_layers(self, guild_id: int, user_id: int, role_ids: Sequence[int]) -> PolicyLayers: ...

    async def admission(self, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission: ...

    async def update_policy(
        self, guild_id: int, scope: str, target_id: int, limits: QuotaLimits | None, *, audit: AuditDraft | None = None
    ) -> QuotaLimits | None:
        """Merge the given fields into one policy row (only non-None fields change); `None` deletes it.
        Returns the row after the change. `audit` is written in the same transaction (an admin change and its
        audit entry are kept together or not at all), described from the row before and after."""
        ...

    async def add_ledger(
        self, guild_id: int, user_id: int, kind: str, credits: int, *, at: float, audit: AuditDraft | None = None
    ) -> None: ...

    async def set_blocked(
        self, guild_id: int, user_id: int, blocked: bool, *, now: float, audit: AuditDraft | None = None
    ) -> None: ...

    async def is_blocked(self, guild_id: int, user_id: int) -> bool: ...


class SettingsStore(Protocol):
    """Per-server settings."""

    async def guild_settings(self, guild_id: int) -> GuildSettings: ...

    async def save_guild_settings(self, settings: GuildSettings) -> None: ...

    async def update_guild_settings(
        self, guild_id: int, change: Callable[[GuildSettings], GuildSettings], *, audit: AuditDraft | None = None
    ) -> GuildSettings:
        """Apply `change` to the server's current settings and save the result, in one write transaction, so
        two admins changing different settings at once both keep their change. `change` is pure and may
        raise to refuse (nothing is saved then); returns the settings as saved. `audit` is written in the
        same transaction, described from the settings before and after."""
        ...


class Maintenance(Protocol):
    """The database itself: its schema, its lifetime, wake-ups between processes, and small named values."""

    async def migrate(self) -> None: ...

    async def schema(self) -> list[tuple[str, str]]:
        """Every table and index with its definition, for the migrations test."""
        ...

    async def listen(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        """Call `callback` whenever another process queues a job (PostgreSQL's LISTEN/NOTIFY; nothing on SQLite,
        whose one process wakes its worker itself). Returns the coroutine function that stops listening."""
        ...

    async def drop_schema(self) -> None:
        """Remove everything the store holds (tests: each has a schema of its own)."""
        ...

    async def close(self) -> None: ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One model's usage on one UTC day of a server."""

    day: date
    model: str
    credits: int
    """Credits kept by the day's finished jobs: the ledger's reserves net of refunds, as the quota's "Used"."""
    spend_usd: float
    """The list price of the day's jobs that did not fail or get cancelled, as the monthly budget counts it."""


@dataclass(frozen=True, slots=True)
class MemberCredits:
    user_id: int
    credits: int


class StatsStore(Protocol):
    """What the server stats read. `start` and `end` are UTC midnights (epoch seconds); a job counts on the day
    it was queued (its refund is dated there too)."""

    async def usage_by_day(self, guild_id: int, start: float, end: float) -> list[DailyUsage]:
        """Per day and model with any credits or spend; days and models with none are left out."""
        ...

    async def top_members(self, guild_id: int, start: float, end: float, *, limit: int) -> list[MemberCredits]:
        """The members who kept the most credits, most first (ties by id); members with none are left out."""
        ...

    async def refusals_by_rule(self, guild_id: int, start: float, end: float) -> dict[str, int]: ...

    async def vendor_credits_by_provider(self, guild_id: int, start: float, end: float) -> dict[str, float]:
        """The vendors' own counts (their credits) of delivered jobs queued in the span, per provider."""
        ...


class AuditStore(Protocol):
    """The audit trail: admin changes, only ever added (`bot.jobs.audit`)."""

    async def add_audit_entry(self, entry: AuditEntry) -> AuditEntry:
        """Store one entry; returns it with its `id` (entries are numbered in the order they are added)."""
        ...

    async def audit_entries(self, guild_id: int, *, limit: int) -> list[AuditEntry]:
        """A server's latest `limit` entries, newest first."""
        ...


class RateLimitStore(Protocol):
    """Discord's global REST pause, shared by every process on the bot token (`bot.discord.ratelimit`)."""

    async def discord_paused_until(self) -> float:
        """Until when bot-token requests wait (epoch seconds); 0.0 when Discord never paused them."""
        ...

    async def pause_discord(self, until: float) -> None:
        """Hold bot-token requests until `until`; only ever extends the pause (the later end wins)."""
        ...


class ServiceStore(JobStore, QuotaStore, SettingsStore, Protocol):
    """What the member-facing service needs: jobs, the quota ledger it charges in the same transaction, and the
    server settings it checks (no migrations, no schema, no meta)."""


class AdminStore(QuotaStore, SettingsStore, AuditStore, Protocol):
    """What the admin service changes itself: policies, grants, blocks, settings (jobs go through JobService)."""


class Store(JobStore, QuotaStore, SettingsStore, Maintenance, StatsStore, AuditStore, RateLimitStore, Protocol):
    """Everything: what `open_store` returns, for code that wires the parts together."""

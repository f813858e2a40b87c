"""What the engine needs from a database, and nothing more.

Each method is one transaction. Decisions that must be atomic with a write (quota admission, the fair claim)
happen inside the store's transaction; the policy itself stays in `bot.jobs` and is passed in as a callback
or as plain limits, so both backends share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.domain import GuildSettings, Job, JobEvent, JobState, QuotaLimits, WorkerInfo


class LeaseLost(Exception):
    """The worker no longer holds the job (it was taken over or finished elsewhere)."""


class InvalidTransition(Exception):
    """The job is not in a state from which the requested move is allowed."""


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


@dataclass(frozen=True, slots=True)
class ClaimLimits:
    """Concurrency caps the claim must respect, across every worker sharing the database."""

    provider_limits: Mapping[str, int] = field(default_factory=dict)
    global_limit: int | None = None
    providers: frozenset[str] | None = None
    """Only claim jobs for these providers (the ones this worker has configured)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """Move a job to `to_state`, optionally only from `from_states`, optionally only while `worker_id`
    holds its lease. Terminal moves clear the lease; `refund` returns the reserved credits."""

    to_state: JobState
    from_states: frozenset[JobState] | None = None
    worker_id: str | None = None
    detail: str = ""
    refund: bool = False
    remote_id: str | None = None
    error: str | None = None
    result_path: str | None = None
    delivered_message_id: int | None = None
    post_attempted_at: float | None = None


AdmitFn = Callable[[Admission], None]


class Store(Protocol):
    async def migrate(self) -> None: ...

    async def close(self) -> None: ...

    # --- jobs -----------------------------------------------------------------------------------------
    async def insert_job(self, job: Job, *, max_running: int, window: tuple[float, float], admit: AdmitFn) -> Job:
        """Insert a queued job and reserve its credits, if `admit` (called inside the transaction with the
        member's standing in `window`) does not raise. Assigns the job's fair rank."""
        ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def claim_job(
        self, worker_id: str, *, now: float, lease_seconds: float, limits: ClaimLimits, holding: Sequence[str] = ()
    ) -> Job | None:
        """Take one job under a lease: first any active job whose lease ran out (its worker died), else the
        next queued job in fair order whose member, provider and the global cap have a free slot. Jobs in
        `holding` (the ones this worker is driving) are never taken over, even with a lapsed lease."""
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

    async def set_progress(self, job_id: str, worker_id: str, progress: float, *, now: float) -> None: ...

    async def request_cancel(self, job_id: str, *, now: float) -> Job:
        """Cancel a queued job at once (with refund); flag an active one for its worker. Terminal jobs are
        returned unchanged."""
        ...

    async def cancel_queued(self, guild_id: int, *, now: float) -> list[Job]:
        """Cancel and refund every queued job of a server."""
        ...

    async def set_status_message(self, job_id: str, message_id: int) -> None:
        """The status message was sent (showing the job queued)."""
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

    # --- quotas ---------------------------------------------------------------------------------------
    async def policy_layers(self, guild_id: int, user_id: int, role_ids: Sequence[int]) -> PolicyLayers: ...

    async def admission(self, guild_id: int, user_id: int, window: tuple[float, float]) -> Admission: ...

    async def update_policy(
        self, guild_id: int, scope: str, target_id: int, limits: QuotaLimits | None
    ) -> QuotaLimits | None:
        """Merge the given fields into one policy row (only non-None fields change); `None` deletes it.
        Returns the row after the change."""
        ...

    async def add_ledger(self, guild_id: int, user_id: int, kind: str, credits: int, *, at: float) -> None: ...

    async def set_blocked(self, guild_id: int, user_id: int, blocked: bool, *, now: float) -> None: ...

    async def is_blocked(self, guild_id: int, user_id: int) -> bool: ...

    # --- settings -------------------------------------------------------------------------------------
    async def guild_settings(self, guild_id: int) -> GuildSettings: ...

    async def save_guild_settings(self, settings: GuildSettings) -> None: ...

    async def update_guild_settings(
        self, guild_id: int, change: Callable[[GuildSettings], GuildSettings]
    ) -> GuildSettings:
        """Apply `change` to the server's current settings and save the result, in one write transaction, so
        two admins changing different settings at once both keep their change. `change` is pure and may
        raise to refuse (nothing is saved then); returns the settings as saved."""
        ...

    async def get_meta(self, key: str) -> str | None: ...

    async def set_meta(self, key: str, value: str) -> None: ...

"""The one protocol every video service is adapted to.

A provider turns a `VideoRequest` into a remote job and that job back into an MP4 on disk. It knows nothing of
quotas, queues or Discord, and it translates every failure into `ProviderError` (retryable or final).

The worker stores `remote_id` the moment `submit` returns, and from then on only polls: after a crash the
next worker calls `poll` with the same `RemoteJob`, never `submit` again. A provider that needs more than one
id to find its job again (a status URL, say) encodes it into `remote_id` itself.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from bot.domain import ModelInfo, VideoRequest
from bot.errors.said import Said


class RemoteState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class RemoteJob:
    """Everything needed to find a submitted job again: its id at the provider and what was asked."""

    job_id: str
    remote_id: str
    request: VideoRequest


@dataclass(frozen=True, slots=True)
class PollResult:
    state: RemoteState
    progress: float | None = None
    """0.0 to 1.0 when the provider reports it."""
    error: Said | None = None
    """Why it failed (or was cancelled), for the member: the provider's own words where it gave any
    (`vendor_said`, or inside the adapter's sentence)."""
    poll_after: float | None = None
    """The provider's hint for the next poll, in seconds."""
    queue_position: int | None = None
    """Jobs ahead of this one at the provider (0: next), while it waits there."""
    vendor_credits: float | None = None
    """What the vendor says the finished job cost, in its own credits, where it reports it (Vidu)."""
    refused: bool = False
    """A FAILED job that the provider's content policy refused (`error` holds its reason): counted as such."""
    output_url: str | None = None
    """Where the finished video can be fetched, when the provider hands out a URL (it may expire: `download`
    is always given a fresh poll's result)."""


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """What `python -m bot check` reports for a provider: reached, credentials accepted, models on offer."""

    reachable: bool
    authenticated: bool
    models: tuple[str, ...] = ()
    problem: str | None = None
    """What is wrong, for the admin (names the setting to fix, never a secret's value)."""
    balance: str | None = None
    """The account's balance or credit left, as the vendor reports it (e.g. "$12.34", "1,200 credits")."""

    @property
    def ok(self) -> bool:
        return self.reachable and self.authenticated and self.problem is None


@runtime_checkable
class VideoProvider(Protocol):
    name: str
    """The provider id, the part of a model name before the slash."""
    max_concurrency: int
    """How many jobs this provider may run at once across all workers."""
    safe_resubmit: bool
    """True when submitting the same job twice cannot cost twice (offline renders, idempotency keys).
    Only then is a job that died between "submitting" and a stored remote id submitted again."""

    def models(self) -> Sequence[ModelInfo]:
        """What the vendor can do with each model (durations, aspects, image, seed, negative prompt). Credit
        weights and prices are not the adapter's: the catalogue (`bot.providers.catalog`) sets them."""
        ...

    def model_for(self, model_id: str) -> ModelInfo | None:
        """A model outside `models()` that the provider still serves (any id a self-hosted OpenAI-compatible
        server takes, say), with generic capabilities; None for providers with a fixed list."""
        ...

    async def start(self) -> None:
        """Get ready before the first job: e.g. learn which models a self-hosted server offers. Must not fail
        for a provider that is down (the jobs will say so); `models()` may change after it."""
        ...

    async def health(self) -> ProviderHealth:
        """One cheap authenticated request: is the provider reachable, are the credentials good."""
        ...

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        """Create the remote job and return its id. Must not retry a create the provider may have accepted."""
        ...

    async def poll(self, remote: RemoteJob) -> PollResult: ...

    async def cancel(self, remote: RemoteJob) -> None:
        """Ask the provider to stop; a provider that cannot cancel does nothing."""
        ...

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        """Stream the finished video to `dest` (written whole or not at all)."""
        ...

    async def aclose(self) -> None: ...

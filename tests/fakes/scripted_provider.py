"""An in-process provider for engine tests and benchmarks: it follows the `VideoProvider` contract, finishes
after a scripted number of polls, and fails on cue. (Adapters for real services are tested against loopback
HTTP fakes instead; the engine only needs the protocol.)"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.domain import ASPECTS, ModelInfo, VideoRequest
from bot.errors import ProviderError
from bot.errors.said import vendor_said
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState

# A few bytes are enough for the engine; media tests use real renders.
CLIP_BYTES = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64


@dataclass
class ScriptedProvider:
    name: str = "fake"
    max_concurrency: int = 100
    safe_resubmit: bool = False
    polls_to_finish: int = 0
    """How many polls answer RUNNING before SUCCEEDED."""
    weight: float = 1.0
    supports_image: bool = False
    requires_image: bool = False
    fail_with: str | None = None
    """Every job ends FAILED with this message (the vendor's own words)."""
    faults: dict[str, deque[ProviderError]] = field(default_factory=lambda: defaultdict(deque))
    """Errors raised by the next calls of a step ('submit', 'poll', 'cancel', 'download'), in order."""
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    submitted: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None
    """When set, `poll` waits for it: lets a test catch a job while it is running."""
    _polls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def models(self) -> Sequence[ModelInfo]:
        return [
            ModelInfo(
                id=f"{self.name}/video",
                label="Scripted test model",
                durations=(2, 4, 5, 8),
                aspects=ASPECTS,
                supports_image=self.supports_image,
                requires_image=self.requires_image,
                supports_seed=True,
                weight=self.weight,
            )
        ]

    def model_for(self, model_id: str) -> ModelInfo | None:
        return None

    async def start(self) -> None:
        pass

    async def health(self) -> ProviderHealth:
        return ProviderHealth(reachable=True, authenticated=True, models=(f"{self.name}/video",))

    def fail_next(self, step: str, error: ProviderError, times: int = 1) -> None:
        for _ in range(times):
            self.faults[step].append(error)

    def _maybe_fail(self, step: str) -> None:
        self.calls[step] += 1
        if self.faults[step]:
            raise self.faults[step].popleft()

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        self._maybe_fail("submit")
        self.submitted.append(job_id)
        return f"remote-{job_id}"

    async def poll(self, remote: RemoteJob) -> PollResult:
        self._maybe_fail("poll")
        if self.gate is not None:
            await self.gate.wait()
        if remote.remote_id.removeprefix("remote-") in self.cancelled:
            return PollResult(RemoteState.CANCELLED)
        if self.fail_with is not None:
            return PollResult(RemoteState.FAILED, error=vendor_said(self.fail_with))
        self._polls[remote.remote_id] += 1
        done = self._polls[remote.remote_id] > self.polls_to_finish
        if done:
            return PollResult(RemoteState.SUCCEEDED, progress=1.0)
        return PollResult(RemoteState.RUNNING, progress=self._polls[remote.remote_id] / (self.polls_to_finish + 1))

    async def cancel(self, remote: RemoteJob) -> None:
        self._maybe_fail("cancel")
        self.cancelled.append(remote.job_id)

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None:
        self._maybe_fail("download")
        partial = dest.with_name(dest.name + ".part")
        partial.write_bytes(CLIP_BYTES)
        os.replace(partial, dest)

    async def aclose(self) -> None:
        return None

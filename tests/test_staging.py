"""DATA_DIR stays bounded: inputs are deleted on every way a job ends, and the sweep removes what a crash left."""

from __future__ import annotations

import os
from pathlib import Path

from bot.clock import FakeClock
from bot.domain import JobState, VideoRequest
from bot.jobs.admin import AdminService
from bot.jobs.notify import FileSink, JobTransition
from bot.jobs.service import JobService
from bot.jobs.staging import CLIP_GRACE, INPUT_GRACE, StagingDirs, sweep
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.conftest import make_worker
from tests.fakes.scripted_provider import ScriptedProvider
from tests.test_worker import ALICE


def staged_input(dirs: StagingDirs, name: str) -> Path:
    dirs.inputs.mkdir(parents=True, exist_ok=True)
    path = dirs.inputs / name
    path.write_bytes(b"\x89PNG fake")
    return path


def image_request(path: Path) -> VideoRequest:
    return VideoRequest(prompt="a lighthouse", model="fake/video", duration=4, image_path=str(path))


def age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


async def test_inputs_are_deleted_when_queued_jobs_are_cancelled_or_cleared(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    dirs = StagingDirs(tmp_path / "data")
    ended: list[str] = []

    async def on_transition(event: JobTransition) -> None:
        ended.append(event.job.id)

    registry = ProviderRegistry([ScriptedProvider(supports_image=True)])
    service = JobService(store, registry, clock, staging=dirs)
    service.transitions.subscribe(on_transition)
    first, second = staged_input(dirs, "a.png"), staged_input(dirs, "b.png")
    cancelled = await service.enqueue(ALICE, image_request(first))
    cleared = await service.enqueue(ALICE, image_request(second))

    await service.cancel(cancelled.id, by_user=ALICE.user_id)
    assert not first.exists(), "a job cancelled while queued leaves no input behind"
    assert second.exists()
    await AdminService(store, service, clock).clear_queue(ALICE.guild_id)
    assert not second.exists(), "a cleared queue leaves no input behind"
    assert ended == [cancelled.id, cleared.id], "their status messages are told"


async def test_sweep_removes_only_what_no_live_job_needs(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    dirs = worker.dirs
    done = await service.enqueue(ALICE, VideoRequest(prompt="done", model="fake/video", duration=4))
    await worker.drain()
    live = await service.enqueue(ALICE, VideoRequest(prompt="waiting", model="fake/video", duration=4))
    dirs.clips.mkdir(parents=True, exist_ok=True)
    dirs.renders.mkdir(parents=True, exist_ok=True)
    stranded = [dirs.clips / f"{done.id}.fit.mp4", dirs.clips / f"{done.id}.mp4.part",
                dirs.renders / f".{done.id}.render.mp4.part", staged_input(dirs, "orphan.png")]  # fmt: skip
    kept = [dirs.clips / f"{live.id}.mp4", staged_input(dirs, "just-uploaded.png"), dirs.clips / "notes.txt"]
    for path in [*stranded, *kept]:
        path.write_bytes(b"x")
    for path in stranded:
        age(path, max(CLIP_GRACE, INPUT_GRACE) + 1)
    age(kept[0], CLIP_GRACE + 1)  # old, but its job is still waiting

    assert await sweep(store, dirs) == len(stranded)
    assert [p for p in stranded if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []
    live_job = await store.get_job(live.id)
    assert live_job is not None and live_job.state is JobState.QUEUED

"""Input images reachable from every worker (issue 11): the front end stores a member's image in the database,
the worker that runs the job copies it to its own disk for the provider, and the stored image is deleted when
the job ends or, orphaned (a refusal, a crash), by the sweep. The store on both dialects, the service, the
worker and the sweep in process; then a gateway and a worker as separate processes, each with a DATA_DIR of
its own, sharing only the database."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bot.clock import FakeClock
from bot.discord.messages import ENGLISH, reason_text
from bot.domain import INPUT_REF, JobState, VideoRequest
from bot.errors import ImageNotOffered, ImageRejected
from bot.errors.said import Said
from bot.jobs.admin import AdminService
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.jobs.staging import INPUT_GRACE, StagingDirs, sweep
from bot.jobs.steps import INPUT_LOST
from bot.providers.base import PollResult, RemoteJob
from bot.providers.registry import ProviderRegistry
from bot.store.base import ClaimLimits, Store, StoredInput, Transition
from tests.conftest import make_worker
from tests.crash_checks import Database, PostgresDatabase, SqliteDatabase, clip_messages, verify
from tests.crash_harness import BotProcess, BotRig
from tests.fakes.discord import FakeDiscord
from tests.fakes.scripted_provider import ScriptedProvider
from tests.test_worker import ALICE

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
REF_A, REF_B, REF_C = (f"{digit * 32}.png" for digit in "abc")
COLOUR = (200, 60, 90)


def png(colour: tuple[int, int, int] = COLOUR, size: tuple[int, int] = (160, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def image_request(image_ref: str, model: str = "img/video") -> VideoRequest:
    return VideoRequest(prompt="a leaf in the wind", model=model, duration=4, image_ref=image_ref)


@dataclass
class ImageReadingProvider(ScriptedProvider):
    """A scripted provider that reads the request's image file at submit and at every poll, as a real adapter
    (or the offline renderer making a video again after a crash) would."""

    name: str = "img"
    supports_image: bool = True
    read_at_submit: list[bytes] = field(default_factory=list)
    read_at_poll: list[bytes] = field(default_factory=list)

    async def submit(self, job_id: str, request: VideoRequest) -> str:
        assert request.image_path is not None, "the provider is handed a file, not a database id"
        self.read_at_submit.append(Path(request.image_path).read_bytes())
        return await super().submit(job_id, request)

    async def poll(self, remote: RemoteJob) -> PollResult:
        assert remote.request.image_path is not None
        self.read_at_poll.append(Path(remote.request.image_path).read_bytes())
        return await super().poll(remote)


async def all_inputs(store: Store) -> list[str]:
    return await store.stale_inputs(math.inf)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- the store, on both dialects -----------------------------------------------------------------------------


async def test_an_input_is_kept_byte_for_byte_and_deleted_once(store: Store, clock: FakeClock) -> None:
    data = bytes(range(256)) * 41  # every byte value, zeros included: a BLOB/BYTEA, never text
    await store.put_input(REF_A, data, content_type="image/png", now=clock.now())

    assert await store.get_input(REF_A) == StoredInput(REF_A, "image/png", data)
    assert await store.get_input(REF_B) is None
    assert await store.delete_inputs([REF_A, REF_B, REF_A]) == 1, "gone or repeated ids are no error"
    assert await store.get_input(REF_A) is None
    assert await store.delete_inputs([REF_A]) == 0
    assert await store.delete_inputs([]) == 0


async def test_an_input_at_the_size_limit_fits(store: Store, clock: FakeClock) -> None:
    data = os.urandom(10 * 1024 * 1024)  # MAX_IMAGE_BYTES' default
    await store.put_input(REF_A, data, content_type="image/webp", now=clock.now())
    stored = await store.get_input(REF_A)
    assert stored is not None and stored.data == data


async def test_stale_inputs_are_those_stored_before_oldest_first(store: Store, clock: FakeClock) -> None:
    start = clock.now()
    for offset, ref in ((20, REF_C), (0, REF_A), (10, REF_B)):
        await store.put_input(ref, b"x", content_type="image/png", now=start + offset)
    assert await store.stale_inputs(start + 15) == [REF_A, REF_B]
    assert await store.stale_inputs(start) == []


# --- the service -------------------------------------------------------------------------------------------


def image_service(store: Store, clock: FakeClock, tmp_path: Path, *providers: ScriptedProvider) -> JobService:
    registry = ProviderRegistry(list(providers) or [ImageReadingProvider(), ScriptedProvider()])
    return JobService(store, registry, clock, staging=StagingDirs(tmp_path / "gateway"))


async def test_only_a_whole_image_of_its_declared_type_is_stored(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    service = image_service(store, clock, tmp_path)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    for data, declared in ((gif.getvalue(), "image/png"), (png()[:200], "image/png"), (b"hello", "text/plain")):
        with pytest.raises(ImageRejected):
            await service.store_input(data, declared)
    assert await all_inputs(store) == [], "a refused image is never stored"

    ref = await service.store_input(png(), "image/png; charset=binary")
    assert re.fullmatch(INPUT_REF, ref) and ref.endswith(".png")
    assert await store.get_input(ref) == StoredInput(ref, "image/png", png())
    assert files_under(tmp_path / "gateway") == [], "the front end keeps nothing on its own disk"


async def test_a_refused_request_and_jobs_ended_while_queued_leave_no_stored_image(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    service = image_service(store, clock, tmp_path)
    refused = await service.store_input(png(), "image/png")
    with pytest.raises(ImageNotOffered):
        await service.enqueue(ALICE, image_request(refused, model="fake/video"))
    assert await store.get_input(refused) is None, "a refused request's image goes with it"

    kept, cancelled, cleared = [await service.store_input(png(), "image/png") for _ in range(3)]
    jobs = {ref: await service.enqueue(ALICE, image_request(ref)) for ref in (kept, cancelled, cleared)}
    await service.cancel(jobs[cancelled].id, by_user=ALICE.user_id)
    assert await all_inputs(store) == sorted([kept, cleared], key=[kept, cleared].index)
    await AdminService(store, service, clock).clear_queue(ALICE.guild_id)
    assert await all_inputs(store) == [], "a cleared queue leaves no stored image"


# --- the worker --------------------------------------------------------------------------------------------


async def test_the_worker_hands_the_provider_its_own_copy_and_deletes_both_at_the_end(
    store: Store, clock: FakeClock, sink: FileSink, tmp_path: Path
) -> None:
    provider = ImageReadingProvider(polls_to_finish=1)
    service = image_service(store, clock, tmp_path, provider)
    worker_dirs = StagingDirs(tmp_path / "worker")
    ref = await service.store_input(png(), "image/png")
    job = await service.enqueue(ALICE, image_request(ref))
    worker = make_worker(store, service.registry, sink, clock, tmp_path, staging_dir=worker_dirs.clips)

    await worker.drain()

    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED, done
    assert provider.read_at_submit == [png()]
    assert len(provider.read_at_poll) == 3 and set(provider.read_at_poll) == {png()}  # 2 waiting, 1 downloading
    assert done.request.image_path is None, "the stored request never names one worker's disk"
    assert list(worker_dirs.inputs.iterdir()) == [], "the worker's copy is deleted when the job ends"
    assert await all_inputs(store) == [], "and so is the stored image"
    assert files_under(tmp_path / "gateway") == []


async def test_a_job_whose_image_is_gone_fails_with_the_reason_and_a_refund(
    store: Store, clock: FakeClock, sink: FileSink, tmp_path: Path
) -> None:
    provider = ImageReadingProvider()
    service = image_service(store, clock, tmp_path, provider)
    ref = await service.store_input(png(), "image/png")
    job = await service.enqueue(ALICE, image_request(ref))
    await store.delete_inputs([ref])  # lost (by hand, or a sweep run with a wrong clock)

    await make_worker(store, service.registry, sink, clock, tmp_path).drain()

    failed = await store.get_job(job.id)
    assert failed is not None and failed.state is JobState.FAILED and Said.parse(failed.error) == INPUT_LOST
    assert reason_text(failed.error, ENGLISH) == "The image for this video is no longer available; attach it again."
    assert provider.submitted == [], "nothing is sent without the image"
    usage = await service.usage(ALICE)
    assert (usage.used, usage.reserved) == (0, 0)


async def test_a_worker_taking_over_a_running_job_copies_the_image_for_the_provider(
    store: Store, clock: FakeClock, sink: FileSink, tmp_path: Path
) -> None:
    """The offline renderer makes a video again after a crash, from the request it is polled with: a worker
    on another machine taking the job over must have the image too."""
    provider = ImageReadingProvider()
    service = image_service(store, clock, tmp_path, provider)
    ref = await service.store_input(png(), "image/png")
    job = await service.enqueue(ALICE, image_request(ref))
    claimed = await store.claim_job("dead", now=clock.now(), lease_seconds=5, limits=ClaimLimits())
    assert claimed is not None and claimed.id == job.id
    await store.transition(job.id, Transition(JobState.RUNNING, worker_id="dead", remote_id=f"remote-{job.id}"),
                           now=clock.now())  # fmt: skip
    clock.advance(6)  # the dead worker's lease runs out
    takeover = StagingDirs(tmp_path / "other-machine")

    await make_worker(store, service.registry, sink, clock, tmp_path, staging_dir=takeover.clips).drain()

    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.DELIVERED
    assert provider.read_at_submit == [] and set(provider.read_at_poll) == {png()}  # polled and downloaded
    assert list(takeover.inputs.iterdir()) == [] and await all_inputs(store) == []


# --- the sweep ---------------------------------------------------------------------------------------------


async def test_the_sweep_deletes_stored_images_no_live_job_names_once_they_are_old(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    service = image_service(store, clock, tmp_path)
    dirs = StagingDirs(tmp_path / "data")
    stored_at = clock.now()
    orphan = await service.store_input(png(), "image/png")  # stored, then the request never came
    live = await service.store_input(png(), "image/png")
    waiting = await service.enqueue(ALICE, image_request(live))
    clock.advance(INPUT_GRACE - 1)
    young = await service.store_input(png(), "image/png")  # its request may be being queued right now
    dirs.inputs.mkdir(parents=True)
    stranded = dirs.inputs / orphan  # a worker's copy left by a crash
    stranded.write_bytes(png())
    os.utime(stranded, (stored_at, stored_at))

    assert await sweep(store, dirs, now=clock.now()) == 0, "nothing is old enough yet"
    clock.advance(2)
    assert await sweep(store, dirs, now=clock.now()) == 2  # the orphan, in the database and on disk

    assert await all_inputs(store) == [live, young]
    assert not stranded.exists()
    job = await store.get_job(waiting.id)
    assert job is not None and job.state is JobState.QUEUED and job.request.image_ref == live


# --- a gateway and a worker on separate machines -----------------------------------------------------------


class SplitRig(BotRig):
    """The rig with a DATA_DIR per role, as if each process ran on a machine of its own."""

    def data_dir_of(self, role: str) -> Path:
        return self.workdir / f"data-{role}"

    async def start(self, role: str = "run", **options: object) -> BotProcess:
        self.extra_env["DATA_DIR"] = str(self.data_dir_of(role))
        return await super().start(role, **options)  # type: ignore[arg-type]


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait for a condition (the worker deletes its files just after recording the delivery), never for time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


def first_frame(clip: bytes) -> np.ndarray:
    with av.open(io.BytesIO(clip)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24").astype(np.float64)


async def stored_input_count(db: Database) -> int:
    if isinstance(db, PostgresDatabase):
        conn = await db._connect(in_schema=True)
        try:
            return int(await conn.fetchval("SELECT COUNT(*) FROM job_inputs"))
        finally:
            await conn.close()
    assert isinstance(db, SqliteDatabase)
    raw = sqlite3.connect(db.path)
    try:
        return int(raw.execute("SELECT COUNT(*) FROM job_inputs").fetchone()[0])
    finally:
        raw.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    discord = FakeDiscord()
    await discord.start()
    try:
        yield discord
    finally:
        await discord.close()


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL unset")),
        "sqlite",
    ]
)
async def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield SqliteDatabase(tmp_path / "shared.db")
        return
    assert TEST_DATABASE_URL is not None
    db = PostgresDatabase(TEST_DATABASE_URL)
    try:
        yield db
    finally:
        await db.cleanup()


@pytest.mark.timeout(180)
async def test_a_worker_on_another_machine_animates_the_image_a_gateway_accepted(
    fake: FakeDiscord, shared_db: Database, tmp_path: Path
) -> None:
    rig = SplitRig(fake, shared_db, tmp_path, log=print)
    try:
        await rig.prepare(members=1)
        gateway = await rig.start("gateway")
        worker = await rig.start("worker")
        await rig.wait_gateway()
        rec = await fake.slash("video", {"prompt": "a leaf in the wind", "duration": 1}, user=rig.members[0],
                               attachments={"image": ("leaf.png", png(COLOUR, (640, 360)), "image/png")})  # fmt: skip
        rig.interactions.append(rec)
        snap = await rig.wait_settled(timeout=60)
        report = verify(snap, fake, rig.interactions)
        assert report.ok, report.explain() + rig.log_tails()
        (job,) = snap.jobs
        request = json.loads(job["request_json"])
        ref = request["image_ref"]
        assert request["image_path"] is None and re.fullmatch(INPUT_REF, ref)

        ((_, clip),) = [(j, m) for j, m in clip_messages(fake) if j == job["id"]]
        corner = first_frame(clip.attachments[0].data)[20:150, 20:300]  # outside the card and the label
        assert np.abs(corner.reshape(-1, 3).mean(axis=0) - COLOUR).max() < 8, "the clip is made from the image"
        assert f"input image {ref}: copied from the database" in worker.log_text()
        assert "copied from the database" not in gateway.log_text()
        assert [p for p in files_under(rig.data_dir_of("gateway")) if ref[:32] in p.name] == []

        inputs = rig.data_dir_of("worker") / "staging" / "inputs"

        async def worker_copies_deleted() -> bool:
            return files_under(inputs) == []

        async def stored_images_deleted() -> bool:
            return await stored_input_count(shared_db) == 0

        await wait_for(worker_copies_deleted, "the worker deletes its copy after delivery")
        await wait_for(stored_images_deleted, "the stored image is deleted after delivery")
    finally:
        await rig.stop_all()
        await rig.kill_all()

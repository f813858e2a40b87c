"""Model aliases with fallback chains (`MODELS_FILE` `[aliases]`), through the real worker against the vendors'
loopback fakes: a job moves to the next model only when its provider failed without taking it (down, out of
quota, or skipped by its circuit breaker), never after a content refusal or a create that may have been taken;
the credits follow the model that ran, and the member is told.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bot.clock import FakeClock
from bot.config import Settings
from bot.discord.messages import ENGLISH, reason_text
from bot.discord.render import status_text
from bot.domain import Job, JobState, QuotaLimits, Requester, VideoRequest
from bot.jobs.notify import FileSink
from bot.jobs.retry import RetryPolicy
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers import build_registry
from bot.store.base import Store
from tests.conftest import close_test_store, make_worker, open_test_store
from tests.discord_harness import running_bot
from tests.fakes.providers.fal import FalFake
from tests.fakes.providers.veo import VeoFake

ALICE = Requester(guild_id=1, user_id=10, channel_id=100)
EVER = (0.0, 1e12)
VEO = "veo/veo-3.1-fast-generate-preview"  # 3 credits a second
FAL = "fal/fal-ai/wan/v2.2-a14b/text-to-video"  # 2 credits a second


@dataclass
class Rig:
    store: Store
    service: JobService
    worker: Worker
    sink: FileSink

    async def run(self, model: str = "fast", duration: int = 4) -> Job:
        job = await self.service.enqueue(ALICE, VideoRequest(prompt="a storm", model=model, duration=duration))
        await self.worker.drain()
        return await self.service.get(job.id)

    async def standing(self) -> tuple[int, int]:
        admission = await self.store.admission(ALICE.guild_id, ALICE.user_id, EVER)
        return admission.charged, admission.reserved


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, veo: VeoFake, fal: FalFake) -> AsyncIterator[Rig]:
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[aliases]\nfast = ["{VEO}", "{FAL}", "local/preview"]\n', encoding="utf-8")
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", models_file=models_file,  # type: ignore[call-arg]
                        **veo.settings(), **fal.settings())  # fmt: skip
    registry = build_registry(settings)
    await registry.start()
    store = await open_test_store("sqlite", tmp_path)
    clock = FakeClock()
    (tmp_path / "out").mkdir()
    sink = FileSink(tmp_path / "out")
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w1", poll_interval=5.0)
    service = JobService(store, registry, clock)
    await store.update_policy(ALICE.guild_id, "user", ALICE.user_id, QuotaLimits(credits=1000, max_queued=20))
    try:
        yield Rig(store, service, worker, sink)
    finally:
        await registry.aclose()
        await close_test_store(store)


async def test_a_provider_that_is_down_hands_the_job_to_the_next_model(tmp_path: Path) -> None:
    async with VeoFake() as veo, FalFake() as fal:
        veo.fail_next("create", 429, times=100)  # rate limited past the retry budget: never taken
        async with rig(tmp_path, veo, fal) as r:
            job = await r.run()
            assert job.state is JobState.DELIVERED, job.error
            assert job.model == FAL and veo.creates == 0 and fal.creates == 1
            assert job.route is not None and [t.model for t in job.route.tried] == [VEO]
            # 12 credits were reserved on Veo (3 a second); Wan on fal costs 8, and the difference came back.
            assert job.credits == 8 and await r.standing() == (8, 0)
            shown = status_text(job, ENGLISH)
            assert f"`{FAL}`" in shown and "instead of" in shown and VEO in shown, shown


async def test_an_open_circuit_sends_the_next_jobs_straight_to_the_fallback(tmp_path: Path) -> None:
    async with VeoFake() as veo, FalFake() as fal:
        veo.fail_next("create", 429, times=100)
        async with rig(tmp_path, veo, fal) as r:
            first = await r.run()
            after_first = veo.count("create")  # the whole retry budget
            second = await r.run()  # one more failure opens the circuit: no further tries
            assert veo.count("create") == after_first + 1
            third = await r.run()
            assert veo.count("create") == after_first + 1, "the open circuit skipped Veo at once"
            assert (first.model, second.model, third.model) == (FAL, FAL, FAL)
            assert third.route is not None and "failing right now" in reason_text(third.route.tried[0].reason, ENGLISH)


async def test_a_content_refusal_does_not_fall_through(tmp_path: Path) -> None:
    async with VeoFake() as veo, FalFake() as fal:
        veo.refuse_reason = "a real person's likeness"
        async with rig(tmp_path, veo, fal) as r:
            job = await r.run()
            assert job.state is JobState.FAILED and "likeness" in reason_text(job.error, ENGLISH)
            assert fal.creates == 0 and await r.standing() == (0, 0)


async def test_a_refusal_of_the_create_itself_does_not_fall_through(tmp_path: Path) -> None:
    async with VeoFake() as veo, FalFake() as fal:
        refusal = {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                             "message": "The prompt violates Google's Responsible AI practices."}}  # fmt: skip
        veo.fail_next("create", 400, body=refusal)
        async with rig(tmp_path, veo, fal) as r:
            job = await r.run()
            assert job.state is JobState.FAILED and "Responsible AI" in reason_text(job.error, ENGLISH)
            assert fal.creates == 0, "the member must change the prompt: another model would not help"
            assert await r.standing() == (0, 0)


async def test_a_create_answered_500_after_it_was_taken_does_not_fall_through(tmp_path: Path) -> None:
    async with VeoFake() as veo, FalFake() as fal:
        veo.drop_create_answer = True  # the job exists at Veo (and is billed there); the answer never came
        async with rig(tmp_path, veo, fal) as r:
            job = await r.run()
            assert job.state is JobState.FAILED
            assert (veo.creates, fal.creates) == (1, 0), "one create in all: no double spend"
            assert await r.standing() == (0, 0)


async def test_a_model_asked_by_name_never_falls_back(tmp_path: Path) -> None:
    async with VeoFake() as veo, FalFake() as fal:
        veo.fail_next("create", 429, times=100)
        async with rig(tmp_path, veo, fal) as r:
            job = await r.run(model=VEO)
            assert job.state is JobState.FAILED and fal.creates == 0


async def test_through_discord_the_alias_is_offered_and_the_member_is_told_of_the_fallback(tmp_path: Path) -> None:
    async with VeoFake() as veo, FalFake() as fal:
        veo.fail_next("create", 429, times=100)
        fal.polls_to_finish = 0
        models_file = tmp_path / "models.toml"
        models_file.write_text(f'[aliases]\nfast = ["{VEO}", "{FAL}"]\n', encoding="utf-8")
        settings = {**veo.settings(), **fal.settings(), "models_file": models_file}
        async with running_bot(tmp_path, **settings) as h:
            assert h.app.worker is not None
            h.app.worker.retry = RetryPolicy(max_attempts=2, base_delay=0.01)  # real time passes here
            rec = await h.fake.autocomplete("video", {"prompt": "a storm", "model": "fa"}, "model")
            await rec.wait_callback()
            assert rec.choices[0]["value"] == "fast" and "Veo 3.1 Fast, then Wan 2.2 (fal)" in rec.choices[0]["name"]
            video = await h.fake.slash("video", {"prompt": "a storm", "model": "fast", "duration": 4})
            await video.wait_callback()
            job = await h.only_job()
            done = await h.wait_job_state(job.id, "delivered", "failed", timeout=60)
            assert done.state.value == "delivered" and done.model == FAL, done.error
            clip = h.fake.message(done.delivered_message_id)
            assert [a.data for a in clip.attachments] == [fal.video]
            assert f"fallback for `{VEO}`" in str(clip.embeds[0]["fields"])
            status = await video.wait_original(lambda m: "Done" in m.content)
            assert f"made with `{FAL}` instead of `{VEO}`" in status.content, status.content

"""The Replicate adapter against a strict loopback Replicate (real HTTP): what it sends, how it reads
predictions, refusals, expired file URLs, cancel and health."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.clock import FakeClock
from bot.config import Settings
from bot.discord.messages import ENGLISH, reason_text
from bot.domain import JobState, VideoRequest
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CredentialsRejected,
    ProviderBilling,
    ProviderError,
    RequestRejected,
    ResultExpired,
)
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers.base import RemoteJob, RemoteState, VideoProvider
from bot.providers.replicate import ReplicateProvider, from_settings, log_progress, poll_result, wan_timing
from bot.store.base import Store
from tests.fakes.providers.replicate import TOKEN, ReplicateFake, decoded_data_uri
from tests.provider_harness import ALICE, EVER, adapter_for, engine, image_file, polled, submitted

T2V = "replicate/wan-video/wan-2.2-t2v-fast"
I2V = "replicate/wan-video/wan-2.2-i2v-fast"
MINIMAX = "replicate/minimax/video-01"


adapter = adapter_for(from_settings)


def request(model: str = T2V, **fields: Any) -> VideoRequest:
    return VideoRequest(**{"prompt": "a lighthouse in a storm", "model": model, "duration": 5, **fields})


def photo(tmp_path: Path) -> str:
    return str(image_file(tmp_path, (640, 480), color=(200, 80, 30)))


async def submit_and_poll(provider: ReplicateProvider, req: VideoRequest, polls: int) -> list[Any]:
    return await polled(provider, await submitted(provider, req, "job1"), polls)


async def test_a_video_provider_with_a_token_and_none_without(tmp_path: Path) -> None:
    for unset in (None, " "):
        assert from_settings(Settings(_env_file=None, data_dir=tmp_path, replicate_api_token=unset)) is None
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        assert isinstance(provider, VideoProvider)
        assert [model.id for model in provider.models()] == [T2V, I2V, MINIMAX]
        assert all(list(model.durations) == sorted(model.durations) for model in provider.models())


@pytest.mark.parametrize("duration", [4, 5, 6, 7, 8])
def test_wan_timing_fits_the_schema_and_the_duration(duration: int) -> None:
    fps, frames = wan_timing(duration)
    assert 81 <= frames <= 121 and 5 <= fps <= 30
    assert abs(frames / fps - duration) < 0.1


# --- what is sent ---------------------------------------------------------------------------------------
async def test_text_to_video_sends_the_model_fields_with_bearer_and_a_short_wait(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        remote_id = await provider.submit("job1", request(seed=7, aspect="9:16", duration=6))
        (create,) = fake.requests("POST /v1/models/wan-video/wan-2.2-t2v-fast/predictions")
        assert create.headers["Authorization"] == f"Bearer {TOKEN}"
        assert create.headers["Prefer"] == "wait=5"
        assert create.headers["Content-Type"] == "application/json"
        sent = {"prompt": "a lighthouse in a storm", "num_frames": 97, "frames_per_second": 16, "resolution": "720p",
                "aspect_ratio": "9:16", "seed": 7}  # fmt: skip
        assert fake.jobs[remote_id].body == {"input": sent}


async def test_image_to_video_sends_the_frame_cropped_to_the_aspect_as_a_data_uri(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        req = request(I2V, image_path=photo(tmp_path), aspect="9:16", duration=4)
        sent = fake.jobs[await provider.submit("job1", req)].body["input"]
        assert set(sent) == {"prompt", "image", "num_frames", "frames_per_second", "resolution"}
        assert (sent["num_frames"], sent["frames_per_second"]) == (81, 20)
        assert sent["image"].startswith("data:image/jpeg;base64,")
        frame = Image.open(io.BytesIO(decoded_data_uri(sent["image"])))
        assert (frame.format, frame.size) == ("JPEG", (720, 1280))


async def test_minimax_takes_a_first_frame_and_nothing_it_does_not_know(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        req = request(MINIMAX, duration=6, image_path=photo(tmp_path))
        sent = fake.jobs[await provider.submit("job1", req)].body["input"]
        assert set(sent) == {"prompt", "first_frame_image"}
        assert fake.requests("POST /v1/models/minimax/video-01/predictions")


async def test_the_image_model_needs_an_image_and_the_text_model_takes_none(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        with pytest.raises(RequestRejected) as no_image:
            await provider.submit("job1", request(I2V))
        with pytest.raises(RequestRejected) as stray_image:
            await provider.submit("job2", request(T2V, image_path=photo(tmp_path)))
        assert (no_image.value.field, stray_image.value.field) == ("image", "image")
        assert fake.creates == 0


# --- the fake is as strict as Replicate -----------------------------------------------------------------
async def test_a_wrong_token_is_refused_and_the_adapter_names_the_variable(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path, replicate_api_token="r8_wrong") as provider:
        with pytest.raises(CredentialsRejected) as caught:
            await provider.submit("job1", request())
        assert caught.value.variable == "REPLICATE_API_TOKEN" and not caught.value.retryable
        assert "r8_wrong" not in str(caught.value)
        assert fake.seen[-1].status == 401 and fake.creates == 0


@pytest.mark.parametrize(
    ("body", "headers", "status", "field"),
    [
        ({"prompt": "x"}, {}, 422, None),  # the fields outside `input`
        ({"input": {"prompt": "x", "num_frames": "81"}}, {}, 422, "input.num_frames"),
        ({"input": {"prompt": "x", "num_frames": 200}}, {}, 422, "input.num_frames"),
        ({"input": {"prompt": "x", "frames_per_second": 16.5}}, {}, 422, "input.frames_per_second"),
        ({"input": {"prompt": "x", "aspect_ratio": "1:1"}}, {}, 422, "input.aspect_ratio"),
        ({"input": {"prompt": "x", "seed": True}}, {}, 422, "input.seed"),
        ({"input": {"prompt": "x", "duration": 5}}, {}, 422, "input"),  # not a field of this model
        ({"input": {"num_frames": 81}}, {}, 422, "input"),  # prompt is required
        ({"input": {"prompt": "x"}}, {"Prefer": "wait=120"}, 400, None),
        ({"input": {"prompt": "x"}}, {"Prefer": "respond-async"}, 400, None),
        ({"input": {"prompt": "x"}}, {"Authorization": "Token r8_test"}, 401, None),
    ],
)
async def test_the_fake_refuses_what_replicate_refuses(
    body: dict[str, Any], headers: dict[str, str], status: int, field: str | None
) -> None:
    async with ReplicateFake() as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        sent = {"Authorization": f"Bearer {TOKEN}", **headers}
        response = await client.post("/v1/models/wan-video/wan-2.2-t2v-fast/predictions", json=body, headers=sent)
        assert response.status_code == status, response.text
        problem = response.json()
        assert problem["status"] == status and problem["title"] and problem["detail"]
        if field is not None:
            assert problem["invalid_fields"][0]["field"] == field
        assert fake.creates == 0


async def test_the_fake_refuses_a_body_that_is_not_json_and_an_unknown_model() -> None:
    async with ReplicateFake() as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        broken = await client.post("/v1/models/wan-video/wan-2.2-t2v-fast/predictions", content=b"{", headers=auth)
        unknown = await client.post("/v1/models/wan-video/wan-9/predictions", json={"input": {}}, headers=auth)
        anonymous = await client.get("/v1/account")
        assert (broken.status_code, unknown.status_code, anonymous.status_code) == (400, 404, 401)
        assert fake.creates == 0


async def test_an_invalid_field_becomes_a_rejection_naming_it(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        problem = {"title": "Input validation failed", "status": 422,
                   "detail": "- input.num_frames: Must be less than or equal to 121\n",
                   "invalid_fields": [{"type": "number_lte", "field": "input.num_frames",
                                       "description": "Must be less than or equal to 121"}]}  # fmt: skip
        fake.fail_next("create", 422, body=problem)
        with pytest.raises(RequestRejected) as caught:
            await provider.submit("job1", request())
        assert caught.value.field == "num_frames" and "121" in caught.value.reason


async def test_replicate_error_shapes_become_the_right_errors(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.fail_next("create", 422, body=fake.error_body(422, "NSFW content detected in the prompt"))
        fake.fail_next("create", 404, body=fake.error_body(404, "The requested resource could not be found."))
        fake.fail_next("create", 402, body=fake.error_body(402, "You have insufficient credit to run this model."))
        with pytest.raises(ContentRefused) as refused:
            await provider.submit("job1", request())
        with pytest.raises(RequestRejected) as unknown:
            await provider.submit("job1", request())
        with pytest.raises(ProviderBilling):
            await provider.submit("job1", request())
        assert "NSFW" in reason_text(refused.value.user_message, ENGLISH) and unknown.value.field == "model"
        assert fake.creates == 0


async def test_the_fake_wants_the_image_as_a_uri() -> None:
    async with ReplicateFake() as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = {"input": {"prompt": "x", "image": "data:image/png;base64,@@not base64@@"}}
        response = await client.post("/v1/models/wan-video/wan-2.2-i2v-fast/predictions", json=body, headers=auth)
        assert response.status_code == 422
        assert response.json()["invalid_fields"][0]["field"] == "input.image"


async def test_throttled_create_may_be_repeated_after_the_wait_asked(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.fail_next("create", 429, retry_after=2)
        with pytest.raises(ProviderError) as caught:
            await provider.submit("job1", request())
        assert caught.value.retryable and caught.value.retry_after == 2
        assert fake.creates == 0
        assert await provider.submit("job1", request())


async def test_a_lost_create_answer_is_never_repeated(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.drop_create_answer = True
        with pytest.raises(CreateOutcomeUnknown) as caught:
            await provider.submit("job1", request())
        assert not caught.value.retryable and fake.creates == 1


# --- polls ----------------------------------------------------------------------------------------------
async def test_polls_go_from_starting_through_progress_to_a_video_url(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.starting_polls, fake.polls_to_finish = 1, 3
        results = await submit_and_poll(provider, request(), polls=4)
        assert [r.state for r in results] == [RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.RUNNING,
                                              RemoteState.SUCCEEDED]  # fmt: skip
        progress = [r.progress for r in results]
        assert progress[0] is None and 0 < progress[1] < progress[2] < 1 and progress[3] == 1.0
        assert all(r.poll_after is None and r.queue_position is None for r in results)  # Replicate gives neither
        url = results[-1].output_url
        assert url is not None and url.startswith(fake.storage_url) and url.endswith(".mp4")


async def test_a_list_output_gives_its_video(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.output_as_list, fake.polls_to_finish = True, 0
        (result,) = await submit_and_poll(provider, request(), polls=1)
        assert result.state is RemoteState.SUCCEEDED and result.output_url and result.output_url.endswith(".mp4")


async def test_a_safety_refusal_reaches_the_member_with_its_reason(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.refuse_reason = "graphic violence"
        first, second = await submit_and_poll(provider, request(), polls=2)
        assert first.state is RemoteState.RUNNING
        assert second.state is RemoteState.FAILED
        assert (
            second.error
            and "graphic violence" in reason_text(second.error, ENGLISH)
            and "refused" in reason_text(second.error, ENGLISH)
        )


async def test_a_refusal_within_the_wait_is_raised_by_submit(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.finish_within_wait, fake.refuse_reason = True, "a real person"
        with pytest.raises(ContentRefused) as caught:
            await provider.submit("job1", request())
        assert "a real person" in reason_text(caught.value.user_message, ENGLISH)


async def test_a_prediction_done_within_the_wait_is_still_found_by_its_id(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.finish_within_wait = True
        (result,) = await submit_and_poll(provider, request(), polls=1)
        assert result.state is RemoteState.SUCCEEDED and result.output_url


def test_a_model_failure_is_reported_in_its_own_words() -> None:
    result = poll_result({"id": "abc", "status": "failed", "error": "CUDA out of memory"})
    assert result.state is RemoteState.FAILED and result.error
    told = reason_text(result.error, ENGLISH)
    assert "CUDA out of memory" in told and "refused" not in told
    assert poll_result({"id": "abc", "status": "canceled"}).state is RemoteState.CANCELLED
    assert poll_result({"id": "abc", "status": "succeeded", "output": None}).state is RemoteState.FAILED


def test_progress_is_the_last_bar_in_the_logs() -> None:
    logs = "loading\n 10%|█         | 2/20 [00:01<00:09]\nstage two\n 45%|████▌     | 9/20 [00:05<00:06]\nsaving"
    assert log_progress(logs) == 9 / 20
    assert log_progress("no bars here") is None and log_progress(None) is None


async def test_polls_survive_a_busy_replicate_and_a_restart(tmp_path: Path) -> None:
    async with ReplicateFake() as fake:
        async with adapter(fake, tmp_path) as provider:
            req = request()
            remote = RemoteJob("job1", await provider.submit("job1", req), req)
        fake.fail_next("poll", 503)
        async with adapter(fake, tmp_path) as restarted:  # a new process: only the stored id is known
            with pytest.raises(ProviderError) as caught:
                await restarted.poll(remote)
            assert caught.value.retryable
            assert (await restarted.poll(remote)).state is RemoteState.RUNNING
        assert fake.creates == 1


# --- download and cancel --------------------------------------------------------------------------------
async def test_the_video_is_fetched_from_the_file_host_without_the_token(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.polls_to_finish = 0
        req = request()
        remote = RemoteJob("job1", await provider.submit("job1", req), req)
        dest = tmp_path / "clip.mp4"
        await provider.download(remote, await provider.poll(remote), dest)
        assert dest.read_bytes() == fake.video
        (fetch,) = fake.requests("GET /xezq/*")
        assert "Authorization" not in fetch.headers and fetch.status == 200


async def test_an_expired_file_url_is_replaced_by_the_next_poll(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        fake.polls_to_finish, fake.expire_first_url = 0, True
        req = request()
        remote = RemoteJob("job1", await provider.submit("job1", req), req)
        dest = tmp_path / "clip.mp4"
        with pytest.raises(ResultExpired) as caught:
            await provider.download(remote, await provider.poll(remote), dest)
        assert caught.value.retryable and not dest.exists()
        await provider.download(remote, await provider.poll(remote), dest)
        assert dest.read_bytes() == fake.video


async def test_cancel_stops_the_prediction(tmp_path: Path) -> None:
    async with ReplicateFake() as fake, adapter(fake, tmp_path) as provider:
        req = request()
        remote = RemoteJob("job1", await provider.submit("job1", req), req)
        await provider.cancel(remote)
        assert fake.count("cancel") == 1 and fake.jobs[remote.remote_id].cancelled
        assert (await provider.poll(remote)).state is RemoteState.CANCELLED


# --- health ---------------------------------------------------------------------------------------------
async def test_health_with_a_good_and_a_bad_token(tmp_path: Path) -> None:
    async with ReplicateFake() as fake:
        async with adapter(fake, tmp_path) as provider:
            good = await provider.health()
        async with adapter(fake, tmp_path, replicate_api_token="r8_wrong") as provider:
            bad = await provider.health()
        assert good.ok and T2V in good.models
        assert bad.reachable and not bad.authenticated and bad.problem and "REPLICATE_API_TOKEN" in bad.problem
        assert "r8_wrong" not in bad.problem
        assert fake.requests("GET /v1/account")


async def test_health_when_replicate_cannot_be_reached(tmp_path: Path) -> None:
    async with ReplicateFake() as fake:
        closed = fake.base_url
    async with adapter(fake, tmp_path, replicate_base_url=closed) as provider:
        health = await provider.health()
    assert not health.reachable and health.problem and "REPLICATE_BASE_URL" in health.problem


# --- through the real worker ----------------------------------------------------------------------------
@asynccontextmanager
async def running(fake: ReplicateFake, store: Store, clock: FakeClock, sink: FileSink,
                  tmp_path: Path) -> AsyncIterator[tuple[JobService, Worker]]:  # fmt: skip
    async with adapter(fake, tmp_path) as provider:
        yield await engine(provider, store, clock, sink, tmp_path)


async def test_the_worker_delivers_after_fetching_an_expired_url_again(
    store: Store, clock: FakeClock, sink: FileSink, tmp_path: Path
) -> None:
    async with ReplicateFake() as fake, running(fake, store, clock, sink, tmp_path) as (service, worker):
        fake.expire_first_url = True
        job = await service.enqueue(ALICE, request())
        await worker.drain()
        done = await store.get_job(job.id)
        assert done is not None and done.state is JobState.DELIVERED, done
        assert job.id in sink.delivered
        assert [s.status for s in fake.requests("GET /xezq/*")] == [404, 200]
        assert fake.creates == 1


async def test_the_worker_tells_the_member_of_a_refusal_and_refunds(
    store: Store, clock: FakeClock, sink: FileSink, tmp_path: Path
) -> None:
    async with ReplicateFake() as fake, running(fake, store, clock, sink, tmp_path) as (service, worker):
        fake.refuse_reason = "violent content"
        job = await service.enqueue(ALICE, request())
        await worker.drain()
        done = await store.get_job(job.id)
        assert done is not None and done.state is JobState.FAILED
        assert done.error and "violent content" in reason_text(done.error, ENGLISH)
        standing = await store.admission(ALICE.guild_id, ALICE.user_id, EVER)
        assert (standing.charged, standing.reserved) == (0, 0)

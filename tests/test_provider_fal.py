"""The fal adapter against its loopback fake over real HTTP: the exact requests, the fake's strictness, the
mapping of fal's statuses and errors, result URLs on another origin that expire, cancel, health."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bot.config import Settings
from bot.discord.messages import ENGLISH, reason_text
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CredentialsRejected,
    ProviderBilling,
    ProviderError,
    RequestRejected,
    ResultExpired,
)
from bot.errors.said import vendor_said
from bot.providers.base import PollResult, RemoteJob, RemoteState
from bot.providers.fal import MODELS, FalProvider, QueueUrls, from_settings, progress_in
from tests.fakes.providers.fal import IMAGE_MODEL, KEY, TEXT_MODEL, FalFake
from tests.provider_harness import (
    adapter_fixture,
    adapter_for,
    check_throttled_create,
    poll_until_done,
    request_maker,
    submitted,
    vendor_fixture,
)

PROMPT = "a lighthouse in a storm, waves crashing"


fake = vendor_fixture(FalFake)
fal = adapter_fixture(from_settings)
adapter = adapter_for(from_settings)
text_request = request_maker(prompt=PROMPT, model=f"fal/{TEXT_MODEL}", duration=5)


# --- the exact requests -----------------------------------------------------------------------------------
async def test_text_to_video_sends_the_wan_input_with_the_key(fal: FalProvider, fake: FalFake) -> None:
    remote = await submitted(fal, text_request(duration=5, aspect="9:16", seed=42, negative_prompt="blurry"))
    (create,) = fake.requests("POST *")
    assert create.path == f"/{TEXT_MODEL}"
    assert create.headers["Authorization"] == f"Key {KEY}"
    assert create.headers["Content-Type"] == "application/json"
    (job,) = fake.jobs.values()
    assert job.body == {
        "prompt": PROMPT,
        "num_frames": 81,
        "frames_per_second": 16,
        "resolution": "720p",
        "aspect_ratio": "9:16",
        "enable_safety_checker": True,
        "enable_output_safety_checker": True,
        "negative_prompt": "blurry",
        "seed": 42,
    }
    urls = QueueUrls.decode(remote.remote_id)
    assert urls.request_id == job.id
    assert urls.status_url == f"{fake.base_url}/fal-ai/wan/requests/{job.id}/status", "owner/alias only"
    await submitted(fal, text_request(duration=10))
    plain = list(fake.jobs.values())[-1].body  # optional fields left out; 10 s is fal's 161 frames
    assert plain["num_frames"] == 161 and not {"seed", "negative_prompt", "image_url"} & plain.keys()


async def test_image_to_video_sends_the_first_frame_as_a_data_uri(
    fal: FalProvider, fake: FalFake, tmp_path: Path
) -> None:
    image = tmp_path / "frame.png"
    Image.new("RGB", (64, 36), (200, 40, 40)).save(image)
    request = text_request(model=f"fal/{IMAGE_MODEL}", image_path=str(image), aspect="16:9")
    await submitted(fal, request)
    (create,) = fake.requests("POST *")
    assert create.path == f"/{IMAGE_MODEL}"
    (job,) = fake.jobs.values()
    prefix = "data:image/png;base64,"
    assert job.body["image_url"].startswith(prefix)
    assert base64.b64decode(job.body["image_url"][len(prefix) :]) == image.read_bytes()
    assert job.body["aspect_ratio"] == "16:9"


@pytest.mark.parametrize(
    ("model", "image", "duration", "field"),
    [(IMAGE_MODEL, None, 5, "image"), (IMAGE_MODEL, "frame.gif", 5, "image"), (TEXT_MODEL, None, 12, "duration")],
)
async def test_what_fal_would_refuse_is_refused_before_anything_is_billed(
    fal: FalProvider, fake: FalFake, tmp_path: Path, model: str, image: str | None, duration: int, field: str
) -> None:
    if image is not None:
        Image.new("RGB", (8, 8)).save(tmp_path / image)
    request = text_request(model=f"fal/{model}", duration=duration, image_path=image and str(tmp_path / image))
    with pytest.raises(RequestRejected) as refused:
        await fal.submit("job-1", request)
    assert refused.value.field == field and not refused.value.retryable
    assert fake.count("create") == 0


# --- the fake is as strict as fal ---------------------------------------------------------------------------
async def test_a_wrong_key_is_refused_and_names_the_variable(fake: FalFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, fal_key="not-the-key") as fal:
        with pytest.raises(CredentialsRejected) as refused:
            await fal.submit("job-1", text_request())
    assert refused.value.variable == "FAL_KEY" and "FAL_KEY" in str(refused.value)
    assert "not-the-key" not in str(refused.value)
    assert fake.creates == 0


@pytest.mark.parametrize("header", [None, f"Bearer {KEY}", f"key {KEY}", "Key wrong"])
async def test_the_fake_wants_the_key_scheme(fake: FalFake, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        response = await client.post(f"/{TEXT_MODEL}", json={"prompt": "x"}, headers=headers)
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)
    assert fake.creates == 0


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"prompt": "x", "duration": 5}, ["body", "duration"], "extra_forbidden"),
        ({"prompt": "x", "num_frames": "81"}, ["body", "num_frames"], "int_type"),
        ({"prompt": "x", "num_frames": 200}, ["body", "num_frames"], "less_than_equal"),
        ({"prompt": "x", "aspect_ratio": "4:3"}, ["body", "aspect_ratio"], "literal_error"),
        ({"prompt": "x", "enable_safety_checker": "yes"}, ["body", "enable_safety_checker"], "bool_type"),
        ({"num_frames": 81}, ["body", "prompt"], "missing"),
    ],
)
async def test_the_fake_checks_every_field(fake: FalFake, body: dict[str, object], loc: list[str], kind: str) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Key {KEY}"}) as client:
        response = await client.post(f"/{TEXT_MODEL}", json=body)
    assert response.status_code == 422
    assert {"loc": loc, "type": kind} in [{"loc": d["loc"], "type": d["type"]} for d in response.json()["detail"]]
    assert fake.creates == 0


async def test_the_fake_wants_an_image_reference_on_the_image_model(fake: FalFake) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Key {KEY}"}) as client:
        missing = await client.post(f"/{IMAGE_MODEL}", json={"prompt": "x"})
        garbage = await client.post(f"/{IMAGE_MODEL}", json={"prompt": "x", "image_url": "data:image/png;base64,%%"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "image_url"]
    assert garbage.status_code == 422 and garbage.json()["detail"][0]["type"] == "value_error"


async def test_the_status_route_names_only_owner_and_alias_and_gives_logs_when_asked(
    fal: FalProvider, fake: FalFake
) -> None:
    fake.polls_to_finish = 5
    remote = await submitted(fal, text_request())
    status = f"/fal-ai/wan/requests/{QueueUrls.decode(remote.remote_id).request_id}/status"
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Key {KEY}"}) as client:
        full_path = await client.get(status.replace("/fal-ai/wan/", f"/{TEXT_MODEL}/"))
        queued = await client.get(status)
        bad_logs = await client.get(status, params={"logs": "yes"})
        running = await client.get(status)
    assert full_path.status_code == 404
    assert queued.status_code == 202 and queued.json()["status"] == "IN_QUEUE"
    assert bad_logs.status_code == 422 and bad_logs.json()["detail"][0]["loc"] == ["query", "logs"]
    assert running.json()["status"] == "IN_PROGRESS" and running.json()["logs"] is None
    await fal.poll(remote)
    assert fake.requests("GET *")[-1].query == {"logs": "1"}
    assert fake.requests("GET *")[-1].headers["Authorization"] == f"Key {KEY}"


# --- polls ---------------------------------------------------------------------------------------------------
async def test_a_poll_tells_queue_position_then_progress_then_the_video(
    fal: FalProvider, fake: FalFake, tmp_path: Path
) -> None:
    fake.polls_to_finish = 3
    fake.queue_ahead = 4
    remote = await submitted(fal, text_request())
    results = await poll_until_done(fal, remote)
    assert [r.state for r in results] == [RemoteState.QUEUED, *[RemoteState.RUNNING] * 2, RemoteState.SUCCEEDED]
    assert results[0].queue_position == 4
    assert [r.progress for r in results[1:3]] == [0.5, 0.75]
    done = results[-1]
    assert done.output_url is not None and done.output_url.startswith(fake.storage_url), "the video is on the CDN"
    dest = tmp_path / "clip.mp4"
    await fal.download(remote, done, dest)
    assert dest.read_bytes() == fake.video
    (media,) = fake.requests("GET /files/*")
    assert "Authorization" not in media.headers, "the key never goes to another origin"
    async with httpx.AsyncClient() as client:  # and the fake CDN would refuse it
        assert (await client.get(done.output_url, headers={"Authorization": f"Key {KEY}"})).status_code == 400


@pytest.mark.parametrize("errors_in_status", [True, False])
async def test_a_refusal_by_fals_content_checker_reaches_the_member(
    fal: FalProvider, fake: FalFake, errors_in_status: bool
) -> None:
    fake.refuse_reason = "The content was flagged by a content checker: violence"
    fake.errors_in_status = errors_in_status  # older fal apps tell a failure only in the result
    remote = await submitted(fal, text_request())
    assert (await fal.poll(remote)).state is RemoteState.QUEUED
    with pytest.raises(ContentRefused) as refused:
        await fal.poll(remote)
    assert fake.refuse_reason in reason_text(refused.value.user_message, ENGLISH) and not refused.value.retryable


async def test_a_failure_at_the_model_ends_the_job_with_fals_words(fal: FalProvider, fake: FalFake) -> None:
    fake.fail_reason = "CUDA out of memory while decoding"
    fake.polls_to_finish = 1
    remote = await submitted(fal, text_request())
    results = await poll_until_done(fal, remote)
    assert results[-1] == PollResult(RemoteState.FAILED, error=vendor_said("CUDA out of memory while decoding"))
    assert reason_text(results[-1].error, ENGLISH) == "CUDA out of memory while decoding"


async def test_a_typed_field_error_at_create_names_the_members_option(fal: FalProvider, fake: FalFake) -> None:
    error = {"loc": ["body", "num_frames"], "msg": "Input should be less than or equal to 161", "type": "le"}
    fake.fail_next("create", 422, body={"detail": [error]})
    with pytest.raises(RequestRejected) as rejected:
        await fal.submit("job-1", text_request())
    assert rejected.value.field == "duration" and "161" in reason_text(rejected.value.user_message, ENGLISH)


async def test_a_locked_account_is_a_billing_problem(fal: FalProvider, fake: FalFake) -> None:
    locked = "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
    fake.fail_next("create", 403, body={"detail": locked})
    with pytest.raises(ProviderBilling, match="Exhausted balance"):
        await fal.submit("job-1", text_request())


# --- what may be repeated -------------------------------------------------------------------------------------
async def test_a_rate_limited_create_may_be_repeated_after_the_wait(fal: FalProvider, fake: FalFake) -> None:
    await check_throttled_create(fake, fal, text_request())
    await fal.submit("job-1", text_request())
    assert fake.creates == 1


@pytest.mark.parametrize("failure", [500, 503, "answer lost"])
async def test_a_create_that_failed_after_sending_is_final(fal: FalProvider, fake: FalFake, failure: object) -> None:
    if isinstance(failure, int):
        fake.fail_next("create", failure)
    else:
        fake.drop_create_answer = True  # fal made (and bills) the request; a second create would bill twice
    with pytest.raises(CreateOutcomeUnknown):
        await fal.submit("job-1", text_request())
    assert fake.creates == (0 if isinstance(failure, int) else 1)


@pytest.mark.parametrize("kind", ["poll", "result"])
async def test_passing_trouble_on_polls_and_results_is_retryable(fal: FalProvider, fake: FalFake, kind: str) -> None:
    fake.polls_to_finish = 0
    remote = await submitted(fal, text_request())
    fake.fail_next(kind, 503, retry_after=3)
    with pytest.raises(ProviderError) as trouble:
        await fal.poll(remote)
    assert trouble.value.retryable and trouble.value.retry_after == 3
    assert (await fal.poll(remote)).state is RemoteState.SUCCEEDED


async def test_a_restarted_worker_finds_the_job_from_its_remote_id(fake: FalFake, tmp_path: Path) -> None:
    fake.polls_to_finish = 1
    async with adapter(fake, tmp_path) as first:
        remote = await submitted(first, text_request())  # then the process dies; the remote id was stored
    async with adapter(fake, tmp_path) as second:
        results = await poll_until_done(second, RemoteJob("job-1", remote.remote_id, remote.request))
    assert results[-1].state is RemoteState.SUCCEEDED and fake.creates == 1


def test_a_relay_that_hands_back_no_urls_gets_the_owner_alias_ones() -> None:
    urls = QueueUrls.from_answer({"request_id": "r-1", "status_url": "not a url"}, TEXT_MODEL)
    assert urls == QueueUrls("r-1", "fal-ai/wan/requests/r-1/status", "fal-ai/wan/requests/r-1",
                             "fal-ai/wan/requests/r-1/cancel")  # fmt: skip
    assert QueueUrls.decode(urls.encode()) == urls
    with pytest.raises(CreateOutcomeUnknown):
        QueueUrls.from_answer({"status": "IN_QUEUE"}, TEXT_MODEL)


async def test_an_unreadable_remote_id_is_final(fal: FalProvider) -> None:
    for remote_id in ("req-123", json.dumps({"request_id": "r"}), "[1, 2]"):
        with pytest.raises(ProviderError) as broken:
            await fal.poll(RemoteJob("job-1", remote_id, text_request()))
        assert not broken.value.retryable


# --- result URLs on fal's CDN ----------------------------------------------------------------------------------
async def test_an_expired_video_url_is_replaced_by_the_next_poll(
    fal: FalProvider, fake: FalFake, tmp_path: Path
) -> None:
    fake.expire_first_url = True
    fake.polls_to_finish = 0
    remote = await submitted(fal, text_request())
    stale = await fal.poll(remote)
    assert stale == await fal.poll(remote), "the same URL until a download finds it expired"
    with pytest.raises(ResultExpired):
        await fal.download(remote, stale, tmp_path / "clip.mp4")
    fresh = await fal.poll(remote)
    assert fresh.output_url != stale.output_url
    await fal.download(remote, fresh, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video
    assert fake.count("download") == 2


# --- cancel -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("finished", [False, True])
async def test_cancel_puts_to_the_cancel_url(fal: FalProvider, fake: FalFake, finished: bool) -> None:
    fake.polls_to_finish = 0 if finished else 5
    remote = await submitted(fal, text_request())
    await fal.poll(remote)
    await fal.cancel(remote)  # fal's 400 ALREADY_COMPLETED for a finished request is no error
    (cancel,) = fake.requests("PUT *")
    assert cancel.path == QueueUrls.decode(remote.remote_id).cancel_url.removeprefix(fake.base_url)
    assert cancel.headers["Authorization"] == f"Key {KEY}"
    assert cancel.status == (400 if finished else 202)
    assert next(iter(fake.jobs.values())).cancelled is not finished


# --- health and settings ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "named"),
    [({}, None), ({"fal_key": "wrong"}, "FAL_KEY"), ({"fal_base_url": "http://127.0.0.1:9"}, "FAL_BASE_URL")],
)
async def test_health_is_one_cheap_request_and_names_the_setting_to_fix(
    fake: FalFake, tmp_path: Path, overrides: dict[str, object], named: str | None
) -> None:
    async with adapter(fake, tmp_path, **overrides) as fal:
        health = await fal.health()
    assert health.models == tuple(model.id for model in MODELS)
    assert health.reachable is ("fal_base_url" not in overrides)
    assert health.ok is health.authenticated is (named is None)
    if named is not None:
        assert health.problem is not None and named in health.problem and "wrong" not in health.problem


def test_no_key_no_provider(tmp_path: Path) -> None:
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path)) is None
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path, fal_key=" ")) is None


def test_the_models_say_what_wan_on_fal_can_do() -> None:
    text, image = MODELS
    assert text.id == "fal/fal-ai/wan/v2.2-a14b/text-to-video" and text.label == "Wan 2.2 (fal)"
    assert image.id == "fal/fal-ai/wan/v2.2-a14b/image-to-video" and image.supports_image
    for model in MODELS:
        assert model.durations == tuple(range(2, 11)) and model.default_duration == 5
        assert model.aspects == ("16:9", "9:16", "1:1")
        assert model.supports_seed and model.supports_negative_prompt
        assert model.weight == 1.0 and model.usd_per_second is None, "prices are the catalogue's"


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([" 45%|████▌     | 12/27 [00:30<00:37,  2.5s/it]"], 0.45),
        (["Loading", "step 9/27", "unrelated 3/4 line"], 9 / 27),
        (["100%|██████████| 27/27 [01:00<00:00]"], 0.99),
        (["Loading Wan 2.2"], None),
    ],
)
def test_progress_is_read_from_the_latest_log_line_that_shows_it(messages: list[str], expected: float | None) -> None:
    logs = [{"message": message, "level": "INFO"} for message in messages]
    assert progress_in(logs) == (pytest.approx(expected) if expected is not None else None)
    assert progress_in(None) is None

"""The Runway adapter against its loopback fake, over real HTTP: what it sends, how it reads a task's life, how
each vendor failure maps into the error tree, and that the fake refuses what Runway refuses."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
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
    RemoteJobLost,
    RequestRejected,
)
from bot.providers.base import PollResult, RemoteJob, RemoteState
from bot.providers.http import Kind
from bot.providers.runway import (
    API_VERSION,
    DATA_URI_MAX_CHARS,
    POLL_SECONDS,
    RunwayProvider,
    from_settings,
    map_error,
    poll_result,
)
from tests.fakes.providers.runway import SECRET, RunwayFake
from tests.provider_harness import (
    adapter_fixture,
    adapter_for,
    check_expired_url,
    check_failing_polls,
    check_lost_create_answer,
    check_throttled_create,
    check_unreachable_health,
    image_file,
    request_maker,
    sent_body,
    submitted,
    vendor_fixture,
)

HEADERS = {"Authorization": f"Bearer {SECRET}", "X-Runway-Version": API_VERSION}


fake = vendor_fixture(RunwayFake)
runway = adapter_fixture(from_settings)
adapter = adapter_for(from_settings)
request = request_maker(model="runway/gen4.5", duration=5)


# --- what the adapter sends -----------------------------------------------------------------------------------
async def test_text_to_video_is_the_documented_call(fake: RunwayFake, runway: RunwayProvider) -> None:
    task_id = await runway.submit("job-1", request(duration=10, aspect="9:16", seed=42))

    assert task_id in fake.jobs
    (seen,) = fake.seen
    assert (seen.method, seen.path, seen.status) == ("POST", "/v1/text_to_video", 200)
    assert seen.headers["Authorization"] == f"Bearer {SECRET}"
    assert seen.headers["X-Runway-Version"] == "2024-11-06"
    assert seen.headers["Content-Type"] == "application/json"
    assert sent_body(fake) == {"model": "gen4.5", "promptText": "a lighthouse in a storm", "ratio": "720:1280",
                               "duration": 10, "seed": 42}  # fmt: skip


async def test_veo_asks_for_sound_and_takes_a_negative_prompt(fake: RunwayFake, runway: RunwayProvider) -> None:
    await runway.submit("job-1", request(model="runway/veo3.1_fast", duration=8, negative_prompt="text, logos"))
    assert sent_body(fake) == {"model": "veo3.1_fast", "promptText": "a lighthouse in a storm", "ratio": "1280:720",
                               "duration": 8, "negativePrompt": "text, logos", "audio": True}  # fmt: skip


async def test_image_to_video_sends_the_first_frame_inline(
    fake: RunwayFake, runway: RunwayProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (800, 800))
    await runway.submit("job-1", request(model="runway/gen4_turbo", aspect="1:1", image_path=str(frame), seed=7))
    (seen,) = fake.seen
    assert (seen.path, seen.status) == ("/v1/image_to_video", 200)
    assert sent_body(fake) == {
        "model": "gen4_turbo", "promptText": "a lighthouse in a storm", "ratio": "960:960", "duration": 5, "seed": 7,
        "promptImage": "data:image/png;base64," + base64.b64encode(frame.read_bytes()).decode(),
    }  # fmt: skip


async def test_a_text_model_given_an_image_uses_image_to_video(
    fake: RunwayFake, runway: RunwayProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (640, 360), "JPEG")
    await runway.submit("job-1", request(model="runway/veo3.1", duration=4, image_path=str(frame)))
    assert fake.seen[0].path == "/v1/image_to_video"
    assert sent_body(fake)["promptImage"].startswith("data:image/jpeg;base64,")


async def test_an_image_too_large_for_a_data_uri_is_scaled_and_sent_as_jpeg(
    fake: RunwayFake, runway: RunwayProvider, tmp_path: Path
) -> None:
    noise = np.random.default_rng(1).integers(0, 24, (1600, 2400, 3))
    pixels = (np.linspace(0, 200, 2400)[None, :, None] + noise).astype("uint8")
    frame = tmp_path / "big.png"
    Image.fromarray(pixels).save(frame, "PNG")
    assert frame.stat().st_size * 4 / 3 > DATA_URI_MAX_CHARS

    await runway.submit("job-1", request(image_path=str(frame)))
    uri = sent_body(fake)["promptImage"]
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < DATA_URI_MAX_CHARS
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as sent:
        assert sent.size == (1920, 1280), "scaled, keeping its shape"


async def test_what_the_model_cannot_take_is_refused_before_anything_is_sent(
    fake: RunwayFake, runway: RunwayProvider
) -> None:
    with pytest.raises(RequestRejected) as no_image:
        await runway.submit("job-1", request(model="runway/gen4_turbo"))
    with pytest.raises(RequestRejected) as long_prompt:
        await runway.submit("job-1", request(prompt="🌊" * 501))  # 1002 UTF-16 units in 501 characters
    with pytest.raises(RequestRejected) as unknown:
        await runway.submit("job-1", request(model="runway/gen3a_turbo"))
    assert (no_image.value.field, long_prompt.value.field, unknown.value.field) == ("image", "prompt", "model")
    assert fake.seen == []
    await runway.submit("job-1", request(prompt="🌊" * 500))  # exactly Runway's limit: the fake takes it
    assert fake.creates == 1


# --- the task's life ------------------------------------------------------------------------------------------
async def test_a_task_waits_runs_with_progress_and_its_video_is_downloaded(
    fake: RunwayFake, runway: RunwayProvider, tmp_path: Path
) -> None:
    fake.throttled_polls, fake.polls_to_finish = 1, 4
    remote = await submitted(runway, request())
    throttled, pending, *running, done = [await runway.poll(remote) for _ in range(5)]

    assert throttled == PollResult(RemoteState.QUEUED, poll_after=POLL_SECONDS), "THROTTLED waits at Runway"
    assert pending == PollResult(RemoteState.QUEUED, poll_after=POLL_SECONDS)
    assert [r.state for r in running] == [RemoteState.RUNNING] * 2
    assert [r.progress for r in running] == [0.6, 0.8]
    assert all(r.queue_position is None for r in (throttled, pending, *running)), "Runway reports no position"
    assert done.state is RemoteState.SUCCEEDED and done.progress == 1.0
    assert done.output_url is not None and done.output_url.startswith(f"{fake.storage_url}/")

    await runway.download(remote, done, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video
    polls = fake.requests("GET /v1/tasks/*")
    assert len(polls) == 5 and all(p.headers["X-Runway-Version"] == API_VERSION for p in polls)
    (fetch,) = [s for s in fake.seen if s.kind == "download"]
    assert "Authorization" not in fetch.headers and "X-Runway-Version" not in fetch.headers, "nothing of ours"


async def test_a_moderation_refusal_reaches_the_member_with_runways_reason(
    fake: RunwayFake, runway: RunwayProvider
) -> None:
    fake.refuse_reason = "the prompt depicts a real public figure"
    remote = await submitted(runway, request())
    results = [await runway.poll(remote) for _ in range(2)]
    assert results[1].state is RemoteState.FAILED
    assert reason_text(results[1].error, ENGLISH) == ("Runway's content moderation refused this request: "
                                                     "the prompt depicts a real public figure")  # fmt: skip


async def test_a_bad_output_says_a_new_try_may_pass(fake: RunwayFake, runway: RunwayProvider) -> None:
    fake.task_failure = ("INTERNAL.BAD_OUTPUT.CODE01", "The output did not meet our quality bar.")
    fake.polls_to_finish = 0
    result = await runway.poll(await submitted(runway, request()))
    assert result.state is RemoteState.FAILED
    assert reason_text(result.error, ENGLISH) == (
        "Runway could not make this video (The output did not meet our quality bar.); trying again may work."
    )


async def test_an_expired_output_url_is_result_expired_and_the_next_poll_signs_a_fresh_one(
    fake: RunwayFake, runway: RunwayProvider, tmp_path: Path
) -> None:
    await check_expired_url(fake, runway, request(), tmp_path)


async def test_cancel_deletes_the_running_task(fake: RunwayFake, runway: RunwayProvider) -> None:
    remote = await submitted(runway, request())
    await runway.poll(remote)
    await runway.cancel(remote)
    (cancel,) = fake.requests("DELETE /v1/tasks/*")
    assert cancel.path == f"/v1/tasks/{remote.remote_id}" and cancel.status == 204
    assert cancel.headers["Authorization"] == f"Bearer {SECRET}"
    cancelled = await runway.poll(remote)
    assert cancelled == PollResult(RemoteState.CANCELLED, error=cancelled.error)
    assert reason_text(cancelled.error, ENGLISH) == "cancelled at Runway"


async def test_a_task_gone_from_runway_is_lost_and_cancelling_it_is_no_error(
    fake: RunwayFake, runway: RunwayProvider
) -> None:
    fake.polls_to_finish = 0
    remote = await submitted(runway, request())
    assert (await runway.poll(remote)).state is RemoteState.SUCCEEDED
    await runway.cancel(remote)  # an ended task is deleted at Runway
    with pytest.raises(RemoteJobLost):
        await runway.poll(remote)
    await runway.cancel(remote)
    assert [s.status for s in fake.requests("DELETE *")] == [204, 404]


async def test_a_remote_id_that_is_no_task_id_never_reaches_a_url(fake: RunwayFake, runway: RunwayProvider) -> None:
    with pytest.raises(RemoteJobLost):
        await runway.poll(RemoteJob("job-1", "../organization", request()))
    assert fake.seen == []


def test_odd_task_answers_keep_polling_or_fail_with_a_reason() -> None:
    assert poll_result({"id": "t", "status": "ARCHIVING"}).state is RemoteState.RUNNING
    assert poll_result({"id": "t", "status": "SUCCEEDED", "output": []}).state is RemoteState.FAILED
    assert poll_result({"id": "t", "status": "RUNNING", "progress": 1.7}).progress == 1.0
    with pytest.raises(ProviderError) as caught:
        poll_result(["not", "a", "task"])
    assert caught.value.retryable


# --- failures -------------------------------------------------------------------------------------------------
async def test_a_rate_limited_create_may_be_repeated_after_the_wait(fake: RunwayFake, runway: RunwayProvider) -> None:
    await check_throttled_create(fake, runway, request())


@pytest.mark.parametrize(("status", "repeatable"), [(503, True), (500, False), (502, False), (504, False)])
async def test_only_runways_load_shedding_503_leaves_a_create_repeatable(
    fake: RunwayFake, runway: RunwayProvider, status: int, repeatable: bool
) -> None:
    fake.fail_next("create", status)
    with pytest.raises(ProviderError) as caught:
        await runway.submit("job-1", request())
    assert caught.value.retryable is repeatable
    assert isinstance(caught.value, CreateOutcomeUnknown) is not repeatable


async def test_a_create_whose_answer_is_lost_is_never_repeated(fake: RunwayFake, runway: RunwayProvider) -> None:
    await check_lost_create_answer(fake, runway, request())


async def test_polls_failing_on_the_server_are_retryable(fake: RunwayFake, runway: RunwayProvider) -> None:
    await check_failing_polls(fake, runway, request())


async def test_no_credits_is_a_billing_problem_for_the_admin(fake: RunwayFake, runway: RunwayProvider) -> None:
    fake.credit_balance = 0
    with pytest.raises(ProviderBilling) as caught:
        await runway.submit("job-1", request())
    assert "enough credits" in str(caught.value) and not caught.value.retryable
    health = await runway.health()
    assert health.authenticated and not health.ok and health.problem is not None and "credits" in health.problem


async def test_a_field_runway_rejects_is_named(fake: RunwayFake, runway: RunwayProvider) -> None:
    fake.fail_next("create", 400, body={"error": "promptImage: Invalid data URI.", "issues": [
        {"code": "invalid", "path": ["promptImage"], "message": "Invalid data URI."}]})  # fmt: skip
    with pytest.raises(RequestRejected) as caught:
        await runway.submit("job-1", request())
    assert caught.value.field == "image" and "Invalid data URI." in reason_text(caught.value.user_message, ENGLISH)


def test_runways_error_words_map_into_the_error_tree() -> None:
    def mapped(body: Any, status: int = 400) -> ProviderError | None:
        return map_error(httpx.Response(status, json=body), Kind.CREATE)

    assert isinstance(mapped({"error": "Your prompt was flagged by our content moderation."}), ContentRefused)
    assert isinstance(mapped({"error": "You do not have enough credits to run this task."}), ProviderBilling)
    named = mapped({"error": "ratio: Invalid enum value. Expected 1280:720 | 720:1280"})
    assert isinstance(named, RequestRejected) and named.field == "aspect"
    assert mapped({"error": "The X-Runway-Version header is required."}) is None  # generic: the bot's request
    assert mapped({"error": "Incorrect API key provided."}, 401) is None  # generic: CredentialsRejected


async def test_a_wrong_secret_is_credentials_rejected_naming_the_variable(fake: RunwayFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, runwayml_api_secret="key_wrong") as runway:
        with pytest.raises(CredentialsRejected) as caught:
            await runway.submit("job-1", request())
    assert caught.value.variable == "RUNWAYML_API_SECRET" and "RUNWAYML_API_SECRET" in str(caught.value)
    assert "key_wrong" not in str(caught.value)
    assert fake.seen[0].status == 401 and fake.creates == 0


# --- the fake is as strict as Runway --------------------------------------------------------------------------
GOOD = {"model": "gen4.5", "promptText": "a cat", "ratio": "1280:720", "duration": 5}


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"headers": {"X-Runway-Version": None}}, 400, "X-Runway-Version header is required"),
        ({"headers": {"X-Runway-Version": "2024-09-13"}}, 400, "not a valid version"),
        ({"headers": {"Authorization": None}}, 401, "API key"),
        ({"headers": {"Authorization": f"Key {SECRET}"}}, 401, "API key"),
        ({"body": {"ratio": "16:9"}}, 400, "ratio: Invalid enum value"),
        ({"body": {"duration": "5"}}, 400, "duration: Expected integer"),
        ({"body": {"duration": 11}}, 400, "duration: Invalid duration 11"),
        ({"body": {"duration": None}}, 400, "duration: Required"),
        ({"body": {"seed": -1}}, 400, "seed: Expected an integer"),
        ({"body": {"prompt_text": "a cat"}}, 400, "Unrecognized key 'prompt_text'"),
        ({"body": {"promptText": "x" * 1001}}, 400, "at most 1000 UTF-16"),
        ({"body": {"model": "gen4_turbo"}}, 400, "Invalid discriminator value"),
        ({"body": {"model": "veo3.1", "seed": 3}}, 400, "Unrecognized key 'seed'"),
        ({"body": {"model": "veo3.1", "audio": "yes"}}, 400, "audio: Expected boolean"),
        ({"path": "/v1/image_to_video", "body": {"promptImage": "http://example.com/a.png"}}, 400, "Only HTTPS"),
        ({"path": "/v1/image_to_video", "body": {"promptImage": "data:image/png;base64,@@@"}}, 400, "Invalid data"),
        ({"path": "/v1/image_to_video"}, 400, "promptImage: Required"),
        ({"method": "GET"}, 405, "not allowed"),
        ({"path": "/v1/text-to-video"}, 404, "Not found"),
    ],
)
async def test_the_fake_refuses_what_runway_refuses(
    fake: RunwayFake, change: dict[str, Any], status: int, error: str
) -> None:
    headers = {k: v for k, v in {**HEADERS, **change.get("headers", {})}.items() if v is not None}
    body = {k: v for k, v in {**GOOD, **change.get("body", {})}.items() if v is not None}
    url = fake.base_url + change.get("path", "/v1/text_to_video")
    async with httpx.AsyncClient() as client:
        answer = await client.request(change.get("method", "POST"), url, json=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert error in answer.json()["error"]
    assert fake.creates == 0


async def test_the_fake_takes_an_image_as_keyframes_and_checks_the_data_it_declares(
    fake: RunwayFake, tmp_path: Path
) -> None:
    jpeg = base64.b64encode(image_file(tmp_path, (64, 64), "JPEG").read_bytes()).decode()
    body = {**GOOD, "model": "veo3.1", "duration": 4, "promptImage": [{"uri": f"data:image/jpeg;base64,{jpeg}",
                                                                       "position": "first"}]}  # fmt: skip
    mislabelled = {**GOOD, "promptImage": f"data:image/png;base64,{jpeg}"}
    async with httpx.AsyncClient(base_url=fake.base_url, headers=HEADERS) as client:
        taken = await client.post("/v1/image_to_video", json=body)
        refused = await client.post("/v1/image_to_video", json=mislabelled)
    assert taken.status_code == 200 and taken.json()["id"] in fake.jobs
    assert refused.status_code == 400 and "declares image/png but holds jpeg" in refused.json()["error"]


async def test_the_cdn_takes_only_a_good_signature_and_never_a_key(fake: RunwayFake, runway: RunwayProvider) -> None:
    fake.polls_to_finish = 0
    url = (await runway.poll(await submitted(runway, request()))).output_url
    assert url is not None
    async with httpx.AsyncClient() as client:
        with_key = await client.get(url, headers={"Authorization": f"Bearer {SECRET}"})
        forged = await client.get(url[:-4] + "0000")
        unsigned = await client.get(url.split("?", 1)[0])
        good = await client.get(url)
    assert with_key.status_code == 400
    assert forged.status_code == unsigned.status_code == 403
    assert good.status_code == 200 and good.content == fake.video


# --- health and settings --------------------------------------------------------------------------------------
async def test_health_reads_the_organization_with_the_secret(fake: RunwayFake, runway: RunwayProvider) -> None:
    health = await runway.health()
    assert health.ok and health.models == ("runway/gen4.5", "runway/gen4_turbo", "runway/veo3.1", "runway/veo3.1_fast")
    (seen,) = fake.seen
    assert (seen.method, seen.path, seen.status) == ("GET", "/v1/organization", 200)
    assert seen.headers["Authorization"] == f"Bearer {SECRET}" and seen.headers["X-Runway-Version"] == API_VERSION


async def test_health_with_a_bad_secret_names_the_variable_and_not_the_secret(fake: RunwayFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, runwayml_api_secret="key_not_this_one") as runway:
        health = await runway.health()
    assert health.reachable and not health.authenticated and not health.ok
    assert health.problem is not None and "RUNWAYML_API_SECRET" in health.problem
    assert "key_not_this_one" not in health.problem


async def test_health_of_an_unreachable_service_names_the_base_url(fake: RunwayFake, runway: RunwayProvider) -> None:
    await check_unreachable_health(fake, runway, "RUNWAYML_BASE_URL")


def test_no_secret_no_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNWAYML_API_SECRET", raising=False)
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path)) is None
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path, runwayml_api_secret=" ")) is None

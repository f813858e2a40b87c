"""The Veo adapter against a strict loopback Gemini API (`tests/fakes/providers/veo.py`), over real HTTP."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.clock import FakeClock
from bot.config import Settings
from bot.discord.messages import ENGLISH, reason_text
from bot.domain import JobState
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CredentialsRejected,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.jobs.notify import FileSink
from bot.providers.base import RemoteJob, RemoteState
from bot.providers.veo import FILE_GONE, POLL_SECONDS, VeoProvider, from_settings
from bot.store.base import Store
from tests.fakes.providers.veo import API_KEY, VEO_MODELS, VeoFake
from tests.provider_harness import ALICE, EVER, adapter_for, engine, request_maker

MODEL = "veo/veo-3.1-fast-generate-preview"
PREDICT = "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning"
adapter = adapter_for(from_settings)
request = request_maker(model=MODEL, duration=4)


async def submitted(provider: VeoProvider) -> RemoteJob:
    return RemoteJob("job1", await provider.submit("job1", request()), request())


async def run_to_end(provider: VeoProvider, remote: RemoteJob, polls: int = 10) -> Any:
    for _ in range(polls):
        result = await provider.poll(remote)
        if result.state not in (RemoteState.QUEUED, RemoteState.RUNNING):
            return result
    raise AssertionError("the operation never finished")


# --- what the adapter sends --------------------------------------------------------------------------------
async def test_text_to_video_sends_the_documented_request(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        asked = request(duration=6, aspect="9:16", negative_prompt="blurry", seed=42)
        remote_id = await provider.submit("job1", asked)

    assert remote_id.startswith("models/veo-3.1-fast-generate-preview/operations/")
    [create] = fake.requests(f"POST {PREDICT}")
    assert create.status == 200
    assert create.headers["x-goog-api-key"] == API_KEY
    assert create.headers["Content-Type"] == "application/json"
    assert "key" not in create.query  # the key travels in the header, never in a URL that could be logged
    [job] = fake.jobs.values()
    assert job.body == {  # no seed: the Gemini API refuses it
        "instances": [{"prompt": "a lighthouse in a storm"}],
        "parameters": {"sampleCount": 1, "durationSeconds": 6, "aspectRatio": "9:16", "negativePrompt": "blurry"},
    }


@pytest.mark.parametrize(("fmt", "mime_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
async def test_image_to_video_sends_the_first_frame_inline(tmp_path: Path, fmt: str, mime_type: str) -> None:
    frame = tmp_path / f"frame.{fmt.lower()}"
    Image.new("RGB", (32, 18), (200, 40, 40)).save(frame, fmt)
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        await provider.submit("job1", request(model=VeoFake.image_model, image_path=str(frame)))
    [job] = fake.jobs.values()
    image = job.body["instances"][0]["image"]
    assert image == {"bytesBase64Encoded": base64.b64encode(frame.read_bytes()).decode(), "mimeType": mime_type}
    assert fake.requests("POST /v1beta/models/veo-3.1-generate-preview:predictLongRunning")


async def test_a_first_frame_that_is_no_image_is_refused_before_sending(tmp_path: Path) -> None:
    frame = tmp_path / "frame.png"
    frame.write_bytes(b"GIF89a not what it claims")
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        with pytest.raises(RequestRejected) as caught:
            await provider.submit("job1", request(image_path=str(frame)))
    assert caught.value.field == "image"
    assert fake.creates == 0


# --- the fake is as strict as Google -----------------------------------------------------------------------
GOOD_BODY: dict[str, Any] = {"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 1, "durationSeconds": 8}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**GOOD_BODY, "parameters": {"durationSeconds": "8"}}, "parameters.durationSeconds"),
        ({**GOOD_BODY, "parameters": {"durationSeconds": 5}}, "parameters.durationSeconds"),
        ({**GOOD_BODY, "parameters": {"aspectRatio": "1:1"}}, "parameters.aspectRatio"),
        ({**GOOD_BODY, "parameters": {"duration_seconds": 8}}, "parameters.duration_seconds"),
        ({**GOOD_BODY, "parameters": {"seed": 7}}, "parameters.seed"),
        ({**GOOD_BODY, "parameters": {"sampleCount": 1.0}}, "parameters.sampleCount"),
        ({"instances": [{"prompt": ""}]}, "instances[0].prompt"),
        ({"instances": [{"text": "a cat"}]}, "instances[0].text"),
        ({"instances": [{"prompt": "a cat", "image": {"inlineData": {"data": "AA==", "mimeType": "image/png"}}}]},
         "instances[0].image"),
        ({"instances": [{"prompt": "a cat", "image": {"bytesBase64Encoded": "AA==", "mimeType": "image/png"}}]},
         "instances[0].image.bytesBase64Encoded"),
        ({"instance": [{"prompt": "a cat"}]}, "instance"),
    ],
)  # fmt: skip
async def test_the_fake_refuses_a_malformed_body_as_google_does(body: dict[str, Any], field: str) -> None:
    async with VeoFake() as fake, httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.base_url}{PREDICT}", json=body, headers={"x-goog-api-key": API_KEY})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["details"][0]["fieldViolations"][0]["field"] == field
    assert fake.creates == 0


async def test_the_fake_checks_the_key_paths_and_methods() -> None:
    async with VeoFake() as fake, httpx.AsyncClient(base_url=fake.base_url) as client:
        good = {"x-goog-api-key": API_KEY}
        missing = await client.post(PREDICT, json=GOOD_BODY)
        wrong = await client.post(PREDICT, json=GOOD_BODY, headers={"x-goog-api-key": "nope"})
        bearer = await client.post(PREDICT, json=GOOD_BODY, headers={"Authorization": f"Bearer {API_KEY}"})
        get_create = await client.get(PREDICT, headers=good)
        unknown_model = await client.post("/v1beta/models/veo-9:predictLongRunning", json=GOOD_BODY, headers=good)
        form = await client.post(PREDICT, data={"prompt": "a cat"}, headers=good)
        accepted = await client.post(PREDICT, json=GOOD_BODY, headers=good)
        name = accepted.json()["name"]
        no_alt = await client.get("/v1beta/files/nothing:download", headers=good)
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (bearer.status_code, bearer.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (wrong.status_code, wrong.json()["error"]["details"][0]["reason"]) == (400, "API_KEY_INVALID")
    assert get_create.status_code == 404
    assert unknown_model.status_code == 404
    assert form.status_code == 400
    assert name.startswith("models/veo-3.1-fast-generate-preview/operations/")
    assert no_alt.status_code == 400
    assert fake.creates == 1


async def test_a_wrong_key_is_reported_as_credentials_naming_the_variable(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path, gemini_api_key="not-the-key") as provider:
        with pytest.raises(CredentialsRejected) as caught:
            await provider.submit("job1", request())
        remote = RemoteJob("job1", "models/veo-3.1-fast-generate-preview/operations/x", request())
        with pytest.raises(CredentialsRejected):
            await provider.poll(remote)
    assert caught.value.variable == "GEMINI_API_KEY"
    assert not caught.value.retryable
    assert "GEMINI_API_KEY" in str(caught.value) and "not-the-key" not in str(caught.value)


# --- polling ----------------------------------------------------------------------------------------------
async def test_a_job_runs_without_progress_then_hands_out_its_file(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        fake.polls_to_finish = 2
        remote = await submitted(provider)
        running = [await provider.poll(remote) for _ in range(2)]
        done = await provider.poll(remote)
        dest = tmp_path / "clip.mp4"
        await provider.download(remote, await provider.poll(remote), dest)

    for result in running:
        assert result.state is RemoteState.RUNNING
        assert (result.progress, result.queue_position, result.output_url) == (None, None, None)
        assert result.poll_after == POLL_SECONDS
    assert done.state is RemoteState.SUCCEEDED
    assert done.output_url is not None and done.output_url.endswith(":download?alt=media")
    assert dest.read_bytes() == fake.video
    [fetch] = fake.requests("GET /v1beta/files/*:download")
    assert fetch.headers["x-goog-api-key"] == API_KEY  # the file lives on the API's own origin
    assert fetch.query == {"alt": "media"}
    assert [s.path for s in fake.requests("GET /v1beta/models/*/operations/*")] == [f"/v1beta/{remote.remote_id}"] * 4


async def test_a_failed_operation_reports_googles_reason(tmp_path: Path) -> None:
    fake = VeoFake()
    fake.operation_error = "Video generation failed due to an internal error."
    async with fake, adapter(fake, tmp_path) as provider:
        remote = await submitted(provider)
        result = await run_to_end(provider, remote)
    assert result.state is RemoteState.FAILED
    assert reason_text(result.error, ENGLISH) == "Video generation failed due to an internal error."


async def test_a_safety_filtered_video_ends_failed_with_the_filters_reason(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        fake.refuse_reason = "Unable to generate videos: the prompt may violate our policies on violence."
        remote = await submitted(provider)
        result = await run_to_end(provider, remote)
    assert result.state is RemoteState.FAILED
    assert result.error is not None and "policies on violence" in reason_text(result.error, ENGLISH)


async def test_a_job_is_found_again_from_its_remote_id_alone(tmp_path: Path) -> None:
    """After a restart a new process has only the stored remote id: polling and downloading need nothing else."""
    async with VeoFake() as fake:
        async with adapter(fake, tmp_path) as first:
            remote = await submitted(first)
        async with adapter(fake, tmp_path) as second:
            result = await run_to_end(second, remote)
            await second.download(remote, result, tmp_path / "clip.mp4")
    assert result.state is RemoteState.SUCCEEDED
    assert fake.creates == 1


async def test_a_remote_id_that_is_no_operation_name_is_never_requested(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        with pytest.raises(RemoteJobLost):
            await provider.poll(RemoteJob("job1", "../../v1beta/files/x", request()))
    assert fake.seen == []


# --- failures ---------------------------------------------------------------------------------------------
async def test_rate_limited_create_is_retryable_with_the_wait_asked(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        fake.fail_next("create", 429, retry_after=2)
        with pytest.raises(ProviderError) as caught:
            await provider.submit("job1", request())
        assert await provider.submit("job1", request())
    assert caught.value.retryable and caught.value.retry_after == 2
    assert fake.creates == 1


SAFETY = "The prompt could not be submitted: it contains sensitive words that violate Responsible AI practices."
BILLING = "Gemini API free tier is not available in your country. Please enable billing on your project."
RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}


@pytest.mark.parametrize(
    ("status", "error", "expected", "facts"),
    [
        (400, {"message": SAFETY, "status": "INVALID_ARGUMENT"}, ContentRefused, {"reason": SAFETY}),
        (400, {"message": BILLING, "status": "FAILED_PRECONDITION"}, ProviderBilling, {"reason": BILLING}),
        (429, {"message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED", "details": [RETRY_INFO]},
         ProviderError, {"retryable": True, "retry_after": 37}),
        (404, {"message": "models/x is not found", "status": "NOT_FOUND"}, RequestRejected, {"field": "model"}),
    ],
)  # fmt: skip
async def test_googles_create_errors_are_recognised(
    tmp_path: Path, status: int, error: dict[str, Any], expected: type[ProviderError], facts: dict[str, Any]
) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        fake.fail_next("create", status, body={"error": {"code": status, **error}})
        with pytest.raises(expected) as caught:
            await provider.submit("job1", request())
    assert type(caught.value) is expected
    assert {name: getattr(caught.value, name) for name in facts} == facts
    assert caught.value.retryable is (status == 429)


async def test_polls_through_a_burst_of_503s(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        remote = await submitted(provider)
        fake.fail_next("poll", 503, times=3)
        for _ in range(3):
            with pytest.raises(ProviderError) as caught:
                await provider.poll(remote)
            assert caught.value.retryable
        result = await run_to_end(provider, remote)
    assert result.state is RemoteState.SUCCEEDED


@pytest.mark.parametrize("drop", [False, True])
async def test_a_create_that_may_have_been_accepted_is_never_repeated(tmp_path: Path, drop: bool) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        if drop:
            fake.drop_create_answer = True
        else:
            fake.fail_next("create", 500)
        with pytest.raises(CreateOutcomeUnknown) as caught:
            await provider.submit("job1", request())
    assert not caught.value.retryable
    assert fake.creates == (1 if drop else 0)


async def test_a_bad_field_names_the_option(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        with pytest.raises(RequestRejected) as caught:
            # an operator's MODELS_FILE may offer a duration Veo does not take
            await provider.submit("job1", request(duration=5))
    assert caught.value.field == "duration"
    assert not caught.value.retryable


async def test_a_deleted_file_is_final_and_is_not_regenerated(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        fake.expire_first_url = True
        remote = await submitted(provider)
        first = await run_to_end(provider, remote)
        with pytest.raises(RemoteJobLost) as caught:
            await provider.download(remote, first, tmp_path / "clip.mp4")
        again = await provider.poll(remote)
        with pytest.raises(RemoteJobLost):
            await provider.download(remote, again, tmp_path / "clip.mp4")
    assert again.output_url == first.output_url  # Veo's file URI never changes
    assert not caught.value.retryable
    assert caught.value.user_message == FILE_GONE
    assert reason_text(caught.value.user_message, ENGLISH).startswith("Veo no longer has the finished video")
    assert not (tmp_path / "clip.mp4").exists()


async def test_cancel_sends_nothing(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        remote = await submitted(provider)
        await provider.cancel(remote)
    assert fake.counts() == {"create": 1}


# --- health and setup ---------------------------------------------------------------------------------------
async def test_health_lists_the_veo_models_the_key_may_use(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        health = await provider.health()
        fake.fail_next("other", 200, body={"models": [{"name": "models/gemini-2.5-flash"}]})  # a project without Veo
        without_veo = await provider.health()
    assert health.ok
    assert set(health.models) == {model.id for model in provider.models()}
    listing = fake.requests("GET /v1beta/models")[0]
    assert (listing.headers["x-goog-api-key"], listing.query) == (API_KEY, {"pageSize": "1000"})
    assert (without_veo.authenticated, without_veo.ok, without_veo.models) == (True, False, ())
    assert without_veo.problem is not None and "GEMINI_API_KEY" in without_veo.problem


async def test_health_with_a_bad_key_names_the_variable(tmp_path: Path) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path, gemini_api_key="not-the-key") as provider:
        health = await provider.health()
    assert (health.reachable, health.authenticated, health.ok) == (True, False, False)
    assert health.problem is not None and "GEMINI_API_KEY" in health.problem and "not-the-key" not in health.problem


async def test_health_when_the_api_cannot_be_reached(tmp_path: Path) -> None:
    async with VeoFake() as fake:
        pass
    async with adapter(fake, tmp_path) as provider:  # the fake has stopped: nothing listens there now
        health = await provider.health()
    assert not health.reachable
    assert health.problem is not None and "GEMINI_BASE_URL" in health.problem


def test_models_say_what_veo_on_the_gemini_api_can_do(tmp_path: Path) -> None:
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path)) is None  # no key, no provider
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path, gemini_api_key="")) is None
    provider = from_settings(Settings(_env_file=None, data_dir=tmp_path, gemini_api_key="k"))
    assert provider is not None
    assert [m.id for m in provider.models()] == [f"veo/{vendor_id}" for vendor_id in VEO_MODELS]
    for model in provider.models():
        assert model.durations == (4, 6, 8)
        assert model.aspects == ("16:9", "9:16")
        assert model.supports_image and model.supports_negative_prompt and not model.supports_seed
        assert (model.weight, model.usd_per_second) == (1.0, None)  # the catalogue prices them
    assert provider.model_for("veo/veo-2.0-generate-001") is None


# --- through the worker -----------------------------------------------------------------------------------
async def test_through_the_worker_a_clip_is_delivered_and_a_refusal_refunded(
    store: Store, sink: FileSink, clock: FakeClock, tmp_path: Path
) -> None:
    async with VeoFake() as fake, adapter(fake, tmp_path) as provider:
        service, worker = await engine(provider, store, clock, sink, tmp_path)
        made = await service.enqueue(ALICE, request())
        await worker.drain()
        fake.refuse_reason = "the prompt may violate our policies"
        refused = await service.enqueue(ALICE, request(prompt="something else"))
        await worker.drain()

    delivered = await store.get_job(made.id)
    assert delivered is not None and delivered.state is JobState.DELIVERED
    assert sink.delivered[made.id].read_bytes() == fake.video
    failed = await store.get_job(refused.id)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.error is not None and "violate our policies" in reason_text(failed.error, ENGLISH)
    standing = await store.admission(ALICE.guild_id, ALICE.user_id, EVER)
    assert standing.reserved == 0 and standing.charged == made.credits

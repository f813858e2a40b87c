"""The `openai` adapter (OpenAI Videos API shape: self-hosted vLLM-Omni, SGLang, LiteLLM) against its loopback
fake over real HTTP: the exact requests it sends, how the vendor's answers map, and that the fake is strict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

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
    RemoteJobLost,
    RequestRejected,
)
from bot.jobs.notify import FileSink
from bot.providers.base import RemoteJob, RemoteState
from bot.providers.openai import GENERIC_DURATIONS, SORA_DURATIONS, OpenAIVideoProvider, from_settings
from bot.store.base import Store
from tests.fakes.providers.openai import CHAT_MODEL, LTX, WAN, WAN_IMAGE, OpenAIFake, openai_error
from tests.provider_harness import (
    ALICE,
    adapter_fixture,
    check_unreachable_health,
    engine,
    image_file,
    opened,
    vendor_fixture,
)


@pytest.fixture(autouse=True)
def _no_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own OPENAI_* variables must not leak into the settings these tests build.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


fake = vendor_fixture(OpenAIFake)
provider = adapter_fixture(from_settings)


def request(model: str = OpenAIFake.model, *, duration: int = 5, **fields: Any) -> VideoRequest:
    return VideoRequest(prompt="a red fox in fresh snow", model=model, duration=duration, **fields)


def remote(remote_id: str, model: str = OpenAIFake.model) -> RemoteJob:
    return RemoteJob(job_id="job1", remote_id=remote_id, request=request(model))


def png(tmp_path: Path, size: tuple[int, int] = (300, 200)) -> str:
    return str(image_file(tmp_path, size, color=(200, 40, 40), name="frame.png"))


# --- what the adapter sends -------------------------------------------------------------------------------------
async def test_text_to_video_is_one_multipart_create_with_the_api_field_names_and_types(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    video_id = await provider.submit("job1", request(seed=7, negative_prompt="blurry", aspect="9:16"))

    [create] = fake.requests("POST /v1/videos")
    assert create.headers["Authorization"] == "Bearer sk-test"
    assert create.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    # Everything after "openai/" is the server's id, slashes included; seconds is a string; size is WxH.
    assert fake.jobs[video_id].body == {"prompt": "a red fox in fresh snow", "model": WAN, "seconds": "5",
                                        "size": "720x1280", "seed": "7", "negative_prompt": "blurry"}  # fmt: skip
    assert fake.creates == 1


async def test_image_to_video_sends_the_first_frame_as_a_png_file_of_the_video_size(
    fake: OpenAIFake, provider: OpenAIVideoProvider, tmp_path: Path
) -> None:
    video_id = await provider.submit("job1", request(f"openai/{WAN_IMAGE}", image_path=png(tmp_path)))

    part = fake.jobs[video_id].body["input_reference"]
    assert (part["content_type"], part["format"], part["width"], part["height"]) == ("image/png", "PNG", 1280, 720)


async def test_a_sora_model_gets_the_openai_fields_only_and_a_first_frame_of_exactly_its_size(
    fake: OpenAIFake, provider: OpenAIVideoProvider, tmp_path: Path
) -> None:
    # The fake answers like OpenAI: `seed` would be an unknown parameter and a frame of another size refused.
    video_id = await provider.submit("job1", request("openai/sora-2", duration=8, aspect="9:16", seed=3,
                                                     image_path=png(tmp_path, (1000, 1000))))  # fmt: skip

    body = fake.jobs[video_id].body
    assert sorted(body) == ["input_reference", "model", "prompt", "seconds", "size"]
    assert (body["model"], body["seconds"], body["size"]) == ("sora-2", "8", "720x1280")
    assert (body["input_reference"]["width"], body["input_reference"]["height"]) == (720, 1280)


async def test_an_unreadable_image_fails_the_job_before_anything_is_sent(
    fake: OpenAIFake, provider: OpenAIVideoProvider, tmp_path: Path
) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ProviderError) as failure:
        await provider.submit("job1", request(image_path=str(tmp_path / "broken.png")))
    assert not failure.value.retryable
    assert fake.count("create") == 0


# --- the fake is as strict as the service ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"json": {"prompt": "x", "model": WAN, "seconds": 5, "size": "1280x720"}}, "seconds"),  # not a string
        ({"json": {"prompt": "x", "model": WAN, "seconds": "5", "size": "1280*720"}}, "size"),
        ({"json": {"prompt": "x", "model": "sora-2", "seconds": "5", "size": "1280x720"}}, "seconds"),
        ({"json": {"prompt": "x", "model": "sora-2", "seconds": "4", "size": "1280x720", "seed": 1}}, "seed"),
        ({"json": {"model": WAN, "seconds": "4", "size": "1280x720"}}, "prompt"),
        ({"json": {"prompt": "x", "model": WAN, "duration": "4"}}, "duration"),
        (
            {"files": {"prompt": (None, b"x"), "model": (None, WAN.encode()), "input_reference": (None, b"a path")}},
            "input_reference",
        ),
        ({"data": {"prompt": "x", "model": WAN}}, None),  # form-urlencoded is not taken
    ],
)
async def test_the_fake_answers_a_malformed_create_with_openais_400(
    fake: OpenAIFake, body: dict[str, object], param: str | None
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{fake.base_url}/v1/videos", headers={"Authorization": "Bearer sk-test"},
                                     **body)  # type: ignore[arg-type]  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert fake.creates == 0


async def test_a_field_the_model_refuses_is_rejected_naming_the_field(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    # LTX makes 5 s clips only; before `start()` the adapter cannot know that, and the server says so.
    with pytest.raises(RequestRejected) as rejected:
        await provider.submit("job1", request(f"openai/{LTX}", duration=4))
    assert rejected.value.field == "seconds"
    assert not rejected.value.retryable


async def test_an_unknown_model_is_rejected_naming_the_model(fake: OpenAIFake, provider: OpenAIVideoProvider) -> None:
    with pytest.raises(RequestRejected) as rejected:
        await provider.submit("job1", request("openai/nobody/serves-this"))
    assert rejected.value.field == "model"


@pytest.mark.parametrize("key", ["sk-wrong", None])
async def test_a_wrong_or_missing_key_is_rejected_naming_the_variable(
    fake: OpenAIFake, tmp_path: Path, key: str | None
) -> None:
    async with opened(
        from_settings, None, tmp_path, openai_api_key=key, openai_base_url=f"{fake.base_url}/v1"
    ) as adapter:
        with pytest.raises(CredentialsRejected) as rejected:
            await adapter.submit("job1", request())
        health = await adapter.health()
    assert rejected.value.variable == "OPENAI_API_KEY"
    assert "sk-wrong" not in str(rejected.value)
    assert (health.reachable, health.authenticated) == (True, False)
    assert health.problem is not None and "OPENAI_API_KEY" in health.problem
    assert fake.creates == 0


@pytest.mark.parametrize("key", [None, ""])
async def test_a_server_without_a_key_gets_no_authorization_header(tmp_path: Path, key: str | None) -> None:
    async with OpenAIFake(api_key=None) as fake:
        settings = fake.settings() | ({} if key is None else {"openai_api_key": key})
        async with opened(from_settings, None, tmp_path, **settings) as adapter:
            video_id = await adapter.submit("job1", request())
            while (await adapter.poll(remote(video_id))).state is not RemoteState.SUCCEEDED:
                pass
            await adapter.download(remote(video_id), await adapter.poll(remote(video_id)), tmp_path / "out.mp4")
        assert (tmp_path / "out.mp4").read_bytes() == fake.video
        assert all("Authorization" not in seen.headers for seen in fake.seen)


def test_the_provider_is_configured_by_a_key_or_a_base_url(tmp_path: Path) -> None:
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path)) is None
    assert from_settings(Settings(_env_file=None, openai_base_url="http://gpu:8091/v1")) is not None
    hosted = from_settings(Settings(_env_file=None, openai_api_key="sk-x"))
    assert hosted is not None
    # Before `start()` the hosted API offers the Sora ids the catalogue prices, without seed or negative prompt.
    assert [m.id for m in hosted.models()] == ["openai/sora-2", "openai/sora-2-pro"]
    assert all(not m.supports_seed and not m.supports_negative_prompt for m in hosted.models())


# --- polls, results, failures -------------------------------------------------------------------------------------
async def test_polls_report_queue_progress_and_the_servers_pace_then_the_video_is_downloaded(
    fake: OpenAIFake, provider: OpenAIVideoProvider, tmp_path: Path
) -> None:
    fake.poll_after_ms = 2500
    job = remote(await provider.submit("job1", request()))

    queued, running, done = [await provider.poll(job) for _ in range(3)]

    assert (queued.state, queued.progress, queued.poll_after) == (RemoteState.QUEUED, 0.0, 2.5)
    assert (running.state, running.progress, running.poll_after) == (RemoteState.RUNNING, 0.66, 2.5)
    assert (done.state, done.progress, done.output_url) == (RemoteState.SUCCEEDED, 1.0, None)
    await provider.download(job, done, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video
    [fetch] = fake.requests("GET /v1/videos/*/content")
    assert fetch.headers["Accept"] == "application/binary"
    assert fetch.headers["Authorization"] == "Bearer sk-test"


async def test_content_before_completion_is_not_served(fake: OpenAIFake, provider: OpenAIVideoProvider,
                                                       tmp_path: Path) -> None:  # fmt: skip
    job = remote(await provider.submit("job1", request()))
    with pytest.raises(RemoteJobLost):
        await provider.download(job, await provider.poll(job), tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()


async def test_a_moderation_failure_reaches_the_member_with_the_servers_reason(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    fake.refuse_reason = "the prompt depicts real violence"
    job = remote(await provider.submit("job1", request()))

    assert (await provider.poll(job)).state is RemoteState.QUEUED
    failed = await provider.poll(job)

    assert failed.state is RemoteState.FAILED
    assert (
        reason_text(failed.error, ENGLISH) == "The video service refused this request: the prompt depicts real violence"
    )


async def test_a_failed_video_carries_the_servers_reason(fake: OpenAIFake, provider: OpenAIVideoProvider) -> None:
    fake.fail_reason = "CUDA out of memory"
    job = remote(await provider.submit("job1", request()))
    results = [await provider.poll(job) for _ in range(3)]
    assert results[-1].state is RemoteState.FAILED
    assert reason_text(results[-1].error, ENGLISH) == "The video service could not make this video: CUDA out of memory"


async def test_a_refusal_at_create_is_content_refused(fake: OpenAIFake, provider: OpenAIVideoProvider) -> None:
    fake.fail_next("create", 400, body=openai_error("Your request was blocked by our moderation system.",
                                                    code="moderation_blocked"))  # fmt: skip
    with pytest.raises(ContentRefused) as refused:
        await provider.submit("job1", request())
    assert refused.value.reason == "Your request was blocked by our moderation system."


async def test_a_rate_limited_create_may_be_sent_again_after_the_servers_wait(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    fake.fail_next("create", 429, retry_after=2)
    with pytest.raises(ProviderError) as busy:
        await provider.submit("job1", request())
    assert (busy.value.retryable, busy.value.retry_after) == (True, 2.0)
    assert not isinstance(busy.value, CreateOutcomeUnknown)
    await provider.submit("job1", request())
    assert fake.creates == 1


async def test_an_exhausted_quota_is_final_not_retried(fake: OpenAIFake, provider: OpenAIVideoProvider) -> None:
    fake.fail_next("create", 429, body=openai_error("You exceeded your current quota.", "insufficient_quota",
                                                    code="insufficient_quota"))  # fmt: skip
    with pytest.raises(ProviderBilling) as billing:
        await provider.submit("job1", request())
    assert not billing.value.retryable


async def test_a_lost_create_answer_is_never_sent_again(fake: OpenAIFake, provider: OpenAIVideoProvider) -> None:
    fake.drop_create_answer = True
    with pytest.raises(CreateOutcomeUnknown):
        await provider.submit("job1", request())
    assert fake.creates == 1


async def test_server_trouble_on_a_poll_is_retryable(fake: OpenAIFake, provider: OpenAIVideoProvider) -> None:
    job = remote(await provider.submit("job1", request()))
    fake.fail_next("poll", 503, retry_after=4)
    with pytest.raises(ProviderError) as trouble:
        await provider.poll(job)
    assert (trouble.value.retryable, trouble.value.retry_after) == (True, 4.0)
    assert (await provider.poll(job)).state is RemoteState.QUEUED


async def test_cancel_deletes_the_video_and_tolerates_one_already_gone(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    job = remote(await provider.submit("job1", request()))
    await provider.cancel(job)
    assert [s.status for s in fake.requests(f"DELETE /v1/videos/{job.remote_id}")] == [200]
    with pytest.raises(RemoteJobLost):
        await provider.poll(job)
    await provider.cancel(job)  # a 404 now: nothing left to stop


# --- models and health --------------------------------------------------------------------------------------------
async def test_start_offers_every_video_model_the_server_lists_with_what_it_declares(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    await provider.start()
    models = {m.id: m for m in provider.models()}

    assert sorted(models) == sorted(f"openai/{m}" for m in (WAN, WAN_IMAGE, LTX, "sora-2", "sora-2-pro"))
    assert f"openai/{CHAT_MODEL}" not in models  # listed as a text model
    wan = models[f"openai/{WAN}"]
    assert (wan.durations, wan.aspects, wan.supports_image, wan.supports_seed, wan.supports_negative_prompt) == (
        GENERIC_DURATIONS, ("16:9", "9:16"), True, True, True)  # fmt: skip
    ltx = models[f"openai/{LTX}"]
    assert (ltx.durations, ltx.aspects, ltx.supports_image) == ((5,), ("16:9", "9:16"), False)
    sora = models["openai/sora-2"]
    assert (sora.durations, sora.supports_seed, sora.supports_negative_prompt) == (SORA_DURATIONS, False, False)
    # A declared size is what is asked for: the fake accepts LTX only at 768x512.
    video_id = await provider.submit("job1", request(f"openai/{LTX}", duration=5))
    assert fake.jobs[video_id].body["size"] == "768x512"


async def test_a_server_down_at_start_keeps_what_was_known_and_any_id_still_works(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    fake.fail_next("other", 503)
    await provider.start()  # must not raise
    assert provider.models() == ()
    unlisted = provider.model_for("openai/my-org/fine-tuned-wan")
    assert unlisted is not None and unlisted.durations == GENERIC_DURATIONS and unlisted.supports_image
    assert provider.model_for("fal/fal-ai/wan") is None
    assert provider.model_for("openai/") is None


async def test_health_lists_the_models_with_one_cheap_request(fake: OpenAIFake, provider: OpenAIVideoProvider) -> None:
    health = await provider.health()
    assert health.ok, health
    assert f"openai/{WAN}" in health.models
    assert [s.path for s in fake.seen] == ["/v1/models"]


async def test_health_reports_an_unreachable_server_naming_the_setting(
    fake: OpenAIFake, provider: OpenAIVideoProvider
) -> None:
    await check_unreachable_health(fake, provider, "OPENAI_BASE_URL")


# --- through the real worker -------------------------------------------------------------------------------------
@pytest.mark.parametrize("refuse", [False, True])
async def test_the_worker_delivers_a_video_or_tells_the_member_the_refusal(
    fake: OpenAIFake, provider: OpenAIVideoProvider, store: Store, sink: FileSink, clock: FakeClock,
    tmp_path: Path, refuse: bool,
) -> None:  # fmt: skip
    fake.refuse_reason = "no real people" if refuse else None
    service, worker = await engine(provider, store, clock, sink, tmp_path)
    job = await service.enqueue(ALICE, VideoRequest(prompt="a lighthouse at dusk", model=fake.model, duration=5))

    await worker.drain()

    done = await store.get_job(job.id)
    assert done is not None
    if refuse:
        assert done.state is JobState.FAILED
        assert done.error is not None and "no real people" in reason_text(done.error, ENGLISH)
    else:
        assert done.state is JobState.DELIVERED
        assert sink.delivered[job.id].read_bytes() == fake.video
    assert fake.creates == 1

"""The Luma adapter against its loopback fake, over real HTTP: what it sends, how it reads a generation's life,
how Luma's failures map into the error tree, and that the fake refuses what Luma refuses."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.discord.messages import ENGLISH, reason_text
from bot.errors import (
    ContentRefused,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.providers.base import PollResult, RemoteJob, RemoteState
from bot.providers.luma import LumaProvider, from_settings
from tests.fakes.providers.luma import API, LumaFake
from tests.provider_harness import (
    adapter_fixture,
    adapter_for,
    check_bad_key_health,
    check_expired_url,
    check_failing_create,
    check_failing_polls,
    check_lost_create_answer,
    check_no_key_no_provider,
    check_throttled_create,
    check_unreachable_health,
    check_wrong_key,
    polled,
    request_maker,
    result_url_answers,
    submitted,
    vendor_fixture,
)

CREATE_URL_PATH = f"{API}/generations/video"


fake = vendor_fixture(LumaFake)
luma = adapter_fixture(from_settings)
adapter = adapter_for(from_settings)
request = request_maker(model="luma/ray-2", duration=5)


async def raw_create(fake: LumaFake, body: Any, headers: dict[str, str | None] | None = None) -> httpx.Response:
    """A create sent by hand, to see the fake's own answer; a header given as None is left out."""
    given = {"Authorization": f"Bearer {fake.api_key}", **(headers or {})}
    sent = {name: value for name, value in given.items() if value is not None}
    content = body if isinstance(body, bytes) else None
    async with httpx.AsyncClient() as client:
        return await client.post(f"{fake.base_url}{CREATE_URL_PATH}", content=content,
                                 json=None if content else body, headers=sent)  # fmt: skip


# --- what the adapter sends -----------------------------------------------------------------------------------
async def test_a_create_is_the_documented_json_call_and_its_id_is_the_remote_id(
    fake: LumaFake, luma: LumaProvider
) -> None:
    remote_id = await luma.submit("job-1", request(duration=9, aspect="9:16"))

    assert uuid.UUID(remote_id) and remote_id in fake.jobs
    (seen,) = fake.requests("POST *")
    assert seen.path == CREATE_URL_PATH
    assert seen.headers["Authorization"] == "Bearer luma-test-key"
    assert seen.headers["Content-Type"] == "application/json"
    assert fake.jobs[remote_id].body == {
        "model": "ray-2",
        "prompt": "a lighthouse in a storm",
        "aspect_ratio": "9:16",
        "duration": "9s",
        "resolution": "720p",
    }


async def test_ray_flash_asks_for_its_own_model_and_the_square_aspect(fake: LumaFake, luma: LumaProvider) -> None:
    remote_id = await luma.submit("job-1", request(model="luma/ray-flash-2", aspect="1:1"))
    body = fake.jobs[remote_id].body
    assert (body["model"], body["aspect_ratio"], body["duration"]) == ("ray-flash-2", "1:1", "5s")


def test_the_models_say_what_luma_takes(luma: LumaProvider) -> None:
    models = {model.id: model for model in luma.models()}
    assert set(models) == {"luma/ray-2", "luma/ray-flash-2"}
    for model in models.values():
        assert model.durations == (5, 9) and set(model.aspects) == {"16:9", "9:16", "1:1"}
        assert not (model.supports_image or model.supports_seed or model.supports_negative_prompt)
    assert luma.model_for("luma/ray-3") is None


async def test_what_luma_cannot_take_is_refused_before_anything_is_sent(
    fake: LumaFake, luma: LumaProvider, tmp_path: Path
) -> None:
    frame = tmp_path / "frame.png"
    Image.new("RGB", (640, 360), (20, 90, 200)).save(frame)
    for req, field in ((request(image_path=str(frame)), "image"), (request(prompt="ok"), "prompt")):
        with pytest.raises(RequestRejected) as caught:
            await luma.submit("job-1", req)
        assert caught.value.field == field
    assert fake.seen == []


async def test_luma_fetches_keyframes_by_url_so_an_inline_image_fails_the_generation(fake: LumaFake) -> None:
    """Why the adapter offers no image-to-video: Luma takes the create, then cannot read a `data:` frame."""
    fake.polls_to_finish = 0
    frame = {"frame0": {"type": "image", "url": "data:image/png;base64,iVBORw0KGgo="}}
    answer = await raw_create(fake, {"model": "ray-2", "prompt": "a tiger walking", "keyframes": frame})
    assert answer.status_code == 201 and answer.json()["state"] == "queued"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {fake.api_key}"}) as client:
        polled = (await client.get(f"{fake.base_url}{API}/generations/{answer.json()['id']}")).json()
    assert (polled["state"], polled["failure_reason"]) == ("failed", "Failed to read user input frames")


# --- a generation's life --------------------------------------------------------------------------------------
async def test_a_generation_is_queued_then_dreaming_then_completed_and_its_video_is_downloaded(
    fake: LumaFake, luma: LumaProvider, tmp_path: Path
) -> None:
    remote = await submitted(luma, request())
    results = await polled(luma, remote, 4)
    assert [r.state for r in results[:3]] == [RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.SUCCEEDED]
    assert all(r.progress is None and r.queue_position is None and r.poll_after is None for r in results[:2]), (
        "Luma reports no progress, queue position or polling hint"
    )
    done = results[2]
    assert done.output_url is not None and done.output_url.startswith(f"{fake.storage_url}/")
    assert results[3].output_url == done.output_url

    dest = tmp_path / "clip.mp4"
    await luma.download(remote, done, dest)
    assert dest.read_bytes() == fake.video
    seen_polls = fake.requests(f"GET {API}/generations/*")
    assert len(seen_polls) == 4 and all(p.headers["Authorization"] == "Bearer luma-test-key" for p in seen_polls)
    (fetch,) = [s for s in fake.seen if s.kind == "download"]
    assert "Authorization" not in fetch.headers, "the API key never goes to the CDN"


async def test_a_moderation_refusal_reaches_the_member_with_lumas_reason(fake: LumaFake, luma: LumaProvider) -> None:
    fake.refuse_reason = "Advanced prompt moderation failed"
    results = await polled(luma, await submitted(luma, request()), 2)
    assert results[1].state is RemoteState.FAILED
    assert (
        reason_text(results[1].error, ENGLISH)
        == "The video service refused this request: Advanced prompt moderation failed"
    )


async def test_a_generation_failing_for_lumas_own_reasons_says_so(fake: LumaFake, luma: LumaProvider) -> None:
    fake.generation_failure = "Job failed"
    results = await polled(luma, await submitted(luma, request()), 3)
    assert results[2].state is RemoteState.FAILED
    assert reason_text(results[2].error, ENGLISH) == "The video service could not make this video: Job failed"


async def test_an_expired_video_url_is_result_expired_and_the_next_poll_brings_a_fresh_one(
    fake: LumaFake, luma: LumaProvider, tmp_path: Path
) -> None:
    await check_expired_url(fake, luma, request(), tmp_path)


async def test_a_completed_generation_without_a_video_is_a_retryable_download(
    luma: LumaProvider, tmp_path: Path
) -> None:
    remote = RemoteJob("job-1", str(uuid.uuid4()), request())
    with pytest.raises(ProviderError) as caught:
        await luma.download(remote, PollResult(RemoteState.SUCCEEDED), tmp_path / "clip.mp4")
    assert caught.value.retryable


async def test_cancel_deletes_the_generation(fake: LumaFake, luma: LumaProvider) -> None:
    remote = await submitted(luma, request())
    await luma.poll(remote)
    await luma.cancel(remote)
    (deleted,) = fake.requests("DELETE *")
    assert deleted.path == f"{API}/generations/{remote.remote_id}" and deleted.status == 204
    assert deleted.headers["Authorization"] == "Bearer luma-test-key"
    with pytest.raises(RemoteJobLost):
        await luma.poll(remote)


async def test_a_remote_id_that_is_no_generation_id_never_reaches_a_url(fake: LumaFake, luma: LumaProvider) -> None:
    with pytest.raises(RemoteJobLost):
        await luma.poll(RemoteJob("job-1", "../credits", request()))
    with pytest.raises(RemoteJobLost):
        await luma.cancel(RemoteJob("job-1", "x/../../y", request()))
    assert fake.seen == []


# --- failures -------------------------------------------------------------------------------------------------
async def test_a_throttled_create_may_be_repeated_after_the_wait(fake: LumaFake, luma: LumaProvider) -> None:
    await check_throttled_create(fake, luma, request())


@pytest.mark.parametrize("status", [500, 503])
async def test_a_create_failing_on_the_server_is_never_repeated(
    fake: LumaFake, luma: LumaProvider, status: int
) -> None:
    await check_failing_create(fake, luma, request(), status)


async def test_a_create_whose_answer_is_lost_is_never_repeated(fake: LumaFake, luma: LumaProvider) -> None:
    await check_lost_create_answer(fake, luma, request())


async def test_polls_failing_on_the_server_are_retryable(fake: LumaFake, luma: LumaProvider) -> None:
    await check_failing_polls(fake, luma, request())


async def test_an_account_without_credit_is_a_billing_problem(fake: LumaFake, luma: LumaProvider) -> None:
    fake.credit_balance = 0
    with pytest.raises(ProviderBilling) as caught:
        await luma.submit("job-1", request())
    assert "Insufficient credits" in str(caught.value) and fake.creates == 0


@pytest.mark.parametrize(
    ("status", "detail", "error", "field"),
    [
        (400, "Prompt is required", RequestRejected, "prompt"),
        (400, "Contains blacklisted words", ContentRefused, None),
        (422, [{"type": "literal_error", "loc": ["body", "aspect_ratio"], "msg": "Input should be '16:9'"}],
         RequestRejected, "aspect"),
    ],
)  # fmt: skip
async def test_lumas_create_errors_map_to_the_error_tree(
    fake: LumaFake, luma: LumaProvider, status: int, detail: Any, error: type[ProviderError], field: str | None
) -> None:
    fake.fail_next("create", status, body={"detail": detail})
    with pytest.raises(error) as caught:
        await luma.submit("job-1", request())
    assert not caught.value.retryable
    if isinstance(caught.value, RequestRejected):
        assert caught.value.field == field
    else:
        assert "Contains blacklisted words" in reason_text(caught.value.user_message, ENGLISH)


async def test_a_wrong_key_is_credentials_rejected_naming_the_variable(fake: LumaFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, lumaai_api_key="luma-wrong") as luma:
        await check_wrong_key(fake, luma, request(), "LUMAAI_API_KEY", "luma-wrong")


# --- the fake is as strict as Luma ----------------------------------------------------------------------------
GOOD = {"model": "ray-2", "prompt": "a cat", "aspect_ratio": "16:9", "duration": "5s", "resolution": "720p"}


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        ({"headers": {"Authorization": None}}, 401, "Invalid API key"),
        ({"headers": {"Authorization": "luma-test-key"}}, 401, "Invalid API key"),
        ({"headers": {"Authorization": "Token luma-test-key"}}, 401, "Invalid API key"),
        ({"duration": 5}, 422, "literal_error"),
        ({"duration": "7s"}, 422, "literal_error"),
        ({"aspect_ratio": "2:1"}, 422, "literal_error"),
        ({"resolution": "720"}, 422, "literal_error"),
        ({"model": "ray-3"}, 422, "literal_error"),
        ({"model": None}, 422, "missing"),
        ({"loop": "yes"}, 422, "bool_type"),
        ({"prompt": 7}, 422, "string_type"),
        ({"seed": 42}, 422, "extra_forbidden"),
        ({"keyframes": {"frame0": {"type": "image"}}}, 422, "union_tag_invalid"),
        ({"prompt": None}, 400, "Prompt is required"),
        ({"prompt": "ab"}, 400, "Prompt is too short, minimum length is 3 characters"),
        ({"prompt": "x" * 5001}, 400, "Prompt is too long, maximum length is 5000 characters"),
        ({"keyframes": {"frame0": None}}, 400, "No keyframes provided"),
    ],
)
async def test_the_fake_refuses_what_luma_refuses(
    fake: LumaFake, change: dict[str, Any], status: int, detail: str
) -> None:
    headers = change.pop("headers", {})
    answer = await raw_create(fake, {k: v for k, v in {**GOOD, **change}.items() if v is not None}, headers)
    assert answer.status_code == status, answer.text
    found = answer.json()["detail"]
    assert (found[0]["type"] if status == 422 else found) == detail
    assert fake.creates == 0


async def test_the_fake_wants_a_json_body(fake: LumaFake) -> None:
    answer = await raw_create(fake, b"model=ray-2", {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body"]
    assert fake.creates == 0


async def test_the_fake_answers_unknown_paths_and_methods_as_not_found(fake: LumaFake) -> None:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    async with httpx.AsyncClient(base_url=fake.base_url, headers=headers) as client:
        for answer in (await client.post(f"{API}/videos", json=GOOD), await client.put(f"{API}/generations/x")):
            assert answer.status_code == 404 and answer.json() == {"detail": "Not Found"}
    assert fake.creates == 0


async def test_the_cdn_answers_as_a_signed_url_host_does(fake: LumaFake, luma: LumaProvider) -> None:
    auth = {"Authorization": "Bearer luma-test-key"}
    with_key, forged, unsigned, good = await result_url_answers(fake, luma, request(), auth)
    assert with_key.status_code == 400 and "<Code>InvalidArgument</Code>" in with_key.text
    assert forged.status_code == 403 and unsigned.status_code == 403
    assert good.status_code == 200 and good.content == fake.video


# --- health and settings --------------------------------------------------------------------------------------
async def test_health_reads_the_credit_balance_with_the_key(fake: LumaFake, luma: LumaProvider) -> None:
    health = await luma.health()
    assert health.ok and health.models == ("luma/ray-2", "luma/ray-flash-2")
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("GET", f"{API}/credits")
    assert seen.headers["Authorization"] == "Bearer luma-test-key"


async def test_health_of_an_account_without_credit_says_so(fake: LumaFake, luma: LumaProvider) -> None:
    fake.credit_balance = 0
    health = await luma.health()
    assert health.authenticated and not health.ok
    assert health.problem is not None and "no credit" in health.problem


async def test_health_with_a_bad_key_names_the_variable_and_not_the_key(fake: LumaFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, lumaai_api_key="luma-wrong-secret") as luma:
        await check_bad_key_health(luma, "LUMAAI_API_KEY", "luma-wrong-secret")


async def test_health_of_an_unreachable_service_names_the_base_url(fake: LumaFake, luma: LumaProvider) -> None:
    await check_unreachable_health(fake, luma, "LUMAAI_BASE_URL")


def test_no_key_no_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_no_key_no_provider(from_settings, "LUMAAI_API_KEY", tmp_path, monkeypatch, blank=" ")

"""The Vidu adapter against its loopback fake, over real HTTP: what it sends, how it reads a task's life, how each
vendor failure maps into the error tree, that the credits Vidu announces are kept in the remote id, and that the
fake refuses what Vidu refuses."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.discord.messages import ENGLISH, reason_text
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.providers import vidu
from bot.providers.base import RemoteJob, RemoteState
from bot.providers.vidu import POLL_SECONDS, ViduProvider, from_settings, vendor_credits
from tests.fakes.providers.vidu import API, ViduFake
from tests.provider_harness import (
    adapter_fixture,
    adapter_for,
    check_bad_key_health,
    check_expired_url,
    check_failing_polls,
    check_no_key_no_provider,
    check_throttled_create,
    check_unreachable_health,
    check_wrong_key,
    image_file,
    request_maker,
    result_url_answers,
    sent_body,
    submitted,
    vendor_fixture,
)

fake = vendor_fixture(ViduFake)
provider = adapter_fixture(from_settings)
adapter = adapter_for(from_settings)
request = request_maker(model="vidu/viduq1", duration=5)


# --- what the adapter sends -----------------------------------------------------------------------------------
async def test_text_to_video_is_the_documented_call_with_token_auth(fake: ViduFake, provider: ViduProvider) -> None:
    remote = await submitted(provider, request(aspect="9:16", seed=42))

    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("POST", f"{API}/text2video")
    assert seen.headers["Authorization"] == "Token vda_test_key"
    assert seen.headers["Content-Type"] == "application/json"
    assert sent_body(fake) == {"model": "viduq1", "prompt": "a lighthouse in a storm", "duration": 5,
                               "resolution": "1080p", "seed": 42, "aspect_ratio": "9:16"}  # fmt: skip
    (job,) = fake.jobs.values()
    assert remote.remote_id == f"{job.id}|80", "the task id and the credits Vidu announced"


async def test_the_credits_announced_at_create_are_kept_in_the_remote_id(
    fake: ViduFake, provider: ViduProvider
) -> None:
    remote = await submitted(provider, request(model="vidu/viduq3-pro", duration=10))
    assert sent_body(fake)["resolution"] == "720p" and "seed" not in sent_body(fake)
    assert vendor_credits(remote.remote_id) == 300 == fake.jobs[remote.remote_id.split("|")[0]].extra["credits"]
    assert vendor_credits("123456789") is None and vendor_credits("not a remote id") is None
    # A remote id without credits (a create that announced none) finds its task all the same.
    bare = RemoteJob("job-1", remote.remote_id.split("|")[0], remote.request)
    assert (await provider.poll(bare)).state is RemoteState.QUEUED


async def test_image_to_video_sends_the_frame_inline_and_no_aspect(
    fake: ViduFake, provider: ViduProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (800, 600))
    await submitted(provider, request(model="vidu/vidu2.0", duration=8, image_path=str(frame), seed=7))
    (seen,) = fake.seen
    assert seen.path == f"{API}/img2video"
    inline = "data:image/png;base64," + base64.b64encode(frame.read_bytes()).decode()
    assert sent_body(fake) == {"model": "vidu2.0", "prompt": "a lighthouse in a storm", "duration": 8,
                               "resolution": "720p", "seed": 7, "images": [inline]}  # fmt: skip


async def test_a_frame_too_heavy_to_send_is_scaled_down_as_jpeg(
    fake: ViduFake, provider: ViduProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vidu, "IMAGE_MAX_BYTES", 1000)  # as if the member's PNG were over Vidu's 10 MB
    frame = image_file(tmp_path, (3000, 1000))
    await submitted(provider, request(image_path=str(frame)))
    uri = sent_body(fake)["images"][0]
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as sent:
        assert sent.size == (2048, 683)


async def test_what_vidu_would_refuse_is_refused_before_anything_is_sent(
    fake: ViduFake, provider: ViduProvider, tmp_path: Path
) -> None:
    with pytest.raises(RequestRejected) as elongated:
        await provider.submit("job-1", request(image_path=str(image_file(tmp_path, (2100, 500)))))
    assert elongated.value.field == "image" and "1:4" in elongated.value.reason
    with pytest.raises(RequestRejected) as long_prompt:
        await provider.submit("job-1", request(prompt="a" * 1501))
    assert long_prompt.value.field == "prompt" and "1500" in long_prompt.value.reason
    assert fake.seen == []
    await provider.submit("job-2", request(model="vidu/viduq3-pro", prompt="a" * 1501))  # newer models take 5000
    assert fake.creates == 1


# --- the task's life ------------------------------------------------------------------------------------------
async def test_a_task_queues_runs_succeeds_and_its_video_is_downloaded(
    fake: ViduFake, provider: ViduProvider, tmp_path: Path
) -> None:
    remote = await submitted(provider, request())
    results = [await provider.poll(remote) for _ in range(4)]
    assert [r.state for r in results[:3]] == [RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.SUCCEEDED]
    assert results[0].poll_after == results[1].poll_after == POLL_SECONDS
    assert all(r.progress is None and r.queue_position is None for r in results[:2]), "Vidu reports neither"
    done = results[2]
    assert done.output_url is not None and done.output_url.startswith(f"{fake.storage_url}/")
    assert results[3].output_url == done.output_url, "the same URL on every poll"

    await provider.download(remote, done, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video
    polls = fake.requests(f"GET {API}/tasks/*/creations")
    assert len(polls) == 4 and all(p.headers["Authorization"] == "Token vda_test_key" for p in polls)
    (fetch,) = [s for s in fake.seen if s.kind == "download"]
    assert "Authorization" not in fetch.headers, "the API key never goes to the storage host"


async def test_a_refusal_at_create_reaches_the_member_with_its_reason(fake: ViduFake, provider: ViduProvider) -> None:
    fake.refuse_reason = "the prompt depicts a real public figure"
    with pytest.raises(ContentRefused) as caught:
        await provider.submit("job-1", request())
    assert "the prompt depicts a real public figure" in reason_text(caught.value.user_message, ENGLISH)
    assert "safety review" in caught.value.reason
    assert fake.creates == 0


@pytest.mark.parametrize(
    ("err_code", "state", "words"),
    [
        ("CreationPolicyViolation", RemoteState.FAILED, "blocked by Vidu's content policy (CreationPolicyViolation)"),
        ("InternalServiceFailure", RemoteState.FAILED, "Vidu could not make this video (InternalServiceFailure)"),
        ("UserCancelled", RemoteState.CANCELLED, "cancelled at Vidu"),
    ],
)
async def test_a_failed_task_is_told_in_words_from_its_err_code(
    fake: ViduFake, provider: ViduProvider, err_code: str, state: RemoteState, words: str
) -> None:
    fake.task_failure = err_code
    fake.polls_to_finish = 0
    result = await provider.poll(await submitted(provider, request()))
    assert result.state is state and result.error is not None and words in reason_text(result.error, ENGLISH)


async def test_an_unknown_task_is_lost_and_a_foreign_remote_id_never_reaches_a_url(
    fake: ViduFake, provider: ViduProvider
) -> None:
    with pytest.raises(RemoteJobLost):
        await provider.poll(RemoteJob("job-1", "812345678901234|80", request()))
    assert fake.seen[-1].status == 404
    with pytest.raises(RemoteJobLost):
        await provider.poll(RemoteJob("job-1", "../credits", request()))
    assert len(fake.seen) == 1


async def test_an_expired_video_url_is_result_expired_and_the_next_poll_brings_a_fresh_one(
    fake: ViduFake, provider: ViduProvider, tmp_path: Path
) -> None:
    await check_expired_url(fake, provider, request(), tmp_path)


async def test_a_waiting_task_is_cancelled_and_a_scheduled_one_is_left_alone(
    fake: ViduFake, provider: ViduProvider
) -> None:
    waiting = await submitted(provider, request())
    await provider.cancel(waiting)
    (cancel,) = fake.requests("POST */cancel")
    task_id = waiting.remote_id.split("|")[0]
    assert cancel.path == f"{API}/tasks/{task_id}/cancel" and cancel.headers["Authorization"] == "Token vda_test_key"
    assert (await provider.poll(waiting)).state is RemoteState.CANCELLED

    scheduled = RemoteJob("job-2", await provider.submit("job-2", request()), request())
    await provider.poll(scheduled)
    assert (await provider.poll(scheduled)).state is RemoteState.RUNNING
    await provider.cancel(scheduled)  # "task state is scheduled, can not cancel": not an error for the worker
    assert [s.status for s in fake.seen if s.kind == "cancel"] == [200, 400]


# --- failures -------------------------------------------------------------------------------------------------
async def test_a_throttled_create_may_be_repeated_after_the_wait(fake: ViduFake, provider: ViduProvider) -> None:
    await check_throttled_create(fake, provider, request())


async def test_a_create_failing_on_the_server_or_losing_its_answer_is_never_repeated(
    fake: ViduFake, provider: ViduProvider
) -> None:
    fake.fail_next("create", 500)
    with pytest.raises(CreateOutcomeUnknown):
        await provider.submit("job-1", request())
    fake.drop_create_answer = True
    with pytest.raises(CreateOutcomeUnknown):
        await provider.submit("job-2", request())
    assert fake.creates == 1


async def test_polls_failing_on_the_server_are_retryable(fake: ViduFake, provider: ViduProvider) -> None:
    await check_failing_polls(fake, provider, request())


@pytest.mark.parametrize(
    ("reason", "message", "error", "field"),
    [
        ("TaskPromptPolicyViolation", "prompt policy violation", ContentRefused, None),
        ("CreditInsufficient", "insufficient credits", ProviderBilling, None),
        ("FieldInvalid", "invalid field: aspect_ratio", RequestRejected, "aspect"),
        ("FieldLacking", "field is missing or empty: images", RequestRejected, "image"),
        ("ImageFormatInvalid", "invalid image format", RequestRejected, "image"),
        ("ModelUnavailable", "model unavailable", RequestRejected, "model"),
    ],
)
async def test_vendor_error_codes_map_to_the_error_tree(
    fake: ViduFake, provider: ViduProvider, reason: str, message: str, error: type[ProviderError], field: str | None
) -> None:
    fake.fail_next("create", 400, body={"code": 400, "reason": reason, "message": message,
                                        "metadata": {"trace_id": "t"}})  # fmt: skip
    with pytest.raises(error) as caught:
        await provider.submit("job-1", request())
    assert not caught.value.retryable
    assert getattr(caught.value, "field", None) == field
    assert message in str(caught.value)


async def test_a_create_the_account_cannot_pay_for_is_billing(fake: ViduFake, provider: ViduProvider) -> None:
    fake.credit_remain = 79
    with pytest.raises(ProviderBilling):
        await provider.submit("job-1", request())
    assert fake.creates == 0


async def test_a_wrong_key_is_credentials_rejected_naming_the_variable(fake: ViduFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, vidu_api_key="vda_wrong") as wrong:
        await check_wrong_key(fake, wrong, request(), "VIDU_API_KEY", "vda_wrong")


# --- the fake is as strict as Vidu ----------------------------------------------------------------------------
GOOD = {"model": "viduq1", "prompt": "a cat", "duration": 5, "resolution": "1080p", "aspect_ratio": "16:9"}


@pytest.mark.parametrize(
    ("path", "change", "status", "reason"),
    [
        ("text2video", {"headers": {"Authorization": None}}, 401, "Unauthorized"),
        ("text2video", {"headers": {"Authorization": "Bearer vda_test_key"}}, 401, "Unauthorized"),
        ("text2video", {"headers": {"Content-Type": "text/plain"}}, 400, "BadRequest"),
        ("text2video", {"negative_prompt": "dogs"}, 400, "FieldUnwanted"),
        ("text2video", {"duration": "5"}, 400, "FieldInvalid"),
        ("text2video", {"duration": 8}, 400, "FieldInvalid"),
        ("text2video", {"resolution": "720p"}, 400, "FieldInvalid"),
        ("text2video", {"aspect_ratio": "4:3"}, 400, "FieldInvalid"),
        ("text2video", {"seed": True}, 400, "FieldInvalid"),
        ("text2video", {"movement_amplitude": "huge"}, 400, "FieldInvalid"),
        ("text2video", {"prompt": None}, 400, "FieldLacking"),
        ("text2video", {"model": "vidu2.0", "duration": 4, "resolution": "720p"}, 400, "FieldInvalid"),
        ("img2video", {"aspect_ratio": None, "images": None}, 400, "FieldLacking"),
        ("img2video", {"aspect_ratio": None, "images": ["https://x/a.png"] * 2}, 400, "FieldItemCountOutOfRange"),
        ("img2video", {"aspect_ratio": None, "images": ["data:image/gif;base64,R0lG"]}, 400, "ImageFormatInvalid"),
        ("img2video", {"images": ["https://example.com/a.png"]}, 400, "FieldUnwanted"),
    ],
)
async def test_the_fake_refuses_what_vidu_refuses(
    fake: ViduFake, path: str, change: dict[str, Any], status: int, reason: str
) -> None:
    headers = {"Authorization": "Token vda_test_key", "Content-Type": "application/json",
               **change.pop("headers", {})}  # fmt: skip
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.base_url}{API}/{path}", content=json.dumps(body),
                                   headers={k: v for k, v in headers.items() if v is not None})  # fmt: skip
    assert answer.status_code == status, answer.text
    assert answer.json()["reason"] == reason and answer.json()["code"] == status
    assert answer.json()["metadata"]["trace_id"]
    assert fake.creates == 0


async def test_the_storage_host_answers_as_object_storage_does(fake: ViduFake, provider: ViduProvider) -> None:
    auth = {"Authorization": "Token vda_test_key"}
    with_key, forged, _, good = await result_url_answers(fake, provider, request(), auth, forge="0")
    assert with_key.status_code == 400 and "<Code>InvalidArgument</Code>" in with_key.text
    assert forged.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in forged.text
    assert good.status_code == 200 and good.content == fake.video


# --- health and settings --------------------------------------------------------------------------------------
async def test_health_reads_the_account_with_the_key(fake: ViduFake, provider: ViduProvider) -> None:
    health = await provider.health()
    assert health.ok and "vidu/viduq1" in health.models
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("GET", f"{API}/credits")
    assert seen.headers["Authorization"] == "Token vda_test_key"


async def test_health_says_when_the_account_has_no_credits_left(fake: ViduFake, provider: ViduProvider) -> None:
    fake.credit_remain = 0
    health = await provider.health()
    assert health.authenticated and not health.ok
    assert health.problem is not None and "no credits left" in health.problem


async def test_health_with_a_bad_key_names_the_variable_and_not_the_key(fake: ViduFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, vidu_api_key="vda_wrong_secret") as wrong:
        await check_bad_key_health(wrong, "VIDU_API_KEY", "vda_wrong_secret")


async def test_health_of_an_unreachable_service_names_the_base_url(fake: ViduFake, provider: ViduProvider) -> None:
    await check_unreachable_health(fake, provider, "VIDU_BASE_URL")


def test_no_key_no_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_no_key_no_provider(from_settings, "VIDU_API_KEY", tmp_path, monkeypatch)

"""The MiniMax (Hailuo) adapter against its loopback fake, over real HTTP: what it sends, how it reads a task's
life, how MiniMax's `base_resp` codes map into the error tree, and that the fake refuses what MiniMax refuses."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.discord.messages import ENGLISH, reason_text
from bot.errors import (
    ContentRefused,
    CreateOutcomeUnknown,
    CredentialsRejected,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
    ResultExpired,
)
from bot.errors.said import vendor_said
from bot.providers.base import PollResult, RemoteJob, RemoteState
from bot.providers.http import Kind
from bot.providers.minimax import POLL_SECONDS, MiniMaxProvider, from_settings, map_error, vendor_error
from tests.fakes.providers.minimax import CREATE_PATH, MiniMaxFake, base_resp
from tests.provider_harness import (
    adapter_fixture,
    adapter_for,
    check_bad_key_health,
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

FAST = "minimax/MiniMax-Hailuo-2.3-Fast"


fake = vendor_fixture(MiniMaxFake)
hailuo = adapter_fixture(from_settings)
adapter = adapter_for(from_settings)
request = request_maker(model=MiniMaxFake.model, duration=6)


# --- what the adapter sends -----------------------------------------------------------------------------------
async def test_text_to_video_create_is_the_documented_call(fake: MiniMaxFake, hailuo: MiniMaxProvider) -> None:
    task_id = await hailuo.submit("job-1", request(duration=10))
    assert task_id in fake.jobs and task_id.isdigit()
    (seen,) = fake.seen
    assert (seen.method, seen.path) == ("POST", CREATE_PATH)
    assert seen.headers["Authorization"] == "Bearer mm-test-key"
    assert seen.headers["Content-Type"] == "application/json"
    assert sent_body(fake) == {"model": "MiniMax-Hailuo-2.3", "prompt": "a lighthouse in a storm", "duration": 10,
                               "resolution": "768P"}  # fmt: skip


@pytest.mark.parametrize(("model", "aspect", "size"), [(FAST, "9:16", (768, 1366)), (FAST, "1:1", (768, 768)),
                                                       (MiniMaxFake.model, "16:9", (1366, 768))])  # fmt: skip
async def test_a_first_frame_goes_inline_cropped_to_the_asked_aspect(
    fake: MiniMaxFake, hailuo: MiniMaxProvider, tmp_path: Path, model: str, aspect: str, size: tuple[int, int]
) -> None:
    await hailuo.submit("job-1", request(model=model, aspect=aspect, image_path=str(image_file(tmp_path, (900, 700)))))
    body = sent_body(fake)
    assert body["model"] == model.split("/", 1)[1] and body["resolution"] == "768P"
    uri = body["first_frame_image"]
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as frame:
        assert (frame.format, frame.size) == ("JPEG", size)


async def test_requests_the_vendor_cannot_take_are_refused_before_anything_is_sent(
    fake: MiniMaxFake, hailuo: MiniMaxProvider, tmp_path: Path
) -> None:
    with pytest.raises(RequestRejected) as no_image:
        await hailuo.submit("job-1", request(model=FAST))
    with pytest.raises(RequestRejected) as unknown:
        await hailuo.submit("job-1", request(model="minimax/video-01"))
    not_an_image = tmp_path / "frame.png"
    not_an_image.write_text("not a picture")
    with pytest.raises(RequestRejected) as unreadable:
        await hailuo.submit("job-1", request(image_path=str(not_an_image)))
    with pytest.raises(ProviderError) as missing:
        await hailuo.submit("job-1", request(image_path=str(tmp_path / "gone.png")))
    assert (no_image.value.field, unknown.value.field, unreadable.value.field) == ("image", "model", "image")
    assert not missing.value.retryable
    assert fake.seen == []


# --- the task's life ------------------------------------------------------------------------------------------
async def test_a_task_waits_then_runs_then_its_file_is_retrieved_and_downloaded(
    fake: MiniMaxFake, hailuo: MiniMaxProvider, tmp_path: Path
) -> None:
    fake.polls_to_finish = 3
    remote = await submitted(hailuo, request())
    results = [await hailuo.poll(remote) for _ in range(5)]
    assert [r.state for r in results] == [RemoteState.QUEUED] * 2 + [RemoteState.RUNNING] + [RemoteState.SUCCEEDED] * 2
    assert all(r.poll_after == POLL_SECONDS and r.progress is None and r.queue_position is None for r in results[:3])
    done = results[3]
    assert done.progress == 1.0 and done.output_url is not None
    assert done.output_url.startswith(f"{fake.storage_url}/")

    await hailuo.download(remote, done, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video
    polls, retrieves = fake.requests("GET /v1/query/video_generation"), fake.requests("GET /v1/files/retrieve")
    assert [p.query for p in polls] == [{"task_id": remote.remote_id}] * 5
    file_id = fake.jobs[remote.remote_id].extra["file_id"]
    assert [r.query for r in retrieves] == [{"file_id": file_id}] * 2, "every poll after Success retrieves afresh"
    assert all(s.headers["Authorization"] == "Bearer mm-test-key" for s in polls + retrieves)
    (fetch,) = [s for s in fake.seen if s.kind == "download"]
    assert "Authorization" not in fetch.headers, "the API key never goes to the storage host"


async def test_a_refused_video_reaches_the_member_with_its_reason(fake: MiniMaxFake, hailuo: MiniMaxProvider) -> None:
    fake.refuse_reason = "the video depicts a real public figure"
    remote = await submitted(hailuo, request())
    results = [await hailuo.poll(remote) for _ in range(2)]
    assert results[1].state is RemoteState.FAILED
    assert (
        reason_text(results[1].error, ENGLISH)
        == "refused by the content policy: the video depicts a real public figure"
    )


async def test_a_task_failing_for_the_vendors_own_reasons_gives_its_message(
    fake: MiniMaxFake, hailuo: MiniMaxProvider
) -> None:
    fake.task_failure = "video generation failed, please retry"
    fake.polls_to_finish = 0
    result = await hailuo.poll(await submitted(hailuo, request()))
    assert result == PollResult(RemoteState.FAILED, error=vendor_said("video generation failed, please retry"))
    assert reason_text(result.error, ENGLISH) == "video generation failed, please retry"


async def test_a_refusal_code_on_a_query_fails_the_job_with_the_reason(
    fake: MiniMaxFake, hailuo: MiniMaxProvider
) -> None:
    remote = await submitted(hailuo, request())
    fake.fail_next("poll", 200, body={"task_id": remote.remote_id, **base_resp(1026, "prompt is sensitive")})
    result = await hailuo.poll(remote)
    assert result.state is RemoteState.FAILED and result.error is not None
    assert "prompt is sensitive" in reason_text(result.error, ENGLISH)


async def test_an_unknown_task_is_lost_and_a_foreign_remote_id_never_reaches_a_request(
    fake: MiniMaxFake, hailuo: MiniMaxProvider
) -> None:
    with pytest.raises(RemoteJobLost):
        await hailuo.poll(RemoteJob("job-1", "123456789012345", request()))
    sent = len(fake.seen)
    with pytest.raises(RemoteJobLost):
        await hailuo.poll(RemoteJob("job-1", "../v1/files/list", request()))
    assert len(fake.seen) == sent


async def test_an_expired_url_is_result_expired_and_the_next_poll_signs_a_fresh_one(
    fake: MiniMaxFake, hailuo: MiniMaxProvider, tmp_path: Path
) -> None:
    fake.expire_first_url = True
    fake.polls_to_finish = 0
    remote = await submitted(hailuo, request())
    first = await hailuo.poll(remote)
    with pytest.raises(ResultExpired):
        await hailuo.download(remote, await hailuo.poll(remote), tmp_path / "clip.mp4")
    again = await hailuo.poll(remote)
    assert again.output_url != first.output_url
    await hailuo.download(remote, again, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video


async def test_cancel_sends_nothing_minimax_has_no_cancel(fake: MiniMaxFake, hailuo: MiniMaxProvider) -> None:
    await hailuo.cancel(await submitted(hailuo, request()))
    assert len(fake.seen) == 1 and fake.count("cancel") == 0


# --- failures -------------------------------------------------------------------------------------------------
async def test_a_throttled_create_may_be_repeated_after_the_wait(fake: MiniMaxFake, hailuo: MiniMaxProvider) -> None:
    await check_throttled_create(fake, hailuo, request())


@pytest.mark.parametrize("fault", ["500", "503", "answer lost"])
async def test_a_create_whose_outcome_is_unknown_is_never_repeated(
    fake: MiniMaxFake, hailuo: MiniMaxProvider, fault: str
) -> None:
    if fault == "answer lost":
        fake.drop_create_answer = True  # MiniMax made (and bills) the task; the bot never hears of it
    else:
        fake.fail_next("create", int(fault))
    with pytest.raises(CreateOutcomeUnknown):
        await hailuo.submit("job-1", request())
    assert fake.creates == (1 if fault == "answer lost" else 0)


@pytest.mark.parametrize("kind", ["poll", "result"])
async def test_queries_and_retrieves_failing_on_the_server_are_retryable(
    fake: MiniMaxFake, hailuo: MiniMaxProvider, kind: str
) -> None:
    fake.polls_to_finish = 0
    remote = await submitted(hailuo, request())
    fake.fail_next(kind, 503, times=2)
    fake.fail_next(kind, 200, body=base_resp(1002, "rate limit exceeded(RPM)"))
    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            await hailuo.poll(remote)
        assert caught.value.retryable
    assert (await hailuo.poll(remote)).state is RemoteState.SUCCEEDED


@pytest.mark.parametrize(
    ("code", "message", "error", "retryable"),
    [
        (1002, "rate limit exceeded(RPM)", ProviderError, True),
        (1004, "login fail: Please carry the API secret key", CredentialsRejected, False),
        (2049, "invalid api key", CredentialsRejected, False),
        (1008, "insufficient balance", ProviderBilling, False),
        (2056, "usage limit exceeded", ProviderBilling, False),
        (1026, "input new_sensitive", ContentRefused, False),
        (2013, "invalid params, duration", RequestRejected, False),
        (2038, "no permission, real-name verification required", ProviderError, False),
        (1000, "unknown error", CreateOutcomeUnknown, False),
        (1001, "request timeout", CreateOutcomeUnknown, False),
        (1033, "system error", CreateOutcomeUnknown, False),
        (4242, "something new", CreateOutcomeUnknown, False),
    ],
)
async def test_base_resp_codes_on_a_create_map_to_the_error_tree(
    fake: MiniMaxFake, hailuo: MiniMaxProvider, code: int, message: str, error: type[ProviderError], retryable: bool
) -> None:
    fake.fail_next("create", 200, body=base_resp(code, message))  # MiniMax's errors come with HTTP 200
    with pytest.raises(error) as caught:
        await hailuo.submit("job-1", request())
    assert type(caught.value) is error and caught.value.retryable is retryable
    if isinstance(caught.value, (ContentRefused, RequestRejected)):
        assert message in reason_text(caught.value.user_message, ENGLISH)
    if isinstance(caught.value, RequestRejected):
        assert caught.value.field == "duration"
    if isinstance(caught.value, CredentialsRejected):
        assert "MINIMAX_API_KEY" in str(caught.value)
    if code == 2038:
        assert "real-name verification" in str(caught.value)
        assert "admin" in reason_text(caught.value.user_message, ENGLISH)
    assert fake.creates == 0


def test_the_same_codes_on_a_read_say_what_a_repeat_can_do() -> None:
    assert vendor_error(1000, "unknown error", Kind.READ).retryable
    assert vendor_error(1001, "request timeout", Kind.READ).retryable
    assert isinstance(vendor_error(2013, "invalid params, task_id", Kind.READ), RemoteJobLost)
    assert isinstance(vendor_error(1004, "login fail", Kind.READ), CredentialsRejected)
    assert not vendor_error(4242, "something new", Kind.READ).retryable
    throttled = httpx.Response(429, headers={"Retry-After": "7"}, json=base_resp(1002, "rate limit"))
    mapped = map_error(throttled, Kind.CREATE)
    assert mapped is not None and mapped.retryable and mapped.retry_after == 7
    assert map_error(httpx.Response(502, text="<html>bad gateway</html>"), Kind.READ) is None


async def test_a_wrong_key_is_credentials_rejected_naming_the_variable(fake: MiniMaxFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, minimax_api_key="mm-wrong") as hailuo:
        await check_wrong_key(fake, hailuo, request(), "MINIMAX_API_KEY", "mm-wrong", status=200)


# --- the fake is as strict as MiniMax -------------------------------------------------------------------------
GOOD = {"model": "MiniMax-Hailuo-2.3", "prompt": "a cat", "duration": 6, "resolution": "768P"}
AUTH = {"Authorization": "Bearer mm-test-key"}


def data_uri(size: tuple[int, int], fmt: str = "PNG", declared: str = "png") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, fmt)
    return f"data:image/{declared};base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("change", "headers", "code"),
    [
        ({}, {}, 1004),
        ({}, {"Authorization": "mm-test-key"}, 2049),
        ({"duration": "6"}, AUTH, 2013),
        ({"duration": 8}, AUTH, 2013),
        ({"resolution": "720P"}, AUTH, 2013),
        ({"resolution": "1080P", "duration": 10}, AUTH, 2013),
        ({"aspect_ratio": "16:9"}, AUTH, 2013),
        ({"model": "video-01"}, AUTH, 2013),
        ({"model": "MiniMax-Hailuo-2.3-Fast"}, AUTH, 2013),
        ({"prompt": "x" * 2001}, AUTH, 2013),
        ({"prompt_optimizer": "yes"}, AUTH, 2013),
        ({"first_frame_image": data_uri((200, 200))}, AUTH, 2013),
        ({"first_frame_image": data_uri((1400, 400))}, AUTH, 2013),
        ({"first_frame_image": data_uri((800, 600), "JPEG", "png")}, AUTH, 2013),
        ({"first_frame_image": "frame.png"}, AUTH, 2013),
    ],
)
async def test_the_fake_refuses_what_minimax_refuses(
    fake: MiniMaxFake, change: dict[str, Any], headers: dict[str, str], code: int
) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.base_url}{CREATE_PATH}", json={**GOOD, **change}, headers=headers)
    assert answer.status_code == 200, "MiniMax answers its errors with HTTP 200"
    assert answer.json()["base_resp"]["status_code"] == code and answer.headers["Trace-Id"]
    assert "task_id" not in answer.json() and fake.creates == 0


async def test_the_fake_takes_a_good_body_and_refuses_other_content_types_and_paths(fake: MiniMaxFake) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url, headers=AUTH) as client:
        good = await client.post(CREATE_PATH, json={**GOOD, "first_frame_image": data_uri((800, 600))})
        as_text = await client.post(CREATE_PATH, content=str(GOOD), headers={"Content-Type": "text/plain"})
        no_task = await client.get("/v1/query/video_generation")
        elsewhere = await client.get("/v1/video_generation/123")
    assert good.json()["base_resp"] == {"status_code": 0, "status_msg": "success"} and good.json()["task_id"]
    assert as_text.json()["base_resp"]["status_code"] == 2013
    assert no_task.json()["base_resp"]["status_code"] == 2013
    assert elsewhere.status_code == 404
    assert fake.creates == 1


async def test_the_storage_host_answers_as_oss_does(fake: MiniMaxFake, hailuo: MiniMaxProvider) -> None:
    with_key, forged, unsigned, good = await result_url_answers(fake, hailuo, request(), AUTH)
    assert with_key.status_code == 400 and "<Code>InvalidArgument</Code>" in with_key.text
    assert forged.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in forged.text
    assert unsigned.status_code == 403 and "<Code>AccessDenied</Code>" in unsigned.text
    assert good.status_code == 200 and good.content == fake.video


# --- health and settings --------------------------------------------------------------------------------------
async def test_health_lists_files_with_the_key(fake: MiniMaxFake, hailuo: MiniMaxProvider) -> None:
    health = await hailuo.health()
    assert health.ok and FAST in health.models
    (seen,) = fake.seen
    assert (seen.method, seen.path, seen.query) == ("GET", "/v1/files/list", {"purpose": "voice_clone"})
    assert seen.headers["Authorization"] == "Bearer mm-test-key"


async def test_health_with_a_bad_key_names_the_variable_and_not_the_key(fake: MiniMaxFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, minimax_api_key="mm-wrong-secret") as hailuo:
        health = await check_bad_key_health(hailuo, "MINIMAX_API_KEY", "mm-wrong-secret")
    assert "MINIMAX_BASE_URL" in str(health.problem)


async def test_health_of_an_unreachable_service_names_the_base_url(fake: MiniMaxFake, hailuo: MiniMaxProvider) -> None:
    await check_unreachable_health(fake, hailuo, "MINIMAX_BASE_URL")


def test_no_key_no_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_no_key_no_provider(from_settings, "MINIMAX_API_KEY", tmp_path, monkeypatch)

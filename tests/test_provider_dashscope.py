"""The DashScope (Wan) adapter against its loopback fake, over real HTTP: what it sends, how it reads the task's
life, how each vendor failure maps into the error tree, and that the fake refuses what DashScope refuses."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.discord.messages import ENGLISH, reason_text
from bot.domain import VideoRequest
from bot.errors import (
    ContentRefused,
    ProviderBilling,
    ProviderError,
    RemoteJobLost,
    RequestRejected,
)
from bot.providers.base import RemoteJob, RemoteState
from bot.providers.dashscope import POLL_SECONDS, DashScopeProvider, fitted_size, from_settings, map_error
from bot.providers.http import Kind
from tests.fakes.providers.dashscope import CREATE_PATH, DashScopeFake
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
    image_file,
    polled,
    request_maker,
    result_url_answers,
    sent_body,
    submitted,
    vendor_fixture,
)

fake = vendor_fixture(DashScopeFake)
wan = adapter_fixture(from_settings)
adapter = adapter_for(from_settings)
request = request_maker(model="dashscope/wan2.6-t2v", duration=5)


async def submit_and_finish(wan: DashScopeProvider, req: VideoRequest) -> tuple[RemoteJob, list[Any]]:
    remote = await submitted(wan, req)
    return remote, await polled(wan, remote, 4)


# --- what the adapter sends -----------------------------------------------------------------------------------
async def test_text_to_video_create_is_the_documented_async_call(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    req = request(duration=10, aspect="9:16", seed=42, negative_prompt="blurry, text")
    task_id = await wan.submit("job-1", req)

    assert task_id in fake.jobs
    (seen,) = fake.requests("POST *")
    assert seen.path == CREATE_PATH
    assert seen.headers["Authorization"] == "Bearer sk-test"
    assert seen.headers["X-DashScope-Async"] == "enable"
    assert seen.headers["Content-Type"] == "application/json"
    assert sent_body(fake) == {
        "model": "wan2.6-t2v",
        "input": {"prompt": "a lighthouse in a storm", "negative_prompt": "blurry, text"},
        "parameters": {"duration": 10, "seed": 42, "size": "720*1280"},
    }


async def test_wan22_plus_asks_for_its_1080p_size_and_leaves_unset_options_out(
    fake: DashScopeFake, wan: DashScopeProvider
) -> None:
    await wan.submit("job-1", request(model="dashscope/wan2.2-t2v-plus", aspect="1:1"))
    assert sent_body(fake) == {
        "model": "wan2.2-t2v-plus",
        "input": {"prompt": "a lighthouse in a storm"},
        "parameters": {"duration": 5, "size": "1440*1440"},
    }


async def test_image_to_video_sends_the_image_inline_as_a_data_uri(
    fake: DashScopeFake, wan: DashScopeProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (800, 600))
    await wan.submit("job-1", request(model="dashscope/wan2.6-i2v", image_path=str(frame), seed=7))
    body = sent_body(fake)
    assert body["model"] == "wan2.6-i2v"
    assert body["parameters"] == {"duration": 5, "seed": 7, "resolution": "720P"}
    assert body["input"]["img_url"] == "data:image/png;base64," + base64.b64encode(frame.read_bytes()).decode()


async def test_an_image_beyond_wans_limits_is_scaled_to_fit(
    fake: DashScopeFake, wan: DashScopeProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (3000, 1200), "JPEG")
    await wan.submit("job-1", request(model="dashscope/wan2.6-i2v", image_path=str(frame)))
    uri = sent_body(fake)["input"]["img_url"]
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as sent:
        assert sent.size == (2000, 800)  # accepted by the fake, which checks the 360-2000 px limits
    assert fitted_size(200, 300) == (360, 540)


async def test_an_image_no_scaling_can_fit_is_refused_before_anything_is_sent(
    fake: DashScopeFake, wan: DashScopeProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (4000, 300))
    with pytest.raises(RequestRejected) as caught:
        await wan.submit("job-1", request(model="dashscope/wan2.6-i2v", image_path=str(frame)))
    assert caught.value.field == "image"
    assert fake.seen == []


async def test_the_image_model_needs_an_image_and_text_models_take_none(
    fake: DashScopeFake, wan: DashScopeProvider, tmp_path: Path
) -> None:
    with pytest.raises(RequestRejected, match="needs an image"):
        await wan.submit("job-1", request(model="dashscope/wan2.6-i2v"))
    with pytest.raises(RequestRejected, match="takes no image"):
        await wan.submit("job-1", request(image_path=str(image_file(tmp_path, (800, 600)))))
    assert fake.seen == []


# --- the task's life ------------------------------------------------------------------------------------------
async def test_a_task_is_queued_then_running_then_done_and_its_video_is_downloaded(
    fake: DashScopeFake, wan: DashScopeProvider, tmp_path: Path
) -> None:
    remote, results = await submit_and_finish(wan, request())
    assert [r.state for r in results[:3]] == [RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.SUCCEEDED]
    assert results[0].poll_after == results[1].poll_after == POLL_SECONDS
    assert all(r.progress is None and r.queue_position is None for r in results[:2]), "DashScope reports neither"
    done = results[2]
    assert done.output_url is not None and done.output_url.startswith(f"{fake.storage_url}/")
    assert results[3].output_url == done.output_url, "DashScope answers the same URL on every poll"

    dest = tmp_path / "clip.mp4"
    await wan.download(remote, done, dest)
    assert dest.read_bytes() == fake.video
    polls = fake.requests("GET /api/v1/tasks/*")
    assert len(polls) == 4 and all(p.headers["Authorization"] == "Bearer sk-test" for p in polls)
    assert all("X-DashScope-Async" not in p.headers for p in polls), "the async header is for creates only"
    (fetch,) = [s for s in fake.seen if s.kind == "download"]
    assert "Authorization" not in fetch.headers, "the API key never goes to the storage host"


async def test_a_content_policy_failure_reaches_the_member_with_its_reason(
    fake: DashScopeFake, wan: DashScopeProvider
) -> None:
    fake.refuse_reason = "the prompt depicts a real public figure"
    _, results = await submit_and_finish(wan, request())
    assert results[1].state is RemoteState.FAILED
    assert results[1].error is not None
    assert "the prompt depicts a real public figure" in reason_text(results[1].error, ENGLISH)


async def test_a_task_failing_for_the_vendors_own_reasons_gives_code_and_message(
    fake: DashScopeFake, wan: DashScopeProvider
) -> None:
    fake.task_failure = ("InternalError.Algo", "An internal error occurred during generation.")
    _, results = await submit_and_finish(wan, request())
    assert results[2].state is RemoteState.FAILED
    assert (
        reason_text(results[2].error, ENGLISH) == "An internal error occurred during generation. (InternalError.Algo)"
    )


async def test_an_unknown_or_expired_task_is_lost(wan: DashScopeProvider) -> None:
    with pytest.raises(RemoteJobLost):
        await wan.poll(RemoteJob("job-1", "0b5e3f0a-1111-4c2d-9e7e-000000000000", request()))


async def test_a_remote_id_that_is_no_task_id_never_reaches_a_url(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    with pytest.raises(RemoteJobLost):
        await wan.poll(RemoteJob("job-1", "../services/x", request()))
    assert fake.seen == []


async def test_an_expired_video_url_is_result_expired_and_the_next_poll_brings_a_fresh_one(
    fake: DashScopeFake, wan: DashScopeProvider, tmp_path: Path
) -> None:
    await check_expired_url(fake, wan, request(), tmp_path)


async def test_a_pending_task_is_cancelled_and_a_running_one_is_left_alone(
    fake: DashScopeFake, wan: DashScopeProvider
) -> None:
    pending = RemoteJob("job-1", await wan.submit("job-1", request()), request())
    await wan.cancel(pending)
    assert (await wan.poll(pending)).state is RemoteState.CANCELLED

    running = RemoteJob("job-2", await wan.submit("job-2", request()), request())
    await wan.poll(running)
    assert (await wan.poll(running)).state is RemoteState.RUNNING
    await wan.cancel(running)  # DashScope cancels PENDING tasks only: refused, and not an error for the worker
    assert [s.status for s in fake.seen if s.kind == "cancel"] == [200, 400]
    assert not fake.jobs[running.remote_id].cancelled


# --- failures -------------------------------------------------------------------------------------------------
async def test_a_throttled_create_may_be_repeated_after_the_wait(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    await check_throttled_create(fake, wan, request())


@pytest.mark.parametrize("status", [500, 503])
async def test_a_create_failing_on_the_server_is_never_repeated(
    fake: DashScopeFake, wan: DashScopeProvider, status: int
) -> None:
    await check_failing_create(fake, wan, request(), status)


async def test_a_create_whose_answer_is_lost_is_never_repeated(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    await check_lost_create_answer(fake, wan, request())


async def test_polls_failing_on_the_server_are_retryable(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    await check_failing_polls(fake, wan, request())


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [
        ("DataInspectionFailed", "Input data may contain inappropriate content.", ContentRefused),
        ("IPInfringementSuspect", "Input data is suspected of being involved in IP infringement.", ContentRefused),
        ("Arrearage", "Access denied, please make sure your account is in good standing.", ProviderBilling),
        ("InvalidParameter", "The size is not match the model.", RequestRejected),
    ],
)
async def test_vendor_error_codes_map_to_the_error_tree(
    fake: DashScopeFake, wan: DashScopeProvider, code: str, message: str, error: type[ProviderError]
) -> None:
    fake.fail_next("create", 400, body={"request_id": "r-1", "code": code, "message": message})
    with pytest.raises(error) as caught:
        await wan.submit("job-1", request())
    assert not caught.value.retryable
    assert message in reason_text(caught.value.user_message, ENGLISH) or error is ProviderBilling
    if isinstance(caught.value, RequestRejected):
        assert caught.value.field == "aspect"


def test_a_create_sent_without_the_async_header_is_the_bots_fault_not_the_keys() -> None:
    answer = httpx.Response(403, json={"code": "AccessDenied", "message": "current user api does not support "
                                       "synchronous calls", "request_id": "r"})  # fmt: skip
    assert isinstance(map_error(answer, Kind.CREATE), RequestRejected)
    denied = httpx.Response(403, json={"code": "AccessDenied", "message": "Access denied.", "request_id": "r"})
    assert map_error(denied, Kind.CREATE) is None  # the generic 403: the credentials


async def test_a_wrong_key_is_credentials_rejected_naming_the_variable(fake: DashScopeFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, dashscope_api_key="sk-wrong") as wan:
        await check_wrong_key(fake, wan, request(), "DASHSCOPE_API_KEY", "sk-wrong")


# --- the fake is as strict as DashScope -----------------------------------------------------------------------
GOOD = {"model": "wan2.6-t2v", "input": {"prompt": "a cat"}, "parameters": {"size": "1280*720", "duration": 5}}


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"headers": {"X-DashScope-Async": None}}, 403, "AccessDenied"),
        ({"headers": {"Authorization": None}}, 401, "InvalidApiKey"),
        ({"headers": {"Authorization": "sk-test"}}, 401, "InvalidApiKey"),
        ({"parameters": {"size": "1280x720", "duration": 5}}, 400, "InvalidParameter"),
        ({"parameters": {"size": "1280*720", "duration": "5"}}, 400, "InvalidParameter"),
        ({"parameters": {"size": "1280*720", "duration": 7}}, 400, "InvalidParameter"),
        ({"parameters": {"size": "1280*720", "seed": 2_147_483_648}}, 400, "InvalidParameter"),
        ({"parameters": {"resolution": "720P"}}, 400, "InvalidParameter"),
        ({"input": {"prompt": "a cat", "negativePrompt": "dogs"}}, 400, "InvalidParameter"),
        ({"model": "wan9-t2v"}, 400, "InvalidParameter"),
        ({"model": None}, 400, "BadRequest.EmptyModel"),
    ],
)
async def test_the_fake_refuses_what_dashscope_refuses(
    fake: DashScopeFake, change: dict[str, Any], status: int, code: str
) -> None:
    headers = {"Authorization": "Bearer sk-test", "X-DashScope-Async": "enable", **change.pop("headers", {})}
    body = {**GOOD, **change}
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{fake.base_url}{CREATE_PATH}",
            json={k: v for k, v in body.items() if v is not None},
            headers={k: v for k, v in headers.items() if v is not None},
        )
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code and answer.json()["request_id"]
    assert fake.creates == 0


async def test_the_storage_host_answers_as_oss_does(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    with_key, forged, unsigned, good = await result_url_answers(
        fake, wan, request(), {"Authorization": "Bearer sk-test"}
    )
    assert with_key.status_code == 400 and "<Code>InvalidArgument</Code>" in with_key.text
    assert forged.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in forged.text
    assert unsigned.status_code == 403 and "<Code>AccessDenied</Code>" in unsigned.text
    assert good.status_code == 200 and good.content == fake.video


# --- health and settings --------------------------------------------------------------------------------------
async def test_health_lists_one_task_with_the_key(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    health = await wan.health()
    assert health.ok and "dashscope/wan2.6-t2v" in health.models
    (seen,) = fake.seen
    assert (seen.method, seen.path, seen.query) == ("GET", "/api/v1/tasks", {"page_no": "1", "page_size": "1"})
    assert seen.headers["Authorization"] == "Bearer sk-test"


async def test_health_with_a_bad_key_names_the_variable_and_not_the_key(fake: DashScopeFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, dashscope_api_key="sk-wrong-secret") as wan:
        await check_bad_key_health(wan, "DASHSCOPE_API_KEY", "sk-wrong-secret")


async def test_health_of_an_unreachable_service_names_the_base_url(fake: DashScopeFake, wan: DashScopeProvider) -> None:
    await check_unreachable_health(fake, wan, "DASHSCOPE_BASE_URL")


def test_no_key_no_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_no_key_no_provider(from_settings, "DASHSCOPE_API_KEY", tmp_path, monkeypatch)

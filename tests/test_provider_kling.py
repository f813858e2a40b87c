"""The Kling adapter against its loopback fake, over real HTTP: the token it signs, what it sends, how it reads a
task's life, how each Kling code maps into the error tree, and that the fake refuses what Kling refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.clock import FakeClock
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
from bot.providers.base import RemoteJob, RemoteState
from bot.providers.kling import MODELS, POLL_SECONDS, KlingProvider, fitted_size, from_settings
from bot.providers.kling_auth import KlingToken, sign_token
from tests.fakes.providers.kling import KlingFake
from tests.provider_harness import (
    adapter_fixture,
    adapter_for,
    check_expired_url,
    check_failing_polls,
    check_unreachable_health,
    image_file,
    request_maker,
    sent_body,
    vendor_fixture,
)

T2V = "kling/kling-v2-5-turbo"
VARIABLE = "KLING_ACCESS_KEY / KLING_SECRET_KEY"


fake = vendor_fixture(KlingFake)
kling = adapter_fixture(from_settings)
adapter = adapter_for(from_settings)
request = request_maker(model=T2V, duration=5)


def claims_of(authorization: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JWT's header and claims, after checking its HS256 signature with the fake's secret key."""
    scheme, token = authorization.split(" ")
    head, body, signature = token.split(".")
    expected = hmac.new(KlingFake.secret_key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert scheme == "Bearer" and base64.urlsafe_b64decode(signature + "==") == expected
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (head, body))
    return header, claims


# --- what the adapter sends -----------------------------------------------------------------------------------
async def test_text_to_video_is_one_signed_create(fake: KlingFake, kling: KlingProvider) -> None:
    before = int(time.time())
    remote_id = await kling.submit("job-1", request(duration=10, aspect="9:16", negative_prompt="blurry, text"))

    (seen,) = fake.seen
    assert (seen.method, seen.path, seen.status) == ("POST", "/v1/videos/text2video", 200), "JSON, as the fake demands"
    head, claims = claims_of(seen.headers["Authorization"])
    assert head == {"alg": "HS256", "typ": "JWT"} and claims["iss"] == KlingFake.access_key
    assert claims["exp"] - claims["nbf"] == 1805 and before - 5 <= claims["nbf"] <= int(time.time()) - 5
    assert sent_body(fake) == {"model_name": "kling-v2-5-turbo", "prompt": "a lighthouse in a storm",
                               "negative_prompt": "blurry, text", "mode": "pro", "aspect_ratio": "9:16",
                               "duration": "10"}  # fmt: skip
    assert remote_id == f"text2video/{next(iter(fake.jobs))}"


@pytest.mark.parametrize("model", [m for m in MODELS if not m.info.requires_image], ids=lambda m: m.vendor_id)
async def test_every_text_model_is_asked_for_in_its_own_mode(fake: KlingFake, kling: KlingProvider, model: Any) -> None:
    await kling.submit("job-1", request(model=model.info.id))  # the fake refuses what the model does not take
    body = sent_body(fake)
    assert (body["model_name"], body["mode"], body["duration"]) == (model.vendor_id, model.mode, "5")


async def test_image_to_video_sends_the_frame_as_bare_base64_and_polls_its_own_family(
    fake: KlingFake, kling: KlingProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (800, 600))
    req = request(model="kling/kling-v2-1", image_path=str(frame), aspect="9:16")
    remote_id = await kling.submit("job-1", req)
    body = sent_body(fake)
    assert body == {"model_name": "kling-v2-1", "prompt": "a lighthouse in a storm", "mode": "std", "duration": "5",
                    "image": base64.b64encode(frame.read_bytes()).decode()}  # fmt: skip
    assert remote_id.startswith("image2video/")
    assert (await kling.poll(RemoteJob("job-1", remote_id, req))).state is RemoteState.QUEUED
    assert fake.seen[-1].path == f"/v1/videos/{remote_id}"


async def test_a_webp_or_small_frame_is_sent_as_a_jpeg_kling_takes(
    fake: KlingFake, kling: KlingProvider, tmp_path: Path
) -> None:
    frame = image_file(tmp_path, (200, 120), "WEBP")
    await kling.submit("job-1", request(image_path=str(frame)))
    with Image.open(io.BytesIO(base64.b64decode(sent_body(fake)["image"]))) as sent:
        assert (sent.format, sent.size) == ("JPEG", (500, 300))
    assert fitted_size(8000, 4000) == (3840, 1920)


async def test_a_frame_too_elongated_for_kling_is_refused_before_anything_is_sent(
    fake: KlingFake, kling: KlingProvider, tmp_path: Path
) -> None:
    with pytest.raises(RequestRejected) as caught:
        await kling.submit("job-1", request(image_path=str(image_file(tmp_path, (1000, 300)))))
    assert caught.value.field == "image" and "2.5:1" in caught.value.reason
    assert fake.seen == []


# --- the token ------------------------------------------------------------------------------------------------
def test_the_token_is_reused_then_renewed_five_minutes_before_it_runs_out() -> None:
    now = [1_000_000.0]
    token = KlingToken("ak", "sk", clock=lambda: now[0])
    first = token.current()
    now[0] += 1499
    assert token.current() == first
    now[0] += 1
    renewed = token.current()
    assert renewed != first and renewed == sign_token("ak", "sk", now[0])[0]
    assert "sk" not in repr(token) and "ak" not in repr(token)


async def test_a_long_running_adapter_signs_a_fresh_token_the_fake_accepts(fake: KlingFake, tmp_path: Path) -> None:
    clock = FakeClock()  # one clock for the bot and the vendor
    fake.wall_clock = clock.now
    kling = KlingProvider(fake.access_key, fake.secret_key, fake.base_url, max_download_bytes=10**7, clock=clock.now)
    try:
        remote = RemoteJob("job-1", await kling.submit("job-1", request()), request())
        clock.advance(1700)  # 28 minutes on: the first token has two minutes left
        assert (await kling.poll(remote)).state is RemoteState.QUEUED
    finally:
        await kling.aclose()
    create, poll = (s.headers["Authorization"] for s in fake.seen)
    assert create != poll and claims_of(poll)[1]["nbf"] == int(clock.now()) - 5


async def test_a_token_kling_finds_expired_names_the_clock(fake: KlingFake, kling: KlingProvider) -> None:
    fake.wall_clock = lambda: time.time() + 3600  # the vendor's clock an hour ahead of ours
    with pytest.raises(CredentialsRejected) as caught:
        await kling.submit("job-1", request())
    assert "clock" in caught.value.variable and VARIABLE in str(caught.value)
    assert fake.seen[0].status == 401 and fake.creates == 0


async def test_neither_key_nor_token_is_logged(
    fake: KlingFake, kling: KlingProvider, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.polls_to_finish = 0
    remote = RemoteJob("job-1", await kling.submit("job-1", request()), request())
    await kling.download(remote, await kling.poll(remote), tmp_path / "clip.mp4")
    token = fake.seen[0].headers["Authorization"].split(" ")[1]
    assert fake.secret_key not in caplog.text and token not in caplog.text and token.split(".")[2] not in caplog.text


# --- the task's life ------------------------------------------------------------------------------------------
async def test_a_task_is_submitted_then_processing_then_done_and_its_video_downloaded(
    fake: KlingFake, kling: KlingProvider, tmp_path: Path
) -> None:
    remote = RemoteJob("job-1", await kling.submit("job-1", request()), request())
    results = [await kling.poll(remote) for _ in range(4)]
    assert [r.state for r in results[:3]] == [RemoteState.QUEUED, RemoteState.RUNNING, RemoteState.SUCCEEDED]
    assert results[0].poll_after == results[1].poll_after == POLL_SECONDS
    assert all(r.progress is None and r.queue_position is None for r in results[:2]), "Kling reports neither"
    done = results[2]
    assert done.output_url is not None and done.output_url.startswith(f"{fake.storage_url}/")
    assert results[3].output_url == done.output_url

    await kling.download(remote, done, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video
    (fetch,) = [s for s in fake.seen if s.kind == "download"]
    assert "Authorization" not in fetch.headers, "the token never goes to the CDN"


async def test_a_task_failed_by_kling_gives_its_reason(fake: KlingFake, kling: KlingProvider) -> None:
    fake.refuse_reason = "Failure to pass the risk control system"
    remote = RemoteJob("job-1", await kling.submit("job-1", request()), request())
    assert (await kling.poll(remote)).state is RemoteState.QUEUED
    failed = await kling.poll(remote)
    assert (
        failed.state is RemoteState.FAILED
        and reason_text(failed.error, ENGLISH) == "Failure to pass the risk control system"
    )


async def test_a_prompt_refused_at_create_is_content_refused_with_the_reason(
    fake: KlingFake, kling: KlingProvider
) -> None:
    fake.prompt_refusal = "The prompt contains sensitive content"
    with pytest.raises(ContentRefused) as caught:
        await kling.submit("job-1", request())
    assert (
        "The prompt contains sensitive content" in reason_text(caught.value.user_message, ENGLISH) and fake.creates == 0
    )


async def test_a_purged_video_url_is_result_expired_and_the_next_poll_brings_a_fresh_one(
    fake: KlingFake, kling: KlingProvider, tmp_path: Path
) -> None:
    await check_expired_url(fake, kling, request(), tmp_path)


async def test_an_unknown_task_or_one_under_the_other_family_is_lost(fake: KlingFake, kling: KlingProvider) -> None:
    remote_id = await kling.submit("job-1", request())
    with pytest.raises(RemoteJobLost):
        await kling.poll(RemoteJob("job-1", remote_id.replace("text2video", "image2video"), request()))
    with pytest.raises(RemoteJobLost):
        await kling.poll(RemoteJob("job-1", "text2video/1234", request()))
    seen = len(fake.seen)
    for bad in ("1234", "text2video/../x", "image2video/1/2"):
        with pytest.raises(RemoteJobLost):
            await kling.poll(RemoteJob("job-1", bad, request()))
    assert len(fake.seen) == seen, "a remote id that is no task id never reaches a URL"


async def test_cancel_sends_nothing_kling_has_no_cancel(fake: KlingFake, kling: KlingProvider) -> None:
    await kling.cancel(RemoteJob("job-1", await kling.submit("job-1", request()), request()))
    assert len(fake.seen) == 1


# --- failures -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [500, 503, 504, "answer lost"])
async def test_a_create_whose_outcome_is_unknown_is_never_repeated(
    fake: KlingFake, kling: KlingProvider, fault: int | str
) -> None:
    if isinstance(fault, int):
        fake.fail_next("create", fault)
    else:
        fake.drop_create_answer = True
    with pytest.raises(CreateOutcomeUnknown):
        await kling.submit("job-1", request())
    assert fake.count("create") == 1


async def test_polls_failing_on_the_server_are_retryable(fake: KlingFake, kling: KlingProvider) -> None:
    await check_failing_polls(fake, kling, request())


@pytest.mark.parametrize(
    ("status", "code", "message", "error", "retryable"),
    [
        (429, 1302, "API requests are too fast", ProviderError, True),
        (429, 1303, "Concurrency exceeds the resource pack limit", ProviderError, True),
        (429, 1102, "Resource pack depleted or expired", ProviderBilling, False),
        (429, 1101, "Account in arrears", ProviderBilling, False),
        (400, 1301, "Content security policy triggered", ContentRefused, False),
        (400, 1201, "duration must be 5 or 10", RequestRejected, False),
        (403, 1103, "No permission for kling-v2-5-turbo", RequestRejected, False),
        (429, 1304, "IP allow-list policy triggered", CredentialsRejected, False),
    ],
)
async def test_kling_codes_map_to_the_error_tree(
    fake: KlingFake, kling: KlingProvider, status: int, code: int, message: str, error: type, retryable: bool
) -> None:
    fake.fail_next("create", status, retry_after=2, body={"code": code, "message": message, "request_id": "r-1"})
    with pytest.raises(error) as caught:
        await kling.submit("job-1", request())
    assert caught.value.retryable is retryable and caught.value.retry_after == (2 if retryable else None)
    assert fake.creates == 0
    if isinstance(caught.value, RequestRejected):
        assert caught.value.field == ("duration" if code == 1201 else "model")
    if isinstance(caught.value, ContentRefused):
        assert message in reason_text(caught.value.user_message, ENGLISH)


async def test_a_wrong_secret_is_credentials_rejected_naming_the_variables(fake: KlingFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, kling_secret_key="not-the-secret") as kling:
        with pytest.raises(CredentialsRejected) as caught:
            await kling.submit("job-1", request())
    assert caught.value.variable == VARIABLE and "not-the-secret" not in str(caught.value)
    assert fake.seen[0].status == 401 and fake.creates == 0


# --- the fake is as strict as Kling ---------------------------------------------------------------------------
GOOD = {"model_name": "kling-v2-5-turbo", "prompt": "a cat", "mode": "pro", "duration": "5", "aspect_ratio": "16:9"}
NOW = int(time.time())


def token(secret: str = KlingFake.secret_key, alg: str = "HS256", nbf: int = NOW - 5, exp: int = NOW + 1800) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{part({'alg': alg, 'typ': 'JWT'})}.{part({'iss': KlingFake.access_key, 'exp': exp, 'nbf': nbf})}"
    signature = hmac.new(secret.encode(), unsigned.encode(), hashlib.sha256).digest()
    return f"Bearer {unsigned}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"auth": None}, 401, 1001),
        ({"auth": "Bearer not.a-token"}, 401, 1002),
        ({"auth": token(alg="none")}, 401, 1002),
        ({"auth": token(secret="other")}, 401, 1000),
        ({"auth": token(nbf=NOW + 600)}, 401, 1003),
        ({"auth": token(nbf=NOW - 4000, exp=NOW - 2000)}, 401, 1004),
        ({"duration": 5}, 400, 1201),
        ({"duration": "7"}, 400, 1201),
        ({"aspect_ratio": "4:3"}, 400, 1201),
        ({"model_name": None, "model": "kling-v2-5-turbo"}, 400, 1201),
        ({"cfg_scale": 0.5}, 400, 1201),
        ({"negativePrompt": "dogs"}, 400, 1201),
        ({"prompt": None}, 400, 1201),
        ({"model_name": "kling-v2-1"}, 400, 1201),
        ({"model_name": "kling-v9"}, 404, 1203),
        ({"path": "image2video", "aspect_ratio": None, "image": "data:image/png;base64,iVBORw0KGgo="}, 400, 1201),
        ({"path": "image2video", "image": "https://example.com/a.jpg"}, 400, 1201),  # no aspect_ratio there
    ],
)
async def test_the_fake_refuses_what_kling_refuses(
    fake: KlingFake, change: dict[str, Any], status: int, code: int
) -> None:
    auth = change.pop("auth", token())
    path = change.pop("path", "text2video")
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    headers = {"Authorization": auth} if auth else {}
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{fake.base_url}/v1/videos/{path}", json=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code and answer.json()["request_id"]
    assert fake.creates == 0


# --- health and settings --------------------------------------------------------------------------------------
async def test_health_lists_one_task_with_a_signed_token(fake: KlingFake, kling: KlingProvider) -> None:
    health = await kling.health()
    assert health.ok and T2V in health.models and len(health.models) == len(MODELS)
    (seen,) = fake.seen
    assert (seen.method, seen.path, seen.query) == ("GET", "/v1/videos/text2video", {"pageNum": "1", "pageSize": "1"})
    assert claims_of(seen.headers["Authorization"])[1]["iss"] == fake.access_key


async def test_health_with_a_wrong_access_key_names_the_variables(fake: KlingFake, tmp_path: Path) -> None:
    async with adapter(fake, tmp_path, kling_access_key="ak-someone-else") as kling:
        health = await kling.health()
    assert health.reachable and not health.authenticated and not health.ok
    assert health.problem is not None and VARIABLE in health.problem and "KLING_BASE_URL" in health.problem
    assert fake.secret_key not in health.problem


async def test_health_of_an_unreachable_service_names_the_base_url(fake: KlingFake, kling: KlingProvider) -> None:
    await check_unreachable_health(fake, kling, "KLING_BASE_URL")


@pytest.mark.parametrize("keys", [{}, {"kling_access_key": "ak"}, {"kling_secret_key": "sk"}])
def test_both_keys_or_no_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: dict[str, str]) -> None:
    monkeypatch.delenv("KLING_ACCESS_KEY", raising=False)
    monkeypatch.delenv("KLING_SECRET_KEY", raising=False)
    assert from_settings(Settings(_env_file=None, data_dir=tmp_path, **keys)) is None

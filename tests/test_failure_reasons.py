"""Why a job failed is stored as a catalogue id and its facts (`Said`), never as words in one language: whoever
reads the status message reads the reason in their own language (`bot.discord.messages.reason_text`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from bot.discord.messages import ENGLISH, reason_text
from bot.discord.render import fallback_note, status_text
from bot.domain import Fallback, JobState, Requester, Route, VideoRequest
from bot.errors import ContentRefused, DeliveryError, DownloadTooLarge, JobFailed, ProviderError, RequestRejected
from bot.errors.said import Said
from bot.i18n import N_, texts_for
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers import dashscope, fal, kling, luma, openai, replicate, vidu
from bot.providers.fal import IMAGE_MODEL, FalProvider
from bot.providers.frames import read_frame
from bot.providers.http import Kind
from bot.providers.vidu import REFUSAL_CODES, failure_reason
from bot.store.base import Store
from tests.fakes.scripted_provider import ScriptedProvider

ALICE = Requester(guild_id=1, user_id=10, channel_id=100)
JA = texts_for("ja")


def request() -> VideoRequest:
    return VideoRequest(prompt="a cat surfing", model="fake/video", duration=4)


# --- the stored form ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "said",
    [
        Said(N_("failure.content-refused"), {"reason": "暴力的な内容です (violence) — «non» 🚫"}),
        Said(N_("failure.content-refused"), {"reason": '@failure.took-too-long {"reason": "a reason inside"}'}),
        Said(N_("failure.provider-said"), {"reason": '{"error": {"code": 400, "message": "a \\"quoted\\"\nline"}}'}),
        Said(N_("failure.provider-said.code"), {"reason": "CUDA out of memory", "code": "InternalError.Algo"}),
        Said(N_("failure.download-too-large"), {"megabytes": 500}),
        Said(N_("failure.took-too-long")),
    ],
)
def test_a_reason_round_trips_through_its_stored_form(said: Said) -> None:
    stored = str(said)
    assert stored.startswith(f"@{said.message_id} ") and "\n" not in stored, "one line in the log"
    assert Said.parse(stored) == said
    assert Said.parse(str(Said.parse(stored))) == said


def test_the_stored_form_keeps_other_scripts_readable() -> None:
    stored = str(Said(N_("failure.provider-said"), {"reason": "内容安全审核未通过"}))
    assert stored == '@failure.provider-said {"reason": "内容安全审核未通过"}'


@pytest.mark.parametrize(
    "legacy",
    [
        "The video service took too long; your credits are returned.",  # stored in words before ids
        "@everyone look at this",
        '{"error": "a vendor\'s raw JSON"}',
        "@failure.took-too-long not JSON",
        '@failure.took-too-long ["a", "list"]',
        '@failure.took-too-long {"seconds": 1.5}',
        '@failure.took-too-long {"done": true}',
        '@Failure.Took-Too-Long {"reason": "an id is lowercase"}',
        'a reason first, then @failure.took-too-long {"reason": "x"}',
    ],
)
def test_anything_else_is_shown_as_it_is(legacy: str) -> None:
    assert Said.parse(legacy) is None
    assert reason_text(legacy, ENGLISH) == legacy
    assert reason_text(legacy, JA) == legacy


def test_no_reason_and_an_id_no_catalogue_knows() -> None:
    assert reason_text(None, ENGLISH) == "" and reason_text("", JA) == ""
    unknown = '@failure.not-in-any-catalogue {"reason": "x"}'
    assert Said.parse(unknown) is not None
    assert reason_text(unknown, JA) == unknown, "shown as stored rather than as a bare id"


@pytest.mark.parametrize("value", [1.5, True, None, ("a",)])
def test_facts_are_text_or_whole_numbers(value: object) -> None:
    with pytest.raises(TypeError):
        Said(N_("failure.detail"), {"detail": value})  # type: ignore[dict-item]


def test_a_said_is_a_value() -> None:
    facts = {"reason": "violence"}
    said = Said(N_("failure.content-refused"), facts)
    facts["reason"] = "changed later"
    assert said.facts == {"reason": "violence"}, "a copy of the caller's facts"
    assert hash(said) == hash(Said(N_("failure.content-refused"), {"reason": "violence"}))


# --- the English of every reason is what the engine wrote before -----------------------------------------------
@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ContentRefused("veo", " violence "), "The video service refused this request: violence"),
        (ContentRefused("veo", "  "), "The video service refused this request: no reason given"),
        (
            RequestRejected("fal", "161 frames at most", field="duration"),
            "The video service rejected this request (duration): 161 frames at most",
        ),
        (RequestRejected("fal", "bad size"), "The video service rejected this request: bad size"),
        (DownloadTooLarge("fal", 500_000_000), "The finished video is larger than this bot accepts (500 MB)."),
        (ProviderError("fal HTTP 500: oops", retryable=True), "fal HTTP 500: oops"),
        (DeliveryError("posting failed: 503 0", retryable=True), "posting failed: 503 0"),
    ],
)
def test_english_reasons_read_as_before(error: ProviderError | DeliveryError, words: str) -> None:
    assert reason_text(error.user_message, ENGLISH) == words


VIDU_WORDS = {
    "AuditSubmitIllegal": "the prompt or image did not pass Vidu's safety review",
    "TaskPromptPolicyViolation": "the prompt did not pass Vidu's safety review",
    "CreationPolicyViolation": "the video made was blocked by Vidu's content policy",
    "ModelUnavailable": "the model is unavailable at Vidu right now",
    "CreditInsufficient": "the Vidu account has run out of credits",
    "ImageFormatInvalid": "Vidu could not use the image",
}
"""Vidu's error codes as the bot has always put them in words."""


@pytest.mark.parametrize(("code", "words"), sorted(VIDU_WORDS.items()))
def test_vidus_codes_read_as_before(code: str, words: str) -> None:
    assert reason_text(failure_reason(code), ENGLISH) == f"{words} ({code})"


def vendor_answer(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request("POST", "https://vendor.test/v1"))


def rejected(error: object) -> ProviderError:
    assert isinstance(error, RequestRejected | ContentRefused), error
    return error


REJECTED = "The video service rejected this request"
REFUSED = "The video service refused this request"


# --- the adapters' own sentences: whole catalogue sentences, the English as before ----------------------------
@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: dashscope.fitted_size(4000, 100),
         f"{REJECTED} (image): the image is too narrow (4000×100): Wan needs each side between 360 and 2000 pixels"),
        (lambda: kling.fitted_size(3000, 1000),
         f"{REJECTED} (image): the image is too elongated (3000×1000): Kling takes shapes up to 2.5:1; crop it and "
         "attach it again"),
        (lambda: fal.fal_error(vendor_answer(422, {"detail": [{"loc": ["body", "num_frames"], "type": "x"}]}),
                               Kind.CREATE),
         f"{REJECTED} (duration): invalid input"),
        (lambda: fal.fal_error(vendor_answer(422, {"detail": [{"type": fal.CONTENT_POLICY}]}), Kind.CREATE),
         f"{REFUSED}: the content was flagged by a content checker"),
        (lambda: fal.fal_error(vendor_answer(422, {"detail": [{"type": fal.CONTENT_POLICY, "categories": ["gore"]}]}),
                               Kind.CREATE),
         f"{REFUSED}: the content was flagged by a content checker (gore)"),
        (lambda: kling.map_error(vendor_answer(400, {"code": 1301}), Kind.CREATE),
         f"{REFUSED}: refused by Kling's content policy"),
        (lambda: kling.map_error(vendor_answer(403, {"code": 1103, "message": "No permission"}), Kind.CREATE),
         f"{REJECTED} (model): the Kling account may not use this model: No permission (code 1103)"),
        (lambda: kling.map_error(vendor_answer(400, {"code": 1200}), Kind.CREATE),
         f"{REJECTED}: no message (code 1200)"),
        (lambda: openai.map_error(vendor_answer(422, {"detail": [{"loc": ["body", "seconds"]}]}), Kind.CREATE),
         f"{REJECTED} (seconds): invalid field"),
        (lambda: luma.map_error(vendor_answer(422, {"detail": [{"loc": ["body", "aspect_ratio"]}]}), Kind.CREATE),
         f"{REJECTED} (aspect): aspect_ratio: invalid"),
        (lambda: replicate.map_error(vendor_answer(404, {"detail": "not found"}), Kind.CREATE),
         f"{REJECTED} (model): no such model at Replicate: not found"),
    ],
)  # fmt: skip
def test_an_adapters_own_reason_is_a_catalogue_sentence(make: object, words: str) -> None:
    try:
        error = make()  # type: ignore[operator]
    except ProviderError as raised:
        error = raised
    said = rejected(error).user_message
    assert said.message_id.startswith(("failure.rejected.", "failure.refused.")), "one whole sentence, translatable"
    assert reason_text(said, ENGLISH) == words
    assert words in str(error) and words == rejected(error).reason, "the log keeps the English"


@pytest.mark.parametrize("code", sorted(REFUSAL_CODES))
def test_a_vidu_refusal_at_create_reads_as_before(code: str) -> None:
    error = rejected(vidu.map_error(vendor_answer(400, {"reason": code, "message": "flagged"}), Kind.CREATE))
    assert error.user_message.message_id.startswith("failure.refused.vidu.")
    assert reason_text(error.user_message, ENGLISH) == f"{REFUSED}: {VIDU_WORDS[code]} (flagged)"


def test_the_vendors_words_stay_as_they_are_inside_our_sentence() -> None:
    error = rejected(kling.map_error(vendor_answer(400, {"code": 1301, "message": "暴力的な内容"}), Kind.CREATE))
    assert error.user_message == Said(N_("failure.content-refused"), {"reason": "暴力的な内容"})


def test_an_images_header_problem_is_a_catalogue_sentence(tmp_path: Path) -> None:
    garbage = tmp_path / "frame.png"
    garbage.write_bytes(b"not an image")
    with pytest.raises(RequestRejected) as caught, read_frame("acme", garbage):
        pass
    assert caught.value.user_message.message_id == "failure.rejected.image-unreadable"
    words = f"{REJECTED} (image): the image could not be read (UnidentifiedImageError)"
    assert reason_text(caught.value.user_message, ENGLISH) == words


def test_a_job_failure_names_its_reason_in_logs_by_its_stored_form() -> None:
    reason = Said(N_("failure.content-refused"), {"reason": "violence"})
    assert str(JobFailed(reason)) == str(reason) and JobFailed(reason).reason == reason


# --- a failed job, read in another language -------------------------------------------------------------------
async def test_a_job_failed_by_its_provider_is_told_in_the_readers_language(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider
) -> None:
    provider.fail_next("submit", ContentRefused("fake", "violence"))
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.FAILED and done.error is not None

    said = Said.parse(done.error)
    assert said == Said(N_("failure.content-refused"), {"reason": "violence"})
    # The Japanese catalogue may not have this id yet: it then falls back to English, as `JA` itself does.
    assert reason_text(done.error, JA) == JA(said.message_id, **said.facts)
    assert reason_text(done.error, ENGLISH) == "The video service refused this request: violence"
    shown = status_text(done, JA)
    assert reason_text(done.error, JA) in shown and done.error not in shown, "words, never the stored form"


async def test_an_adapters_own_refusal_is_stored_as_its_sentence_for_the_reader(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider, tmp_path: Path
) -> None:
    """fal's "attach an image" is the bot's sentence, not fal's: the Japanese reader reads it from the Japanese
    catalogue once it is translated, never the English words the adapter once wrote into the reason."""
    fal_provider = FalProvider("https://fal.invalid", "key")
    try:
        with pytest.raises(RequestRejected) as caught:
            await fal_provider.submit("job-1", VideoRequest(prompt="a cat", model=f"fal/{IMAGE_MODEL}", duration=5))
    finally:
        await fal_provider.aclose()
    provider.fail_next("submit", caught.value)
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    done = await store.get_job(job.id)
    assert done is not None and done.state is JobState.FAILED

    said = Said.parse(done.error)
    assert said == Said(N_("failure.rejected.image-required"))
    english = "The video service rejected this request (image): this model animates an image: attach one"
    assert reason_text(done.error, ENGLISH) == english
    assert reason_text(done.error, JA) == JA("failure.rejected.image-required")
    assert english in str(caught.value), "the log keeps the English"


async def test_a_fallbacks_reason_is_told_in_the_readers_language(
    service: JobService, worker: Worker, store: Store, provider: ScriptedProvider
) -> None:
    job = await service.enqueue(ALICE, request())
    await worker.drain()
    made = await store.get_job(job.id)
    assert made is not None
    reason = Said(N_("delivery.too-large"), {"megabytes": 8})  # a reason the Japanese catalogue has
    moved = dataclasses.replace(made, route=Route("fast", (), (Fallback("other/video", str(reason)),)))
    assert JA.translates("delivery.too-large")
    assert JA("delivery.too-large", megabytes=8) in fallback_note(moved, JA)
    assert ENGLISH("delivery.too-large", megabytes=8) in fallback_note(moved, ENGLISH)

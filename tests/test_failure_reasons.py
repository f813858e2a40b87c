"""Why a job failed is stored as a catalogue id and its facts (`Said`), never as words in one language: whoever
reads the status message reads the reason in their own language (`bot.discord.messages.reason_text`)."""

from __future__ import annotations

import dataclasses

import pytest

from bot.discord.messages import ENGLISH, reason_text
from bot.discord.render import fallback_note, status_text
from bot.domain import Fallback, JobState, Requester, Route, VideoRequest
from bot.errors import ContentRefused, DeliveryError, DownloadTooLarge, JobFailed, ProviderError, RequestRejected
from bot.errors.said import Said
from bot.i18n import N_, texts_for
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers.vidu import FAILURE_REASONS, failure_reason
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


@pytest.mark.parametrize("code", sorted(FAILURE_REASONS))
def test_vidus_codes_read_as_before(code: str) -> None:
    assert reason_text(failure_reason(code), ENGLISH) == f"{FAILURE_REASONS[code]} ({code})"


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

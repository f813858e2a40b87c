"""Logs: one line per committed move of a job, whoever made it (a worker's step or end, a member's cancel, an
admin's clear), with the job id, server, member, model and state; LOG_FORMAT=json writes one JSON object a
line with those as fields, and masks tokens and keys as the text format does."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.config import Settings
from bot.domain import Job, JobState
from bot.errors import ContentRefused
from bot.jobs.notify import FileSink, JobTransition
from bot.jobs.service import JobService
from bot.logs import MASK, configure_logging
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.conftest import make_worker
from tests.fakes.scripted_provider import ScriptedProvider
from tests.test_secrets import BOT_TOKEN, INTERACTION_TOKEN, OPENAI_KEY, assert_absent, logging_as_in_production
from tests.test_worker import ALICE, request

JOB_LOGGER = "bot.jobs.notify"


def move_lines(caplog: pytest.LogCaptureFixture, job: Job) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == JOB_LOGGER and getattr(r, "job_id", None) == job.id]


async def committed_moves(store: Store, job: Job) -> list[tuple[str, str]]:
    """Every move the store recorded for the job (history rows that changed the state)."""
    events = await store.job_events(job.id)
    return [(e.from_state.value, e.to_state.value) for e in events if e.from_state not in (None, e.to_state)]


async def test_each_move_of_a_worker_logs_one_line_with_the_job_and_who_asked(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO)
    provider.polls_to_finish = 2
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    job = await service.enqueue(ALICE, request())
    await worker.drain()

    lines = move_lines(caplog, job)
    moves = [(r.from_state, r.state) for r in lines]  # type: ignore[attr-defined]
    assert moves == await committed_moves(store, job)
    assert moves == [("queued", "submitting"), ("submitting", "running"), ("running", "downloading"),
                     ("downloading", "delivering"), ("delivering", "delivered")]  # fmt: skip
    for record in lines:
        message = record.getMessage()
        assert message.startswith(f"job {job.id}: ") and f"guild {ALICE.guild_id}" in message
        assert f"member {ALICE.user_id}" in message and "fake/video" in message
        assert (record.guild_id, record.user_id, record.model) == (ALICE.guild_id, ALICE.user_id, "fake/video")  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.name == "bot.jobs.worker" and job.id in r.getMessage() and "→" in
                r.getMessage()], "the worker no longer logs moves itself: one line per move, in one place"  # fmt: skip


async def test_a_failure_logs_its_reason_on_the_one_line_of_its_move(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO)
    provider.fail_next("submit", ContentRefused("fake", "no cats"))
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    job = await service.enqueue(ALICE, request())
    await worker.drain()

    lines = move_lines(caplog, job)
    assert [(r.from_state, r.state) for r in lines] == await committed_moves(store, job)  # type: ignore[attr-defined]
    assert lines[-1].state == "failed" and "no cats" in lines[-1].getMessage()  # type: ignore[attr-defined]
    ended = [r for r in caplog.records if r.getMessage().startswith(f"job {job.id}: failed")]
    assert not ended, "the end is logged once, as a move, not again by the worker"


async def test_cancels_by_the_service_log_one_line_each(
    service: JobService, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cancelled = await service.enqueue(ALICE, request())
    cleared = await service.enqueue(ALICE, request())
    await service.cancel(cancelled.id, by_user=ALICE.user_id)
    await service.cancel_queued(ALICE.guild_id)

    for job in (cancelled, cleared):
        lines = move_lines(caplog, job)
        assert [(r.from_state, r.state) for r in lines] == [("queued", "cancelled")]  # type: ignore[attr-defined]
        assert [(r.from_state, r.state) for r in lines] == await committed_moves(store, job)  # type: ignore[attr-defined]


async def test_a_cancel_flagged_for_the_worker_is_not_a_move_and_logs_none_until_the_worker_ends_it(
    service: JobService, store: Store, registry: ProviderRegistry, sink: FileSink, provider: ScriptedProvider,
    clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO)
    provider.gate = asyncio.Event()  # the job waits at its first poll, in `running`
    worker = make_worker(store, registry, sink, clock, tmp_path, worker_id="w")
    running = asyncio.Event()

    async def watch(event: JobTransition) -> None:
        if event.job.state is JobState.RUNNING:
            running.set()

    worker.transitions.subscribe(watch)
    job = await service.enqueue(ALICE, request())
    await worker.fill_slots()
    await running.wait()
    await service.cancel(job.id, by_user=ALICE.user_id)  # flagged: the worker ends it
    provider.gate.set()
    await worker.drain()

    lines = move_lines(caplog, job)
    assert [(r.from_state, r.state) for r in lines] == await committed_moves(store, job)  # type: ignore[attr-defined]
    assert lines[-1].state == "cancelled" and lines[-1].from_state != "queued"  # type: ignore[attr-defined]


# --- LOG_FORMAT=json ---------------------------------------------------------------------------------------


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    settings = Settings(
        _env_file=None, log_format="json", log_level="DEBUG", discord_token=BOT_TOKEN, openai_api_key=OPENAI_KEY
    )  # type: ignore[call-arg]
    with logging_as_in_production(settings) as buffer:
        yield buffer


def parsed(buffer: io.StringIO) -> list[dict[str, object]]:
    lines = buffer.getvalue().splitlines()
    assert lines, "something was logged"
    return [json.loads(line) for line in lines]


def test_json_gives_one_object_a_line_with_the_jobs_fields(json_lines: io.StringIO) -> None:
    log = logging.getLogger("bot.jobs.notify")
    log.info("job %s: %s → %s", "j1", "queued", "submitting", extra={"job_id": "j1", "guild_id": 1, "state": "x"})
    logging.getLogger("bot").warning('two\nlines and a quote " and ünïcode')
    first, second = parsed(json_lines)
    assert first["message"] == "job j1: queued → submitting" and first["level"] == "INFO"
    assert first["logger"] == "bot.jobs.notify" and (first["job_id"], first["guild_id"], first["state"]) == (
        "j1", 1, "x",
    )  # fmt: skip
    assert str(first["time"]).endswith("+00:00"), "UTC, with its offset"
    assert second["message"] == 'two\nlines and a quote " and ünïcode' and "job_id" not in second


def test_json_masks_tokens_in_messages_fields_and_tracebacks(json_lines: io.StringIO) -> None:
    log = logging.getLogger("discord.http")
    log.debug("POST /interactions/1/%s/callback with Bot %s", INTERACTION_TOKEN, BOT_TOKEN)
    logging.getLogger("bot").info("job", extra={"model": f"key {OPENAI_KEY}"})
    try:
        raise RuntimeError(f"Authorization: Bearer {OPENAI_KEY}")
    except RuntimeError:
        logging.getLogger("bot").exception("failed with %s", BOT_TOKEN)
    output = json_lines.getvalue()
    assert_absent(output, BOT_TOKEN, INTERACTION_TOKEN, OPENAI_KEY)
    records = parsed(json_lines)
    assert f"/interactions/1/{MASK}/callback" in str(records[0]["message"])
    assert records[1]["model"] == f"key {MASK}"
    assert "Traceback (most recent call last)" in str(records[2]["exception"])


def test_text_stays_the_default() -> None:
    buffer = io.StringIO()
    root = logging.getLogger()
    factory, level = logging.getLogRecordFactory(), root.level
    handler = configure_logging(Settings(_env_file=None), stream=buffer)  # type: ignore[call-arg]
    try:
        logging.getLogger("bot").info("plain")
    finally:
        root.removeHandler(handler)
        logging.setLogRecordFactory(factory)
        root.setLevel(level)
    line = buffer.getvalue()
    assert line.rstrip().endswith("bot: plain") and not line.startswith("{")

"""One clip per job whatever Discord does after applying a post: answer 5xx, drop the connection, or neither.

The fake Discord creates the message and then fails the answer ("apply, then fail"), enforces nonces on channel
messages only, and checks the bot's permissions, as Discord does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.discord.messages import ENGLISH, reason_text
from bot.domain import JobState
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import CHANNEL_ID
from tests.fakes.discord.models import ATTACH_FILES, EMBED_LINKS, READ_MESSAGE_HISTORY, SEND_MESSAGES, VIEW_CHANNEL

CHANNEL_POST = "POST /channels/*/messages"
WEBHOOK_POST = "POST /webhooks/*/*"
CANNOT_SEND = VIEW_CHANNEL | ATTACH_FILES | EMBED_LINKS | READ_MESSAGE_HISTORY
"""The bot sees the channel and its history but may not post there: clips go through the interaction."""


def clips_of(h: Harness, job_id: str) -> list[int]:
    wanted = f"video:delete:{job_id}"
    return [m.id for m in h.fake.messages(CHANNEL_ID) if m.attachments and wanted in m.custom_ids()]


async def deliver_one(h: Harness) -> tuple[str, int | None]:
    rec = await h.fake.slash("video", {"prompt": "a lighthouse in a storm", "duration": 1})
    await rec.wait_callback()
    job = await h.wait_job_state((await h.wait_for_job()).id, "delivered", "failed", timeout=30)
    assert job.state is JobState.DELIVERED, job.error
    return job.id, job.delivered_message_id


async def test_a_channel_post_applied_then_answered_500_is_not_doubled(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        # discord.py re-sends after a 500 by itself; the enforced nonce makes Discord return the first message.
        h.fake.fail_after_apply(CHANNEL_POST, status=500)
        job_id, message_id = await deliver_one(h)
        assert clips_of(h, job_id) == [message_id]
        assert len(h.fake.requests_to(CHANNEL_POST)) == 2, "the library's re-send happened, and was harmless"


async def test_a_dropped_answer_is_followed_by_a_lookup_not_a_second_post(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        h.fake.drop_after_apply(CHANNEL_POST)
        job_id, message_id = await deliver_one(h)
        assert clips_of(h, job_id) == [message_id]
        assert len(h.fake.requests_to(CHANNEL_POST)) == 1, "the post was found, not sent again"
        assert h.fake.requests_to("GET /channels/*/messages"), "found by looking through the channel"


@pytest.mark.parametrize("fault", ["fail_after_apply", "drop_after_apply"])
async def test_a_post_through_the_interaction_is_never_resent_blindly(tmp_path: Path, fault: str) -> None:
    async with running_bot(tmp_path) as h:
        h.fake.set_bot_permissions(CHANNEL_ID, CANNOT_SEND)
        getattr(h.fake, fault)(WEBHOOK_POST)
        job_id, message_id = await deliver_one(h)
        assert clips_of(h, job_id) == [message_id]
        assert len(h.fake.requests_to(WEBHOOK_POST)) == 1, "webhooks take no nonce: one send per attempt"
        assert not h.fake.requests_to(CHANNEL_POST), "the bot may not post in the channel"


async def test_without_read_history_a_lost_answer_errs_toward_posting_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The documented direction of error: when the bot cannot look, a clip may show twice, never zero times."""
    async with running_bot(tmp_path) as h:
        h.fake.set_bot_permissions(CHANNEL_ID, VIEW_CHANNEL | ATTACH_FILES | EMBED_LINKS)
        h.fake.drop_after_apply(WEBHOOK_POST)
        with caplog.at_level(logging.WARNING, logger="bot.discord.posting"):
            job_id, message_id = await deliver_one(h)
        clips = clips_of(h, job_id)
        assert len(clips) == 2 and message_id in clips
        assert "posting again, which may show the clip twice" in caplog.text


async def test_without_read_history_the_clips_nonce_still_stops_a_second_channel_post(tmp_path: Path) -> None:
    """The bot cannot look for its post, so it posts again: the clip's own nonce (the same on every attempt and
    in every process) makes Discord return the first message instead of creating a second one."""
    async with running_bot(tmp_path) as h:
        h.fake.set_bot_permissions(CHANNEL_ID, CANNOT_SEND & ~READ_MESSAGE_HISTORY | SEND_MESSAGES)
        h.fake.drop_after_apply(CHANNEL_POST)
        job_id, message_id = await deliver_one(h)
        assert clips_of(h, job_id) == [message_id]
        assert len(h.fake.requests_to(CHANNEL_POST)) == 2, "posted again, deduplicated by Discord"


async def test_a_5xx_that_outlasts_the_librarys_retries_is_retried_by_the_worker(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        h.fake.fail_next(CHANNEL_POST, status=503, times=2)  # discord.py does not retry a 503 itself
        job_id, message_id = await deliver_one(h)
        assert clips_of(h, job_id) == [message_id]


async def test_an_unknown_webhook_is_a_clear_refusal_not_a_raw_error(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        h.fake.set_bot_permissions(CHANNEL_ID, CANNOT_SEND)
        h.fake.fail_next(WEBHOOK_POST, status=404, code=10015, message="Unknown Webhook")
        rec = await h.fake.slash("video", {"prompt": "a lighthouse in a storm", "duration": 1})
        await rec.wait_callback()
        job = await h.wait_job_state((await h.wait_for_job()).id, "delivered", "failed", timeout=30)
        # The interaction is gone and the bot may not post in the channel: the member is told why and refunded.
        assert job.state is JobState.FAILED
        assert job.error is not None and "not allowed to post" in reason_text(job.error, ENGLISH)
        assert len(h.fake.requests_to(f"POST /channels/{CHANNEL_ID}/messages")) == 1, "then the channel, once"
        assert len(h.fake.requests_to(CHANNEL_POST)) == 2, "and the member got a DM"
        assert clips_of(h, job.id) == []

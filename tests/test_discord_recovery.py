"""Status messages and acknowledgements through crashes and admin actions, with the real client and the fake
Discord: nothing is left stale, and a job nobody was told about neither runs nor costs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from bot.clock import OffsetClock
from bot.domain import JobState, Requester
from tests.discord_harness import running_bot
from tests.fakes.discord import ALICE_ID, GUILD_ID, FakeDiscord
from tests.test_discord_admin import admin

SUPPRESS_EMBEDS = 1 << 2


async def until(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def test_a_status_edit_lost_in_a_crash_is_made_after_the_restart(tmp_path: Path) -> None:
    fake = FakeDiscord(clock=OffsetClock())
    await fake.start()
    try:
        async with running_bot(tmp_path, fake=fake, clock=fake.clock) as h:
            rec = await fake.slash("video", {"prompt": "a lighthouse https://example.com/x", "duration": 1})
            status = (await rec.wait_callback()).message
            assert status is not None and status.flags & SUPPRESS_EMBEDS, "a link in a prompt must not unfold"
            job = await h.wait_job_state((await h.wait_for_job()).id, "delivered")
            await until(lambda: fake.message(status.id).content.startswith("✅"), "the status says done")
            # The process died after recording the delivery and before its status edit went out:
            await h.store.mark_status_shown(job.id, JobState.DELIVERING)
            fake.message(status.id).content = "📦 Finishing up…"
        async with running_bot(tmp_path, fake=fake, clock=fake.clock) as h:
            await until(lambda: fake.message(status.id).content.startswith("✅"), "the stale status is updated")
            fresh = await h.store.get_job(job.id)
            assert fresh is not None and fresh.status_state is JobState.DELIVERED
            assert fake.message(status.id).flags & SUPPRESS_EMBEDS
            assert await h.store.jobs_with_stale_status(0) == []
    finally:
        await fake.close()


async def test_clearing_the_queue_updates_the_waiting_status_messages(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:  # no worker: the jobs stay queued
        records = [await h.fake.slash("video", {"prompt": f"waiting {n}", "duration": 1}) for n in range(2)]
        # A command sent while another is being queued may be deferred first: its status is then an edit.
        statuses = [await r.wait_original(lambda m: not m.loading and bool(m.custom_ids())) for r in records]
        assert all(s.custom_ids() for s in statuses), "queued jobs show a Cancel button"
        await admin(h, "queue clear")

        def all_cancelled() -> bool:
            return all(h.fake.message(s.id).content.startswith("🚫") for s in statuses if s is not None)

        await until(all_cancelled, "every waiting status says cancelled")
        for status in statuses:
            assert status is not None and h.fake.message(status.id).custom_ids() == [], "no live Cancel button"
        assert (await h.app.jobs.usage(Requester(GUILD_ID, ALICE_ID))).left == 60


async def test_a_job_whose_member_could_not_be_answered_is_cancelled_and_free(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        h.fake.fail_next("POST /interactions/*/*/callback", status=404, code=10062, message="Unknown interaction")
        rec = await h.fake.slash("video", {"prompt": "nobody will see this", "duration": 1})
        job = await h.wait_job_state((await h.wait_for_job()).id, "cancelled", "failed", "delivered", timeout=10)
        assert job.state is JobState.CANCELLED, "a job the member never heard of must not run"
        assert (await h.app.jobs.usage(Requester(GUILD_ID, ALICE_ID))).left == 60, "and costs nothing"
        answered = [c for c in rec.attempts if c.accepted]
        assert [c.ephemeral for c in answered] == [True], "at most a private apology, never a status message"

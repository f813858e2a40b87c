"""`/video` in a burst: acknowledged before the database answers, refusals still private.

A command alone is answered at once with its status message (`test_discord_video`). When other enqueues are
already waiting, the answer cannot be immediate, so the command is acknowledged first (deferred) and the status
message follows as an edit. These tests hold SQLite's write lock from outside, so the first command's enqueue
is stuck in its transaction while the next ones arrive: that is a burst, made deterministic. The enqueue's
budget (`ACK_BUDGET`, after which a slow enqueue is deferred anyway) is set out of reach, so an acknowledgement
that arrives while the lock is held can only come from the burst path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.domain import QuotaLimits, VideoRequest
from bot.jobs.service import JobService
from bot.providers.base import RemoteJob, RemoteState
from bot.providers.local import LocalPreviewProvider
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ALICE_ID, GUILD_ID

LOCK_TIMEOUT = 2.0
"""How long a test may hold the write lock: the bot's SQLite thread waits behind it (busy timeout 10 s)."""


@contextlib.contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """SQLite's write lock, taken by another connection: every write of the bot waits until it is let go."""
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def first_enqueue_stuck(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Send a command whose enqueue then waits on the lock; returns once the cog counts it as pending."""
    cog = h.bot.get_cog("VideoCog")
    # The module the bot loaded (discord.py loads an extension as a fresh module object).
    monkeypatch.setattr(sys.modules[type(cog).__module__], "ACK_BUDGET", 60.0)
    await h.fake.slash("video", {"prompt": "the first of a burst", "duration": 2})
    deadline = asyncio.get_running_loop().time() + LOCK_TIMEOUT
    while cog.enqueues_pending < 1:
        assert asyncio.get_running_loop().time() < deadline, "the first command never reached its enqueue"
        await asyncio.sleep(0.01)


async def test_a_command_behind_a_burst_is_acknowledged_before_its_enqueue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await h.app.jobs.guild_settings(GUILD_ID)  # cached, as it is in any burst after the first command
        bob = h.fake.add_user("bob")
        with write_lock(tmp_path / "bot.db"):
            await first_enqueue_stuck(h, monkeypatch)
            second = await h.fake.slash("video", {"prompt": "the second", "duration": 2}, user=bob)
            ack = await second.wait_callback(timeout=LOCK_TIMEOUT)
            # Deferred publicly while no job can be written yet: the acknowledgement did not wait for the database.
            assert ack.type == 5 and not ack.ephemeral
        status = await second.wait_original(lambda m: "Queued" in m.content)
        [job] = await h.jobs_of(bob.id)
        assert status.custom_ids() == [f"video:cancel:{job.id}"]
        assert len(await h.jobs_of(ALICE_ID)) == 1


async def test_a_quota_refusal_behind_a_burst_is_private_and_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await h.app.admin.set_default_quota(GUILD_ID, QuotaLimits(max_queued=1))
        await h.app.jobs.guild_settings(GUILD_ID)
        with write_lock(tmp_path / "bot.db"):
            await first_enqueue_stuck(h, monkeypatch)
            second = await h.fake.slash("video", {"prompt": "one too many", "duration": 2})
            assert (await second.wait_callback(timeout=LOCK_TIMEOUT)).type == 5
        # The quota is decided in the enqueue's transaction, after the public acknowledgement: the placeholder
        # goes and the reason comes privately.
        refusal = await second.wait_followup()
        assert refusal.ephemeral and "waiting (the limit is 1)" in refusal.content, refusal.content
        assert second.original is not None and second.original.deleted
        assert len(await h.jobs_of(ALICE_ID)) == 1


async def test_a_rule_refusal_behind_a_burst_is_answered_privately_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await h.app.admin.add_blocked_pattern(GUILD_ID, "forbidden")
        await h.app.jobs.guild_settings(GUILD_ID)
        with write_lock(tmp_path / "bot.db"):
            await first_enqueue_stuck(h, monkeypatch)
            refused = await h.fake.slash("video", {"prompt": "something forbidden", "duration": 2})
            answer = await refused.wait_callback(timeout=LOCK_TIMEOUT)
            # The blocklist needs no transaction: refused ephemerally, never deferred, while the database is busy.
            assert answer.type == 4 and answer.ephemeral and "blocklist" in answer.data["content"]
        assert len(await h.jobs_of(ALICE_ID)) == 1  # only the first command's job
        counted = await h.store.refusals_by_rule(GUILD_ID, 0, h.clock.now() + 1)
        assert counted == {"blocklist": 1}  # counted once the member had the answer


# --- the settings every command reads before it is acknowledged ------------------------------------------
async def test_commands_that_miss_the_settings_cache_together_share_one_read(service: JobService) -> None:
    read = await asyncio.gather(*(service.guild_settings(GUILD_ID) for _ in range(20)))
    assert all(settings is read[0] for settings in read)  # one read, not twenty
    assert await service.guild_settings(GUILD_ID) is read[0]  # and kept


# --- renders give way to the event loop -------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread CPU priority is Linux's")
async def test_local_renders_run_at_a_lower_cpu_priority_than_the_event_loop(tmp_path: Path) -> None:
    # `python -m bot run` renders in the process that acknowledges interactions: on a small machine the
    # encoder's threads would otherwise take the CPU the event loop needs to answer within 3 s.
    provider = LocalPreviewProvider(tmp_path, fps=4)
    await provider.start()
    try:
        request = VideoRequest(prompt="a lighthouse", model="local/preview", duration=1)
        remote = RemoteJob("job1", await provider.submit("job1", request), request)
        deadline = asyncio.get_running_loop().time() + 30
        while (await provider.poll(remote)).state is RemoteState.RUNNING:
            assert asyncio.get_running_loop().time() < deadline, "the render did not finish"
            await asyncio.sleep(0.05)
        renderers = [t for t in threading.enumerate() if t.name.startswith("local-render")]
        assert renderers, "renders run on the provider's own threads"
        loop_priority = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        for thread in renderers:
            assert thread.native_id is not None
            assert os.getpriority(os.PRIO_PROCESS, thread.native_id) > loop_priority
    finally:
        await provider.aclose()

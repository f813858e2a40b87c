"""Each provider through Discord: `/video` → the vendor's loopback fake → the clip in the channel, in process;
then the same as real bot processes killed by SIGKILL right after the submit, restarted on the same database:
the restarted bot polls the remote job it recorded and never sends a second create.

- `VIDEOBOT_CRASH_AT=running`: killed just after the remote id was recorded. The restart resumes polling that
  remote job: one create at the vendor, one clip in the channel.
- `VIDEOBOT_CRASH_AT=submitted`: killed after the vendor answered but before its id was recorded. A vendor
  whose create is idempotent (ComfyUI: the bot chooses the prompt id) is asked again and the same job is found;
  for any other the job fails with a refund rather than risk paying twice. One create either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.crash_checks import SqliteDatabase
from tests.crash_harness import BotRig
from tests.discord_harness import running_bot
from tests.fakes.discord import ALICE_ID, CHANNEL_ID, FakeDiscord
from tests.fakes.providers import ALL_FAKES
from tests.fakes.providers.base import FakeVendor

pytestmark = pytest.mark.timeout(180)
CLIP_BUTTON = "video:delete:"


@pytest.fixture(params=ALL_FAKES, ids=lambda cls: cls.provider)
async def vendor(request: pytest.FixtureRequest) -> AsyncIterator[FakeVendor]:
    async with request.param() as fake:
        yield fake


def clips(fake: FakeDiscord) -> list[object]:
    return [m for m in fake.messages() if any(c.startswith(CLIP_BUTTON) for c in m.custom_ids())]


async def test_video_command_reaches_the_provider_and_posts_its_clip(vendor: FakeVendor, tmp_path: Path) -> None:
    vendor.polls_to_finish = 0  # real time passes here: the vendors' poll hints (Veo's 10 s) would add up
    async with running_bot(tmp_path, default_model=vendor.model, **vendor.settings()) as h:
        rec = await h.fake.slash("video", {"prompt": "a lighthouse in a storm", "duration": vendor.durations[0]})
        await rec.wait_callback()
        job = await h.only_job()
        assert job.model == vendor.model
        done = await h.wait_job_state(job.id, "delivered", "failed", timeout=60)
        assert done.state.value == "delivered", done.error
        message = h.fake.message(done.delivered_message_id)
        assert message.channel_id == CHANNEL_ID and f"<@{ALICE_ID}>" in message.content
        assert [a.data for a in message.attachments] == [vendor.video]
        assert vendor.creates == 1


@pytest.mark.parametrize("point", ["running", "submitted"])
async def test_a_kill_after_submit_never_creates_twice(vendor: FakeVendor, point: str, tmp_path: Path) -> None:
    vendor.polls_to_finish = 0  # done at the first poll, which only the restarted process makes
    fake = FakeDiscord()
    await fake.start()
    env = {**vendor.env(), "DEFAULT_MODEL": vendor.model}
    rig = BotRig(fake, SqliteDatabase(tmp_path / "bot.db"), tmp_path, extra_env=env)
    try:
        await rig.prepare(members=1)
        await rig.start("run", crash_at=point)
        await rig.send_video(rig.members[0], duration=vendor.durations[0])
        await rig.wait_crash("run", point)
        polls_before = vendor.count("poll")
        await rig.start("run")
        snapshot = await rig.wait_settled(timeout=90)
        await rig.stop_all()
    finally:
        await rig.kill_all()
        await fake.close()
    (job,) = snapshot.jobs
    assert vendor.count("create") == 1 and vendor.creates == 1, f"{vendor.counts()}\n{rig.log_tails()}"
    if point == "running" or vendor.create_is_idempotent:
        assert job["state"] == "delivered", f"{job}\n{rig.log_tails()}"
        assert vendor.count("poll") > polls_before, "the restarted bot polled the recorded remote job"
        assert len(clips(fake)) == 1
    else:
        assert job["state"] == "failed", f"{job}\n{rig.log_tails()}"
        assert clips(fake) == []

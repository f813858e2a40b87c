"""`/video` end to end through the loopback Discord: acknowledgement, status message, clip posted."""

from __future__ import annotations

import io
from pathlib import Path

import av

from tests.discord_harness import running_bot
from tests.fakes.discord import ALICE_ID, CHANNEL_ID


async def test_video_command_posts_a_playable_clip(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        rec = await h.fake.slash("video", {"prompt": "a red fox in snow @everyone <@&123>", "duration": 2})
        callback = await rec.wait_callback()
        assert callback.type == 4  # answered at once with the public status message
        job = await h.only_job()
        done = await h.wait_job_state(job.id, "delivered")
        clip_message = h.fake.message(done.delivered_message_id)
        assert clip_message.channel_id == CHANNEL_ID
        assert f"<@{ALICE_ID}>" in clip_message.content
        assert len(clip_message.attachments) == 1 and clip_message.attachments[0].filename.endswith(".mp4")
        data = clip_message.attachments[0].data
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert sum(1 for _ in container.decode(video=0)) == 48
        mentions = clip_message.allowed_mentions
        assert mentions is not None and mentions.get("parse") == []
        assert [str(u) for u in mentions.get("users", [])] == [str(ALICE_ID)]
        assert not list((h.settings.data_dir / "staging").glob("*.mp4")), "staged clip deleted after delivery"
        ids = clip_message.custom_ids()
        assert ids == [f"video:again:{job.id}", f"video:remix:{job.id}", f"video:delete:{job.id}"]

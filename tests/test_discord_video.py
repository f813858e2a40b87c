"""`/video` end to end through the loopback Discord: acknowledgement, status message, clip posted."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import av
from PIL import Image

from bot.clock import FakeClock, OffsetClock
from bot.discord.delivery import DiscordDelivery
from bot.discord.messages import ENGLISH, reason_text
from bot.discord.reply_record import ReplyRecord, reply_record
from bot.domain import Job, JobState, QuotaLimits, Requester, VideoRequest
from bot.errors import StoreError
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers.local import LocalPreviewProvider
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ALICE_ID, CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.fakes.scripted_provider import ScriptedProvider

SAMPLE_JOB = Job(id="0" * 32, guild_id=GUILD_ID, user_id=ALICE_ID, channel_id=CHANNEL_ID, state=JobState.QUEUED,
                 request=VideoRequest(prompt="a kite", model="local/preview", duration=2), credits=2,
                 created_at=0.0, updated_at=0.0)  # fmt: skip


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
        staging = h.settings.data_dir / "staging"
        # The worker deletes the clip right after recording the delivery: wait for that, not for time.
        for _ in range(250):
            if not list(staging.glob("*.mp4")):
                break
            await asyncio.sleep(0.02)
        assert not list(staging.glob("*.mp4")), "staged clip deleted after delivery"
        ids = clip_message.custom_ids()
        assert ids == [f"video:again:{job.id}", f"video:remix:{job.id}", f"video:delete:{job.id}"]
        # Its buttons are answered by dynamic items: the post keeps no view in the client (one per clip, forever).
        assert not h.bot.persistent_views


async def test_refusals_are_ephemeral_clear_and_free(tmp_path: Path) -> None:
    async with running_bot(tmp_path, registry=registry(tmp_path)) as h:
        await h.app.admin.set_default_quota(GUILD_ID, QuotaLimits(credits=3))
        cases = [
            ({"prompt": "   ", "duration": 2}, "prompt"),
            ({"prompt": "ok", "model": "nope/model"}, "Unknown model"),
            ({"prompt": "ok", "model": "fake/video", "duration": 3}, "2, 4, 5 or 8 seconds"),
            ({"prompt": "ok", "duration": 5}, "costs 5 credits but you have 3 left"),
            ({"prompt": "ok", "duration": 2, "seed": 7, "negative_prompt": "x", "model": "fake/video"}, "negative"),
        ]
        for options, expected in cases:
            rec = await h.fake.slash("video", options)
            callback = await rec.wait_callback()
            assert callback.type == 4 and callback.ephemeral, options
            assert expected in callback.data["content"], (options, callback.data["content"])
        text = await h.fake.slash(
            "video", {"prompt": "animate"}, attachments={"image": ("notes.txt", b"hello", "text/plain")}
        )
        callback = await text.wait_callback()
        assert callback.ephemeral and "png, jpeg or webp" in callback.data["content"]
        assert await h.jobs_of() == []
        assert (await h.app.jobs.usage(Requester(GUILD_ID, ALICE_ID))).left == 3
        video = next(c for c in h.fake.global_commands if c["name"] == "video")
        prompt = next(o for o in video["options"] if o["name"] == "prompt")
        assert prompt["max_length"] == 2000  # Discord itself refuses 10,000 characters


async def test_the_job_keeps_the_requesters_language_for_its_public_messages(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        rec = await h.fake.slash("video", {"prompt": "um barco lento", "duration": 2}, locale="pt-BR")
        assert (await rec.wait_callback()).type == 4
        record = reply_record((await h.only_job()).delivery_ref)
        assert record is not None and record.locale == "pt-BR"
        assert record.guild_locale, "the server's own locale is kept too, for messages that answer nobody"


async def test_public_messages_speak_the_servers_choice_else_the_requesters_language() -> None:
    record = ReplyRecord(1, "token", 0.0, 10, locale="pt-BR", guild_locale="de")
    job = dataclasses.replace(SAMPLE_JOB, delivery_ref=record.dumps())
    chosen: dict[int, str | None] = {GUILD_ID: "ja"}

    async def server_language(guild_id: int) -> str | None:
        if guild_id not in chosen:
            raise StoreError("database unreachable")
        return chosen[guild_id]

    delivery = DiscordDelivery(OffsetClock(), server_language=server_language)
    assert (await delivery.texts(job)).language == "ja"
    chosen[GUILD_ID] = None
    assert (await delivery.texts(job)).language == "pt_BR", "no choice: the member who asked"
    del chosen[GUILD_ID]
    assert (await delivery.texts(job)).language == "pt_BR", "a failed lookup never loses the message"
    old = dataclasses.replace(
        job, delivery_ref='{"application_id":1,"token":"t","created_at":0,"attachment_size_limit":1}'
    )
    assert (await DiscordDelivery(OffsetClock()).texts(old)).language == "en", "records from before languages"


async def test_cancel_button_refunds_and_is_refused_for_others(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        rec = await h.fake.slash("video", {"prompt": "a slow boat", "duration": 4})
        status = (await rec.wait_callback()).message
        assert status is not None and not status.ephemeral
        job = await h.only_job()
        assert "Queued (#1 in line" in status.content and "<t:" in status.content
        bob = h.fake.add_user("bob")
        other = await h.fake.click(status, f"video:cancel:{job.id}", user=bob.id)
        refusal = await other.wait_callback()
        assert refusal.ephemeral and "Only the member who asked" in refusal.data["content"]
        assert (await h.store.get_job(job.id)).state.value == "queued"
        mine = await h.fake.click(status, f"video:cancel:{job.id}")
        update = await mine.wait_callback()
        assert update.type == 7 and "Cancelled" in update.data["content"]
        assert update.data["components"] == []
        assert (await h.store.get_job(job.id)).state.value == "cancelled"
        assert (await h.app.jobs.usage(Requester(GUILD_ID, ALICE_ID))).left == 60


async def test_oversized_clip_is_reencoded_after_a_413(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        # Discord refuses the upload although the interaction promised more (as in discord-api-docs#8572).
        h.fake.fail_next("POST /channels/*/messages", status=413, code=40005, message="Request entity too large")
        rec = await h.fake.slash("video", {"prompt": "busy confetti", "duration": 3})
        await rec.wait_callback()
        job = await h.wait_job_state((await h.wait_for_job()).id, "delivered", "failed")
        assert job.state.value == "delivered", job.error
        refused = [r for r in h.fake.requests if r.status == 413]
        assert len(refused) == 1
        posted = h.fake.message(job.delivered_message_id).attachments[0]
        assert len(posted.data) <= 0.8 * len(refused[0].files[0].data)
        with av.open(io.BytesIO(posted.data)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 72


async def test_clip_that_cannot_fit_fails_clearly_and_refunds(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        rec = await h.fake.slash("video", {"prompt": "tiny", "duration": 2}, attachment_size_limit=3_000)
        await rec.wait_callback()
        job = await h.wait_job_state((await h.wait_for_job()).id, "failed")
        assert "too large to post" in reason_text(job.error, ENGLISH)
        assert (await h.app.jobs.usage(Requester(GUILD_ID, ALICE_ID))).left == 60
        edited = await rec.wait_original(lambda m: "Failed" in m.content)
        assert "too large to post" in edited.content


async def test_expired_token_delivers_with_the_bot_token_and_survives_429(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        rec = await h.fake.slash("video", {"prompt": "late night", "duration": 2})
        await rec.wait_callback()
        job = await h.only_job()
        h.clock.advance(16 * 60)
        h.fake.rate_limit_next("POST /channels/*/messages")
        await worker_for(h).drain()
        done = await h.store.get_job(job.id)
        assert done.state.value == "delivered"
        posts = [
            r for r in h.fake.requests if r.method == "POST" and r.path.endswith(f"/channels/{CHANNEL_ID}/messages")
        ]
        assert [r.status for r in posts] == [429, 200]
        assert not [r for r in h.fake.requests if r.method == "POST" and "/webhooks/" in r.path]
        assert h.fake.message(done.delivered_message_id).attachments


async def test_forbidden_channel_tells_the_member_by_dm_and_refunds(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        rec = await h.fake.slash("video", {"prompt": "secret", "duration": 2})
        await rec.wait_callback()
        job = await h.only_job()
        h.clock.advance(16 * 60)
        h.fake.forbid_channel(CHANNEL_ID)
        await worker_for(h).drain()
        done = await h.store.get_job(job.id)
        assert done.state.value == "failed" and "not allowed to post" in reason_text(done.error, ENGLISH)
        dm = h.fake.messages(h.fake.dm_channel(ALICE_ID).id)
        assert dm and "not allowed to post" in dm[-1].content
        assert (await h.app.jobs.usage(Requester(GUILD_ID, ALICE_ID))).left == 60


async def test_image_to_video_uses_the_attachment_and_cleans_up(tmp_path: Path) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 200, 0)).save(png, "PNG")
    async with running_bot(tmp_path) as h:
        rec = await h.fake.slash(
            "video", {"prompt": "grow", "duration": 2}, attachments={"image": ("leaf.png", png.getvalue(), "image/png")}
        )
        assert (await rec.wait_callback()).type == 5  # deferred while the image is fetched
        job = await h.wait_job_state((await h.wait_for_job()).id, "delivered")
        ref = job.request.image_ref
        assert ref is not None and job.request.image_path is None
        copy = h.settings.data_dir / "staging" / "inputs" / ref
        for _ in range(250):  # the worker deletes both right after recording the delivery: wait for that
            if not copy.exists() and await h.store.get_input(ref) is None:
                break
            await asyncio.sleep(0.02)
        assert await h.store.get_input(ref) is None, "the stored input image is deleted when the job ends"
        assert not copy.exists(), "and so is the worker's copy"
        assert (await rec.wait_original(lambda m: "Done" in m.content)).content


def registry(tmp_path: Path) -> ProviderRegistry:
    return ProviderRegistry(
        [LocalPreviewProvider(tmp_path / "renders"), ScriptedProvider()], default_model="local/preview"
    )


def worker_for(h: Harness) -> Worker:
    return Worker(h.store, h.app.registry, h.app.delivery, h.clock, staging_dir=h.settings.data_dir / "staging",
                  poll_interval=0.05, transitions=h.app.transitions)  # fmt: skip


async def test_restart_delivers_queued_and_running_jobs_exactly_once(tmp_path: Path) -> None:
    fake = FakeDiscord(clock=OffsetClock())
    await fake.start()
    try:
        async with running_bot(tmp_path, fake=fake, clock=fake.clock, with_worker=False) as h:
            records = [await h.fake.slash("video", {"prompt": f"job {n}", "duration": 2}) for n in range(2)]
            statuses = [(await r.wait_callback()).message for r in records]
            bob = h.fake.add_user("bob")
            third = await h.fake.slash("video", {"prompt": "to cancel", "duration": 2}, user=bob.id)
            third_status = (await third.wait_callback()).message
            jobs = await h.jobs_of()
            # The first job was mid-render when the process died: claimed by a worker that never came back.
            dead = Worker(h.store, h.app.registry, h.app.delivery, h.clock, staging_dir=h.settings.data_dir / "x",
                          lease_seconds=5)  # fmt: skip
            claimed = await h.store.claim_job("dead", now=h.clock.now(), lease_seconds=5, limits=dead.limits)
            assert claimed is not None and claimed.id == jobs[0].id
        fake.clock.advance(6)  # the dead worker's lease runs out
        async with running_bot(tmp_path, fake=fake, clock=fake.clock) as h:
            assert h.fake.identify_count == 2
            bob_job = (await h.jobs_of(bob.id))[0]
            cancel = await h.fake.click(third_status, f"video:cancel:{bob_job.id}", user=bob.id)
            assert (await cancel.wait_callback()).type == 7, "an old button works after the restart"
            for job in jobs:
                done = await h.wait_job_state(job.id, "delivered")
                posts = [
                    m
                    for m in h.fake.messages(CHANNEL_ID)
                    if m.attachments and f"job {jobs.index(job)}" in str(m.embeds)
                ]
                assert len(posts) == 1 and posts[0].id == done.delivered_message_id
            events = [e.detail for e in await h.store.job_events(jobs[0].id)]
            assert any("taken over" in d and "from dead" in d for d in events)
            assert (await h.store.get_job(bob_job.id)).state.value == "cancelled"
            assert statuses[0] is not None
    finally:
        await fake.close()


async def test_gateway_resume_keeps_commands_flowing(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await h.fake.disconnect(4000)
        await h.fake.wait_for(lambda: h.fake.resume_count == 1 or None, timeout=15)
        rec = await h.fake.slash("video", {"prompt": "after resume", "duration": 2})
        assert (await rec.wait_callback()).type == 4
        assert h.fake.identify_count == 1


async def test_again_remix_delete_and_status_edits_are_few(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        rec = await h.fake.slash("video", {"prompt": "a kite", "duration": 2, "seed": 5})
        await rec.wait_callback()
        job = await h.wait_job_state((await h.wait_for_job()).id, "delivered")
        done_edit = await rec.wait_original(lambda m: "Done" in m.content)
        assert "posted below" in done_edit.content
        assert 1 <= len(rec.edits) <= 4, "status edits are coalesced: a fixed few per job"
        clip = h.fake.message(job.delivered_message_id)
        again = await h.fake.click(clip, f"video:again:{job.id}")
        assert (await again.wait_callback()).type == 4
        remix = await h.fake.click(clip, f"video:remix:{job.id}")
        modal = await remix.wait_callback()
        assert modal.type == 9
        custom_id = modal.data["custom_id"]
        submitted = await h.fake.submit_modal(custom_id, {next(iter(_input_ids(modal.data))): "a red kite"})
        assert (await submitted.wait_callback()).type == 4
        jobs = await h.jobs_of()
        assert len(jobs) == 3
        assert jobs[1].request.prompt == "a kite" and jobs[1].request.seed != 5
        assert jobs[2].request.prompt == "a red kite"
        bob = h.fake.add_user("bob")
        refused = await h.fake.click(clip, f"video:delete:{job.id}", user=bob.id)
        assert (await refused.wait_callback()).ephemeral
        delete = await h.fake.click(clip, f"video:delete:{job.id}")
        await delete.wait_callback()
        await h.fake.wait_for(lambda: h.fake.message(clip.id).deleted or None)


def _input_ids(modal: dict[str, object]) -> list[str]:
    ids = []
    for row in modal["components"]:  # type: ignore[attr-defined]
        for comp in row.get("components", [row.get("component")]):
            ids.append(comp["custom_id"])
    return ids


async def test_a_job_with_no_status_message_costs_no_status_bookkeeping(
    service: JobService, store: Store, clock: FakeClock
) -> None:
    """A job from the command line has no Discord record: nothing to edit, and no write to say it was shown."""
    delivery = DiscordDelivery(clock, store=store)  # no client attached: an edit would raise
    job = await service.enqueue(
        Requester(GUILD_ID, ALICE_ID, CHANNEL_ID), VideoRequest(prompt="a fox", model="fake/video", duration=2)
    )
    for state in (JobState.QUEUED, JobState.CANCELLED):
        await delivery.job_updated(dataclasses.replace(job, state=state))
        assert await delivery.flush_status(final=True) == 0
    stored = await store.get_job(job.id)
    assert stored is not None and stored.status_state is None

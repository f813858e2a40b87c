"""`/queue` and `/quota` through the loopback Discord: ephemeral embeds with the fixed field names."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.domain import QuotaLimits
from bot.jobs.quotas import window_bounds
from bot.providers.local import LocalPreviewProvider
from bot.providers.registry import ProviderRegistry
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ADMIN_ID, ALICE_ID, GUILD_ID
from tests.fakes.scripted_provider import ScriptedProvider


async def reply(h: Harness, command: str, options: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run a command and return the data of its (immediate) callback, checking it was ephemeral."""
    rec = await h.fake.slash(command, options or {}, **kwargs)
    callback = await rec.wait_callback()
    assert callback.type == 4, callback
    assert int(callback.data.get("flags", 0)) & 64, "answered ephemerally"
    assert callback.message is not None and not callback.message.pinged_user_ids
    return callback.data


async def make_video(h: Harness, *, user: int = ALICE_ID, duration: int = 2, **options: Any) -> None:
    rec = await h.fake.slash("video", {"prompt": "a red fox in snow", "duration": duration, **options}, user=user)
    callback = await rec.wait_callback()
    assert not int(callback.data.get("flags", 0)) & 64, f"/video was refused: {callback.data}"


def fields(data: dict[str, Any]) -> list[tuple[str, str]]:
    (embed,) = data["embeds"]
    return [(field["name"], field["value"]) for field in embed.get("fields", [])]


async def test_quota_shows_the_fixed_fields_while_a_job_waits(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await make_video(h)
        data = await reply(h, "quota")
        resets = int(window_bounds("day", h.clock.now())[1])
        assert fields(data) == [
            ("Used", "0"),
            ("Reserved", "2"),
            ("Left", "58"),
            ("Resets", f"<t:{resets}:R>"),
            ("Queued", "1 / 3"),
            ("Running", "0 / 1"),
        ]
        assert "60 credits per day" in data["embeds"][0]["description"]


async def test_quota_after_a_delivered_clip_counts_it_as_used(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h:
        await make_video(h)
        job = await h.only_job()
        await h.wait_job_state(job.id, "delivered")
        data = await reply(h, "quota")
        assert dict(fields(data)) | {"Resets": ""} == {
            "Used": "2",
            "Reserved": "0",
            "Left": "58",
            "Resets": "",
            "Queued": "0 / 3",
            "Running": "0 / 1",
        }


async def test_quota_of_an_unlimited_member_says_unlimited(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await h.app.admin.set_user_quota(GUILD_ID, ALICE_ID, QuotaLimits(unlimited=True))
        data = await reply(h, "quota")
        assert dict(fields(data))["Left"] == "unlimited"


async def test_queue_lists_the_callers_waiting_job_with_position_and_eta(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await make_video(h, user=ADMIN_ID)
        await make_video(h)
        data = await reply(h, "queue")
        (embed,) = data["embeds"]
        description = embed["description"]
        assert "#2 in line" in description and "<t:" in description and ":R>" in description
        assert "a red fox in snow" in description and "`local/preview`" in description
        assert description.count("Queued") == 1, "only the caller's own jobs are listed"
        assert fields(data) == [("Server queue", "2 jobs waiting")]


async def test_queue_without_jobs_says_so(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await make_video(h, user=ADMIN_ID)
        data = await reply(h, "queue")
        (embed,) = data["embeds"]
        assert "no videos in progress" in embed["description"]
        assert fields(data) == [("Server queue", "1 job waiting")]


async def test_queue_shows_progress_of_a_running_job(tmp_path: Path) -> None:
    provider = ScriptedProvider(gate=asyncio.Event())
    registry = ProviderRegistry([provider, LocalPreviewProvider(tmp_path / "renders")])
    async with running_bot(tmp_path, registry=registry) as h:
        try:
            await make_video(h, model="fake/video")
            job = await h.only_job()
            await h.wait_job_state(job.id, "running")
            data = await reply(h, "queue")
            description = data["embeds"][0]["description"]
            assert "Generating" in description and "%" in description
            assert fields(data) == [("Server queue", "0 jobs waiting")]
        finally:
            assert provider.gate is not None
            provider.gate.set()


async def test_queue_and_quota_are_server_only_commands(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        synced = {command["name"]: command for command in h.fake.global_commands}
        for name in ("queue", "quota"):
            assert synced[name]["contexts"] == [0]
            assert synced[name]["description"]
            assert not synced[name].get("options")

"""The clip post of `bench/scale.py`'s third contender: procrastinate's task doing the delivery the engine's jobs do.

Each procrastinate worker process opens one `ClipPosting` (a REST-only discord.py client logged in to the fake
Discord) before "go"; each job reads the clip from disk and posts it the way `ClipPoster._post_in_channel` does:
the requester mentioned, `clip.mp4` attached, the clip's embed and buttons, a nonce, through the REST call alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import discord

from bot.discord.language import public_texts
from bot.discord.posting import _only_requester, clip_nonce
from bot.discord.render import clip_embed, clip_view
from bot.domain import Job, JobState, VideoRequest
from tests.fakes.discord import CHANNEL_ID, GUILD_ID
from tests.fakes.scripted_provider import CLIP_BYTES, ScriptedProvider

REQUEST = VideoRequest(prompt="scale", model="fake/video", duration=2)
"""What the engine round enqueues, so that the embed reads the same."""
CREDITS = ScriptedProvider(name="fake").models()[0].credits_for(REQUEST.duration)


def write_clip(directory: Path) -> Path:
    """The instant provider's clip, byte for byte: what every engine job uploads."""
    clip = directory / "clip.mp4"
    clip.write_bytes(CLIP_BYTES)
    return clip


class ClipPosting:
    def __init__(self, clip: Path) -> None:
        self.clip = clip
        self.client: discord.Client | None = None

    async def open(self, token: str, api_base: str) -> None:
        # As `point_discord_at` does for the engine's worker: discord.py reads the API base from the class.
        discord.http.Route.BASE = api_base
        self.client = discord.Client(intents=discord.Intents.none())
        await self.client.login(token)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def post(self, job_id: str, user_id: int, created_at: float) -> int:
        """Post one job's clip; returns the message's id."""
        assert self.client is not None
        now = time.time()
        job = Job(id=job_id, guild_id=GUILD_ID, user_id=user_id, channel_id=CHANNEL_ID, request=REQUEST,
                  credits=CREDITS, state=JobState.DELIVERING, created_at=created_at, updated_at=now)  # fmt: skip
        tr = public_texts(None, None)  # the engine's choice for a job with no server language and no locale
        with discord.http.handle_message_parameters(
            content=f"<@{job.user_id}>", file=discord.File(self.clip, "clip.mp4"),
            embed=clip_embed(job, now, tr), view=clip_view(job, tr),
            allowed_mentions=_only_requester(job), previous_allowed_mentions=self.client.allowed_mentions,
            nonce=clip_nonce(job),
        ) as params:  # fmt: skip
            message = await self.client.http.send_message(job.channel_id, params=params)
        return int(message["id"])

"""Global commands are synced only when their definition changed: a restart on the same database does not
spend Discord's daily command-creation limit, and a new release's commands do reach Discord."""

from __future__ import annotations

from pathlib import Path

import pytest

import bot.discord.client
from bot.clock import OffsetClock
from tests.discord_harness import running_bot
from tests.fakes.discord import FakeDiscord

GLOBAL_SYNC = "PUT /applications/*/commands"


async def test_commands_sync_once_per_definition_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = OffsetClock()
    fake = FakeDiscord(clock=clock)
    await fake.start()
    database_url = f"sqlite:///{tmp_path / 'bot.db'}"
    release = bot.discord.client.EXTENSIONS
    older_release = tuple(name for name in release if name != "cogs.queue")  # before /queue and /quota existed
    assert older_release != release
    try:
        monkeypatch.setattr(bot.discord.client, "EXTENSIONS", older_release)
        async with running_bot(tmp_path, with_worker=False, database_url=database_url, clock=clock, fake=fake):
            pass
        assert len(fake.requests_to(GLOBAL_SYNC)) == 1, "the first start must sync the commands"
        first = {c["name"] for c in fake.global_commands}
        assert "video" in first and "queue" not in first

        # The same definition on the same database: a restart does not sync again.
        async with running_bot(tmp_path, with_worker=False, database_url=database_url, clock=clock, fake=fake):
            pass
        assert len(fake.requests_to(GLOBAL_SYNC)) == 1, "a restart with unchanged commands must not sync"

        # A new release adds commands: the next start syncs them.
        monkeypatch.setattr(bot.discord.client, "EXTENSIONS", release)
        async with running_bot(tmp_path, with_worker=False, database_url=database_url, clock=clock, fake=fake):
            pass
        assert len(fake.requests_to(GLOBAL_SYNC)) == 2, "changed commands must be synced"
        assert {"video", "queue", "quota"} <= {c["name"] for c in fake.global_commands}

        # And that definition, once synced, is not synced again on the next restart.
        async with running_bot(tmp_path, with_worker=False, database_url=database_url, clock=clock, fake=fake):
            pass
        assert len(fake.requests_to(GLOBAL_SYNC)) == 2, "a restart after the new sync must not sync again"
    finally:
        await fake.close()

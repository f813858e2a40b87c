"""Every process behind one REST proxy (README: "Discord's rate limits across processes"): @discordjs/proxy,
launched by deploy/discord-proxy/proxy.mjs with Node, in front of the loopback fake Discord, and the bot's
processes with DISCORD_API_BASE pointed at it. The fake sees the requests arrive from the proxy (its
User-Agent) with the bot token, errors come back to discord.py as Discord sends them, and a 429 is waited out by
the proxy, which sends the whole body again.

Skipped when `node` or the installed package is missing (`npm ci --prefix deploy/discord-proxy`).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import discord
import pytest
from aiohttp import web

from tests.crash_checks import Database, PostgresDatabase, SqliteDatabase, verify
from tests.crash_harness import BotRig, gather_callbacks
from tests.fakes.discord import CHANNEL_ID, GUILD_ID, FakeDiscord

PROXY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "discord-proxy"
PROXY_UA = "DiscordBot (https://discord.js.org"
"""@discordjs/rest's User-Agent: what the fake sees on a request the proxy forwarded."""
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the proxy runs on Node.js)"),
    pytest.mark.skipif(
        not (PROXY_DIR / "node_modules" / "@discordjs" / "proxy").is_dir(),
        reason="@discordjs/proxy is not installed: run `npm ci --prefix deploy/discord-proxy`",
    ),
]


@dataclass
class Arrivals:
    """What reached the fake, before it parsed anything: (method, path, body length) of every REST request."""

    seen: list[tuple[str, str, int | None]] = field(default_factory=list)

    @classmethod
    def install(cls, fake: FakeDiscord) -> Arrivals:
        arrivals = cls()
        inner = fake.rest.handle

        async def handle(request: web.Request) -> web.StreamResponse:
            arrivals.seen.append((request.method, request.path, request.content_length))
            return await inner(request)

        fake.rest.handle = handle  # type: ignore[method-assign]
        return arrivals

    def empty_posts(self) -> list[str]:
        return [f"{m} {p}" for m, p, length in self.seen if m == "POST" and p.endswith("/messages") and not length]


@dataclass
class Proxy:
    base: str
    """DISCORD_API_BASE for the bot: http://127.0.0.1:<port>/api/v10."""
    process: asyncio.subprocess.Process


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeDiscord, Arrivals]]:
    fake = FakeDiscord()
    arrivals = Arrivals.install(fake)
    await fake.start()
    try:
        yield fake, arrivals
    finally:
        await fake.close()


@pytest.fixture
async def proxy(fake: tuple[FakeDiscord, Arrivals]) -> AsyncIterator[Proxy]:
    upstream = fake[0].api_base.removesuffix("/v10")  # the proxy adds the version itself
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DISCORD_UPSTREAM": upstream, "PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        "node", str(PROXY_DIR / "proxy.mjs"), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert "listening on " in line, f"the proxy did not start: {line!r}"
        yield Proxy(line.split("listening on ", 1)[1].strip(), process)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def forwarded(fake: FakeDiscord) -> bool:
    return bool(fake.requests) and all(r.headers.get("User-Agent", "").startswith(PROXY_UA) for r in fake.requests)


async def test_discord_py_talks_to_discord_through_the_proxy(
    fake: tuple[FakeDiscord, Arrivals], proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    discord_fake, arrivals = fake
    monkeypatch.setattr(discord.http.Route, "BASE", proxy.base)
    client = discord.Client(intents=discord.Intents.none())
    await client.login(discord_fake.token)
    try:
        channel = client.get_partial_messageable(CHANNEL_ID, guild_id=GUILD_ID)
        discord_fake.rate_limit_next("POST /channels/*/messages", retry_after=0.3, is_global=True)
        message = await channel.send("clip", file=discord.File(io.BytesIO(b"\0" * 4096), "clip.mp4"))

        discord_fake.forbid_channel(CHANNEL_ID)
        with pytest.raises(discord.Forbidden) as refused:
            await channel.send("again")
    finally:
        await client.close()

    posts = discord_fake.requests_to("POST /channels/*/messages")
    assert [r.status for r in posts] == [429, 200, 403]  # the proxy waited out the 429 and sent it again
    assert posts[1].authorized and len(posts[1].files[0].data) == 4096  # the bot token and the whole upload
    assert not arrivals.empty_posts(), "the proxy sent a post again without its body"
    assert discord_fake.message(message.id).attachments[0].filename == "clip.mp4"
    assert refused.value.code == 50001  # Discord's error body reaches discord.py as it was
    assert forwarded(discord_fake)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_every_process_delivers_through_one_proxy(
    fake: tuple[FakeDiscord, Arrivals], proxy: Proxy, backend: str, tmp_path: Path
) -> None:
    """SQLite: one `run` process; PostgreSQL: a gateway and two workers, every one with DISCORD_API_BASE at the
    proxy. Each clip is posted exactly once, and everything the fake saw came through the proxy."""
    if backend == "postgres" and not TEST_DATABASE_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    discord_fake, arrivals = fake
    db: Database = (
        PostgresDatabase(TEST_DATABASE_URL) if backend == "postgres" and TEST_DATABASE_URL
        else SqliteDatabase(tmp_path / "bot.db")
    )  # fmt: skip
    rig = BotRig(discord_fake, db, tmp_path, log=lambda _: None, extra_env={"DISCORD_API_BASE": proxy.base})
    try:
        await rig.prepare(members=3)
        roles = ["gateway", "worker"] if backend == "postgres" else ["run"]
        for role in roles:
            await rig.start(role)
        # A scripted 429 on the first clip post: the proxy waits it out and sends the upload again.
        discord_fake.rate_limit_next("POST /channels/*/messages", retry_after=0.2)
        records = await rig.send_burst((member, f"through the proxy {n}") for n, member in enumerate(rig.members))
        await gather_callbacks(records, timeout=10)
        await rig.wait_settled(timeout=60)
        await rig.stop_all()
        report = verify(await db.snapshot(), discord_fake, rig.interactions)
    finally:
        await rig.kill_all()
        await db.cleanup()
    assert report.ok, report.explain() + rig.log_tails()
    assert all(r.callback is not None and r.callback.accepted for r in records)
    posts = [r for r in discord_fake.requests_to("POST /channels/*/messages") if r.status == 200]
    assert len(posts) == 3 and all(r.authorized for r in posts)
    assert not discord_fake.pending_faults() and not arrivals.empty_posts()
    assert forwarded(discord_fake), {r.headers.get("User-Agent") for r in discord_fake.requests}

"""The real discord.py client against the loopback fake Discord (tests/fakes/discord.py).

Why: every bot test builds on this fake, so here we prove that discord.py 2.7.1 connects, syncs, receives
interactions, retries what Discord says to retry, and fails where Discord would fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord import (
    ADMIN_ID,
    ALICE_ID,
    APP_ID,
    CHANNEL_ID,
    GUILD_ID,
    THREAD_ID,
    FakeDiscord,
    use_fake_discord,
)
from tests.fakes.discord.models import (
    ADMINISTRATOR,
    ATTACH_FILES,
    EMBED_LINKS,
    MEMBER_PERMISSIONS,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
    RecordedRequest,
)


class AgainButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"ping:again:(?P<n>\d+)"):
    """Persistent button whose state lives in its custom_id: survives restarts without a view registry."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label="Again", custom_id=f"ping:again:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> AgainButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"again {self.n}", ephemeral=True)


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"ping:cancel:(?P<n>\d+)"):
    """Acknowledges with a deferred update (type 6), then edits the message the button sits on."""

    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label="Cancel", custom_id=f"ping:cancel:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> CancelButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content=f"cancelled {self.n}", view=None)


class RemixModal(discord.ui.Modal, title="Remix"):
    prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(label="Prompt", custom_id="remix:prompt")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"remix: {self.prompt.value}", ephemeral=True)


class FakeTestBot(commands.Bot):
    """A tiny bot exercising each interaction kind; knobs let tests make it late or capture interactions."""

    def __init__(self, fake: FakeDiscord) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1)
        self.fake = fake
        self.late = False
        self.seen: list[discord.Interaction] = []
        self.failures: asyncio.Queue[BaseException] = asyncio.Queue()
        self._add_commands()

    async def setup_hook(self) -> None:
        self.add_dynamic_items(AgainButton, CancelButton)
        await self.tree.sync()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py sleeps 5 s before every non-initial IDENTIFY; a documented hook, skipped for speed."""

    def _add_commands(self) -> None:
        bot = self

        @self.tree.command(description="Defer, then edit the original with a button.")
        async def ping(interaction: discord.Interaction) -> None:
            bot.seen.append(interaction)
            if bot.late:
                bot.fake.clock.advance(4)  # the handler "took" 4 s before acknowledging
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                await bot.failures.put(exc)
                return
            view = discord.ui.View(timeout=None)
            view.add_item(AgainButton(7))
            view.add_item(CancelButton(7))
            await interaction.edit_original_response(content="pong", view=view)

        @self.tree.command(description="Echo an uploaded image back as a file.")
        async def upload(interaction: discord.Interaction, image: discord.Attachment) -> None:
            await interaction.response.defer(ephemeral=True)
            data = await image.read()
            file = discord.File(io.BytesIO(data), filename="copy.png")
            await interaction.edit_original_response(content=f"{image.filename}: {len(data)} bytes", attachments=[file])

        async def style_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            styles = ["cinematic", "cartoon", "claymation", "noir"]
            return [app_commands.Choice(name=s, value=s) for s in styles if s.startswith(current)]

        @self.tree.command(description="Pick a style.")
        @app_commands.autocomplete(style=style_choices)
        async def style(interaction: discord.Interaction, style: str) -> None:
            await interaction.response.send_message(f"style {style}")

        @self.tree.command(description="Ephemeral defer, then two followups.")
        async def queue(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True)
            await interaction.followup.send("first", ephemeral=True)
            await interaction.followup.send("second")

        @self.tree.command(description="Open the remix modal.")
        async def remix(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(RemixModal())

        videoadmin = app_commands.Group(name="videoadmin", description="Admin", guild_only=True)
        quota = app_commands.Group(name="quota", description="Quotas", parent=videoadmin)

        @quota.command(name="default", description="Set the default quota.")
        @app_commands.checks.has_permissions(manage_guild=True)
        async def quota_default(interaction: discord.Interaction, credits: app_commands.Range[int, 0, 1000]) -> None:
            await interaction.response.send_message(f"default quota {credits}", ephemeral=True)

        self.tree.add_command(videoadmin)

        @self.tree.context_menu(name="Remix this")
        async def remix_this(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.response.send_message(f"remixing {message.content!r}", ephemeral=True)

        @self.tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            await interaction.response.send_message(f"error: {type(error).__name__}", ephemeral=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        with use_fake_discord(fake):
            yield fake
        assert not fake.internal_errors, fake.internal_errors


async def run_client(client: discord.Client, fake: FakeDiscord) -> asyncio.Task[None]:
    """Start ``client`` and wait for on_ready; raise at once if start() dies (e.g. a KeyError in a parser)."""
    task = asyncio.create_task(client.start(fake.token))
    ready = asyncio.create_task(client.wait_until_ready())
    await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()
        raise AssertionError("client.start() returned before ready")
    assert ready.done(), "client not ready within 10 s"
    return task


async def stop_client(client: discord.Client, task: asyncio.Task[None]) -> None:
    crashed = task.done() and not task.cancelled() and task.exception()
    await client.close()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert not crashed, f"client crashed: {crashed!r}"


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[FakeTestBot]:
    client = FakeTestBot(fake)
    task = await run_client(client, fake)
    try:
        yield client
    finally:
        await stop_client(client, task)


def channel(bot: discord.Client, channel_id: int = CHANNEL_ID) -> discord.abc.Messageable:
    ch = bot.get_channel(channel_id)
    assert isinstance(ch, discord.abc.Messageable)
    return ch


# ------------------------------------------------------------------------------------ connection


async def test_client_connects_and_sees_the_guild(fake: FakeDiscord, bot: FakeTestBot) -> None:
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None and guild.name == "Test Guild"
    assert bot.get_channel(CHANNEL_ID) is not None
    thread = guild.get_thread(THREAD_ID)
    assert thread is not None and thread.parent_id == CHANNEL_ID
    assert bot.user is not None and bot.user.id == fake.app_id
    assert fake.identify_count == 1
    assert [r.route for r in fake.requests[:2]] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert all(r.authorized for r in fake.requests_to("GET /users/@me"))
    assert "Authorization" not in fake.requests[0].headers


async def test_wrong_token_is_a_login_failure(fake: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("wrong-token")
    await client.close()


# ------------------------------------------------------------------------------------ app commands


async def test_sync_then_slash_defer_and_edit_original(fake: FakeDiscord, bot: FakeTestBot) -> None:
    names = {c["name"] for c in fake.global_commands}
    assert {"ping", "upload", "style", "remix", "videoadmin", "Remix this"} <= names
    rec = await fake.slash("ping")
    callback = await rec.wait_callback()
    assert callback.type == 5 and not callback.ephemeral
    original = await rec.wait_original()
    assert original.content == "pong"
    assert original.custom_ids() == ["ping:again:7", "ping:cancel:7"]
    assert rec.edits[0]["content"] == "pong"
    assert fake.message(original.id) is original and not original.ephemeral
    assert bot.seen[-1].user.id == ALICE_ID and bot.seen[-1].channel is not None


async def test_dynamic_item_click_reaches_callback(fake: FakeDiscord, bot: FakeTestBot) -> None:
    original = await (await fake.slash("ping")).wait_original()
    click = await fake.click(original, "ping:again:7")
    callback = await click.wait_callback()
    assert callback.type == 4 and callback.ephemeral
    assert callback.message is not None and callback.message.content == "again 7"
    with pytest.raises(LookupError):
        await fake.click(original, "ping:again:8")


async def test_deferred_update_edits_the_clicked_message(fake: FakeDiscord, bot: FakeTestBot) -> None:
    original = await (await fake.slash("ping")).wait_original()
    click = await fake.click(original, "ping:cancel:7", user="admin")
    assert (await click.wait_callback()).type == 6
    await click.wait_original(lambda m: m.content == "cancelled 7")
    assert click.original is original and original.components == []
    assert original.history[-1]["content"] == "pong"


async def test_first_followup_fills_the_deferred_message(fake: FakeDiscord, bot: FakeTestBot) -> None:
    rec = await fake.slash("queue")
    second = await rec.wait_followup(2)
    assert rec.callback is not None and rec.callback.type == 5 and rec.callback.ephemeral
    assert rec.original is not None and rec.original.content == "first" and rec.original.ephemeral
    assert rec.followups[0] is rec.original
    assert second is not rec.original and second.content == "second" and not second.ephemeral


async def test_slash_in_a_dm(fake: FakeDiscord, bot: FakeTestBot) -> None:
    rec = await fake.slash("ping", in_dm=True, user="admin")
    original = await rec.wait_original()
    assert original.guild_id is None and original.content == "pong"
    interaction = bot.seen[-1]
    assert interaction.guild is None and isinstance(interaction.channel, discord.DMChannel)
    assert interaction.user.id == ADMIN_ID


async def test_guild_sync_and_guild_command(fake: FakeDiscord, bot: FakeTestBot) -> None:
    bot.tree.copy_global_to(guild=discord.Object(GUILD_ID))
    synced = await bot.tree.sync(guild=discord.Object(GUILD_ID))
    assert {c.name for c in synced} == {c["name"] for c in fake.guild_commands[GUILD_ID]}
    rec = await fake.slash("ping")
    assert rec.payload["data"]["guild_id"] == str(GUILD_ID)
    assert (await rec.wait_callback()).type == 5


async def test_attachment_option_download_and_reupload(fake: FakeDiscord, bot: FakeTestBot) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    rec = await fake.slash("upload", attachments={"image": ("cat.png", png, "image/png")})
    original = await rec.wait_original()
    assert original.ephemeral
    assert original.content == f"cat.png: {len(png)} bytes"
    assert original.files == {"copy.png": png}
    assert fake.requests_to("GET /attachments/**")


async def test_autocomplete_returns_choices(fake: FakeDiscord, bot: FakeTestBot) -> None:
    rec = await fake.autocomplete("style", {"style": "c"}, focused="style")
    callback = await rec.wait_callback()
    assert callback.type == 8
    assert [c["value"] for c in rec.choices] == ["cinematic", "cartoon", "claymation"]


async def test_modal_round_trip(fake: FakeDiscord, bot: FakeTestBot) -> None:
    shown = await fake.slash("remix")
    assert (await shown.wait_callback()).type == 9
    assert shown.modal is not None and shown.modal["title"] == "Remix"
    submitted = await fake.submit_modal(shown.modal["custom_id"], {"remix:prompt": "a cat surfing"})
    callback = await submitted.wait_callback()
    assert callback.message is not None and callback.message.content == "remix: a cat surfing"


async def test_subcommand_group_and_permissions(fake: FakeDiscord, bot: FakeTestBot) -> None:
    denied = await fake.slash("videoadmin quota default", {"credits": 5}, user="alice")
    assert (await denied.wait_callback()).message.content == "error: MissingPermissions"  # type: ignore[union-attr]
    allowed = await fake.slash("videoadmin", {"credits": 5}, subcommand=["quota", "default"], user=ADMIN_ID)
    assert (await allowed.wait_callback()).message.content == "default quota 5"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="outside"):
        await fake.slash("videoadmin quota default", {"credits": 5000}, user=ADMIN_ID)
    with pytest.raises(ValueError, match="not available in DMs"):
        await fake.slash("videoadmin quota default", {"credits": 5}, in_dm=True)


async def test_message_context_menu(fake: FakeDiscord, bot: FakeTestBot) -> None:
    target = await fake.user_message("a dog skiing", user="alice")
    rec = await fake.message_command("Remix this", target)
    assert (await rec.wait_callback()).message.content == "remixing 'a dog skiing'"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------ interaction rules


async def test_second_callback_is_40060(fake: FakeDiscord, bot: FakeTestBot) -> None:
    rec = await fake.slash("ping")
    await rec.wait_original()
    # Another process holding the same interaction (the classic cause of 40060) answers it again.
    duplicate = discord.Interaction(data=rec.payload, state=bot._connection)  # type: ignore[arg-type]
    with pytest.raises(discord.HTTPException) as info:
        await duplicate.response.send_message("again")
    assert (info.value.status, info.value.code) == (400, 40060)
    assert [a.code for a in rec.attempts] == [None, 40060]


async def test_late_callback_is_10062(fake: FakeDiscord, bot: FakeTestBot) -> None:
    bot.late = True
    rec = await fake.slash("ping")
    error = await asyncio.wait_for(bot.failures.get(), 5)
    assert isinstance(error, discord.NotFound) and error.code == 10062
    attempt = await rec.wait_attempt()
    assert (attempt.status, attempt.code) == (404, 10062)
    assert not rec.acknowledged


async def test_expired_token_is_401_50027(fake: FakeDiscord, bot: FakeTestBot) -> None:
    rec = await fake.slash("ping")
    await rec.wait_original()
    interaction = bot.seen[-1]
    fake.clock.advance(16 * 60)
    with pytest.raises(discord.HTTPException) as info:
        await interaction.edit_original_response(content="finished")
    assert (info.value.status, info.value.code) == (401, 50027)


# ------------------------------------------------------------------------------------ REST faults


async def test_429_is_retried_and_the_message_lands_once(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.rate_limit_next("POST /channels/*/messages", retry_after=0.05)
    async with channel(bot).typing():
        sent = await channel(bot).send("hello")
    assert [r.status for r in fake.requests_to("POST /channels/*/messages")] == [429, 200]
    assert [m.content for m in fake.bot_messages(CHANNEL_ID)] == ["hello"]
    assert fake.bot_messages(CHANNEL_ID)[0].id == sent.id


async def test_5xx_burst_is_retried(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.fail_next("POST /channels/{channel_id}/messages", status=502, times=2)
    await channel(bot).send("after the storm")
    assert [r.status for r in fake.requests_to("POST /channels/*/messages")] == [502, 502, 200]
    assert len(fake.bot_messages(CHANNEL_ID)) == 1


async def test_too_large_upload_is_413_40005(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.upload_limit = 1024
    with pytest.raises(discord.HTTPException) as info:
        await channel(bot).send(file=discord.File(io.BytesIO(b"x" * 2048), filename="clip.mp4"))
    assert (info.value.status, info.value.code) == (413, 40005)
    await channel(bot).send(file=discord.File(io.BytesIO(b"x" * 1024), filename="clip.mp4"))
    [msg] = fake.bot_messages(CHANNEL_ID)
    assert msg.files == {"clip.mp4": b"x" * 1024}
    assert msg.attachments[0].content_type == "video/mp4"


async def test_forbidden_channel_is_missing_access_for_the_bot_token_only(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.forbid_channel(CHANNEL_ID)
    with pytest.raises(discord.Forbidden) as info:
        await channel(bot).send("hi")
    assert info.value.code == 50001
    with pytest.raises(discord.Forbidden):
        await bot.fetch_channel(CHANNEL_ID)
    # Interactions in that channel still work (callbacks and webhooks need no channel permission) and say so.
    rec = await fake.slash("queue")
    await rec.wait_followup(2)
    assert rec.payload["app_permissions"] == "0"
    assert [m.content for m in fake.bot_messages(CHANNEL_ID)] == ["first", "second"]
    fake.allow_channel(CHANNEL_ID)
    await channel(bot).send("hi")


async def test_body_limits_are_enforced(fake: FakeDiscord, bot: FakeTestBot) -> None:
    with pytest.raises(discord.HTTPException) as info:
        await channel(bot).send("x" * 2001)
    assert (info.value.status, info.value.code) == (400, 50035)
    assert "content" in fake.requests[-1].response["errors"]
    with pytest.raises(discord.HTTPException) as info:
        await channel(bot).send(embeds=[discord.Embed(title="t" * 257)])
    assert info.value.code == 50035
    assert fake.bot_messages() == []


async def test_unknown_route_is_recorded(fake: FakeDiscord, bot: FakeTestBot) -> None:
    with pytest.raises(discord.NotFound):
        await bot.fetch_guild(GUILD_ID)
    assert [r.route for r in fake.unhandled] == [f"GET /guilds/{GUILD_ID}"]
    member = await bot.get_guild(GUILD_ID).fetch_member(ADMIN_ID)  # type: ignore[union-attr]
    assert [r.id for r in member.roles if not r.is_default()] == [fake.role("Video Admin").id]
    assert member.guild_permissions.manage_guild


async def test_dm_open_and_send(fake: FakeDiscord, bot: FakeTestBot) -> None:
    user = await bot.fetch_user(ALICE_ID)
    await user.send("your clip is ready")
    [msg] = [m for m in fake.bot_messages() if m.guild_id is None]
    assert fake.channels[msg.channel_id].recipients[0].id == ALICE_ID
    await channel(bot).send(f"<@{ALICE_ID}> done", allowed_mentions=discord.AllowedMentions(users=True))
    await channel(bot).send(f"<@{ADMIN_ID}> quiet", allowed_mentions=discord.AllowedMentions.none())
    pinged = [m.pinged_user_ids for m in fake.bot_messages(CHANNEL_ID)]
    assert pinged == [[ALICE_ID], []]
    assert fake.bot_messages(CHANNEL_ID)[0].payload()["mentions"][0]["username"] == "alice"
    fake.block_dms(ALICE_ID)
    with pytest.raises(discord.Forbidden):
        await user.send("again")


# ------------------------------------------------------------------------------------ gateway


async def test_resume_after_disconnect_keeps_receiving(fake: FakeDiscord, bot: FakeTestBot) -> None:
    await fake.disconnect(4000)
    await fake.wait_for(lambda: fake.resume_count == 1, timeout=10)
    assert fake.identify_count == 1
    rec = await fake.slash("ping")
    assert (await rec.wait_callback()).type == 5


async def test_reconnect_and_invalid_session(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.send_reconnect()
    await fake.wait_for(lambda: fake.resume_count == 1, timeout=10)
    fake.invalidate_session()
    await fake.wait_for(lambda: fake.identify_count == 2, timeout=10)
    rec = await fake.slash("ping")
    assert (await rec.wait_callback()).type == 5


async def test_interaction_sent_while_disconnected_is_replayed(fake: FakeDiscord, bot: FakeTestBot) -> None:
    await fake.disconnect(4000)
    rec = await fake.slash("ping")  # queued on the session, replayed after RESUME
    assert (await rec.wait_callback(timeout=10)).type == 5
    assert fake.resume_count == 1


class QuickShardedClient(discord.AutoShardedClient):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Skip discord.py's 5 s pause between shard IDENTIFYs."""


async def test_auto_sharded_client(fake: FakeDiscord) -> None:
    fake.recommended_shards = 2
    client = QuickShardedClient(intents=discord.Intents.default(), guild_ready_timeout=0.1)
    task = await run_client(client, fake)
    try:
        assert client.shard_count == 2
        assert fake.identify_count == 2
        assert client.get_guild(GUILD_ID) is not None
        assert fake.requests_to("GET /gateway/bot")
        fake.strict_commands = False  # this client has no command tree
        waiter = asyncio.create_task(client.wait_for("interaction"))
        await fake.slash("anything")
        interaction = await asyncio.wait_for(waiter, 5)
        assert interaction.guild_id == GUILD_ID
    finally:
        await stop_client(client, task)


# ------------------------------------------------------------------------------------ apply, then fail


def posts(fake: FakeDiscord, channel_id: int = CHANNEL_ID) -> list[RecordedRequest]:
    return fake.requests_to(f"POST /channels/{channel_id}/messages")


async def test_fail_after_apply_creates_the_message_then_answers_500(fake: FakeDiscord) -> None:
    fake.fail_after_apply("POST /channels/{channel_id}/messages", status=500)
    path = f"/channels/{CHANNEL_ID}/messages"
    status, body = await raw(fake, "POST", path, json={"content": "clip ready"})
    assert (status, body) == (500, {"message": "500: Internal Server Error", "code": 0})
    [rec] = posts(fake)
    assert (rec.status, rec.fault, rec.applied_status, rec.applied) == (500, "fail_after_apply", 200, True)
    [msg] = fake.bot_messages(CHANNEL_ID)
    assert int(rec.applied_response["id"]) == msg.id
    status, history = await raw(fake, "GET", path)
    assert [int(m["id"]) for m in history] == [msg.id]
    # A blind repeat (no nonce) is a second message: exactly the duplicate the bot must avoid.
    status, _ = await raw(fake, "POST", path, json={"content": "clip ready"})
    assert status == 200 and len(fake.bot_messages(CHANNEL_ID)) == 2
    assert fake.pending_faults() == []


async def test_discordpy_retry_after_fail_after_apply_lands_once(fake: FakeDiscord, bot: FakeTestBot) -> None:
    """discord.py's ``send`` always sends a nonce (random unless given) with ``enforce_nonce``, so its own
    retry of a 500 gets the message created by the first try instead of a second one."""
    fake.fail_after_apply("POST /channels/*/messages", status=500)
    sent = await channel(bot).send("clip ready")
    first, second = posts(fake)
    assert [first.status, second.status] == [500, 200]
    assert first.json["nonce"] == second.json["nonce"] and second.json["enforce_nonce"] is True
    [msg] = fake.bot_messages(CHANNEL_ID)
    assert msg.id == sent.id == int(first.applied_response["id"])


async def test_drop_after_apply_leaves_the_client_in_the_dark(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.drop_after_apply("POST /channels/{channel_id}/messages")
    with pytest.raises(aiohttp.ClientConnectionError):  # ServerDisconnectedError: discord.py does not retry it
        await channel(bot).send("clip ready", nonce="job-8")
    [rec] = posts(fake)
    assert rec.dropped and rec.applied and rec.status == 0 and rec.response is None
    [msg] = fake.bot_messages(CHANNEL_ID)
    assert fake.message(int(rec.applied_response["id"])) is msg
    # The message is there for a GET, and the same nonce, repeated, returns it instead of a second post.
    assert (await channel(bot).fetch_message(msg.id)).content == "clip ready"  # type: ignore[attr-defined]
    again = await channel(bot).send("clip ready", nonce="job-8")
    assert again.id == msg.id and len(fake.bot_messages(CHANNEL_ID)) == 1


async def test_faults_before_apply_apply_nothing(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.drop_next("POST /channels/*/messages")
    with pytest.raises(aiohttp.ClientConnectionError):
        await channel(bot).send("lost")
    fake.fail_next("POST /channels/*/messages", status=503)
    with pytest.raises(discord.DiscordServerError):  # 503 is not one discord.py retries
        await channel(bot).send("refused")
    assert [(r.fault, r.status, r.applied) for r in posts(fake)] == [("drop", 0, False), ("fail", 503, False)]
    assert fake.bot_messages(CHANNEL_ID) == []


async def test_an_after_apply_fault_waits_for_a_request_that_succeeds(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.fail_after_apply("POST /channels/*/messages", status=503)
    with pytest.raises(discord.HTTPException) as info:
        await channel(bot).send("x" * 2001)
    assert info.value.code == 50035 and len(fake.pending_faults()) == 1
    with pytest.raises(discord.DiscordServerError):
        await channel(bot).send("applied")
    assert [m.content for m in fake.bot_messages(CHANNEL_ID)] == ["applied"]
    with pytest.raises(ValueError, match="5xx"):
        fake.fail_after_apply(status=404)


async def test_webhook_upload_after_a_500_is_posted_twice(fake: FakeDiscord, bot: FakeTestBot) -> None:
    """What issue 6 found: discord.py re-sends a webhook upload after a 5xx, so an applied post is doubled."""
    rec = await fake.slash("ping")
    await rec.wait_original()
    fake.fail_after_apply("POST /webhooks/{app_id}/{token}", status=500)
    async with aiohttp.ClientSession() as session:
        webhook = discord.Webhook.partial(fake.app_id, rec.token, session=session)
        clip = discord.File(io.BytesIO(b"\x00mp4"), filename="clip.mp4")
        sent = await webhook.send("clip", file=clip, wait=True)
        assert [r.status for r in fake.requests_to("POST /webhooks/*/*")] == [500, 200]
        assert [m.files for m in rec.followups] == [{"clip.mp4": b"\x00mp4"}] * 2
        assert rec.followups[1].id == sent.id
        fake.drop_after_apply("PATCH /webhooks/*/*/messages/*")
        with pytest.raises(aiohttp.ClientConnectionError):
            await webhook.edit_message(sent.id, content="edited")
    assert fake.message(sent.id).content == "edited"


# ------------------------------------------------------------------------------------ nonces


async def raw(
    fake: FakeDiscord, method: str, path: str, *, json: Any = None, bot_token: bool = True, **params: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bot {fake.token}"} if bot_token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, fake.api_base + path, json=json, headers=headers, params=params) as resp,
    ):
        assert resp.content_type == "application/json" or resp.status == 204
        return resp.status, await resp.json() if resp.status != 204 else None


async def test_enforce_nonce_dedupes(fake: FakeDiscord, bot: FakeTestBot) -> None:
    first = await channel(bot).send("clip ready", nonce="job-1")
    second = await channel(bot).send("clip ready", nonce="job-1")
    assert first.id == second.id and first.nonce == second.nonce == "job-1"
    assert len(fake.bot_messages(CHANNEL_ID)) == 1
    other = await channel(bot, THREAD_ID).send("clip ready", nonce="job-1")  # nonces are per channel
    assert other.id != first.id
    # The nonce is echoed on creation (response and MESSAGE_CREATE), never by a later read.
    assert (await channel(bot).fetch_message(first.id)).nonce is None  # type: ignore[attr-defined]
    status, history = await raw(fake, "GET", f"/channels/{CHANNEL_ID}/messages")
    assert status == 200 and [m.get("nonce") for m in history] == [None]
    created = [f for _, f in fake.gateway.session_for(GUILD_ID).history if '"MESSAGE_CREATE"' in f]
    assert '"nonce": "job-1"' in created[0]


async def test_nonce_without_enforce_nonce_is_only_echoed(fake: FakeDiscord) -> None:
    body = {"content": "clip ready", "nonce": "job-2"}
    replies = [await raw(fake, "POST", f"/channels/{CHANNEL_ID}/messages", json=body) for _ in range(2)]
    assert [(status, data["nonce"]) for status, data in replies] == [(200, "job-2")] * 2
    assert replies[0][1]["id"] != replies[1][1]["id"]
    # A later enforced post does find a nonce recorded without enforcement.
    _, enforced = await raw(fake, "POST", f"/channels/{CHANNEL_ID}/messages", json=body | {"enforce_nonce": True})
    assert enforced["id"] == replies[1][1]["id"] and len(fake.bot_messages(CHANNEL_ID)) == 2


async def test_nonces_are_forgotten_after_the_window(fake: FakeDiscord, bot: FakeTestBot) -> None:
    first = await channel(bot).send("clip", nonce="job-3")
    fake.clock.advance(fake.nonce_window - 1)
    assert (await channel(bot).send("clip", nonce="job-3")).id == first.id
    fake.clock.advance(2)
    assert (await channel(bot).send("clip", nonce="job-3")).id != first.id
    assert len(fake.bot_messages(CHANNEL_ID)) == 2


async def test_webhooks_have_no_nonces(fake: FakeDiscord, bot: FakeTestBot) -> None:
    rec = await fake.slash("ping")
    await rec.wait_original()
    body = {"content": "clip", "nonce": "job-4", "enforce_nonce": True}
    path = f"/webhooks/{fake.app_id}/{rec.token}"
    replies = [await raw(fake, "POST", path, json=body, bot_token=False, wait="true") for _ in range(2)]
    assert [status for status, _ in replies] == [200, 200]
    assert replies[0][1]["id"] != replies[1][1]["id"] and len(rec.followups) == 2
    assert all("nonce" not in data for _, data in replies)
    assert all(m.nonce is None for m in rec.followups)
    # Nor does a webhook post register its nonce for an enforced channel post.
    sent = await channel(bot).send("clip", nonce="job-4")
    assert sent.id not in {m.id for m in rec.followups}


# ------------------------------------------------------------------------------------ permissions


async def test_channel_posts_need_send_attach_and_embed(fake: FakeDiscord, bot: FakeTestBot) -> None:
    ch = channel(bot)

    def clip() -> discord.File:
        return discord.File(io.BytesIO(b"mp4"), filename="clip.mp4")

    fake.set_bot_permissions(CHANNEL_ID, MEMBER_PERMISSIONS & ~ATTACH_FILES)
    with pytest.raises(discord.Forbidden) as info:
        await ch.send("clip", file=clip())
    assert (info.value.status, info.value.code, info.value.text) == (403, 50013, "Missing Permissions")
    await ch.send("text only is fine")
    fake.set_bot_permissions(CHANNEL_ID, MEMBER_PERMISSIONS & ~EMBED_LINKS)
    with pytest.raises(discord.Forbidden) as info:
        await ch.send(embed=discord.Embed(title="clip"))
    assert info.value.code == 50013
    await ch.send(file=clip())
    fake.set_bot_permissions(CHANNEL_ID, MEMBER_PERMISSIONS & ~SEND_MESSAGES)
    with pytest.raises(discord.Forbidden) as info:
        await ch.send("hi")
    assert info.value.code == 50013
    fake.set_bot_permissions(CHANNEL_ID, MEMBER_PERMISSIONS & ~VIEW_CHANNEL)
    with pytest.raises(discord.Forbidden) as info:
        await ch.send("hi")
    assert (info.value.code, info.value.text) == (50001, "Missing Access")
    fake.set_bot_permissions(CHANNEL_ID, None)
    await ch.send("clip", file=clip(), embed=discord.Embed(title="clip"))
    assert [(m.content, len(m.attachments), len(m.embeds)) for m in fake.bot_messages(CHANNEL_ID)] == [
        ("text only is fine", 0, 0),
        ("", 1, 0),
        ("clip", 1, 1),
    ]


async def test_threads_need_send_in_threads_and_inherit_the_parent(fake: FakeDiscord, bot: FakeTestBot) -> None:
    thread = bot.get_partial_messageable(THREAD_ID, guild_id=GUILD_ID)
    fake.set_bot_permissions(CHANNEL_ID, MEMBER_PERMISSIONS & ~SEND_MESSAGES_IN_THREADS)
    with pytest.raises(discord.Forbidden) as info:
        await thread.send("in the thread")
    assert info.value.code == 50013
    await channel(bot).send("in the channel")
    fake.set_bot_permissions(CHANNEL_ID, MEMBER_PERMISSIONS & ~SEND_MESSAGES)
    await thread.send("in the thread")
    with pytest.raises(discord.Forbidden):
        await channel(bot).send("in the channel")
    assert [m.channel_id for m in fake.bot_messages()] == [CHANNEL_ID, THREAD_ID]


async def test_edits_need_view_and_embed_links(fake: FakeDiscord, bot: FakeTestBot) -> None:
    msg = await channel(bot).send("status")
    fake.set_bot_permissions(CHANNEL_ID, VIEW_CHANNEL)  # no SEND_MESSAGES: editing one's own message still works
    await msg.edit(content="done")
    with pytest.raises(discord.Forbidden) as info:
        await msg.edit(embed=discord.Embed(title="clip"))
    assert info.value.code == 50013
    fake.forbid_channel(CHANNEL_ID)
    with pytest.raises(discord.Forbidden) as info:
        await msg.edit(content="again")
    assert info.value.code == 50001
    assert fake.message(msg.id).content == "done" and fake.message(msg.id).embeds == []


async def test_app_permissions_are_the_channel_value(fake: FakeDiscord, bot: FakeTestBot) -> None:
    fake.set_bot_permissions(CHANNEL_ID, VIEW_CHANNEL | SEND_MESSAGES)
    await (await fake.slash("ping")).wait_original()
    await (await fake.slash("ping", channel=THREAD_ID)).wait_original()
    in_channel, in_thread = bot.seen[-2:]
    assert in_channel.app_permissions.value == in_thread.app_permissions.value == VIEW_CHANNEL | SEND_MESSAGES
    assert not in_channel.app_permissions.attach_files
    fake.guilds[GUILD_ID].bot_permissions = ADMINISTRATOR
    fake.set_bot_permissions(CHANNEL_ID, None)
    await (await fake.slash("ping")).wait_original()
    assert bot.seen[-1].app_permissions.administrator and bot.seen[-1].app_permissions.attach_files


# ------------------------------------------------------------------------------------ history


@pytest.fixture
async def rest_client(fake: FakeDiscord) -> AsyncIterator[discord.Client]:
    """A REST-only client (logged in, no gateway), like the bot's worker process."""
    client = discord.Client(intents=discord.Intents.default())
    await client.login(fake.token)
    try:
        yield client
    finally:
        await client.close()


async def test_history_after_pages_oldest_first_through_discordpy(
    fake: FakeDiscord, rest_client: discord.Client
) -> None:
    ids = [(await fake.user_message(f"m{n}")).id for n in range(230)]
    pm = rest_client.get_partial_messageable(CHANNEL_ID, guild_id=GUILD_ID)
    after = [m.id async for m in pm.history(after=discord.Object(ids[9]), limit=None)]
    assert after == ids[10:]
    pages = fake.requests_to("GET /channels/*/messages")
    assert [(r.query["limit"], len(r.response)) for r in pages] == [("100", 100), ("100", 100), ("100", 20)]
    assert [int(m["id"]) for m in pages[0].response] == ids[10:110][::-1]  # newest first on the wire
    newest = [m.id async for m in pm.history(limit=120)]
    assert newest == ids[::-1][:120]
    around = [m.id async for m in pm.history(around=discord.Object(ids[50]), limit=11)]
    assert sorted(around) == ids[45:56]


async def test_history_query_rules(fake: FakeDiscord, rest_client: discord.Client) -> None:
    ids = [(await fake.user_message(f"m{n}")).id for n in range(60)]
    path = f"/channels/{CHANNEL_ID}/messages"
    status, default = await raw(fake, "GET", path)
    assert status == 200 and [int(m["id"]) for m in default] == ids[::-1][:50]
    status, before = await raw(fake, "GET", path, before=str(ids[5]), limit="3")
    assert [int(m["id"]) for m in before] == [ids[4], ids[3], ids[2]]
    for bad in ("0", "101", "ten"):
        status, error = await raw(fake, "GET", path, limit=bad)
        assert (status, error["code"]) == (400, 50035) and "limit" in error["errors"]
    status, error = await raw(fake, "GET", path, before=str(ids[5]), after=str(ids[1]))
    assert (status, error["code"]) == (400, 50035)
    status, _ = await raw(fake, "GET", path, bot_token=False)
    assert status == 401


async def test_history_needs_read_message_history(fake: FakeDiscord, rest_client: discord.Client) -> None:
    msg = await fake.user_message("hello")
    pm = rest_client.get_partial_messageable(CHANNEL_ID, guild_id=GUILD_ID)
    fake.set_bot_permissions(CHANNEL_ID, MEMBER_PERMISSIONS & ~READ_MESSAGE_HISTORY)
    with pytest.raises(discord.Forbidden) as info:
        [m async for m in pm.history(limit=5)]
    assert info.value.code == 50001
    with pytest.raises(discord.Forbidden) as info:
        await pm.fetch_message(msg.id)
    assert info.value.code == 50001
    fake.set_bot_permissions(CHANNEL_ID, None)
    assert [m.content async for m in pm.history(limit=5)] == ["hello"]


async def test_interaction_messages_are_in_history_with_their_components(fake: FakeDiscord, bot: FakeTestBot) -> None:
    status = await (await fake.slash("ping")).wait_original()
    queued = await fake.slash("queue")  # ephemeral "first" (fills the deferred message), public "second"
    await queued.wait_followup(2)
    gone = await channel(bot).send("deleted soon")
    await gone.delete()
    history = [m async for m in channel(bot).history(limit=10)]
    assert [m.content for m in history] == ["second", "pong"]
    pong = history[1]
    assert pong.id == status.id and pong.author.id == APP_ID and pong.author.bot
    assert pong.webhook_id == APP_ID and pong.application_id == APP_ID
    assert custom_ids(pong) == ["ping:again:7", "ping:cancel:7"]
    # A bot can find its own message again by a button's custom_id (how it recognises a posted clip).
    found = [m.id async for m in channel(bot).history(limit=None) if "ping:cancel:7" in custom_ids(m)]
    assert found == [status.id]


def custom_ids(message: discord.Message) -> list[str]:
    rows = [row for row in message.components if isinstance(row, discord.ActionRow)]
    return [c.custom_id for row in rows for c in row.children if isinstance(c, discord.Button) and c.custom_id]


async def test_a_localization_discord_would_refuse_is_refused(fake: FakeDiscord, bot: FakeTestBot) -> None:
    """Discord checks localized texts like the texts themselves: known locale codes, 1–100 characters."""
    command = {"name": "ping", "description": "Ping", "type": 1, "options": [
        {"name": "style", "description": "A style", "type": 3,
         "description_localizations": {"ja": "スタイル" * 30}}]}  # fmt: skip
    for bad in (
        {**command, "description_localizations": {"jp": "ピン"}},  # not a Discord locale code
        command,  # an option's localized description over 100 characters
        {**command, "options": [], "name_localizations": {"de": "Ping Pong"}},  # a space in a slash command name
    ):
        with pytest.raises(discord.HTTPException) as refused:
            await bot.http.bulk_upsert_global_commands(bot.application_id, payload=[bad])
        assert refused.value.status == 400 and refused.value.code == 50035
    ok = {**command, "options": [], "description_localizations": {"ja": "ピン", "pt-BR": "Pingue"}}
    assert await bot.http.bulk_upsert_global_commands(bot.application_id, payload=[ok])

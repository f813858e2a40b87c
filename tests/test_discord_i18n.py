"""The bot in the member's language, end to end through the loopback Discord: commands synced with their
localized texts, and `/video`, `/quota`, a refusal and an admin command answered in Chinese, Japanese and
Brazilian Portuguese; public messages in the server's chosen language; the log channel in the server's locale.

Expected texts are the catalogue's, filled as the bot fills them; each is also checked to differ from English,
so a path that forgot the member's language fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.discord.log_channel import audit_line
from bot.discord.messages import ENGLISH, describe
from bot.errors import BlockedWord, UnknownModel
from bot.i18n import Texts, texts_for
from bot.providers.registry import ProviderRegistry
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ADMIN_ID, GUILD_ID, FakeDiscord
from tests.fakes.scripted_provider import ScriptedProvider

LOCALES = ["zh-CN", "ja", "pt-BR"]
CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def in_language(text: str, locale: str, english: str) -> None:
    """`text` is not the English one, and a Chinese or Japanese text is written in its script."""
    assert text != english, f"{locale}: still English: {text!r}"
    if locale in ("zh-CN", "ja"):
        assert CJK.search(text), f"{locale}: no Chinese or Japanese characters in {text!r}"


def queued_line(tr: Texts, content: str) -> str:
    """The status message's first line as `tr` writes a job first in line (with its ready time, if shown)."""
    ready = re.search(r"<t:\d+:R>", content.splitlines()[0])
    if ready is None:
        return tr("status.queued.position", position=1)
    return tr("status.queued.position-eta", position=1, ready_at=ready.group(0))


def command(fake: FakeDiscord, name: str) -> dict[str, Any]:
    return next(c for c in fake.global_commands if c["name"] == name)


async def answer_of(h: Harness, path: str, options: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    rec = await h.fake.slash(path, options, **kwargs)
    callback = await rec.wait_callback()
    if callback.type == 5:
        message = await rec.wait_followup() if callback.ephemeral else await rec.wait_original()
        return {"content": message.content, "embeds": message.embeds, "ephemeral": callback.ephemeral}
    return {**callback.data, "ephemeral": callback.ephemeral}


async def test_commands_carry_their_localized_texts_and_names_stay_english(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        video = command(h.fake, "video")
        for discord_locale, language in [("zh-CN", "zh_CN"), ("ja", "ja"), ("ko", "ko"), ("pt-BR", "pt_BR"),
                                          ("es-ES", "es"), ("es-419", "es"), ("de", "de"), ("fr", "fr")]:  # fmt: skip
            tr = texts_for(language)
            assert video["description_localizations"][discord_locale] == tr("cmd.video.description")
            prompt = next(o for o in video["options"] if o["name"] == "prompt")
            assert prompt["description_localizations"][discord_locale] == tr("cmd.video.prompt")
        # English is the command's own text; a locale with no catalogue of its own gets it from Discord.
        assert not {"en-US", "en-GB", "it", "zh-TW"} & set(video["description_localizations"])
        assert video["description"] == ENGLISH("cmd.video.description")
        assert not video.get("name_localizations") and all(not o.get("name_localizations") for o in video["options"])
        admin = command(h.fake, "videoadmin")
        settings = next(o for o in admin["options"] if o["name"] == "settings")
        clear = next(o for o in settings["options"] if o["name"] == "clear")
        assert [c["name_localizations"]["ja"] for c in clear["choices"]] == [
            texts_for("ja")("cmd.choice.admin-role"), texts_for("ja")("cmd.choice.log-channel")]  # fmt: skip
        animate = next(c for c in h.fake.global_commands if c["type"] == 3)
        assert animate["name"] == "Animate"
        assert animate["name_localizations"]["de"] == texts_for("de")("cmd.animate.name")


async def test_a_changed_translation_syncs_the_commands_again(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        assert not await h.bot.sync_commands_if_changed(), "nothing changed since start"
        japanese = texts_for("ja")
        catalogue = japanese._own._catalog  # type: ignore[attr-defined]
        before = catalogue["cmd.video.description"]
        catalogue["cmd.video.description"] = "動画を作ります(改)"
        try:
            assert await h.bot.sync_commands_if_changed()
            assert command(h.fake, "video")["description_localizations"]["ja"] == "動画を作ります(改)"
        finally:
            catalogue["cmd.video.description"] = before


@pytest.mark.parametrize("locale", LOCALES)
async def test_video_quota_a_refusal_and_an_admin_command_answer_in_the_members_language(
    tmp_path: Path, locale: str
) -> None:
    tr = texts_for(locale)
    registry = ProviderRegistry([ScriptedProvider()])
    async with running_bot(tmp_path, with_worker=False, registry=registry) as h:
        video = await answer_of(h, "video", {"prompt": "a red fox in snow", "duration": 2}, locale=locale)
        assert not video["ephemeral"], video
        first_line = video["content"].splitlines()[0]
        assert first_line == queued_line(tr, first_line)
        in_language(first_line, locale, queued_line(ENGLISH, first_line))
        assert video["components"][0]["components"][0]["label"] == tr("button.cancel")

        quota = (await answer_of(h, "quota", {}, locale=locale))["embeds"][0]
        assert quota["title"] == tr("quota.title")
        names = [field["name"] for field in quota["fields"]]
        assert names == [tr(f"quota.field.{name}") for name in ("used", "reserved", "left", "resets", "queued",
                                                                "running")]  # fmt: skip
        in_language(quota["title"], locale, ENGLISH("quota.title"))

        refused = await answer_of(h, "video", {"prompt": "a fox", "model": "nope/none"}, locale=locale)
        assert refused["ephemeral"]
        said = describe(UnknownModel(model="nope/none"), tr)
        assert refused["content"] == said
        in_language(said, locale, describe(UnknownModel(model="nope/none")))

        paused = await answer_of(h, "videoadmin queue pause", {}, user=ADMIN_ID, locale=locale)
        assert paused["ephemeral"] and paused["content"] == tr("admin.queue.paused")
        in_language(paused["content"], locale, ENGLISH("admin.queue.paused"))


async def test_numbers_in_an_answer_are_written_the_locales_way(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await answer_of(h, "videoadmin quota default", {"credits": 12345}, user=ADMIN_ID)
        german = (await answer_of(h, "quota", {}, locale="de"))["embeds"][0]
        english = (await answer_of(h, "quota", {}, locale="en-US"))["embeds"][0]
        left = {e: next(f["value"] for f in embed["fields"] if f["name"] == tr("quota.field.left"))
                for e, embed, tr in (("de", german, texts_for("de")), ("en", english, ENGLISH))}  # fmt: skip
        assert left == {"de": "12.345", "en": "12,345"}


async def test_the_servers_language_decides_public_messages_not_the_members_own_answers(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        await answer_of(h, "videoadmin settings", {"language": "de"}, user=ADMIN_ID)
        video = await answer_of(h, "video", {"prompt": "a red fox in snow", "duration": 2}, locale="ja")
        first_line = video["content"].splitlines()[0]
        assert first_line == queued_line(texts_for("de"), first_line)
        quota = (await answer_of(h, "quota", {}, locale="ja"))["embeds"][0]
        assert quota["title"] == texts_for("ja")("quota.title"), "the member's own answer stays in their language"


async def test_the_log_channel_follows_the_servers_locale(tmp_path: Path) -> None:
    fake = FakeDiscord()
    log = fake.add_channel("mod-log").id
    fake.guilds[GUILD_ID].locale = "fr"
    await fake.start()
    try:
        async with running_bot(tmp_path, with_worker=False, fake=fake) as h:
            await answer_of(h, "videoadmin settings", {"log_channel": log}, user=ADMIN_ID, locale="ja")
            await answer_of(h, "videoadmin queue pause", {}, user=ADMIN_ID, locale="ja")
            entries = await h.app.admin.audit_entries(GUILD_ID, 10)
            french = [audit_line(entry, texts_for("fr")) for entry in reversed(entries)]
            posts = await h.fake.wait_for(
                lambda: [m.content for m in h.fake.messages(log)] if len(h.fake.messages(log)) >= 2 else None
            )
            assert [post.removeprefix("🛠️ ") for post in posts] == french
            assert french != [audit_line(entry, ENGLISH) for entry in reversed(entries)]

            # A refusal by a rule: the member is told in Japanese, the log channel in French.
            await answer_of(h, "videoadmin queue resume", {}, user=ADMIN_ID)
            await answer_of(h, "videoadmin blocklist add", {"pattern": "dragon"}, user=ADMIN_ID)
            refused = await answer_of(h, "video", {"prompt": "a red dragon", "duration": 2}, locale="ja")
            told = BlockedWord(option="prompt", word="dragon")
            assert refused["ephemeral"] and refused["content"] == describe(told, texts_for("ja"))
            logged = await h.fake.wait_for(
                lambda: next((m.content for m in h.fake.messages(log) if "dragon" in m.content and "<@" in m.content
                              and describe(told, texts_for("fr")) in m.content), None)
            )  # fmt: skip
            assert describe(told, texts_for("ja")) not in logged
    finally:
        await fake.close()

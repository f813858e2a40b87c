"""`/videoadmin …` through the loopback Discord: admins change what members can do; everyone else is refused
at run time, ephemerally, and nothing changes."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.clock import OffsetClock
from bot.domain import Requester
from bot.jobs.audit import MAX_AUDIT_LIMIT
from bot.jobs.stats import DEFAULT_DAYS, MAX_DAYS
from bot.providers.local import LocalPreviewProvider
from bot.providers.registry import ProviderRegistry
from cogs.admin.rules import DEFAULT_AUDIT_LIMIT
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ADMIN_ID, ALICE_ID, CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.fakes.discord.models import ADMIN_ROLE_ID, CallbackRecord
from tests.fakes.scripted_provider import ScriptedProvider

ALICE = Requester(guild_id=GUILD_ID, user_id=ALICE_ID)
MODS_ROLE_ID = 5000000000000000011
"""A role without any permission; alice has it in `with_mods_role`."""

ADMIN_COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("quota default", {"credits": 1}),
    ("quota role", {"role": ADMIN_ROLE_ID, "credits": 1}),
    ("quota user", {"user": ALICE_ID, "unlimited": True}),
    ("quota grant", {"user": ALICE_ID, "credits": 5}),
    ("quota reset", {"user": ALICE_ID}),
    ("quota show", {"user": ALICE_ID}),
    ("user block", {"user": ALICE_ID}),
    ("user unblock", {"user": ALICE_ID}),
    ("queue pause", {}),
    ("queue resume", {}),
    ("queue clear", {}),
    ("model enable", {"model": "local/preview"}),
    ("model disable", {"model": "local/preview"}),
    ("model default", {"model": "local/preview"}),
    ("model list", {}),
    ("settings", {"admin_role": ADMIN_ROLE_ID}),
    # server rules and the audit trail (issue 10)
    ("blocklist add", {"pattern": "bad"}),
    ("blocklist remove", {"pattern": "bad"}),
    ("blocklist list", {}),
    ("channel allow", {"channel": CHANNEL_ID}),
    ("channel remove", {"channel": CHANNEL_ID}),
    ("channel list", {}),
    ("audit", {"limit": 5}),
    ("stats", {"days": 7}),
]


async def run(h: Harness, command: str, options: dict[str, Any] | None = None, **kwargs: Any) -> CallbackRecord:
    rec = await h.fake.slash(command, options or {}, **kwargs)
    return await rec.wait_callback()


async def admin(h: Harness, path: str, options: dict[str, Any] | None = None, **kwargs: Any) -> str:
    """Run `/videoadmin <path>` as the admin; return the ephemeral answer's text (content or embed)."""
    callback = await run(h, f"videoadmin {path}", options, user=kwargs.pop("user", ADMIN_ID), **kwargs)
    assert callback.type == 4 and callback.ephemeral, callback
    assert callback.message is not None and not callback.message.pinged_user_ids
    assert not callback.message.pinged_role_ids and not callback.message.mention_everyone
    embeds = callback.data.get("embeds") or []
    return callback.data.get("content") or "\n".join(str(e) for e in embeds)


async def video(h: Harness, duration: int = 2, **options: Any) -> CallbackRecord:
    return await run(h, "video", {"prompt": "a red fox in snow", "duration": duration, **options})


def refused(callback: CallbackRecord) -> str:
    assert callback.type == 4 and callback.ephemeral, f"expected an ephemeral refusal: {callback.data}"
    return str(callback.data["content"])


def accepted(callback: CallbackRecord) -> None:
    assert not callback.ephemeral, f"/video was refused: {callback.data}"


def dump(h: Harness) -> list[str]:
    """Every row of the database, to prove a refused command changed nothing."""
    path = h.settings.database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [line for line in db.iterdump() if "discord.commands_hash" not in line]


@contextlib.asynccontextmanager
async def with_mods_role(tmp_path: Path, **options: Any) -> AsyncIterator[Harness]:
    """The default world plus a permission-less "Video Mods" role that alice has (roles must exist when the
    bot connects, for discord.py's cache)."""
    clock = OffsetClock()
    fake = FakeDiscord(clock=clock)
    fake.add_role("Video Mods", 0, id=MODS_ROLE_ID)
    fake.guilds[GUILD_ID].members[ALICE_ID].roles.append(MODS_ROLE_ID)
    await fake.start()
    try:
        async with running_bot(tmp_path, clock=clock, fake=fake, **options) as h:
            yield h
    finally:
        await fake.close()


# --- the command tree ---------------------------------------------------------------------------------


async def test_videoadmin_tree_is_registered_as_documented(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        (command,) = [c for c in h.fake.global_commands if c["name"] == "videoadmin"]
        assert command["default_member_permissions"] == "32" and command["contexts"] == [0]
        paths = {}
        for option in command["options"]:
            children = [o for o in option.get("options", []) if o["type"] == 1] if option["type"] == 2 else []
            for sub in children or [option]:
                path = f"{option['name']} {sub['name']}" if children else option["name"]
                paths[path] = [o["name"] for o in sub.get("options", [])]
        assert set(paths) == {path for path, _ in ADMIN_COMMANDS}
        assert paths["quota default"] == ["credits", "period", "max_queued", "max_running"]
        assert paths["quota role"] == ["role", "credits", "max_queued", "max_running", "clear"]
        assert paths["quota user"] == ["user", "credits", "unlimited", "max_queued", "max_running", "clear"]
        assert paths["quota grant"] == ["user", "credits"]
        assert paths["settings"] == ["admin_role", "log_channel", "monthly_budget", "language", "clear"]
        assert paths["blocklist add"] == ["pattern"] and paths["channel allow"] == ["channel"]
        assert paths["audit"] == ["limit"]

        options = {o["name"]: o for o in command["options"]}
        quota_default = {o["name"]: o for o in options["quota"]["options"]}["default"]
        period = {o["name"]: o for o in quota_default["options"]}["period"]
        periods = ("hour", "day", "week", "month")
        assert [(c["name"], c["value"]) for c in period["choices"]] == [(p, p) for p in periods]
        settings = {o["name"]: o for o in options["settings"]["options"]}
        assert [c["name"] for c in settings["clear"]["choices"]] == ["admin role", "log channel"]
        # The catalogue states these defaults and maxima in words: they must say what the code does.
        audit_limit = options["audit"]["options"][0]["description"]
        assert f"default {DEFAULT_AUDIT_LIMIT}, at most {MAX_AUDIT_LIMIT}" in audit_limit
        assert f"default {DEFAULT_DAYS}, at most {MAX_DAYS}" in options["stats"]["options"][0]["description"]


# --- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "options"), ADMIN_COMMANDS, ids=[path for path, _ in ADMIN_COMMANDS])
async def test_plain_members_are_refused_every_admin_command(
    tmp_path: Path, path: str, options: dict[str, Any]
) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        accepted(await video(h))  # something for `queue clear` to cancel
        await h.app.admin.block(GUILD_ID, ALICE_ID)  # something for `user unblock` to undo
        before = dump(h)
        message = refused(await run(h, f"videoadmin {path}", options, user=ALICE_ID))
        assert "Manage Server" in message
        assert dump(h) == before


async def test_model_autocomplete_lists_configured_models_to_admins_only(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        options = {"model": "prev"}
        rec = await h.fake.autocomplete("videoadmin model enable", options, "model", user=ADMIN_ID)
        await rec.wait_callback()
        assert [c["value"] for c in rec.choices] == ["local/preview"]
        rec = await h.fake.autocomplete("videoadmin model enable", options, "model", user=ALICE_ID)
        await rec.wait_callback()
        assert rec.choices == []


# --- what admins change -------------------------------------------------------------------------------


async def test_default_credits_refuse_a_video_until_a_grant(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        text = await admin(h, "quota default", {"credits": 4})
        assert text == "Default quota is now 4 credits per day, 3 queued, 1 running."

        assert "credits" in refused(await video(h, duration=5))
        assert await h.store.unfinished_jobs() == []
        usage = await h.app.jobs.usage(ALICE)
        assert (usage.used, usage.reserved, usage.left) == (0, 0, 4)

        text = await admin(h, "quota grant", {"user": ALICE_ID, "credits": 1})
        assert f"<@{ALICE_ID}>" in text and "5 credits left" in text
        accepted(await video(h, duration=5))

        text = await admin(h, "quota reset", {"user": ALICE_ID})
        assert "back to zero" in text and "5 credits left" in text

        assert "Nothing to change" in await admin(h, "quota default")
        text = await admin(h, "quota default", {"period": "week", "max_queued": 5})
        assert text == "Default quota is now 4 credits per week, 5 queued, 1 running."


async def test_role_and_user_quotas_and_show(tmp_path: Path) -> None:
    async with with_mods_role(tmp_path, with_worker=False) as h:
        text = await admin(h, "quota role", {"role": MODS_ROLE_ID, "credits": 100, "max_queued": 5})
        assert f"<@&{MODS_ROLE_ID}>" in text and "100 credits, 5 queued" in text
        text = await admin(h, "quota user", {"user": ALICE_ID, "unlimited": True})
        assert "unlimited credits" in text

        shown = await admin(h, "quota show", {"user": ALICE_ID})
        for name in ("Used", "Reserved", "Left", "Resets", "Queued", "Running", "Override", "Blocked"):
            assert f"'name': '{name}'" in shown
        assert "'value': 'unlimited'" in shown and "'value': '0 / 5'" in shown

        assert "not both" in await admin(h, "quota user", {"user": ALICE_ID, "clear": True, "credits": 3})
        assert "Dropped" in await admin(h, "quota user", {"user": ALICE_ID, "clear": True})
        shown = await admin(h, "quota show", {"user": ALICE_ID})
        assert "'name': 'Left', 'value': '100'" in shown and "'name': 'Override', 'value': 'none'" in shown

        assert "Removed" in await admin(h, "quota role", {"role": MODS_ROLE_ID, "clear": True})
        assert "'name': 'Left', 'value': '60'" in await admin(h, "quota show", {"user": ALICE_ID})


async def test_block_refuses_videos_until_unblocked(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        assert "blocked" in await admin(h, "user block", {"user": ALICE_ID})
        assert "blocked" in refused(await video(h))
        assert await h.store.unfinished_jobs() == []
        shown = await admin(h, "quota show", {"user": ALICE_ID})
        assert "'name': 'Blocked', 'value': 'yes'" in shown
        assert "no longer blocked" in await admin(h, "user unblock", {"user": ALICE_ID})
        accepted(await video(h))


async def test_pause_refuses_and_clear_refunds_waiting_jobs(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        accepted(await video(h))
        accepted(await video(h, duration=3))
        assert "paused" in await admin(h, "queue pause")
        assert "paused" in refused(await video(h))

        text = await admin(h, "queue clear")
        assert text.startswith("Cancelled 2 waiting videos and refunded 5 credits")
        assert await h.store.unfinished_jobs() == []
        usage = await h.app.jobs.usage(ALICE)
        assert (usage.used, usage.reserved, usage.left) == (0, 0, 60)
        assert "nothing was cancelled" in await admin(h, "queue clear")

        assert "running again" in await admin(h, "queue resume")
        accepted(await video(h))


async def test_model_disable_refuses_it_and_default_switches(tmp_path: Path) -> None:
    registry = ProviderRegistry([ScriptedProvider(), LocalPreviewProvider(tmp_path / "renders")])
    async with running_bot(tmp_path, registry=registry, with_worker=False) as h:
        text = await admin(h, "model disable", {"model": "fake/video"})
        assert "`fake/video` is disabled" in text and "/videoadmin model default" in text
        assert "disabled" in refused(await video(h, model="fake/video"))

        listing = await admin(h, "model list")
        assert "🚫 `fake/video`" in listing and "**disabled**" in listing
        assert "✅ `local/preview`" in listing

        assert "default model" in await admin(h, "model default", {"model": "local/preview"})
        assert "⭐ default" in (await admin(h, "model list")).split("local/preview")[1]
        accepted(await video(h))  # no model given: the server's default
        assert (await h.only_job()).model == "local/preview"

        assert "Unknown model" in await admin(h, "model enable", {"model": "nope/nothing"})
        assert "enabled" in await admin(h, "model enable", {"model": "fake/video"})
        accepted(await video(h, model="fake/video"))


async def test_admin_role_makes_its_members_admins(tmp_path: Path) -> None:
    async with with_mods_role(tmp_path, with_worker=False) as h:
        assert "Manage Server" in refused(await run(h, "videoadmin queue pause", user=ALICE_ID))
        assert "Admin role: none" in await admin(h, "settings")

        text = await admin(h, "settings", {"admin_role": MODS_ROLE_ID})
        assert f"<@&{MODS_ROLE_ID}>" in text and "count as video admins" in text

        assert "paused" in await admin(h, "queue pause", user=ALICE_ID)
        assert (await h.store.guild_settings(GUILD_ID)).paused
        assert f"Admin role: <@&{MODS_ROLE_ID}>" in await admin(h, "settings", user=ALICE_ID)


async def test_the_language_setting_offers_the_languages_the_bot_speaks(tmp_path: Path) -> None:
    async with running_bot(tmp_path, with_worker=False) as h:
        assert "`ja`" in await admin(h, "settings", {"language": "ja"})
        assert (await h.store.guild_settings(GUILD_ID)).language == "ja"

        said = await admin(h, "settings", {"language": "it"})
        assert "I do not know the language `it`" in said
        assert "`en-US`, `zh-CN`, `ja`, `ko`, `pt-BR`, `es-ES`, `de`, `fr`" in said, "the eight, in Discord's spelling"
        assert (await h.store.guild_settings(GUILD_ID)).language == "ja", "a refused language changes nothing"

        # Any case, `-` or `_`; a catalogue's code names its Discord locale; Discord's other spellings as typed.
        for typed, stored in [("ZH_cn", "zh-CN"), ("es", "es-ES"), ("es_419", "es-419"), ("EN-gb", "en-GB"),
                              ("auto", None)]:  # fmt: skip
            await admin(h, "settings", {"language": typed})
            assert (await h.store.guild_settings(GUILD_ID)).language == stored, typed

        async def offered(typed: str) -> list[tuple[str, str]]:
            rec = await h.fake.autocomplete("videoadmin settings", {"language": typed}, "language", user=ADMIN_ID)
            await rec.wait_callback()
            return [(c["name"], c["value"]) for c in rec.choices]

        everything = await offered("")
        assert [value for _, value in everything] == ["auto", "en-US", "zh-CN", "ja", "ko", "pt-BR", "es-ES", "de",
                                                      "fr", "en-GB", "es-419"]  # fmt: skip
        assert ("日本語 (ja)", "ja") in everything and ("Deutsch (de)", "de") in everything
        assert await offered("japan") == [("日本語 (ja)", "ja")], "found by its English name too"
        assert await offered("deutsch") == [("Deutsch (de)", "de")]

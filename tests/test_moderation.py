"""Server rules (issue 10): the prompt blocklist, matched after Unicode normalisation so look-alike letters and
zero-width characters do not slip past; regexes whose cost is bounded when they are added; allowed channels and
their threads. The rules alone, then through enqueue on both stores, then the real bot against the loopback
Discord: every refusal by rule is ephemeral, names the rule (never a regex's text) and costs nothing."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.clock import FakeClock, OffsetClock
from bot.discord.messages import describe
from bot.domain import GuildSettings, QuotaLimits, Requester, VideoRequest
from bot.errors import (
    BlockedPattern,
    BlockedWord,
    ChannelNotAllowed,
    EmptyPattern,
    InvalidRegex,
    PatternAlreadyListed,
    PatternTooLong,
    RegexBackreference,
    RegexNestedQuantifier,
    RegexRepeatTooLarge,
    RegexTooSlow,
    TooManyRegexes,
)
from bot.jobs import moderation
from bot.jobs.admin import AdminService
from bot.jobs.moderation import check_blocklist, check_channel, normalize, parse_pattern, vet_pattern
from bot.jobs.service import JobService
from bot.store.base import Store
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ADMIN_ID, ALICE_ID, CHANNEL_ID, GUILD_ID, THREAD_ID, FakeDiscord
from tests.fakes.discord.models import CallbackRecord
from tests.test_input_safety import INVISIBLE, modal_input, png_bytes

ALICE = Requester(GUILD_ID, ALICE_ID)
HIDDEN = {name: char for name, char in INVISIBLE.items() if not char.isspace()}
"""Characters that render as nothing and are no space: inside a word they must not break it."""
LOOKALIKES = {
    "cyrillic a": "bаd",
    "greek and cyrillic capitals": "ΒАD",
    "fullwidth": "ｂａｄ",
    "mathematical bold": "𝐛𝐚𝐝",
    "mathematical fraktur": "𝖇𝖆𝖉",
    "circled": "ⓑⓐⓓ",
    "small capitals": "ʙᴀᴅ",
    "superscript": "ᵇᵃᵈ",
    "upper case": "BAD",
    "accents": "b\u0301ä\u0323d",
}


def request(prompt: str, negative: str | None = None) -> VideoRequest:
    return VideoRequest(prompt=prompt, model="fake/video", duration=2, negative_prompt=negative)


def refusal(blocklist: tuple[str, ...], prompt: str, negative: str | None = None) -> Exception | None:
    try:
        check_blocklist(blocklist, request(prompt, negative))
    except (BlockedWord, BlockedPattern) as refused:
        return refused
    return None


# --- normalisation and matching ---------------------------------------------------------------------------


@pytest.mark.parametrize("char", HIDDEN.values(), ids=HIDDEN.keys())
def test_an_invisible_character_inside_a_blocked_word_does_not_hide_it(char: str) -> None:
    refused = refusal(("bad",), f"a b{char}a{char}d idea")
    assert isinstance(refused, BlockedWord) and refused.word == "bad" and refused.option == "prompt"


@pytest.mark.parametrize("word", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_look_alike_letters_do_not_hide_a_blocked_word(word: str) -> None:
    assert normalize(word) == "bad"
    assert isinstance(refusal(("bad",), f"a {word} idea"), BlockedWord)


def test_patterns_are_normalised_like_prompts() -> None:
    assert isinstance(refusal(("ＢＡ\u200bD",), "so bad"), BlockedWord), "an admin's own look-alikes match too"
    assert isinstance(refusal(("red  fox",), "a RED\u200b \u3000 fox jumps"), BlockedWord), "spaces are one space"


@pytest.mark.parametrize("prompt", ["badge of honour", "a sinbad tale", "bad_guy", "b a d", "b-a-d"])
def test_a_word_matches_whole_words_only(prompt: str) -> None:
    assert refusal(("bad",), prompt) is None


def test_words_of_unspaced_scripts_match_inside_text() -> None:
    assert isinstance(refusal(("暴力",), "一个暴力的场景"), BlockedWord)
    assert refusal(("暴力",), "一个和平的场景") is None


def test_the_negative_prompt_is_checked_too() -> None:
    refused = refusal(("gore",), "a calm lake", negative="no g\u200bore please")
    assert isinstance(refused, BlockedWord) and refused.option == "negative_prompt"


def test_a_regex_is_named_by_its_number_not_its_text() -> None:
    refused = refusal(("cat", r"/\bdrag(on|ons)\b/"), "two DRAGONS fly")
    assert isinstance(refused, BlockedPattern) and refused.rule == 2
    said = describe(refused)
    assert "rule #2" in said and "drag" not in said and "/" not in said.replace("`", "")


def test_the_member_is_told_the_word_as_the_admin_typed_it() -> None:
    refused = refusal(("Bad Idea",), "what a bad idea")
    assert isinstance(refused, BlockedWord)
    assert describe(refused).startswith("`prompt` contains `Bad Idea`, which this server's blocklist refuses")


def test_a_stored_pattern_that_no_longer_parses_is_skipped_not_fatal() -> None:
    assert refusal(("/[/", "bad"), "so bad") is not None
    assert refusal(("/[/",), "anything") is None


# --- patterns an admin adds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("/(a+)+$/", RegexNestedQuantifier),
        ("/(a*b?)*c/", RegexNestedQuantifier),
        ("/(?:x|(?:ab)+)*/", RegexNestedQuantifier),
        ("/(a)\\1/", RegexBackreference),
        ("/(?P<x>a)(?P=x)/", RegexBackreference),
        ("/(a)?(?(1)b|c)/", RegexBackreference),
        ("/a{5000}/", RegexRepeatTooLarge),
        ("/a{1001,}/", RegexRepeatTooLarge),
        ("/[/", InvalidRegex),
        ("/(unclosed/", InvalidRegex),
        ("\u200b \u2060", EmptyPattern),
        ("x" * 201, PatternTooLong),
    ],
)
async def test_patterns_refused_without_running_them(pattern: str, error: type[Exception]) -> None:
    started = time.monotonic()
    with pytest.raises(error):
        await vet_pattern(pattern)
    assert time.monotonic() - started < 1.0, "refused by reading it, not by a trial"


@pytest.mark.parametrize("pattern", ["/(a|aa)+$/", "/\\d*\\d*\\d*x/", "/.*.*=.*;/", "/(x|xx)*z/"])
async def test_a_catastrophic_regex_that_reads_fine_fails_its_trial(pattern: str) -> None:
    parse_pattern(pattern)  # passes the syntax checks
    with pytest.raises(RegexTooSlow):
        await vet_pattern(pattern)


async def test_a_runaway_trial_is_killed_at_its_wall_clock_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the CPU alarm (budget far away), only the kill stops `(a|aa)+$` on a long prompt."""
    monkeypatch.setattr(moderation, "TRIAL_MATCH_SECONDS", 600.0)
    monkeypatch.setattr(moderation, "TRIAL_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(RegexTooSlow):
        await vet_pattern("/(a|aa)+$/")
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("pattern", ["/\\bdrag(on|ons)?\\b/", "/^a cat/", "/[0-9]{3}-[0-9]{4}/", "  red fox  "])
async def test_ordinary_patterns_pass(pattern: str) -> None:
    assert await vet_pattern(pattern) == pattern.strip()


def test_trial_prompts_are_made_of_the_regexs_own_characters() -> None:
    prompts = moderation.trial_prompts("(x|xy)*z", length=20)
    assert "x" * 20 in prompts and "x" * 19 + "\x00" in prompts and "xy" * 9 + "\x00" in prompts
    assert all(len(p) <= 20 for p in prompts)


# --- channels -----------------------------------------------------------------------------------------------


def test_allowed_channels_cover_their_threads() -> None:
    settings = GuildSettings(GUILD_ID, allowed_channels=frozenset({10, 20}))
    check_channel(settings, Requester(GUILD_ID, ALICE_ID, channel_id=10))
    check_channel(settings, Requester(GUILD_ID, ALICE_ID, channel_id=99, parent_channel_id=20))
    with pytest.raises(ChannelNotAllowed) as refused:
        check_channel(settings, Requester(GUILD_ID, ALICE_ID, channel_id=30, parent_channel_id=31))
    assert refused.value.allowed == (10, 20)
    check_channel(GuildSettings(GUILD_ID), Requester(GUILD_ID, ALICE_ID, channel_id=30))  # none listed: all allowed


# --- through enqueue, on both stores -------------------------------------------------------------------------


async def test_a_refusal_by_rule_charges_nothing(store: Store, service: JobService, clock: FakeClock) -> None:
    admin = AdminService(store, service, clock)
    await admin.add_blocked_pattern(GUILD_ID, "bad", by=ADMIN_ID)
    await admin.add_blocked_pattern(GUILD_ID, "/sec+ret/", by=ADMIN_ID)
    await admin.allow_channel(GUILD_ID, 10, by=ADMIN_ID)
    here = Requester(GUILD_ID, ALICE_ID, channel_id=10)
    for who, prompt, error in [
        (here, "a bаd dog", BlockedWord),
        (here, "a SECCRET", BlockedPattern),
        (Requester(GUILD_ID, ALICE_ID, channel_id=11), "a good dog", ChannelNotAllowed),
    ]:
        with pytest.raises(error):
            await service.enqueue(who, request(prompt))
    assert await store.member_jobs(GUILD_ID, ALICE_ID, include_finished=True) == []
    usage = await service.usage(ALICE)
    assert (usage.used, usage.reserved, usage.left) == (0, 0, 60)
    job = await service.enqueue(Requester(GUILD_ID, ALICE_ID, channel_id=12, parent_channel_id=10), request("a dog"))
    assert job.credits == 2


async def test_blocklist_limits_and_duplicates(store: Store, service: JobService, clock: FakeClock) -> None:
    admin = AdminService(store, service, clock)
    await admin.add_blocked_pattern(GUILD_ID, "Bad")
    with pytest.raises(PatternAlreadyListed) as listed:
        await admin.add_blocked_pattern(GUILD_ID, "b\u200bad")
    assert listed.value.pattern == "Bad"
    for n in range(moderation.MAX_REGEXES):
        await admin.add_blocked_pattern(GUILD_ID, f"/^word{n}/")
    with pytest.raises(TooManyRegexes):
        await admin.add_blocked_pattern(GUILD_ID, "/^one more/")
    assert await admin.remove_blocked_pattern(GUILD_ID, "BAD") == "Bad"
    assert len(await admin.blocklist(GUILD_ID)) == moderation.MAX_REGEXES


# --- through the real bot -----------------------------------------------------------------------------------


async def run(h: Harness, command: str, options: dict[str, Any] | None = None, **kwargs: Any) -> CallbackRecord:
    return await (await h.fake.slash(command, options or {}, **kwargs)).wait_callback()


async def admin_says(h: Harness, path: str, options: dict[str, Any] | None = None) -> str:
    """`/videoadmin <path>` as the admin: the ephemeral answer, at once or after a private defer."""
    rec = await h.fake.slash(f"videoadmin {path}", options or {}, user=ADMIN_ID)
    callback = await rec.wait_callback()
    assert callback.ephemeral, callback
    if callback.type == 5:
        message = await rec.wait_followup()
        assert message.ephemeral and not message.pinged_user_ids
        return message.content
    embeds = callback.data.get("embeds") or []
    return str(callback.data.get("content") or "\n".join(str(e) for e in embeds))


def refused(callback: CallbackRecord) -> str:
    assert callback.type == 4 and callback.ephemeral, f"expected an ephemeral refusal: {callback.data}"
    return str(callback.data["content"])


async def nothing_charged(h: Harness) -> None:
    assert await h.jobs_of() == []
    usage = await h.app.jobs.usage(ALICE)
    assert (usage.used, usage.reserved, usage.left) == (0, 0, 60)


@contextlib.asynccontextmanager
async def world_with_channels(tmp_path: Path) -> AsyncIterator[tuple[Harness, int, int, int]]:
    """The default world plus #art with a thread, and #mod-log (channels exist before the bot connects)."""
    clock = OffsetClock()
    fake = FakeDiscord(clock=clock)
    art = fake.add_channel("art").id
    art_thread = fake.add_channel("art-thread", type=11, parent_id=art).id
    log = fake.add_channel("mod-log").id
    await fake.start()
    try:
        async with running_bot(tmp_path, clock=clock, fake=fake, with_worker=False) as h:
            yield h, art, art_thread, log
    finally:
        await fake.close()


async def test_blocklist_through_discord(tmp_path: Path) -> None:
    async with world_with_channels(tmp_path) as (h, _, _, log):
        assert "Added the word or phrase `bad`" in await admin_says(h, "blocklist add", {"pattern": "bad"})
        assert "Added the regex" in await admin_says(h, "blocklist add", {"pattern": "/ha(ck|x)ed/"})
        said = await admin_says(h, "blocklist add", {"pattern": "/(a+)+$/"})
        assert "repeats a group that repeats itself" in said
        said = await admin_says(h, "blocklist add", {"pattern": "/(a|aa)+$/"})
        assert "took too long on a trial" in said
        listing = await admin_says(h, "blocklist list")
        assert "1. `bad`" in listing and "2. `/ha(ck|x)ed/` (regex)" in listing and "a+" not in listing
        await admin_says(h, "settings", {"log_channel": log})

        for prompt, told in [
            ("a b\u200dаd idea", "`prompt` contains `bad`"),
            ("ｂａｄ weather", "`prompt` contains `bad`"),
            ("we got HAXED", "matches rule #2"),
        ]:
            text = refused(await run(h, "video", {"prompt": prompt, "duration": 2}))
            assert told in text and "ha(ck" not in text, text
        await nothing_charged(h)

        def refusal_posts() -> list[Any]:
            return [m for m in h.fake.messages(log) if "refused by a rule" in m.content]

        posts = await h.fake.wait_for(lambda: refusal_posts() if len(refusal_posts()) == 3 else None)
        assert all(f"<@{ALICE_ID}>" in m.content and not m.pinged_user_ids for m in posts)
        assert "a b\u200dаd idea" not in posts[0].content, "the member's prompt is not posted"

        assert "Removed `bad`" in await admin_says(h, "blocklist remove", {"pattern": "BAD"})
        assert not (await run(h, "video", {"prompt": "a bad idea", "duration": 2})).ephemeral


async def test_allowed_channels_through_discord(tmp_path: Path) -> None:
    async with world_with_channels(tmp_path) as (h, art, art_thread, _):
        await h.app.admin.set_default_quota(GUILD_ID, QuotaLimits(max_queued=10))
        said = await admin_says(h, "channel allow", {"channel": art})
        assert f"<#{art}> is allowed" in said

        for channel in (CHANNEL_ID, THREAD_ID):  # #general and its thread
            text = refused(await run(h, "video", {"prompt": "a fox", "duration": 2}, channel=channel))
            assert f"only in <#{art}>" in text
        picture = await h.fake.user_message("look", channel=CHANNEL_ID)
        picture.attachments.append(h.fake.upload_attachment("leaf.png", png_bytes(32, 32), "image/png"))
        text = refused(await (await h.fake.message_command("Animate", picture)).wait_callback())
        assert f"only in <#{art}>" in text, "refused before the modal opens"
        await nothing_charged(h)
        counted = await h.store.refusals_by_rule(GUILD_ID, 0.0, 1e12)  # type: ignore[attr-defined]
        assert counted == {"channel": 3}, "the two /video and the Animate refusal count in the stats"

        assert not (await run(h, "video", {"prompt": "a fox", "duration": 2}, channel=art)).ephemeral
        assert not (await run(h, "video", {"prompt": "a fox", "duration": 2}, channel=art_thread)).ephemeral
        in_art = await h.fake.user_message("look", channel=art)
        in_art.attachments.append(h.fake.upload_attachment("leaf.png", png_bytes(32, 32), "image/png"))
        modal = await (await h.fake.message_command("Animate", in_art)).wait_callback()
        assert modal.type == 9
        submitted = await h.fake.submit_modal(modal.data["custom_id"], {modal_input(modal): "make it sway"})
        await submitted.wait_original(lambda m: "Queued" in m.content)
        assert [j.channel_id for j in await h.jobs_of()] == [art, art_thread, art]

        assert "every channel again" in await admin_says(h, "channel remove", {"channel": art})
        assert not (await run(h, "video", {"prompt": "a fox", "duration": 2}, channel=CHANNEL_ID)).ephemeral

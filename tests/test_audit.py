"""The audit trail (issue 10): every admin change is recorded with who, when, what and the value before and
after; `/videoadmin audit` shows the latest; each entry is posted to the log channel, pinging nobody. The store on
both databases, the service's entries, then every admin command through the real bot and the loopback Discord."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.clock import FakeClock, OffsetClock
from bot.discord.log_channel import audit_line, audit_listing, describe_change
from bot.discord.messages import ENGLISH
from bot.domain import AuditDraft, AuditEntry, Job, JobState, JsonValue, QuotaLimits, Requester, VideoRequest
from bot.errors import (
    AdminRoleNeedsManageServer,
    BudgetOutOfRange,
    LastEnabledModel,
    NothingToChange,
    SetAndClear,
    UnknownLanguage,
    ZeroGrant,
)
from bot.i18n import texts_for
from bot.jobs.admin import AdminService
from bot.jobs.admin_settings import SettingsChange
from bot.jobs.service import JobService
from bot.providers.local import LocalPreviewProvider
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ADMIN_ID, ALICE_ID, CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.fakes.discord.models import ADMIN_ROLE_ID
from tests.fakes.scripted_provider import ScriptedProvider

ALICE = Requester(GUILD_ID, ALICE_ID)
MODS_ROLE_ID = 5000000000000000011


# --- the store, on both databases ---------------------------------------------------------------------------


async def test_entries_are_kept_and_read_newest_first(store: Store) -> None:
    first = await store.add_audit_entry(
        AuditEntry(GUILD_ID, ADMIN_ID, 100.0, "quota grant", "user", str(ALICE_ID),
                   before={"granted": 0, "left": 60}, after={"granted": 5, "left": 65})
    )  # fmt: skip
    second = await store.add_audit_entry(AuditEntry(GUILD_ID, None, 101.5, "queue pause", after={"paused": True}))
    await store.add_audit_entry(AuditEntry(GUILD_ID + 1, ADMIN_ID, 102.0, "queue resume"))
    assert first.id is not None and second.id is not None and second.id > first.id

    assert await store.audit_entries(GUILD_ID, limit=10) == [second, first]
    assert await store.audit_entries(GUILD_ID, limit=1) == [second]
    (read,) = await store.audit_entries(GUILD_ID + 1, limit=10)
    assert (read.action, read.actor_id, read.before, read.after, read.target_kind) == (
        "queue resume", ADMIN_ID, None, None, None,
    )  # fmt: skip
    big = await store.add_audit_entry(AuditEntry(GUILD_ID, 2**62, 103.0, "settings", before={"x": [1, "ü"]}))
    assert (await store.audit_entries(GUILD_ID, limit=1))[0] == big, "snowflakes and unicode survive"


# --- what the service records -------------------------------------------------------------------------------


def admin_service(store: Store, clock: FakeClock) -> AdminService:
    registry = ProviderRegistry([ScriptedProvider(), ScriptedProvider(name="other")])
    return AdminService(store, JobService(store, registry, clock), clock)


async def test_each_change_records_who_what_before_and_after(store: Store, clock: FakeClock) -> None:
    admin = admin_service(store, clock)
    clock.advance(1000)
    await admin.grant(ALICE, 5, by=ADMIN_ID)
    (entry,) = await admin.audit_entries(GUILD_ID)
    assert (entry.actor_id, entry.at, entry.action, entry.target_kind, entry.target) == (
        ADMIN_ID, clock.now(), "quota grant", "user", str(ALICE_ID),
    )  # fmt: skip
    assert (entry.before, entry.after) == ({"granted": 0, "left": 60}, {"granted": 5, "left": 65})

    await admin.set_default_model(GUILD_ID, "other/video", by=ADMIN_ID)
    await admin.set_model_enabled(GUILD_ID, "other/video", False, by=ADMIN_ID)
    latest = (await admin.audit_entries(GUILD_ID, 1))[0]
    assert latest.action == "model disable" and latest.target == "other/video"
    assert latest.before == {"default_model": "other/video", "disabled_models": []}
    assert latest.after == {"default_model": None, "disabled_models": ["other/video"]}, "the side effect too"

    await admin.set_user_quota(GUILD_ID, ALICE_ID, None, by=ADMIN_ID)
    assert (await admin.audit_entries(GUILD_ID, 1))[0].before is None
    await admin.change_settings(
        GUILD_ID, SettingsChange(monthly_budget=12.5, language="FR", log_channel_id=CHANNEL_ID),
        by_manage_server=False, by=ADMIN_ID,
    )  # fmt: skip
    latest = (await admin.audit_entries(GUILD_ID, 1))[0]
    assert latest.before == {"log_channel_id": None, "monthly_budget": None, "language": None}
    assert latest.after == {"log_channel_id": CHANNEL_ID, "monthly_budget": 12.5, "language": "fr"}
    await admin.change_settings(GUILD_ID, SettingsChange(monthly_budget=0, language="auto"), by_manage_server=True)
    latest = (await admin.audit_entries(GUILD_ID, 1))[0]
    assert latest.after == {"monthly_budget": None, "language": None} and latest.actor_id is None
    assert [e.action for e in await admin.audit_entries(GUILD_ID)] == [
        "settings", "settings", "quota user", "model disable", "model default", "quota grant",
    ]  # fmt: skip


async def test_a_refused_change_records_nothing(store: Store, clock: FakeClock) -> None:
    admin = admin_service(store, clock)
    await admin.set_model_enabled(GUILD_ID, "fake/video", False, by=ADMIN_ID)
    refusals = [
        (admin.grant(ALICE, 0, by=ADMIN_ID), ZeroGrant),
        (admin.set_model_enabled(GUILD_ID, "other/video", False, by=ADMIN_ID), LastEnabledModel),
        (admin.change_settings(GUILD_ID, SettingsChange(), by_manage_server=True), NothingToChange),
        (admin.change_settings(GUILD_ID, SettingsChange(monthly_budget=-1), by_manage_server=True), BudgetOutOfRange),
        (admin.change_settings(GUILD_ID, SettingsChange(language="xx"), by_manage_server=True), UnknownLanguage),
    ]
    for attempt, error in refusals:
        with pytest.raises(error):
            await attempt
    assert [e.action for e in await admin.audit_entries(GUILD_ID)] == ["model disable"]


async def test_a_failing_subscriber_does_not_fail_the_change(store: Store, clock: FakeClock) -> None:
    admin = admin_service(store, clock)
    told: list[str] = []

    async def broken(entry: AuditEntry) -> None:
        raise RuntimeError("the log channel is down")

    async def listening(entry: AuditEntry) -> None:
        told.append(entry.action)

    admin.audit.subscribe(broken)
    admin.audit.subscribe(listening)
    await admin.pause(GUILD_ID, by=ADMIN_ID)
    assert (await store.guild_settings(GUILD_ID)).paused
    assert told == ["queue pause"]


# --- how entries read ---------------------------------------------------------------------------------------


def test_lines_say_who_what_and_the_change_without_markup_from_values() -> None:
    entry = AuditEntry(GUILD_ID, ADMIN_ID, 1_700_000_000.0, "blocklist add", "pattern", "b`ad **x**",
                       before={"blocklist": ["a"]}, after={"blocklist": ["a", "b`ad **x**"]})  # fmt: skip
    said = f"<t:1700000000:f> <@{ADMIN_ID}> **blocklist add** `b'ad **x**`: blocklist +`b'ad **x**`"
    assert audit_line(entry, ENGLISH) == said, "a backtick cannot end the code span early"
    changes = [
        (({"credits": 60, "period": "day"}, {"credits": 100, "period": "day"}), "credits 60 → 100"),
        (({"paused": True}, {"paused": True}), "no change"),
        (({"credits": 5}, None), "credits 5 → none, cleared"),
        (({"monthly_budget": None}, {"monthly_budget": 20}), "monthly budget off → $20.00"),
        (({"admin_role_id": None}, {"admin_role_id": 7}), "admin role none → <@&7>"),
        (({"period": "day"}, {"period": "week"}), "period day → week"),
    ]
    for (before, after), said in changes:
        assert describe_change(before, after, ENGLISH) == said


def test_a_long_listing_says_how_many_more() -> None:
    entries = [AuditEntry(GUILD_ID, ADMIN_ID, 1.0, "queue pause", after={"paused": True}) for _ in range(100)]
    listing = audit_listing(entries, ENGLISH)
    assert len(listing) <= 4096 and listing.endswith("older entries.")
    shown = listing.count("queue pause")
    assert 0 < shown < 100 and f"… and {100 - shown} older entries." in listing


# --- every admin command through the real bot --------------------------------------------------------------

CHANGES: list[tuple[str, dict[str, Any], tuple[str | None, str | None]]] = [
    ("settings", {"monthly_budget": 40.0}, (None, None)),
    ("settings", {"language": "de"}, (None, None)),
    ("settings", {"admin_role": MODS_ROLE_ID}, (None, None)),
    ("quota default", {"credits": 50}, (None, None)),
    ("quota role", {"role": ADMIN_ROLE_ID, "credits": 100}, ("role", str(ADMIN_ROLE_ID))),
    ("quota grant", {"user": ALICE_ID, "credits": 5}, ("user", str(ALICE_ID))),
    ("quota reset", {"user": ALICE_ID}, ("user", str(ALICE_ID))),
    ("quota user", {"user": ALICE_ID, "unlimited": True}, ("user", str(ALICE_ID))),
    ("user block", {"user": ALICE_ID}, ("user", str(ALICE_ID))),
    ("user unblock", {"user": ALICE_ID}, ("user", str(ALICE_ID))),
    ("queue pause", {}, (None, None)),
    ("queue resume", {}, (None, None)),
    ("queue clear", {}, (None, None)),
    ("model disable", {"model": "fake/video"}, ("model", "fake/video")),
    ("model enable", {"model": "fake/video"}, ("model", "fake/video")),
    ("model default", {"model": "local/preview"}, ("model", "local/preview")),
    ("blocklist add", {"pattern": "bad"}, ("pattern", "bad")),
    ("blocklist remove", {"pattern": "bad"}, ("pattern", "bad")),
    ("channel allow", {"channel": CHANNEL_ID}, ("channel", str(CHANNEL_ID))),
    ("channel remove", {"channel": CHANNEL_ID}, ("channel", str(CHANNEL_ID))),
]
LOOKS = [("quota show", {"user": ALICE_ID}), ("model list", {}), ("blocklist list", {}), ("channel list", {}),
         ("settings", {}), ("audit", {})]  # fmt: skip


@contextlib.asynccontextmanager
async def admin_world(tmp_path: Path) -> AsyncIterator[tuple[Harness, int]]:
    """Two models, a permission-less role to name as the admin role, and #mod-log."""
    clock = OffsetClock()
    fake = FakeDiscord(clock=clock)
    fake.add_role("Video Mods", 0, id=MODS_ROLE_ID)
    log = fake.add_channel("mod-log").id
    await fake.start()
    registry = ProviderRegistry([ScriptedProvider(), LocalPreviewProvider(tmp_path / "renders")])
    try:
        async with running_bot(tmp_path, clock=clock, fake=fake, registry=registry, with_worker=False) as h:
            yield h, log
    finally:
        await fake.close()


async def admin_answer(h: Harness, path: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run `/videoadmin <path>` as the admin; the ephemeral answer's data (at once, or the followup of a defer)."""
    rec = await h.fake.slash(f"videoadmin {path}", options, user=ADMIN_ID)
    callback = await rec.wait_callback()
    assert callback.ephemeral, callback
    if callback.type == 5:
        message = await rec.wait_followup()
        return {"content": message.content, "embeds": message.embeds}
    assert callback.message is not None and not callback.message.pinged_user_ids
    return callback.data


async def test_every_admin_change_is_audited_shown_and_posted(tmp_path: Path) -> None:
    async with admin_world(tmp_path) as (h, log):
        said = (await admin_answer(h, "settings", {"log_channel": log}))["content"]
        assert f"now posted in <#{log}>" in said
        for path, options, (kind, target) in CHANGES:
            before = await h.app.admin.audit_entries(GUILD_ID, 100)
            answer = await admin_answer(h, path, options)
            entries = await h.app.admin.audit_entries(GUILD_ID, 100)
            assert len(entries) == len(before) + 1, f"{path}: {answer}"
            entry = entries[0]
            assert (entry.action, entry.actor_id, entry.target_kind, entry.target) == (path, ADMIN_ID, kind, target)
        for path, options in LOOKS:
            await admin_answer(h, path, options)
        entries = await h.app.admin.audit_entries(GUILD_ID, 100)
        assert len(entries) == len(CHANGES) + 1, "looking changes nothing and records nothing"

        settings = [e for e in entries if e.action == "settings"]
        assert [e.after for e in reversed(settings)] == [
            {"log_channel_id": log}, {"monthly_budget": 40.0}, {"language": "de"}, {"admin_role_id": MODS_ROLE_ID},
        ]  # fmt: skip
        grant = next(e for e in entries if e.action == "quota grant")
        assert grant.before == {"granted": 0, "left": 50} and grant.after == {"granted": 5, "left": 55}

        shown = (await admin_answer(h, "audit", {"limit": 100}))["embeds"][0]["description"]
        lines = shown.splitlines()
        assert len(lines) == len(entries)
        assert [line.split("**")[1] for line in lines] == [e.action for e in entries]
        assert all(f"<@{ADMIN_ID}>" in line for line in lines)
        assert "**quota grant** " + f"<@{ALICE_ID}>: granted 0 → 5, left 50 → 55" in shown
        few = (await admin_answer(h, "audit", {}))["embeds"][0]["description"]
        assert len(few.splitlines()) == 20, "20 by default"

        def posted() -> list[Any]:
            return [m for m in h.fake.messages(log) if m.content.startswith("🛠️")]

        posts = await h.fake.wait_for(lambda: posted() if len(posted()) >= len(entries) else None)
        # In the server's locale (en-US) until `language: de` is set, then in German, that change's post included.
        oldest_first = list(reversed(entries))
        german = next(n for n, e in enumerate(oldest_first) if e.after == {"language": "de"})
        said = [audit_line(e, ENGLISH if n < german else texts_for("de")) for n, e in enumerate(oldest_first)]
        assert [p.content.removeprefix("🛠️ ") for p in posts] == said
        assert not any(p.pinged_user_ids or p.pinged_role_ids or p.mention_everyone for p in posts)


async def test_a_log_channel_the_bot_cannot_post_in_does_not_fail_commands(tmp_path: Path) -> None:
    async with admin_world(tmp_path) as (h, log):
        await admin_answer(h, "settings", {"log_channel": log})
        h.fake.forbid_channel(log)
        assert "paused" in (await admin_answer(h, "queue pause", {}))["content"]
        await h.fake.wait_for(lambda: [r for r in h.fake.requests if r.status == 403] or None)
        assert [e.action for e in await h.app.admin.audit_entries(GUILD_ID)] == ["queue pause", "settings"]
        h.fake.allow_channel(log)
        await admin_answer(h, "queue resume", {})
        await h.fake.wait_for(lambda: [m for m in h.fake.messages(log) if "queue resume" in m.content] or None)


async def test_settings_shows_and_changes_every_setting(tmp_path: Path) -> None:
    async with admin_world(tmp_path) as (h, log):
        shown = (await admin_answer(h, "settings", {}))["content"]
        assert "Admin role: none" in shown and "Monthly budget: off" in shown and "Allowed channels: every" in shown
        said = await admin_answer(h, "settings", {"monthly_budget": 99.5, "language": "pt-br", "log_channel": log})
        assert "$99.50" in said["content"] and "`pt-BR`" in said["content"] and f"<#{log}>" in said["content"]
        settings = await h.store.guild_settings(GUILD_ID)
        assert (settings.monthly_budget, settings.language, settings.log_channel_id) == (99.5, "pt-BR", log)
        shown = (await admin_answer(h, "settings", {}))["content"]
        assert "Monthly budget: $99.50 a month" in shown and "Language: `pt-BR`" in shown
        assert "budget is off" in (await admin_answer(h, "settings", {"monthly_budget": 0}))["content"]
        assert (
            "I do not know the language `klingon`"
            in (await admin_answer(h, "settings", {"language": "klingon"}))["content"]
        )
        assert (await h.store.guild_settings(GUILD_ID)).monthly_budget is None
        choices = await h.fake.autocomplete("videoadmin settings", {"language": "pt"}, "language", user=ADMIN_ID)
        await choices.wait_callback()
        assert [c["value"] for c in choices.choices] == ["pt-BR"]


async def test_the_admin_role_and_the_log_channel_can_be_cleared(store: Store, clock: FakeClock) -> None:
    admin = admin_service(store, clock)
    await admin.change_settings(GUILD_ID, SettingsChange(admin_role_id=ADMIN_ROLE_ID, log_channel_id=CHANNEL_ID),
                                by_manage_server=True, by=ADMIN_ID)  # fmt: skip
    with pytest.raises(AdminRoleNeedsManageServer):  # the role's holders cannot drop it either
        await admin.change_settings(GUILD_ID, SettingsChange(clear="admin_role"), by_manage_server=False)
    with pytest.raises(SetAndClear):
        await admin.change_settings(
            GUILD_ID, SettingsChange(clear="log_channel", log_channel_id=CHANNEL_ID), by_manage_server=True
        )
    await admin.change_settings(GUILD_ID, SettingsChange(clear="log_channel"), by_manage_server=False, by=ADMIN_ID)
    await admin.change_settings(GUILD_ID, SettingsChange(clear="admin_role"), by_manage_server=True, by=ADMIN_ID)
    settings = await admin.settings(GUILD_ID)
    assert (settings.admin_role_id, settings.log_channel_id) == (None, None)
    cleared = [(e.before, e.after) for e in await admin.audit_entries(GUILD_ID, 2)]
    assert cleared == [({"admin_role_id": ADMIN_ROLE_ID}, {"admin_role_id": None}),
                       ({"log_channel_id": CHANNEL_ID}, {"log_channel_id": None})]  # fmt: skip


async def test_a_change_and_its_audit_entry_are_one_transaction(store: Store, clock: FakeClock) -> None:
    """A failure while writing the entry undoes the change: a crash can never keep one without the other."""
    admin = admin_service(store, clock)
    await store.insert_job(
        Job(id="q1", guild_id=GUILD_ID, user_id=ALICE_ID, channel_id=CHANNEL_ID, credits=4, state=JobState.QUEUED,
            request=VideoRequest(prompt="a fox", model="fake/video", duration=4), created_at=clock.now(),
            updated_at=clock.now()),
        max_running=1, window=(0.0, 1e12), admit=lambda standing: None,
    )  # fmt: skip

    def broken(before: object, after: object) -> tuple[JsonValue, JsonValue]:
        raise RuntimeError("the audit entry could not be written")

    def draft() -> AuditDraft:
        return admin.audit.draft(GUILD_ID, "test", by=ADMIN_ID, describe=broken)

    changes = [
        store.update_policy(GUILD_ID, "default", 0, QuotaLimits(credits=5), audit=draft()),
        store.update_guild_settings(GUILD_ID, lambda s: replace(s, paused=True), audit=draft()),
        store.add_ledger(GUILD_ID, ALICE_ID, "grant", 7, at=clock.now(), audit=draft()),
        store.set_blocked(GUILD_ID, ALICE_ID, True, now=clock.now(), audit=draft()),
        store.cancel_queued(GUILD_ID, now=clock.now(), audit=draft()),
    ]
    for change in changes:
        with pytest.raises(Exception, match="could not be written"):
            await change
    assert (await store.policy_layers(GUILD_ID, 0, ())).default is None
    assert not (await store.guild_settings(GUILD_ID)).paused
    assert (await store.admission(GUILD_ID, ALICE_ID, (0.0, 1e12))).granted == 0
    assert not await store.is_blocked(GUILD_ID, ALICE_ID)
    assert (await store.get_job("q1")).state is JobState.QUEUED  # type: ignore[union-attr]
    assert await admin.audit_entries(GUILD_ID) == []

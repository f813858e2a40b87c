"""`/videoadmin stats`: credits and provider spend per UTC day and model, drawn as a PNG chart, with the top
members and the refusals by rule. The numbers the chart is drawn from (and that the PNG carries) match the
ledger and the jobs, on SQLite and PostgreSQL; every refusal by a server rule, and every job a provider's content
policy refused, is counted; and the command answers through the real discord.py client."""

from __future__ import annotations

import dataclasses
import gettext
import io
import json
import sqlite3
import subprocess
import sys
import warnings
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.clock import FakeClock
from bot.discord import chart
from bot.discord.chart import DATA_KEY, FILENAME, render_chart
from bot.domain import Job, JobState, QuotaLimits, Requester, VideoRequest
from bot.errors import (
    Blocked,
    BlocklistMatch,
    BudgetExceeded,
    ChannelNotAllowed,
    ContentRefused,
    LimitOutOfRange,
    QueueFull,
    QueuePaused,
    QuotaExceeded,
    RequestRejected,
    UnknownModel,
)
from bot.i18n import Texts
from bot.i18n.catalogs import catalogue
from bot.jobs.refusals import rule_of
from bot.jobs.service import JobService
from bot.jobs.stats import ServerStats, StatsService
from bot.jobs.worker import Worker
from bot.providers.catalog import Catalogue, ModelOverride
from bot.providers.registry import ProviderRegistry
from bot.store.base import MemberCredits, Store, Transition
from tests.discord_harness import running_bot
from tests.fakes.discord import ADMIN_ID, ALICE_ID, CHANNEL_ID, GUILD_ID
from tests.fakes.scripted_provider import ScriptedProvider
from tests.store_moves import walk

GUILD, OTHER_GUILD = 1, 2
ALICE, BOB, CAROL = 11, 12, 13
DAY = 86400.0
TODAY = datetime(2026, 3, 10, tzinfo=UTC)
PRICES = {
    "fake/video": ModelOverride(weight=1.0, usd_per_second=0.10),
    "cheap/video": ModelOverride(weight=2.0, usd_per_second=0.05),
}
"""fake/video: 1 credit and $0.10 a second; cheap/video (weight 2): 2 credits and $0.05 a second."""


def at(days_ago: int, seconds: float) -> float:
    """`seconds` after the UTC midnight `days_ago` days before TODAY."""
    return TODAY.timestamp() - days_ago * DAY + seconds


def day(days_ago: int) -> date:
    return (TODAY - timedelta(days=days_ago)).date()


def two_models(store: Store, clock: FakeClock) -> JobService:
    providers = [ScriptedProvider(), ScriptedProvider(name="cheap")]
    return JobService(store, ProviderRegistry(providers, catalogue=Catalogue(PRICES)), clock)


async def queue(service: JobService, clock: FakeClock, when: float, user: int, model: str, seconds: int,
                guild: int = GUILD) -> Job:  # fmt: skip
    clock.set(when)
    request = VideoRequest(prompt="a lighthouse at dusk", model=model, duration=seconds)
    return await service.enqueue(Requester(guild_id=guild, user_id=user, channel_id=100), request)


async def fail(store: Store, job: Job, *, now: float) -> Job:
    """As the worker ends a job: failed, its credits refunded."""
    running = await walk(store, job, JobState.RUNNING, now=now)
    return await store.transition(running.id, Transition(JobState.FAILED, refund=True, error="broke"), now=now)


async def roomy(store: Store, *guilds: int) -> None:
    for guild in guilds:
        await store.update_policy(guild, "default", 0, QuotaLimits(credits=100_000, max_queued=1000))


# --- the numbers behind the chart ---------------------------------------------------------------------------


async def test_the_numbers_behind_the_chart_match_the_ledger(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    service = two_models(store, clock)
    await roomy(store, GUILD, OTHER_GUILD)
    j1 = await queue(service, clock, at(2, 10 * 3600), ALICE, "fake/video", 4)
    j2 = await queue(service, clock, at(2, DAY - 0.1), BOB, "cheap/video", 8)  # 23:59:59.9: still day -2
    j3 = await queue(service, clock, at(1, 0.0), BOB, "cheap/video", 4)  # 00:00:00: day -1
    j4 = await queue(service, clock, at(1, 3600), ALICE, "fake/video", 8)  # fails: refunded, no spend
    j5 = await queue(service, clock, at(1, 7200), CAROL, "fake/video", 2)  # cancelled while queued
    j6 = await queue(service, clock, at(0, 3600), CAROL, "fake/video", 5)  # still running today
    old = await queue(service, clock, at(10, 0.0), ALICE, "fake/video", 4)  # before the span
    elsewhere = await queue(service, clock, at(1, 60), ALICE, "fake/video", 4, guild=OTHER_GUILD)
    now = at(0, 12 * 3600)
    for job in (j1, j2, j3, old, elsewhere):
        await walk(store, job, JobState.DELIVERED, now=now)
    await fail(store, j4, now=now)
    await service.cancel(j5.id, by_user=CAROL)
    await walk(store, j6, JobState.RUNNING, now=now)
    # An admin's grant and reset change what a member may spend, not what was used.
    await store.add_ledger(GUILD, ALICE, "grant", 50, at=at(1, 100))
    await store.add_ledger(GUILD, ALICE, "reset", 0, at=at(1, 200))
    assert (j1.credits, j2.credits, j3.credits, j6.credits) == (4, 16, 8, 5)
    clock.set(now)

    stats = await StatsService(store, clock).server_stats(GUILD, days=7)

    assert stats.days == tuple(day(n) for n in range(6, -1, -1))
    assert stats.models == ("cheap/video", "fake/video"), "the most credits first"
    assert stats.credits == {
        "cheap/video": (0, 0, 0, 0, 16, 8, 0),
        "fake/video": (0, 0, 0, 0, 4, 0, 0),  # the failed, cancelled and running jobs keep nothing (yet)
    }
    assert {m: tuple(round(v, 6) for v in series) for m, series in stats.spend_usd.items()} == {
        "cheap/video": (0, 0, 0, 0, 0.40, 0.20, 0),
        "fake/video": (0, 0, 0, 0, 0.40, 0, 0.50),  # a running job's cost counts, as for the monthly budget
    }
    assert stats.credits_per_day == (0, 0, 0, 0, 20, 8, 0) and stats.total_credits == 28
    assert round(stats.total_spend_usd, 6) == 1.50
    assert stats.top_members == (MemberCredits(BOB, 24), MemberCredits(ALICE, 4)), "no credits kept: not listed"
    assert stats.refusals == {}
    if (tmp_path / "test.db").exists():  # SQLite: read the ledger's rows directly too
        assert dict(_ledger_by_day(tmp_path / "test.db", GUILD, stats.days)) == {
            (d, m): v for m, series in stats.credits.items() for d, v in zip(stats.days, series, strict=True) if v
        }, "the ledger itself, summed in Python, says the same"

    png = render_chart(stats)
    image = Image.open(io.BytesIO(png))
    image.verify()  # a whole, valid PNG
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (1000, 600)
    drawn = json.loads(image.text[DATA_KEY])
    assert drawn["days"] == [d.isoformat() for d in stats.days]
    assert drawn["credits"] == {m: list(v) for m, v in stats.credits.items()}
    assert drawn["spend_usd"] == {m: list(v) for m, v in stats.spend_usd.items()}
    assert [sum(column) for column in zip(*drawn["credits"].values(), strict=True)] == [0, 0, 0, 0, 20, 8, 0]


def _ledger_by_day(path: Path, guild: int, days: tuple[date, ...]) -> dict[tuple[date, str], int]:
    """Credits kept per UTC day and model, straight from the ledger rows of finished jobs."""
    kept: dict[tuple[date, str], int] = defaultdict(int)
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT l.at, j.model, l.credits FROM usage_ledger l JOIN jobs j ON j.id = l.job_id WHERE l.guild_id = ?"
            " AND l.kind IN ('reserve', 'refund') AND j.state IN ('delivered', 'failed', 'cancelled')",
            (guild,),
        ).fetchall()
    for moment, model, credits in rows:
        when = datetime.fromtimestamp(moment, UTC).date()
        if when in days:
            kept[when, model] += credits
    return {key: value for key, value in kept.items() if value}


async def test_the_span_is_whole_utc_days_ending_today(store: Store, clock: FakeClock) -> None:
    service = two_models(store, clock)
    await roomy(store, GUILD)
    yesterday = await queue(service, clock, at(1, DAY - 1), ALICE, "fake/video", 2)
    today = await queue(service, clock, at(0, 1), ALICE, "fake/video", 4)
    for job in (yesterday, today):
        await walk(store, job, JobState.DELIVERED, now=at(0, 2))
    clock.set(at(0, DAY - 1))  # 23:59:59 today
    stats = StatsService(store, clock)

    assert (await stats.server_stats(GUILD, days=1)).credits == {"fake/video": (4,)}
    two = await stats.server_stats(GUILD, days=2)
    assert two.days == (day(1), day(0)) and two.credits == {"fake/video": (2, 4)}
    assert len((await stats.server_stats(GUILD)).days) == 30, "30 days unless told"
    for days in (0, 91):
        with pytest.raises(LimitOutOfRange):
            await stats.server_stats(GUILD, days=days)


def test_an_empty_span_still_draws_every_day() -> None:
    stats = ServerStats(GUILD, (day(1), day(0)), (), {}, {}, (), {})
    image = Image.open(io.BytesIO(render_chart(stats)))
    assert image.format == "PNG"
    assert json.loads(image.text[DATA_KEY]) == {"days": [day(1).isoformat(), day(0).isoformat()], "credits": {},
                                                "spend_usd": {}}  # fmt: skip


class _CjkLabels(gettext.NullTranslations):
    """A catalogue whose chart labels are Japanese (none is translated yet), the rest left to English."""

    def gettext(self, message: str) -> str:
        return "日本語の見出し" if message.startswith("chart.") else message

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        return "{count} 日間" if msgid1.startswith("chart.") else msgid1 if n == 1 else msgid2


def test_chart_labels_a_font_cannot_draw_fall_back_to_english(monkeypatch: pytest.MonkeyPatch) -> None:
    """Japanese labels are drawn when an installed font has the glyphs, else the chart says it in English: never
    a row of empty boxes (matplotlib's own DejaVu Sans has no CJK; many servers have no CJK font)."""
    stats = ServerStats(GUILD, (day(1), day(0)), ("fake/video",), {"fake/video": (2, 3)},
                        {"fake/video": (0.2, 0.3)}, (), {})  # fmt: skip
    japanese = Texts("ja", _CjkLabels(), catalogue("en"))

    def missing_glyphs(tr: Texts) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            png = render_chart(stats, tr)
        assert json.loads(Image.open(io.BytesIO(png)).text[DATA_KEY])["credits"] == {"fake/video": [2, 3]}
        return [str(w.message) for w in caught if "missing from font" in str(w.message)]

    assert missing_glyphs(japanese) == []
    if chart.font_families("日本語") is None:  # no CJK font here: the check above held because it fell back
        monkeypatch.setattr(chart, "font_families", lambda text: ())
        assert missing_glyphs(japanese), "without the fallback, matplotlib draws boxes"


def test_matplotlib_is_imported_only_to_draw() -> None:
    """Bot start-up (the cogs, the chart module) does not pay for matplotlib's import."""
    code = "import sys, cogs.admin, bot.discord.chart; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


# --- refusals by rule ---------------------------------------------------------------------------------------


async def test_each_refusal_by_a_server_rule_is_counted_under_its_rule(store: Store, clock: FakeClock) -> None:
    service = two_models(store, clock)
    await roomy(store, GUILD)
    clock.set(at(0, 3600))

    async def refused(user: int, error: type[Exception], model: str = "fake/video") -> None:
        with pytest.raises(error):
            await service.enqueue(Requester(guild_id=GUILD, user_id=user, channel_id=100),
                                  VideoRequest(prompt="a lighthouse", model=model, duration=4))  # fmt: skip

    async def settings(**change: object) -> None:
        await store.update_guild_settings(GUILD, lambda s: dataclasses.replace(s, **change))  # type: ignore[arg-type]
        service.forget_settings(GUILD)

    await store.set_blocked(GUILD, 21, True, now=clock.now())
    await refused(21, Blocked)
    await store.update_policy(GUILD, "user", 22, QuotaLimits(max_queued=1))
    await queue(service, clock, clock.now(), 22, "fake/video", 2)
    await refused(22, QueueFull)
    await store.update_policy(GUILD, "user", 23, QuotaLimits(credits=1))
    await refused(23, QuotaExceeded)
    await refused(23, QuotaExceeded)
    await refused(24, UnknownModel, model="nope/video")  # the member's typo, not a server rule
    await settings(paused=True)
    await refused(25, QueuePaused)
    await settings(paused=False, monthly_budget=0.01)
    await refused(26, BudgetExceeded)
    await settings(monthly_budget=None, blocklist=("lighthouse",))
    await refused(27, BlocklistMatch)
    await settings(blocklist=(), allowed_channels=frozenset({555}))  # the member asks in channel 100
    await refused(28, ChannelNotAllowed)

    stats = StatsService(store, clock)
    assert (await stats.server_stats(GUILD, days=1)).refusals == {
        "blocked": 1, "queue_full": 1, "quota": 2, "paused": 1, "budget": 1, "blocklist": 1, "channel": 1,
    }  # fmt: skip
    assert (await stats.server_stats(OTHER_GUILD, days=1)).refusals == {}
    clock.set(at(-1, 60))  # tomorrow: today's refusals are in the span of two days, not of one
    assert (await stats.server_stats(GUILD, days=1)).refusals == {}
    assert sum((await stats.server_stats(GUILD, days=2)).refusals.values()) == 8


async def test_a_provider_content_refusal_is_counted_and_other_failures_are_not(
    store: Store, service: JobService, worker: Worker, provider: ScriptedProvider, clock: FakeClock
) -> None:
    await roomy(store, GUILD)
    alice = Requester(guild_id=GUILD, user_id=ALICE, channel_id=100)
    provider.fail_next("submit", ContentRefused("fake", "the prompt depicts violence"))
    refused = await service.enqueue(alice, VideoRequest(prompt="a duel", model="fake/video", duration=2))
    await worker.drain()
    provider.fail_next("submit", RequestRejected("fake", "bad seed", field="seed"))
    rejected = await service.enqueue(alice, VideoRequest(prompt="a duel", model="fake/video", duration=2))
    await worker.drain()

    for job in (refused, rejected):
        assert (await store.get_job(job.id)).state is JobState.FAILED  # type: ignore[union-attr]
    stats = await StatsService(store, clock).server_stats(GUILD, days=1)
    assert stats.refusals == {"provider_content": 1}
    assert stats.credits == {} and stats.top_members == (), "a refused job keeps no credits"


def test_a_refusal_counts_under_its_nearest_listed_rule() -> None:
    class StricterQueueFull(QueueFull):
        pass

    assert rule_of(StricterQueueFull(queued=1, max_queued=1)) == "queue_full"
    assert rule_of(ContentRefused("fake", "no")) == "provider_content"
    assert rule_of(UnknownModel("x/y")) is None and rule_of(ValueError()) is None


# --- through Discord ----------------------------------------------------------------------------------------


async def test_videoadmin_stats_attaches_the_chart_and_lists_the_top_members(tmp_path: Path) -> None:
    bob = ALICE_ID + 1000
    async with running_bot(tmp_path, with_worker=False) as h:
        store, jobs = h.store, h.app.jobs
        if h.clock.now() % DAY > DAY - 300:  # not across a real midnight while the test runs
            h.clock.advance(600)

        async def delivered(user: int, seconds: int) -> Job:
            who = Requester(guild_id=GUILD_ID, user_id=user, channel_id=CHANNEL_ID)
            job = await jobs.enqueue(who, VideoRequest(prompt="a red fox", model="local/preview", duration=seconds))
            return await walk(store, job, JobState.DELIVERED, now=h.clock.now())

        yesterday = await delivered(ALICE_ID, 4)
        h.clock.advance(DAY)
        today = [await delivered(bob, 5), await delivered(ALICE_ID, 2)]
        await store.set_blocked(GUILD_ID, bob, True, now=h.clock.now())
        with pytest.raises(Blocked):
            await jobs.enqueue(Requester(guild_id=GUILD_ID, user_id=bob, channel_id=CHANNEL_ID),
                               VideoRequest(prompt="again", model="local/preview", duration=2))  # fmt: skip

        denied = await (await h.fake.slash("videoadmin stats", {"days": 7}, user=ALICE_ID)).wait_callback()
        assert denied.type == 4 and denied.ephemeral and not denied.files, "members who are not admins get nothing"

        command = await h.fake.slash("videoadmin stats", {"days": 7}, user=ADMIN_ID)
        callback = await command.wait_callback()
        assert callback.type == 5 and callback.ephemeral, "deferred first: drawing takes a moment"
        reply = await command.wait_original(timeout=30)
        assert reply.ephemeral and not reply.pinged_user_ids and not reply.mention_everyone
        (attachment,) = reply.attachments
        assert attachment.filename == FILENAME
        image = Image.open(io.BytesIO(attachment.data))
        assert image.format == "PNG"
        drawn = json.loads(image.text[DATA_KEY])
        assert len(drawn["days"]) == 7
        assert drawn["credits"]["local/preview"][-2:] == [yesterday.credits, sum(j.credits for j in today)]

        (embed,) = reply.embeds
        assert embed["image"]["url"] == f"attachment://{FILENAME}"
        fields = {field["name"]: field["value"] for field in embed["fields"]}
        top = fields["Top members by credits"].splitlines()
        assert top == [f"1. <@{ALICE_ID}> · 6 credits", f"2. <@{bob}> · 5 credits"]
        assert fields["Refusals by rule"] == "Member blocked: 1"
        assert "11** credits used" in embed["description"]

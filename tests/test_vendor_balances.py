"""Where a vendor reports the account's balance, `python -m bot check` and `/videoadmin stats` show it: the figure,
asked at most every ten minutes, never a key. Where it reports what a job cost in its own units, that is kept with
the job next to the list-price estimate, and the stats sum it."""

from __future__ import annotations

from pathlib import Path

from bot.clock import FakeClock
from bot.config import Settings
from bot.discord.stats_reply import stats_embed
from bot.domain import JobState
from bot.jobs.balances import BALANCE_TTL, VendorBalances
from bot.jobs.stats import StatsService
from bot.providers import build_registry
from bot.providers.vidu import vendor_credits
from bot.store.base import Store
from tests.fakes.providers.luma import LumaFake
from tests.fakes.providers.runway import RunwayFake
from tests.fakes.providers.vidu import ViduFake
from tests.test_check_command import run_bot
from tests.test_provider_contract import ALICE, rig


async def test_balances_are_asked_at_most_every_ttl_and_shown_in_the_stats(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    async with RunwayFake() as runway, LumaFake() as luma:
        runway.credit_balance = 12_345
        luma.credit_balance = 4_250  # US cents
        settings = Settings(_env_file=None, data_dir=tmp_path, **runway.settings(), **luma.settings())  # type: ignore[call-arg]
        registry = build_registry(settings)
        balances = VendorBalances(registry, clock)
        try:
            first = await balances.current()
            assert [(b.provider, b.balance) for b in first] == [("luma", "$42.50"), ("runway", "12,345 credits")]
            asked = len(runway.requests("GET /v1/organization"))
            clock.advance(BALANCE_TTL / 2)
            runway.credit_balance = 100
            assert [b.balance for b in await balances.current()] == ["$42.50", "12,345 credits"]
            assert len(runway.requests("GET /v1/organization")) == asked, "cached within the TTL"
            clock.advance(BALANCE_TTL)
            assert [b.balance for b in await balances.current()] == ["$42.50", "100 credits"]
        finally:
            await registry.aclose()
    embed = stats_embed(await StatsService(store, clock).server_stats(1, days=1), await balances.current())
    field = next(f for f in embed.fields if f.name == "Provider accounts")
    assert "`runway` · 100 credits" in str(field.value) and "<t:" in str(field.value)


async def test_check_prints_the_balance_but_never_the_key(tmp_path: Path) -> None:
    async with RunwayFake() as runway:
        runway.credit_balance = 777
        _, out = await run_bot(tmp_path, "check", env=runway.env())
    line = next(line for line in out.splitlines() if "provider runway" in line)
    assert line.startswith("ok ") and "balance 777 credits" in line, out
    assert runway.env()["RUNWAYML_API_SECRET"] not in out


async def test_the_vendors_own_count_is_kept_with_the_job_and_shown_in_the_stats(tmp_path: Path) -> None:
    async with ViduFake() as vidu, rig(vidu, tmp_path) as r:
        job = await r.run()
        assert job.state is JobState.DELIVERED, job.error
        announced = vendor_credits(job.remote_id or "")
        assert announced is not None and announced > 0
        assert job.vendor_credits == announced, "what Vidu says the job cost is recorded with it"
        stats = await StatsService(r.store, r.clock).server_stats(ALICE.guild_id, days=1)  # type: ignore[arg-type]
        assert stats.vendor_credits == {"vidu": announced}
        field = next(f for f in stats_embed(stats).fields if f.name == "By the vendors' own count")
        assert f"`vidu` · {announced:,} of its credits" in str(field.value)

"""Metrics and /healthz (issue 10): the metrics appear and change as real jobs run through the fake Discord,
every line of /metrics parses as Prometheus's text format (prometheus_client's own parser), labels stay
bounded (no member, server, job or worker id), /healthz answers 503 while PostgreSQL is cut off behind a
loopback proxy and 200 once it is back, and every process kind (gateway, worker) serves both on METRICS_PORT
and stops cleanly, writing JSON lines with LOG_FORMAT=json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.cli.ops_server import HealthCheck, OpsServer
from bot.clock import FakeClock
from bot.errors import ContentRefused, ProviderError
from bot.jobs import liveness
from bot.jobs.retry import RetryPolicy
from bot.jobs.service import JobService
from bot.metrics import Metrics
from bot.providers.local import LocalPreviewProvider
from bot.providers.registry import ProviderRegistry
from bot.store.base import ClaimLimits, Store
from bot.store.sql_store import SqlStore
from tests.conftest import TEST_DATABASE_URL, close_test_store
from tests.crash_checks import SqliteDatabase
from tests.crash_harness import BotRig
from tests.discord_harness import Harness, running_bot
from tests.fakes.discord import ALICE_ID, CHANNEL_ID, GUILD_ID, FakeDiscord
from tests.fakes.scripted_provider import ScriptedProvider
from tests.test_worker import ALICE, request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
BOUNDED_LABELS = {"model", "provider", "state", "kind", "status", "scope", "le"}
"""Ours, and `le` of histogram buckets; python_info's own labels are added below."""
PYTHON_INFO_LABELS = {"implementation", "major", "minor", "patchlevel", "version"}


def parse(text: str) -> Samples:
    """Every sample, by prometheus_client's own parser; each line that is not a comment must be one sample."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == len(samples), "every line parsed as one sample"
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample that must be there."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


def counted(samples: Samples, name: str, **labels: str) -> float:
    """A counter's value; one with labels appears at its first count, so absent reads 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def has(samples: Samples, name: str) -> bool:
    return any(key[0] == name for key in samples)


async def scrape(base: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


async def health(base: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as response:
        return response.status, await response.json()


@contextlib.asynccontextmanager
async def ops_server(h: Harness) -> AsyncIterator[str]:
    """The bot's /metrics and /healthz, as `python -m bot` serves them, on a free port."""
    check = HealthCheck(h.store, h.clock, stale_after=h.settings.lease_seconds, gateway=h.bot.gateway_connected)
    server = OpsServer(h.app.metrics, check, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


def assert_bounded(samples: Samples, *ids: object) -> None:
    forbidden = {str(i) for i in ids}
    for name, labels in samples:
        names = {label for label, _ in labels}
        assert names <= BOUNDED_LABELS | (PYTHON_INFO_LABELS if name == "python_info" else set()), (name, names)
        assert not {v for _, v in labels} & forbidden, f"{name} has an id as a label: {labels}"


async def test_metrics_appear_and_change_as_real_jobs_run_through_discord(tmp_path: Path) -> None:
    provider = ScriptedProvider(gate=asyncio.Event())
    registry = ProviderRegistry([provider, LocalPreviewProvider(tmp_path / "renders")])
    async with running_bot(tmp_path, registry=registry) as h, ops_server(h) as base:
        assert h.app.worker is not None
        h.app.worker.retry = RetryPolicy(base_delay=0.01, jitter=0.0)
        empty = await scrape(base)
        assert value(empty, "videobot_database_up") == 1 and value(empty, "videobot_workers_alive") == 1
        assert value(empty, "videobot_worker_leases_held") == 0
        assert value(empty, "videobot_queue_depth", model="fake/video") == 0, "every configured model, from the start"
        assert value(empty, "videobot_queue_depth", model="local/preview") == 0

        provider.fail_next("submit", ProviderError("HTTP 503", retryable=True, status=503))
        h.fake.rate_limit_next("POST /interactions/*/*/callback", retry_after=0.05)
        h.fake.fail_next("POST /channels/{channel_id}/messages", status=500)  # the first clip post; retried
        for prompt in ("a lighthouse", "a harbour"):
            rec = await h.fake.slash("video", {"prompt": prompt, "model": "fake/video", "duration": 2})
            await rec.wait_callback()
        first, second = await h.jobs_of()
        await h.wait_job_state(first.id, "running")  # held at its poll; the member's one running slot is taken
        busy = await scrape(base)
        assert value(busy, "videobot_queue_depth", model="fake/video") == 1
        assert value(busy, "videobot_worker_leases_held") == 1
        assert value(busy, "videobot_job_queue_seconds_count", provider="fake") == 1
        assert counted(busy, "videobot_provider_errors_total", provider="fake", kind="server_error") == 1
        assert value(busy, "videobot_discord_rate_limits_total", scope="user") == 1
        assert value(busy, "videobot_discord_rate_limit_wait_seconds_total", scope="user") == pytest.approx(0.05)
        assert counted(busy, "videobot_jobs_finished_total", state="delivered", provider="fake") == 0

        assert provider.gate is not None
        provider.gate.set()
        done = [await h.wait_job_state(job.id, "delivered") for job in (first, second)]
        provider.fail_next("poll", ContentRefused("fake", "no boats"))
        rec = await h.fake.slash("video", {"prompt": "a boat", "model": "fake/video", "duration": 4})
        await rec.wait_callback()
        refused = await h.wait_job_state((await h.jobs_of())[-1].id, "failed")
        after = await scrape(base)

    assert value(after, "videobot_queue_depth", model="fake/video") == 0, "an emptied queue reads 0"
    assert value(after, "videobot_worker_leases_held") == 0
    assert value(after, "videobot_jobs_finished_total", state="delivered", provider="fake") == 2
    assert value(after, "videobot_jobs_finished_total", state="failed", provider="fake") == 1
    assert value(after, "videobot_provider_errors_total", provider="fake", kind="content_refused") == 1
    assert value(after, "videobot_job_queue_seconds_count", provider="fake") == 3
    assert value(after, "videobot_job_generation_seconds_count", provider="fake") == 2
    seconds = sum(job.finished_at - job.started_at for job in done)  # type: ignore[operator]
    assert value(after, "videobot_job_generation_seconds_sum", provider="fake") == pytest.approx(seconds)
    assert value(after, "videobot_credits_spent_total", provider="fake") == sum(job.credits for job in done) == 4
    spend = sum(job.cost_usd for job in done)
    assert value(after, "videobot_provider_spend_usd_total", provider="fake") == pytest.approx(spend)
    assert value(after, "videobot_unpriced_jobs_total", provider="fake") == 2, "the scripted model has no price"
    assert value(after, "videobot_discord_api_errors_total", status="500") == 1
    assert_bounded(after, ALICE_ID, GUILD_ID, CHANNEL_ID, h.app.worker.worker_id, refused.id,
                   *(job.id for job in done))  # fmt: skip


async def test_healthz_reports_the_database_the_gateway_and_live_workers(tmp_path: Path) -> None:
    async with running_bot(tmp_path) as h, ops_server(h) as base:
        status, body = await health(base)
        assert status == 200
        assert body == {"status": "ok", "database": True, "workers_alive": 1, "gateway_connected": True}
        h.clock.advance(h.settings.lease_seconds + 30)  # the worker's heartbeat is now older than a lease
        status, body = await health(base)
        assert status == 200 and body["workers_alive"] == 0, "reported, not judged"


async def test_the_scraped_queries_count_queued_jobs_per_model_and_live_leases(
    store: Store, service: JobService, clock: FakeClock
) -> None:
    claimed = await service.enqueue(ALICE, request())
    await service.enqueue(ALICE, request())
    assert await store.queue_depth_by_model() == {"fake/video": 2}
    job = await store.claim_job("w1", now=clock.now(), lease_seconds=30.0, limits=ClaimLimits())
    assert job is not None and job.id == claimed.id
    assert await store.queue_depth_by_model() == {"fake/video": 1}
    assert await store.leases_held("w1", now=clock.now()) == 1
    assert await store.leases_held("w2", now=clock.now()) == 0
    assert await store.leases_held("w1", now=clock.now() + 31) == 0, "a lapsed lease is not held"


# --- PostgreSQL cut off behind a proxy -----------------------------------------------------------------------


class TcpProxy:
    """A loopback TCP proxy in front of a real server. `cut()` resets every connection and refuses new ones
    (the database is gone, as a network failure or a restart looks to the bot); `restore()` lets them through."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut_off = False
        self.port = 0
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._links):
            writer.transport.abort()

    def restore(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        finally:
            self._links -= {writer, up_writer}
            writer.transport.abort()
            up_writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()


async def wait_health(
    base: str,
    wanted: int,
    timeout: float = 15.0,  # noqa: ASYNC109
    *,
    until: Callable[[dict[str, object]], bool] = lambda _: True,
) -> dict[str, object]:
    """Ask /healthz until it answers `wanted` (and `until` holds for the body): a pool reconnects at its own pace,
    and a gateway socket may be between a drop and its resume on a loaded machine."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await health(base)
        if status == wanted and until(body):
            return body
        assert asyncio.get_running_loop().time() < deadline, f"/healthz still {status}: {body}"
        await asyncio.sleep(0.1)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")
async def test_healthz_is_503_while_postgres_is_gone_and_200_when_it_is_back(clock: FakeClock) -> None:
    from bot.store.dialects.postgres import PostgresDialect

    assert TEST_DATABASE_URL is not None
    real = urlsplit(TEST_DATABASE_URL)
    proxy = TcpProxy(real.hostname or "127.0.0.1", real.port or 5432)
    await proxy.start()
    dialect = await PostgresDialect.open(proxy.url(TEST_DATABASE_URL), schema=f"test_{uuid.uuid4().hex[:12]}")
    store = SqlStore(dialect)
    metrics = Metrics(store, clock, worker_id="w1")
    server = OpsServer(metrics, HealthCheck(store, clock, stale_after=60.0), host="127.0.0.1", port=0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        await store.register_worker(liveness.this_process("w1", clock.now()))
        assert await health(base) == (200, {"status": "ok", "database": True, "workers_alive": 1})
        assert value(await scrape(base), "videobot_database_up") == 1

        proxy.cut()
        assert await health(base) == (503, {"status": "unavailable", "database": False})
        gone = await scrape(base)  # still answers: the counters are in memory
        assert value(gone, "videobot_database_up") == 0 and not has(gone, "videobot_workers_alive")
        assert await health(base) == (503, {"status": "unavailable", "database": False}), "not a one-off"

        proxy.restore()
        assert await wait_health(base, 200) == {"status": "ok", "database": True, "workers_alive": 1}
        assert value(await scrape(base), "videobot_database_up") == 1
    finally:
        await server.stop()
        proxy.restore()
        await close_test_store(store)
        await proxy.close()


# --- every process kind ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.timeout(120)
async def test_gateway_and_worker_processes_serve_metrics_and_healthz_and_stop_cleanly(tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        rig = BotRig(fake, SqliteDatabase(tmp_path / "bot.db"), tmp_path, log=lambda _: None)
        await rig.prepare(members=1)
        ports = {"gateway": free_port(), "worker": free_port()}
        try:
            for role, port in ports.items():
                rig.extra_env = {"METRICS_PORT": str(port), "LOG_FORMAT": "json"}
                await rig.start(role)
            gateway, worker = (f"http://127.0.0.1:{ports[role]}" for role in ("gateway", "worker"))
            await rig.send_video(rig.members[0])
            await rig.wait_settled()
            worker_body = await wait_health(worker, 200)
            gateway_body = await wait_health(gateway, 200, until=lambda body: body.get("gateway_connected") is True)
            assert gateway_body["gateway_connected"] is True and gateway_body["workers_alive"] == 1
            assert "gateway_connected" not in worker_body and worker_body["workers_alive"] == 1
            ran = await scrape(worker)
            assert value(ran, "videobot_jobs_finished_total", state="delivered", provider="local") == 1
            assert value(ran, "videobot_queue_depth", model="local/preview") == 0
            assert value(await scrape(gateway), "videobot_database_up") == 1
        finally:
            codes = await rig.stop_all()
        assert codes == {"gateway": 0, "worker": 0}, rig.log_tails()
        for port in ports.values():
            with pytest.raises(OSError):  # the server stopped with its process
                socket.create_connection(("127.0.0.1", port), timeout=1).close()

    lines = [line for bp in rig.history for line in bp.log_text().splitlines()]
    records = [json.loads(line) for line in lines]  # every line, of both processes
    moves = [r for r in records if r.get("job_id") and r.get("state")]
    assert [m["state"] for m in moves] == ["submitting", "running", "downloading", "delivering", "delivered"]
    assert {m["model"] for m in moves} == {"local/preview"} and {m["user_id"] for m in moves} == {rig.members[0]}

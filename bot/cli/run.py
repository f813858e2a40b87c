"""Process wiring for `run`, `gateway` and `worker`: build the services once from the settings, start what the
process runs, and close everything in order on the way out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import discord
import yarl

from bot.cli.ops_server import HealthCheck, OpsServer
from bot.clock import Clock, SystemClock
from bot.config import Settings
from bot.discord.background import BackgroundLoops
from bot.discord.delivery import DiscordDelivery, ServerLanguage
from bot.errors import ConfigError
from bot.jobs.admin import AdminService
from bot.jobs.notify import Transitions
from bot.jobs.service import JobService
from bot.jobs.staging import StagingDirs
from bot.jobs.worker import Worker
from bot.logs import redact_url
from bot.metrics import Metrics
from bot.providers import build_registry
from bot.providers.registry import ProviderRegistry
from bot.store import open_store
from bot.store.base import Store

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    clock: Clock
    store: Store
    registry: ProviderRegistry
    jobs: JobService
    admin: AdminService
    delivery: DiscordDelivery
    worker: Worker | None
    transitions: Transitions
    """Every committed job change, from the worker and the services: status messages subscribe here."""
    metrics: Metrics
    """This process's Prometheus metrics (served only with METRICS_PORT, counted always: counting is cheap)."""

    async def aclose(self) -> None:
        await self.registry.aclose()
        await self.store.close()


def point_discord_at(settings: Settings) -> None:
    """Honour DISCORD_API_BASE and DISCORD_GATEWAY_URL (a REST rate-limit proxy, a gateway proxy, a test server).
    discord.py reads both from class attributes, so they are set before the client logs in."""
    discord.http.Route.BASE = settings.discord_api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


def discord_trace(app: App) -> aiohttp.TraceConfig:
    """The trace on discord.py's session, in every process: the metrics, and the pause Discord's global rate
    limit puts on every process sharing the bot token (`bot.discord.ratelimit`)."""
    from bot.discord.client import discord_http_trace
    from bot.discord.ratelimit import GlobalPause

    return GlobalPause(app.store, app.clock).install(discord_http_trace(app.metrics))


async def build_app(
    settings: Settings,
    *,
    with_worker: bool,
    clock: Clock | None = None,
    registry: ProviderRegistry | None = None,
    store: Store | None = None,
    delivery: DiscordDelivery | None = None,
) -> App:
    clock = clock or SystemClock()
    store = store or await open_store(settings.database_url)
    if registry is None:
        registry = build_registry(settings)
        await registry.start()
    worker: Worker | None = None
    delivery = delivery or DiscordDelivery(clock, store=store)
    transitions = Transitions()
    # The status message follows the job: every state change and progress report marks it for an edit
    # (coalesced by the delivery). Metrics and the audit trail subscribe here too.
    transitions.subscribe(lambda event: delivery.job_updated(event.job))
    if with_worker:
        worker = Worker(
            store, registry, delivery, clock,
            staging_dir=settings.data_dir / "staging",
            transitions=transitions,
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.lease_seconds,
            global_limit=settings.global_concurrency,
        )  # fmt: skip
    jobs = JobService(
        store, registry, clock, on_enqueue=worker.wake if worker else None, transitions=transitions,
        staging=StagingDirs(settings.data_dir),
    )  # fmt: skip
    if worker is not None:
        await store.listen(worker.wake)  # PostgreSQL: wake at once when another process queues a job
    if delivery.server_language is None:
        delivery.server_language = _server_language(jobs)
    admin = AdminService(store, jobs, clock)
    metrics = Metrics(store, clock, providers=registry, worker_id=worker.worker_id if worker else None,
                      stale_after=settings.lease_seconds)  # fmt: skip
    transitions.subscribe(metrics.on_transition)
    if worker is not None:
        worker.on_provider_error = metrics.provider_error
    return App(settings, clock, store, registry, jobs, admin, delivery, worker, transitions, metrics)


def _server_language(jobs: JobService) -> ServerLanguage:
    """The language a server chose for public messages, read through the service's short-lived settings cache
    (status edits ask on every edit)."""

    async def language(guild_id: int) -> str | None:
        return (await jobs.guild_settings(guild_id)).language

    return language


def make_bot(app: App, **options: object) -> discord.Client:
    from bot.discord.client import bot_class

    options.setdefault("http_trace", discord_trace(app))
    return bot_class(app.settings)(
        settings=app.settings, store=app.store, jobs=app.jobs, admin=app.admin,
        delivery=app.delivery, clock=app.clock, worker=app.worker, **options,
    )  # fmt: skip


async def run_processes(settings: Settings, command: str) -> int:
    point_discord_at(settings)
    app = await build_app(settings, with_worker=command in ("run", "worker"))
    # What start-up built (modules, schemas, the catalogue) lives as long as the process: kept out of the
    # collector's full passes, which would walk it again in the middle of a burst of commands (tens of ms each).
    gc.collect()
    gc.freeze()
    assert settings.discord_token is not None
    token = settings.discord_token.get_secret_value()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    ops: OpsServer | None = None
    try:
        if command == "worker":
            ops = await start_ops_server(app, gateway=None)
            await _run_worker_only(app, token, stop)
        else:
            bot = make_bot(app)
            ops = await start_ops_server(app, gateway=getattr(bot, "gateway_connected", None))
            if command == "gateway":
                log.info("gateway only: jobs are run by separate `python -m bot worker` processes")
            runner = asyncio.create_task(bot.start(token, reconnect=True))
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            await bot.close()
            if runner in done and runner.exception() is not None:
                raise runner.exception()  # type: ignore[misc]
            stopper.cancel()
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN): check it at https://discord.com/developers/applications")
        return 2
    except aiohttp.ClientConnectorError as exc:
        # No network, a wrong DISCORD_API_BASE or a REST proxy that is down, found at login: one line, no traceback.
        log.error("cannot reach Discord's API at %s (%s): check the network, DISCORD_API_BASE or the REST proxy",
                  redact_url(settings.discord_api_base), exc.os_error or exc)  # fmt: skip
        return 1
    finally:
        if ops is not None:
            await ops.stop()
        await app.aclose()
    return 0


async def start_ops_server(app: App, *, gateway: Callable[[], bool] | None) -> OpsServer | None:
    """/metrics and /healthz on METRICS_HOST:METRICS_PORT, when METRICS_PORT is set."""
    settings = app.settings
    if settings.metrics_port is None:
        return None
    health = HealthCheck(app.store, app.clock, stale_after=settings.lease_seconds, gateway=gateway)
    server = OpsServer(app.metrics, health, host=settings.metrics_host, port=settings.metrics_port)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        raise ConfigError(
            f"setting METRICS_PORT is invalid: cannot listen on {settings.metrics_host}:{settings.metrics_port} "
            f"({exc.strerror or exc})"
        ) from None
    return server


async def _run_worker_only(app: App, token: str, stop: asyncio.Event) -> None:
    """No gateway: a REST-only client (login without connecting) is all delivery needs."""
    assert app.worker is not None
    client = discord.Client(intents=discord.Intents.none(), http_trace=discord_trace(app))
    await client.login(token)
    app.delivery.attach(client)
    loops = BackgroundLoops(app.store, app.delivery, app.worker, app.settings.data_dir, app.clock)
    await loops.start()
    try:
        await stop.wait()
    finally:
        await loops.stop()
        await client.close()

"""The operator's endpoints, on METRICS_HOST:METRICS_PORT in every process kind (run, gateway, worker):

- `GET /metrics`: Prometheus's text format (`bot.metrics`);
- `GET /healthz`: a small JSON, `200` while the database answers and `503` when it does not, so an
  orchestrator restarts or drains a process that cannot do anything useful. Whether the gateway is connected
  and how many workers are alive are reported, not judged: a gateway reconnects by itself, and a gateway
  process may run with its workers elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.clock import Clock
from bot.errors import StoreError
from bot.metrics import SCRAPE_DB_TIMEOUT, Metrics, workers_alive
from bot.store.base import JobStore

log = logging.getLogger(__name__)


@dataclass
class HealthCheck:
    store: JobStore
    clock: Clock
    stale_after: float
    """A worker whose heartbeat is older than this (a lease) is not counted alive."""
    gateway: Callable[[], bool] | None = None
    """Whether the Discord gateway is connected; None in a process without one (a worker)."""
    _database_was_up: bool = field(default=True, init=False, repr=False)

    async def check(self) -> tuple[int, dict[str, object]]:
        """(HTTP status, body): one read of the worker registry tells both that the database answers and which
        workers are alive."""
        body: dict[str, object] = {}
        try:
            async with asyncio.timeout(SCRAPE_DB_TIMEOUT):
                workers = await self.store.workers()
        except (StoreError, TimeoutError, OSError) as exc:
            if self._database_was_up:  # once per outage, not once per probe
                log.warning("health check: the database does not answer (%s)", exc or type(exc).__name__)
            body["database"] = self._database_was_up = False
        else:
            if not self._database_was_up:
                log.warning("health check: the database answers again")
            body["database"] = self._database_was_up = True
            body["workers_alive"] = workers_alive(workers, now=self.clock.now(), stale_after=self.stale_after)
        if self.gateway is not None:
            body["gateway_connected"] = self.gateway()
        healthy = body["database"] is True
        body["status"] = "ok" if healthy else "unavailable"
        return (200 if healthy else 503), body


class OpsServer:
    """An aiohttp server for /metrics and /healthz. `start` binds (port 0 picks a free one: see `port`)."""

    def __init__(self, metrics: Metrics, health: HealthCheck, *, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self._runner.addresses:  # the port actually bound, when asked for 0
            self.port = int(self._runner.addresses[0][1])
        log.info("metrics and /healthz on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        status, body = await self.health.check()
        return web.json_response(body, status=status)

"""Prometheus metrics for one process (run, gateway or worker), served with /healthz by `bot.cli.ops_server`.

Events are counted as they happen, where they happen: job moves through the `Transitions` hook (so a job is
counted once, by the process that committed its move: the worker for its steps, the gateway for a cancel in
the queue), failed provider calls through the worker's `on_provider_error`, Discord's answers through
discord.py's HTTP session (`bot.discord.client.discord_http_trace`). What the database knows (queue depth,
leases, live workers) is read when Prometheus scrapes, with a deadline, so a scrape never waits on a database
that is gone: its gauges are then left out and `videobot_database_up` says 0.

Labels are bounded sets only: model, provider, state, error kind, HTTP status, rate-limit scope. Never a
member, a server, a job or a worker id: each value of a label is a time series of its own, forever.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from bot.clock import Clock
from bot.domain import JobState, WorkerInfo
from bot.errors import ProviderError, StoreError
from bot.jobs.notify import JobTransition
from bot.providers.registry import ProviderRegistry
from bot.store.base import JobStore

SCRAPE_DB_TIMEOUT = 2.0
"""Seconds a scrape (or a health check) waits for the database before calling it unreachable."""
QUEUE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
GENERATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 3600.0)
RATE_LIMIT_SCOPES = frozenset({"user", "global", "shared"})


def workers_alive(workers: Sequence[WorkerInfo], *, now: float, stale_after: float) -> int:
    """Workers whose heartbeat is recent: a live worker beats several times per lease."""
    return sum(1 for w in workers if now - w.heartbeat_at <= stale_after)


def provider_error_kind(error: ProviderError) -> str:
    """A bounded name for a provider failure: its class (`content_refused`, `credentials_rejected`…), or for
    the plain retryable kind, what the HTTP status says."""
    if type(error) is not ProviderError:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()
    if error.status is None:
        return "network"
    if error.status == 429:
        return "rate_limited"
    return "server_error" if error.status >= 500 else "http_error"


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclass
class ScrapeReading:
    """What the database said at the last scrape (None: it did not answer)."""

    queue_depth: dict[str, int] | None = None
    leases_held: int | None = None
    workers_alive: int | None = None
    models: set[str] = field(default_factory=set)
    """Every configured model and every model seen queued since the start: an empty queue reads 0."""


class _DatabaseGauges(Collector):
    """Yields the last reading as gauges (prometheus_client collects synchronously; the reading is async)."""

    def __init__(self, reading: ScrapeReading, has_worker: bool) -> None:
        self.reading = reading
        self.has_worker = has_worker

    def collect(self) -> Iterable[Metric]:
        r = self.reading
        up = GaugeMetricFamily("videobot_database_up", "1 when the database answered the last scrape, else 0")
        up.add_metric([], 1.0 if r.queue_depth is not None else 0.0)
        yield up
        if r.queue_depth is not None:
            depth = GaugeMetricFamily("videobot_queue_depth", "Jobs waiting in the queue, per model", labels=["model"])
            for model in sorted(r.models):
                depth.add_metric([model], float(r.queue_depth.get(model, 0)))
            yield depth
        if r.workers_alive is not None:
            yield GaugeMetricFamily(
                "videobot_workers_alive", "Worker processes with a recent heartbeat", value=r.workers_alive
            )
        if self.has_worker and r.leases_held is not None:
            yield GaugeMetricFamily(
                "videobot_worker_leases_held", "Jobs this worker holds under a live lease", value=r.leases_held
            )


class Metrics:
    """Every metric of the process, in a registry of its own (tests run several bots in one process)."""

    def __init__(
        self,
        store: JobStore,
        clock: Clock,
        *,
        providers: ProviderRegistry | None = None,
        worker_id: str | None = None,
        stale_after: float = 60.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.providers = providers
        self.worker_id = worker_id
        self.stale_after = stale_after
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_finished = Counter(
            "videobot_jobs_finished", "Jobs that reached a final state", ["state", "provider"], registry=r
        )
        self.queue_seconds = Histogram(
            "videobot_job_queue_seconds", "Seconds from queued to claimed by a worker", ["provider"],
            buckets=QUEUE_BUCKETS, registry=r,
        )  # fmt: skip
        self.generation_seconds = Histogram(
            "videobot_job_generation_seconds", "Seconds from claim to delivery of delivered jobs", ["provider"],
            buckets=GENERATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.provider_errors = Counter(
            "videobot_provider_errors", "Failed provider calls (each try)", ["provider", "kind"], registry=r
        )
        self.discord_api_errors = Counter(
            "videobot_discord_api_errors",
            "Discord REST answers of 400 or more (429 excepted), and requests that got no answer (status=network)",
            ["status"],
            registry=r,
        )
        self.discord_rate_limits = Counter(
            "videobot_discord_rate_limits", "429 answers from Discord (discord.py waits, then retries)", ["scope"],
            registry=r,
        )  # fmt: skip
        self.discord_rate_limit_wait = Counter(
            "videobot_discord_rate_limit_wait_seconds", "Seconds Discord's 429 answers asked to wait", ["scope"],
            registry=r,
        )  # fmt: skip
        self.credits_spent = Counter(
            "videobot_credits_spent", "Credits kept for delivered clips", ["provider"], registry=r
        )
        self.spend_usd = Counter(
            "videobot_provider_spend_usd", "List-price cost of delivered clips, in US dollars", ["provider"],
            registry=r,
        )  # fmt: skip
        self.unpriced = Counter(
            "videobot_unpriced_jobs",
            "Delivered clips of models without a known list price (their spend counts at the catalogue's highest)",
            ["provider"],
            registry=r,
        )
        self.reading = ScrapeReading(models={m.id for m in providers.models()} if providers is not None else set())
        r.register(_DatabaseGauges(self.reading, has_worker=worker_id is not None))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    # --- events -----------------------------------------------------------------------------------------
    async def on_transition(self, event: JobTransition) -> None:
        """A `Transitions` subscriber: counts moves out of the queue and into a final state."""
        if not event.moved:
            return
        job = event.job
        provider = job.provider
        if event.old_state is JobState.QUEUED and job.state is JobState.SUBMITTING:
            started = job.started_at if job.started_at is not None else job.updated_at
            self.queue_seconds.labels(provider).observe(max(0.0, started - job.created_at))
        if not job.state.is_terminal:
            return
        self.jobs_finished.labels(job.state.value, provider).inc()
        if job.state is not JobState.DELIVERED:
            return
        if job.started_at is not None and job.finished_at is not None:
            self.generation_seconds.labels(provider).observe(max(0.0, job.finished_at - job.started_at))
        self.credits_spent.labels(provider).inc(job.credits)
        self.spend_usd.labels(provider).inc(max(0.0, job.cost_usd))
        model = self.providers.model(job.model) if self.providers is not None else None
        if model is not None and model.usd_per_second is None:
            self.unpriced.labels(provider).inc()

    def provider_error(self, provider: str, error: ProviderError) -> None:
        """The worker's `on_provider_error`."""
        self.provider_errors.labels(provider, provider_error_kind(error)).inc()

    def discord_response(self, status: int, headers: Mapping[str, str]) -> None:
        """An answer from Discord's REST API (bot token, webhook or interaction route)."""
        if status == 429:
            scope = "global" if headers.get("X-RateLimit-Global") == "true" else headers.get("X-RateLimit-Scope")
            scope = scope if scope in RATE_LIMIT_SCOPES else "unknown"
            # The header discord.py's bucket logic reads first; Retry-After (whole seconds) when it is absent.
            wait = _seconds(headers.get("X-RateLimit-Reset-After"))
            wait = wait if wait is not None else _seconds(headers.get("Retry-After"))
            self.discord_rate_limits.labels(scope).inc()
            self.discord_rate_limit_wait.labels(scope).inc(wait or 0.0)
        elif status >= 400:
            self.discord_api_errors.labels(str(status)).inc()

    def discord_request_failed(self) -> None:
        """A request to Discord that got no answer (connection refused or dropped, a timeout)."""
        self.discord_api_errors.labels("network").inc()

    # --- scraping ---------------------------------------------------------------------------------------
    async def read_database(self) -> bool:
        """Take the database's figures for the next collection; False when it did not answer in time."""
        reading = self.reading
        try:
            async with asyncio.timeout(SCRAPE_DB_TIMEOUT):
                depth = await self.store.queue_depth_by_model()
                workers = await self.store.workers()
                now = self.clock.now()
                held = await self.store.leases_held(self.worker_id, now=now) if self.worker_id else None
        except (StoreError, TimeoutError, OSError):
            reading.queue_depth = reading.leases_held = reading.workers_alive = None
            return False
        reading.models.update(depth)
        reading.queue_depth = depth
        reading.workers_alive = workers_alive(workers, now=now, stale_after=self.stale_after)
        reading.leases_held = held
        return True

    async def exposition(self) -> bytes:
        """The text format Prometheus scrapes, with the database's figures read now."""
        await self.read_database()
        return generate_latest(self.registry)

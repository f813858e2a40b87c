from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.jobs.notify import FileSink
from bot.jobs.retry import RetryPolicy
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from bot.store.dialects.sqlite import SqliteDialect
from bot.store.sql_store import SqlStore
from tests.fakes.scripted_provider import ScriptedProvider

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")

BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def open_test_store(backend: str, tmp_path: Path) -> Store:
    if backend == "sqlite":
        return SqlStore(await SqliteDialect.open(str(tmp_path / "test.db")))
    from bot.store.dialects.postgres import PostgresDialect  # asyncpg is an optional extra

    assert TEST_DATABASE_URL is not None
    return SqlStore(await PostgresDialect.open(TEST_DATABASE_URL, schema=f"test_{uuid.uuid4().hex[:12]}"))


async def close_test_store(store: Store) -> None:
    await store.drop_schema()
    await store.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_test_store(request.param, tmp_path)
    try:
        yield opened
    finally:
        await close_test_store(opened)


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def registry(provider: ScriptedProvider) -> ProviderRegistry:
    return ProviderRegistry([provider])


@pytest.fixture
def service(store: Store, registry: ProviderRegistry, clock: FakeClock) -> JobService:
    return JobService(store, registry, clock)


@pytest.fixture
def sink(tmp_path: Path) -> FileSink:
    out = tmp_path / "out"
    out.mkdir()
    return FileSink(out)


def make_worker(
    store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path, **kwargs: object
) -> Worker:
    options: dict[str, object] = {
        "staging_dir": tmp_path / "staging",
        "concurrency": 4,
        "lease_seconds": 30.0,
        "retry": RetryPolicy(max_attempts=4, base_delay=1.0, jitter=0.0),
        "poll_interval": 1.0,
    }
    options.update(kwargs)
    worker = Worker(store, registry, sink, clock, **options)  # type: ignore[arg-type]
    worker.transitions.subscribe(sink.on_transition)
    return worker


@pytest.fixture
def worker(store: Store, registry: ProviderRegistry, sink: FileSink, clock: FakeClock, tmp_path: Path) -> Worker:
    return make_worker(store, registry, sink, clock, tmp_path, worker_id="w1")

"""What the adapter tests (`tests/test_provider_*.py`) share: a loopback fake running for a test, the adapter as
the bot builds it (`from_settings`) pointed at that fake by the fake's own settings, and the requests, images and
remote jobs they feed it.

In a test module:

    fake = vendor_fixture(LumaFake)          # the fixture `fake`: a started fake, stopped after the test
    luma = adapter_fixture(from_settings)    # the fixture `luma`: the adapter on `fake`, closed after the test
    adapter = adapter_for(from_settings)     # `async with adapter(fake, tmp_path, lumaai_api_key="x") as luma:`
    request = request_maker(model="luma/ray-2", duration=5)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest
from PIL import Image

from bot.clock import FakeClock
from bot.config import Settings
from bot.domain import Requester, VideoRequest
from bot.errors import CreateOutcomeUnknown, CredentialsRejected, ProviderError, ResultExpired
from bot.jobs.notify import FileSink
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers.base import PollResult, ProviderHealth, RemoteJob, RemoteState, VideoProvider
from bot.providers.registry import ProviderRegistry
from bot.store.base import Store
from tests.conftest import make_worker
from tests.fakes.providers.base import FakeVendor

PROMPT = "a lighthouse in a storm"
JOB_ID = "job-1"
ALICE = Requester(guild_id=1, user_id=10, channel_id=100)
EVER = (0.0, 1e12)
"""A time window holding every charge (for `Store.admission`)."""


class Adapter(Protocol):
    async def health(self) -> ProviderHealth: ...

    async def submit(self, job_id: str, request: VideoRequest) -> str: ...

    async def poll(self, remote: RemoteJob) -> PollResult: ...

    async def download(self, remote: RemoteJob, result: PollResult, dest: Path) -> None: ...

    async def aclose(self) -> None: ...


F = TypeVar("F", bound=FakeVendor)
A = TypeVar("A", bound=Adapter)
FromSettings = Callable[[Settings], A | None]


def settings_for(fake: FakeVendor | None, tmp_path: Path, **overrides: Any) -> Settings:
    """The settings the bot would read from the fake's environment (none of the developer's `.env`)."""
    return Settings(_env_file=None, data_dir=tmp_path, **{**(fake.settings() if fake else {}), **overrides})


def build(from_settings: FromSettings[A], fake: FakeVendor | None, tmp_path: Path, **overrides: Any) -> A:
    """The adapter as the bot builds it; the caller closes it."""
    made = from_settings(settings_for(fake, tmp_path, **overrides))
    assert made is not None
    return made


@contextlib.asynccontextmanager
async def opened(from_settings: FromSettings[A], fake: FakeVendor | None, tmp_path: Path,
                 **overrides: Any) -> AsyncIterator[A]:  # fmt: skip
    """`build`, closed when the block ends."""
    made = build(from_settings, fake, tmp_path, **overrides)
    try:
        yield made
    finally:
        await made.aclose()


def adapter_for(from_settings: FromSettings[A]) -> Callable[..., contextlib.AbstractAsyncContextManager[A]]:
    """`adapter(fake, tmp_path, **overrides)`: `opened` for this adapter, as `async with adapter(...) as x:`."""
    return functools.partial(opened, from_settings)


def vendor_fixture(fake_class: type[F]) -> Any:
    """A fixture (named as the module attribute it is assigned to): a started `fake_class`, stopped after."""

    @pytest.fixture
    async def running() -> AsyncIterator[F]:
        async with fake_class() as vendor:
            assert isinstance(vendor, fake_class)
            yield vendor

    return running


def adapter_fixture(from_settings: FromSettings[A]) -> Any:
    """A fixture (named as the module attribute it is assigned to): the adapter on the test's `fake`."""

    @pytest.fixture
    async def adapter(fake: FakeVendor, tmp_path: Path) -> AsyncIterator[A]:
        async with opened(from_settings, fake, tmp_path) as made:
            yield made

    return adapter


def request_maker(**defaults: Any) -> Callable[..., VideoRequest]:
    """`request(**fields)`: a request with `PROMPT` and these defaults, any field overridden."""

    def request(**fields: Any) -> VideoRequest:
        return VideoRequest(**{"prompt": PROMPT, **defaults, **fields})

    return request


def image_file(tmp_path: Path, size: tuple[int, int] = (640, 480), fmt: str = "PNG", *,
               color: tuple[int, int, int] = (200, 80, 40), name: str | None = None) -> Path:  # fmt: skip
    """A plain image of `size`, saved as `fmt`."""
    path = tmp_path / (name or f"frame-{size[0]}x{size[1]}.{fmt.lower()}")
    Image.new("RGB", size, color).save(path, fmt)
    return path


def sent_body(fake: FakeVendor) -> Any:
    """The body of the one job the fake took."""
    (job,) = fake.jobs.values()
    return job.body


async def submitted(adapter: Adapter, request: VideoRequest, job_id: str = JOB_ID) -> RemoteJob:
    return RemoteJob(job_id, await adapter.submit(job_id, request), request)


async def polled(adapter: Adapter, remote: RemoteJob, count: int) -> list[PollResult]:
    return [await adapter.poll(remote) for _ in range(count)]


async def poll_until_done(adapter: Adapter, remote: RemoteJob, limit: int = 10) -> list[PollResult]:
    """Every poll until the job ended (or `limit` polls)."""
    results = [await adapter.poll(remote)]
    while results[-1].state in (RemoteState.QUEUED, RemoteState.RUNNING) and len(results) < limit:
        results.append(await adapter.poll(remote))
    return results


async def engine(adapter: VideoProvider, store: Store, clock: FakeClock, sink: FileSink,
                 tmp_path: Path) -> tuple[JobService, Worker]:  # fmt: skip
    """The job service and a worker over this one adapter, started as the bot starts its providers."""
    registry = ProviderRegistry([adapter])
    await registry.start()
    return JobService(store, registry, clock), make_worker(store, registry, sink, clock, tmp_path, worker_id="w1")


async def result_url_answers(fake: FakeVendor, adapter: Adapter, request: VideoRequest, headers: dict[str, str],
                             forge: str = "x") -> tuple[httpx.Response, ...]:  # fmt: skip
    """A finished job's result URL fetched four ways: with the API's credential header, with its `Signature`
    forged (`forge` put in front), without its query, and as handed out."""
    fake.polls_to_finish = 0
    url = (await adapter.poll(await submitted(adapter, request))).output_url
    assert url is not None
    async with httpx.AsyncClient() as client:
        return (
            await client.get(url, headers=headers),
            await client.get(url.replace("Signature=", f"Signature={forge}")),
            await client.get(url.split("?", 1)[0]),
            await client.get(url),
        )


# --- what several adapters' tests check alike (each test passes its vendor's fake, adapter and request) -----------
async def check_throttled_create(fake: FakeVendor, adapter: Adapter, request: VideoRequest) -> None:
    """A create refused with 429 and a wait may be repeated after that wait: nothing was made."""
    fake.fail_next("create", 429, retry_after=2)
    with pytest.raises(ProviderError) as caught:
        await adapter.submit(JOB_ID, request)
    assert caught.value.retryable and caught.value.retry_after == 2
    assert fake.creates == 0


async def check_failing_create(fake: FakeVendor, adapter: Adapter, request: VideoRequest, status: int) -> None:
    """A create the server failed on may have made the video: never repeated."""
    fake.fail_next("create", status)
    with pytest.raises(CreateOutcomeUnknown):
        await adapter.submit(JOB_ID, request)


async def check_lost_create_answer(fake: FakeVendor, adapter: Adapter, request: VideoRequest) -> None:
    fake.drop_create_answer = True
    with pytest.raises(CreateOutcomeUnknown):
        await adapter.submit(JOB_ID, request)
    assert fake.creates == 1


async def check_failing_polls(fake: FakeVendor, adapter: Adapter, request: VideoRequest) -> None:
    """Polls failing with 503 are retryable, and the job is still there after them."""
    remote = await submitted(adapter, request)
    fake.fail_next("poll", 503, times=3)
    for _ in range(3):
        with pytest.raises(ProviderError) as caught:
            await adapter.poll(remote)
        assert caught.value.retryable
    assert (await adapter.poll(remote)).state is RemoteState.QUEUED


async def check_expired_url(fake: FakeVendor, adapter: Adapter, request: VideoRequest, tmp_path: Path) -> None:
    """An expired result URL is `ResultExpired`, and the next poll hands out a fresh one that downloads."""
    fake.expire_first_url = True
    fake.polls_to_finish = 0
    remote = await submitted(adapter, request)
    first = await adapter.poll(remote)
    with pytest.raises(ResultExpired):
        await adapter.download(remote, first, tmp_path / "clip.mp4")
    again = await adapter.poll(remote)
    assert again.output_url != first.output_url
    await adapter.download(remote, again, tmp_path / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == fake.video


async def check_wrong_key(fake: FakeVendor, adapter: Adapter, request: VideoRequest, variable: str, secret: str,
                          status: int = 401) -> None:  # fmt: skip
    """A create with a wrong key is `CredentialsRejected`, naming the variable and never the key."""
    with pytest.raises(CredentialsRejected) as caught:
        await adapter.submit(JOB_ID, request)
    assert caught.value.variable == variable and variable in str(caught.value) and secret not in str(caught.value)
    assert fake.seen[0].status == status and fake.creates == 0


async def check_bad_key_health(adapter: Adapter, variable: str, secret: str) -> ProviderHealth:
    """Health with a bad key: reachable, not authenticated, naming the variable and never the key."""
    health = await adapter.health()
    assert health.reachable and not health.authenticated and not health.ok
    assert health.problem is not None and variable in health.problem
    assert secret not in health.problem
    return health


async def check_unreachable_health(fake: FakeVendor, adapter: Adapter, base_variable: str) -> None:
    """Health once nothing listens at the base URL (the fake stopped): unreachable, naming the setting."""
    await fake.close()
    health = await adapter.health()
    assert not health.reachable and health.problem is not None and base_variable in health.problem


def check_no_key_no_provider(from_settings: FromSettings[A], variable: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch, blank: str = "") -> None:  # fmt: skip
    """No adapter without its key, nor with an empty one (`blank`)."""
    monkeypatch.delenv(variable, raising=False)
    assert from_settings(settings_for(None, tmp_path)) is None
    assert from_settings(settings_for(None, tmp_path, **{variable.lower(): blank})) is None

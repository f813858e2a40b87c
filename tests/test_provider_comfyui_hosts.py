"""Several ComfyUI hosts: a new prompt goes to the shortest expected wait, a host that stops answering is left
out for a while, and a prompt is only ever on one host. Over HTTP against two loopback ComfyUI fakes whose
queues run on a fake clock (`finish_after`), and the host pool's arithmetic on its own."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.clock import FakeClock
from bot.domain import VideoRequest
from bot.errors import ProviderError
from bot.providers.base import RemoteJob, RemoteState
from bot.providers.comfyui import ComfyUIProvider
from bot.providers.comfyui_hosts import (
    DEFAULT_SECONDS_PER_PROMPT,
    MAX_BACKOFF,
    MIN_BACKOFF,
    HostPool,
    parse_hosts,
    run_seconds,
)
from bot.providers.comfyui_workflow import load_workflows
from tests.fakes.providers.comfyui import WORKFLOWS, ComfyUIFake

TEXT = VideoRequest(prompt="a red fox running through snow", model=ComfyUIFake.model, duration=5, seed=42)
SLOW_SECONDS, FAST_SECONDS = 90.0, 30.0
"""Run time of a prompt on each host: the fast one is three times as fast."""
ARRIVAL_SECONDS = 30.0
"""A new job every 30 s: three quarters of what the two hosts can do together (1/30 + 1/90 a second)."""
POLL_SECONDS = 10.0


@contextlib.asynccontextmanager
async def adapter(*fakes: ComfyUIFake, clock: FakeClock) -> AsyncIterator[ComfyUIProvider]:
    hosts = parse_hosts(",".join(fake.base_url for fake in fakes))
    provider = ComfyUIProvider(hosts, load_workflows(WORKFLOWS), max_download_bytes=10**7, clock=clock.now)
    try:
        yield provider
    finally:
        await provider.aclose()


def on_fake_clock(clock: FakeClock, fake: ComfyUIFake, seconds_per_prompt: float) -> ComfyUIFake:
    fake.clock, fake.finish_after = clock.now, seconds_per_prompt
    return fake


def host_of(remote_id: str) -> str:
    return remote_id.partition("@")[2]


def prompt_of(job_id: str) -> str:
    return str(uuid.uuid5(uuid.UUID("5f0c4a38-8a56-4e0c-9c55-2d3c1d1b6a71"), job_id))


async def run_arrivals(provider: ComfyUIProvider, clock: FakeClock, jobs: int) -> Counter[str]:
    """The worker's part, on the fake clock: a job arrives every ARRIVAL_SECONDS and is submitted as soon as
    fewer than `max_concurrency` run; every POLL_SECONDS each running job is polled. Jobs placed per host."""
    placed: Counter[str] = Counter()
    arrivals = [clock.now() + n * ARRIVAL_SECONDS for n in range(jobs)]
    waiting: deque[str] = deque()
    running: list[RemoteJob] = []
    while arrivals or waiting or running:
        while arrivals and arrivals[0] <= clock.now():
            waiting.append(f"job-{jobs - len(arrivals)}")
            arrivals.pop(0)
        while waiting and len(running) < provider.max_concurrency:
            job_id = waiting.popleft()
            remote_id = await provider.submit(job_id, TEXT)
            placed[host_of(remote_id)] += 1
            running.append(RemoteJob(job_id, remote_id, TEXT))
        clock.advance(POLL_SECONDS)
        for job in list(running):
            if (await provider.poll(job)).state is RemoteState.SUCCEEDED:
                running.remove(job)
    return placed


async def test_a_burst_is_shared_in_proportion_to_speed() -> None:
    clock = FakeClock()
    async with ComfyUIFake() as slow, ComfyUIFake() as fast:
        on_fake_clock(clock, slow, SLOW_SECONDS)
        on_fake_clock(clock, fast, FAST_SECONDS)
        async with adapter(slow, fast, clock=clock) as provider:
            first = [RemoteJob(job_id, await provider.submit(job_id, TEXT), TEXT) for job_id in ("job-a", "job-b")]
            assert {host_of(job.remote_id) for job in first} == {f"{slow.base_url}/", f"{fast.base_url}/"}
            clock.advance(SLOW_SECONDS)
            assert [(await provider.poll(job)).state for job in first] == [RemoteState.SUCCEEDED] * 2
            measured = {host.url: provider.pool.seconds_per_prompt(host) for host in provider.hosts}
            assert measured == {f"{slow.base_url}/": SLOW_SECONDS, f"{fast.base_url}/": FAST_SECONDS}

            placed = Counter([host_of(await provider.submit(f"job-{n}", TEXT)) for n in range(40)])
    # Three times as fast: three jobs in four, give or take two (queue lengths alone would split it 20/20).
    assert abs(placed[f"{fast.base_url}/"] - 30) <= 2, placed
    assert (slow.creates + fast.creates, slow.creates) == (42, placed[f"{slow.base_url}/"] + 1)


async def test_a_steady_stream_goes_where_each_job_starts_soonest() -> None:
    clock = FakeClock()
    async with ComfyUIFake() as slow, ComfyUIFake() as fast:
        on_fake_clock(clock, slow, SLOW_SECONDS)
        on_fake_clock(clock, fast, FAST_SECONDS)
        async with adapter(slow, fast, clock=clock) as provider:
            placed = await run_arrivals(provider, clock, jobs=40)
    # At three quarters of the two hosts' capacity the fast host is nearly always the sooner start: the slow one
    # gets a job only when the fast one is two behind (queue lengths alone would give the fast host about 0.75).
    assert placed[f"{fast.base_url}/"] >= 36, placed


async def test_a_dead_host_gets_no_new_prompts_and_keeps_its_own() -> None:
    clock = FakeClock()
    async with ComfyUIFake() as first, ComfyUIFake() as second, adapter(first, second, clock=clock) as provider:
        on_first = await provider.submit("job-1", TEXT)
        on_second = await provider.submit("job-2", TEXT)
        assert (host_of(on_first), host_of(on_second)) == (f"{first.base_url}/", f"{second.base_url}/")

        first.crash_after_create = True  # job-3 gets in, then the host dies before it can answer
        with pytest.raises(ProviderError) as lost:
            await provider.submit("job-3", TEXT)
        assert lost.value.retryable and prompt_of("job-3") in first.jobs
        await first.close()
        with pytest.raises(ProviderError) as unknown:
            await provider.submit("job-3", TEXT)  # the worker tries again: job-3 may be running on the dead host
        assert unknown.value.retryable, "asked again later, never sent to the other host"

        placed = [await provider.submit(f"job-{n}", TEXT) for n in range(4, 8)]
        assert {host_of(remote_id) for remote_id in placed} == {f"{second.base_url}/"}
        for _ in range(3):
            with pytest.raises(ProviderError) as down:
                await provider.poll(RemoteJob("job-1", on_first, TEXT))
            assert down.value.retryable, "polled where it is, until the worker's deadline"
        assert prompt_of("job-1") not in second.jobs and prompt_of("job-3") not in second.jobs
        assert second.creates == 5


async def test_a_host_back_is_used_again_after_its_pause() -> None:
    clock = FakeClock()
    async with ComfyUIFake() as first, ComfyUIFake() as second, adapter(first, second, clock=clock) as provider:
        on_first = await provider.submit("job-1", TEXT)
        await provider.submit("job-2", TEXT)
        first.crash_after_create = True
        with pytest.raises(ProviderError):
            await provider.submit("job-3", TEXT)
        await first.close()

        await first.come_back()
        asked = len(first.seen)
        for job_id in ("job-4", "job-5"):
            assert host_of(await provider.submit(job_id, TEXT)) == f"{second.base_url}/"
        assert len(first.seen) == asked, "out of rotation: not even asked"

        clock.advance(MIN_BACKOFF)
        assert await provider.submit("job-3", TEXT) == f"{prompt_of('job-3')}@{first.base_url}/", "found, not resent"
        assert host_of(await provider.submit("job-6", TEXT)) == f"{first.base_url}/", "two queued there, three here"
        states = [(await provider.poll(RemoteJob("job-1", on_first, TEXT))).state for _ in range(3)]
        assert states[-1] is RemoteState.SUCCEEDED, "its first job ends where it was"
        assert (first.creates, second.creates) == (3, 3)


async def test_a_host_that_keeps_failing_waits_ever_longer() -> None:
    clock = FakeClock()
    async with ComfyUIFake() as first, ComfyUIFake() as second, adapter(first, second, clock=clock) as provider:
        await first.close()
        pauses = []
        for n in range(6):
            assert host_of(await provider.submit(f"job-{n}", TEXT)) == f"{second.base_url}/"
            record = provider.pool.records[f"{first.base_url}/"]
            pauses.append(record.back_at - clock.now())
            clock.advance(record.back_at - clock.now())
        assert pauses == [30, 60, 120, 240, 300, 300]
        await first.come_back()
        assert host_of(await provider.submit("job-6", TEXT)) == f"{first.base_url}/"
        assert provider.pool.records[f"{first.base_url}/"].failures == 0


async def test_with_every_host_down_each_is_still_tried() -> None:
    clock = FakeClock()
    async with ComfyUIFake() as only, adapter(only, clock=clock) as provider:
        await only.close()
        with pytest.raises(ProviderError) as down:
            await provider.submit("job-1", TEXT)
        assert down.value.retryable and not provider.pool.in_rotation(provider.hosts[0])
        await only.come_back()
        assert host_of(await provider.submit("job-1", TEXT)) == f"{only.base_url}/", "no pause with one host"


# --- the pool on its own --------------------------------------------------------------------------------------


def history_entry(*messages: tuple[str, Any]) -> dict[str, Any]:
    return {"outputs": {}, "status": {"status_str": "success", "completed": True,
                                      "messages": [[event, data] for event, data in messages]}}  # fmt: skip


def ran(seconds: float) -> dict[str, Any]:
    start, end = 1_767_225_600_000, 1_767_225_600_000 + int(seconds * 1000)
    return history_entry(("execution_start", {"prompt_id": "p", "timestamp": start}),
                         ("execution_cached", {"nodes": [], "prompt_id": "p", "timestamp": start}),
                         ("execution_success", {"prompt_id": "p", "timestamp": end}))  # fmt: skip


def test_run_time_comes_from_comfyuis_timestamps() -> None:
    assert run_seconds(ran(42.5)) == 42.5
    assert run_seconds(history_entry(("execution_start", {"prompt_id": "p"}), ("execution_success", {}))) is None
    failed = history_entry(("execution_start", {"timestamp": 1}), ("execution_error", {"timestamp": 9000}))
    assert run_seconds(failed) is None
    assert run_seconds({"status": "garbage"}) is None and run_seconds({}) is None


def test_expected_wait_weighs_the_queue_by_the_measured_speed() -> None:
    a, b, c = parse_hosts("http://a:8188, http://b:8188, http://c:8188")
    pool = HostPool((a, b, c), clock=FakeClock().now)
    assert pool.expected_wait(a, 2) == 3 * DEFAULT_SECONDS_PER_PROMPT, "nothing measured: queue lengths decide"
    pool.finished(a, "p1", ran(100))
    pool.finished(a, "p1", ran(100))  # polled again before its download: counted once
    pool.finished(b, "p2", ran(20))
    assert (pool.seconds_per_prompt(a), pool.seconds_per_prompt(b)) == (100, 20)
    assert pool.seconds_per_prompt(c) == 60, "not measured yet: the others' average"
    pool.finished(a, "p3", ran(200))
    assert pool.seconds_per_prompt(a) == pytest.approx(130), "a moving average"
    assert pool.choose([(a, 0), (b, 5), (c, 1)]) == b, "6 × 20 s beats 1 × 130 s and 2 × 60 s"


def test_equal_waits_take_turns() -> None:
    a, b = parse_hosts("http://a:8188, http://b:8188")
    pool = HostPool((a, b), clock=FakeClock().now)
    chosen = []
    for _ in range(4):
        chosen.append(pool.choose([(host, 1) for host in pool.candidates()]))
    assert chosen == [a, b, a, b]


def test_a_failure_while_out_does_not_lengthen_the_pause() -> None:
    clock = FakeClock()
    a, b = parse_hosts("http://a:8188, http://b:8188")
    pool = HostPool((a, b), clock=clock.now)
    pool.unreachable(a)
    clock.advance(10)
    pool.unreachable(a)  # a poll of one of its prompts failed too
    assert pool.candidates() == [b] and pool.records[a.url].back_at == clock.now() + 20
    clock.advance(20)
    assert pool.candidates() == [a, b]
    pool.unreachable(a)  # the retry failed: twice as long
    assert pool.records[a.url].back_at == clock.now() + 2 * MIN_BACKOFF <= clock.now() + MAX_BACKOFF
    pool.answered(a)
    assert pool.candidates() == [a, b] and pool.records[a.url].failures == 0
    pool.unreachable(parse_hosts("http://gone:8188")[0])  # dropped from COMFYUI_URL since: only polled, ignored

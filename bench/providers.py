"""Provider layer costs on this machine, against the loopback vendor fakes.

    python bench/providers.py [--job-seconds 60] [--download-mb 200]

Prints:
- status requests per job for a job that takes `--job-seconds` at each provider (the aim is at most 15 for a
  60 s job): one job through the real worker, on an injected clock shared with the fake, so no real time passes;
- the growth of a process's RSS (sampled every 5 ms) while it downloads a `--download-mb` clip through
  `ProviderHttp.download` (the aim is under 30 MB: the clip is streamed to disk, never held). The clip is
  streamed by a server in this process, and downloaded by a child process that measures only itself.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from bot.clock import FakeClock
from bot.config import Settings
from bot.domain import QuotaLimits, Requester, VideoRequest
from bot.jobs.notify import FileSink
from bot.jobs.retry import RetryPolicy
from bot.jobs.service import JobService
from bot.jobs.worker import Worker
from bot.providers import build_registry
from bot.store import open_store
from tests.fakes.providers import ALL_FAKES
from tests.fakes.providers.base import FakeVendor

MEMBER = Requester(guild_id=1, user_id=1, channel_id=1)
CHUNK = b"\x00" * (1 << 20)


async def polls_for_one_job(fake_class: type[FakeVendor], seconds: float, workdir: Path) -> tuple[int, str]:
    clock = FakeClock()
    async with fake_class() as vendor:
        vendor.finish_after = seconds
        vendor.clock = clock.now
        settings = Settings(_env_file=None, data_dir=workdir / vendor.provider, **vendor.settings())  # type: ignore[call-arg]
        registry = build_registry(settings)
        await registry.start()
        store = await open_store(f"sqlite:///{workdir / f'{vendor.provider}.db'}")
        try:
            await store.update_policy(1, "user", 1, QuotaLimits(unlimited=True))
            service = JobService(store, registry, clock)
            sink = FileSink(workdir / f"{vendor.provider}-out")
            sink.target.mkdir()
            worker = Worker(store, registry, sink, clock, staging_dir=workdir / "staging", worker_id="bench",
                            retry=RetryPolicy(jitter=0.0))  # fmt: skip
            request = VideoRequest(prompt="a lighthouse in a storm", model=vendor.model, duration=vendor.durations[0])
            job = await service.enqueue(MEMBER, request)
            await worker.drain()
            final = await service.get(job.id)
        finally:
            await store.close()
            await registry.aclose()
        return vendor.count("poll"), final.state.value


async def serve_stream(size_mb: int) -> tuple[web.AppRunner, str]:
    async def clip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = size_mb * len(CHUNK)
        await response.prepare(request)
        for _ in range(size_mb):
            await response.write(CHUNK)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/clip.mp4", clip)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def download_child(url: str, dest: Path) -> None:
    """In the child: fetch through the adapters' shared path and print the peak RSS growth in MB."""
    from bot.providers.http import ProviderHttp

    http = ProviderHttp("bench", url, credential_variable="NONE")
    before = rss_kb("VmRSS")
    samples: list[int] = []

    async def sample() -> None:
        # The process's high-water mark may date from its imports, so the growth is sampled while downloading.
        while True:
            samples.append(rss_kb("VmRSS"))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    size = await http.download(f"{url}/clip.mp4", dest)
    sampler.cancel()
    await http.aclose()
    print(f"{size} {max(0, max(samples) - before) / 1024:.1f}")


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def rss_growth(size_mb: int, workdir: Path) -> tuple[int, float]:
    runner, url = await serve_stream(size_mb)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child", url, str(workdir / "big.mp4"), stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate()
    finally:
        await runner.cleanup()
    size, growth = out.decode().split()
    return int(size), float(growth)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-seconds", type=float, default=60.0)
    parser.add_argument("--download-mb", type=int, default=200)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        await download_child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(f"status requests per job for a {args.job_seconds:g} s job (aim: at most 15)")
        for fake_class in ALL_FAKES:
            polls, state = await polls_for_one_job(fake_class, args.job_seconds, workdir)
            print(f"  {fake_class.provider:<10} {polls:3d} status requests  ({state})")
        size, growth = await rss_growth(args.download_mb, workdir)
        print(f"download of a {size / 1e6:.0f} MB clip: peak RSS growth {growth:.1f} MB (aim: under 30 MB)")


if __name__ == "__main__":
    asyncio.run(main())

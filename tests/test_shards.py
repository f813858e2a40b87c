"""Several shards per gateway process (issue 11): the shard settings, the sharded client in one process, and two
real gateway processes with two shards each plus a worker on one PostgreSQL database.

Discord sends each server's events (interactions included) to the shard `(guild_id >> 22) % DISCORD_SHARD_COUNT`
and to no other, so a command is only ever seen by the gateway process running that shard; the worker that ends
the job delivers over REST whatever gateway took the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import load_settings
from bot.discord.client import ShardedVideoBot, VideoBot, bot_class
from bot.errors import ConfigError
from tests.crash_checks import PostgresDatabase, clip_messages, verify
from tests.crash_harness import BotRig
from tests.fakes.discord import FakeDiscord, InteractionRecord
from tests.fakes.discord.gateway import Session

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
needs_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")


def guild_on_shard(shard: int, count: int) -> int:
    """A guild id (a snowflake) that Discord routes to `shard` of `count`."""
    timestamp = 400_000_000_000  # ms since Discord's epoch: years before the fake's own ids
    return (timestamp - timestamp % count + shard) << 22 | 1


# ------------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("ids", "count", "expected"),
    [
        ("0,1,1", 2, "setting DISCORD_SHARD_IDS is invalid: lists shard 1 more than once"),
        ("2,0,2,0", 4, "lists shard 0, 2 more than once"),
        ("2,4,5", 4, "DISCORD_SHARD_IDS must be from 0 to 3 (DISCORD_SHARD_COUNT is 4); 4, 5 are not"),
        ("-1", 2, "DISCORD_SHARD_IDS must be from 0 to 1 (DISCORD_SHARD_COUNT is 2); -1 is not"),
        ("0,1", None, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ("0;1", 2, "must be a comma list of shard numbers"),
        ("0,,1", 2, "must be a comma list of shard numbers"),
        (None, 0, "setting DISCORD_SHARD_COUNT is invalid"),
    ],
)
def test_shard_settings_are_refused_with_a_message_naming_the_problem(
    ids: str | None, count: int | None, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, discord_shard_ids=ids, discord_shard_count=count)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("ids", "count", "runs", "client"),
    [
        (None, None, None, VideoBot),  # not sharded: Discord sends every server to the one socket
        ("  ", None, None, VideoBot),  # an empty value in .env is unset
        (None, 1, [0], VideoBot),
        ("3", 4, [3], VideoBot),  # one shard: the plain client
        (None, 3, [0, 1, 2], ShardedVideoBot),  # a count without ids: every shard, in this process
        ("2, 0", 4, [2, 0], ShardedVideoBot),
    ],
)
def test_each_gateway_runs_the_shards_it_is_given_with_the_client_that_fits(
    ids: str | None, count: int | None, runs: list[int] | None, client: type[VideoBot]
) -> None:
    settings = load_settings(_env_file=None, discord_shard_ids=ids, discord_shard_count=count)
    assert settings.gateway_shard_ids == runs
    assert bot_class(settings) is client


def test_shard_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_SHARD_COUNT", "8")
    monkeypatch.setenv("DISCORD_SHARD_IDS", "4,5,6,7")
    assert load_settings(_env_file=None).gateway_shard_ids == [4, 5, 6, 7]


# ------------------------------------------------------------------------------------------------ one process


async def test_one_process_runs_every_shard_and_healthz_wants_each_socket_open(tmp_path: Path) -> None:
    from tests.discord_harness import running_bot

    fake = FakeDiscord()
    second = fake.add_guild("Second server", id=guild_on_shard(1, 2))
    bob = fake.add_user("bob", guild=second.id)
    await fake.start()
    try:
        async with running_bot(tmp_path, with_worker=False, fake=fake, discord_shard_count=2) as h:
            assert isinstance(h.bot, ShardedVideoBot)
            assert sorted(s.shard for s in fake.gateway.sessions.values()) == [(0, 2), (1, 2)]
            assert h.bot.gateway_connected()

            rec = await fake.slash("video", {"prompt": "a heron in the rain", "duration": 1}, user=bob, guild=second.id)
            await rec.wait_original()
            assert owner_of(fake, rec).shard == (1, 2)
            jobs = await h.store.member_jobs(second.id, bob.id, include_finished=True)
            assert [j.guild_id for j in jobs] == [second.id]

            shard = h.bot.get_shard(1)
            assert shard is not None
            await shard.disconnect()
            assert not h.bot.gateway_connected(), "one shard down is reported, though shard 0 is still open"
    finally:
        await fake.close()


def owner_of(fake: FakeDiscord, rec: InteractionRecord) -> Session:
    """The one gateway session the fake sent this interaction to (exactly one, or the test fails)."""
    needle = json.dumps(rec.token)
    sessions = [s for s in fake.gateway.sessions.values() if any(needle in frame for _, frame in s.history)]
    assert len(sessions) == 1, f"interaction {rec.id} went to {len(sessions)} sessions"
    return sessions[0]


# ------------------------------------------------------------------------------------------------ processes

SHARD_COUNT = 4
GATEWAYS = {"a": [0, 1], "b": [2, 3]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def healthz(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def wait_all_shards(rig: BotRig, port: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Until the process's /healthz says every one of its shards is connected (the second shard's IDENTIFY
    comes 5 s after the first: discord.py spaces them as Discord asks)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            if (await healthz(port)).get("gateway_connected") is True:
                return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gateway not connected on every shard within {timeout:.0f}s\n{rig.log_tails()}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def postgres() -> AsyncIterator[PostgresDatabase]:
    assert TEST_DATABASE_URL is not None
    db = PostgresDatabase(TEST_DATABASE_URL)
    await db.prepare()
    try:
        yield db
    finally:
        await db.cleanup()


@needs_postgres
@pytest.mark.timeout(180)
async def test_two_gateways_with_two_shards_each_answer_their_servers_and_a_worker_delivers_everywhere(
    tmp_path: Path, postgres: PostgresDatabase
) -> None:
    fake = FakeDiscord()
    guilds = [fake.add_guild(f"Server on shard {k}", id=guild_on_shard(k, SHARD_COUNT)) for k in range(SHARD_COUNT)]
    members = [fake.add_user(f"member{k}", guild=g.id) for k, g in enumerate(guilds)]
    await fake.start()
    rigs: dict[str, BotRig] = {}
    ports: dict[str, int] = {}
    try:
        for name, shards in GATEWAYS.items():
            ports[name] = free_port()
            rigs[name] = rig = BotRig(fake, postgres, tmp_path / f"gateway-{name}", log=print)
            rig.extra_env = {
                "DISCORD_SHARD_COUNT": str(SHARD_COUNT),
                "DISCORD_SHARD_IDS": ",".join(map(str, shards)),
                "METRICS_PORT": str(ports[name]),
            }
            await rig.start("gateway")  # ready on its first shard; the second follows 5 s later
        for name in GATEWAYS:
            await wait_all_shards(rigs[name], ports[name])
        rigs["worker"] = BotRig(fake, postgres, tmp_path / "worker", log=print)
        await rigs["worker"].start("worker")

        # Every shard was IDENTIFYed once, by the process given it.
        sessions = list(fake.gateway.sessions.values())
        assert sorted(s.shard for s in sessions) == [(k, SHARD_COUNT) for k in range(SHARD_COUNT)]
        logs = {name: rigs[name].processes["gateway"].log_text() for name in GATEWAYS}
        process_of = {}
        for session in sessions:
            holders = [name for name, text in logs.items() if f"(Session ID: {session.id})" in text]
            assert holders == [n for n, shards in GATEWAYS.items() if session.shard[0] in shards], session
            process_of[session.id] = holders[0]

        records = [
            await fake.slash("video", {"prompt": f"a lighthouse, shard {k}", "duration": 1}, user=m, guild=g.id)
            for k, (g, m) in enumerate(zip(guilds, members, strict=True))
        ]
        for rec in records:
            await rec.wait_original(timeout=10)
        snapshot = await rigs["a"].wait_settled(watch=[r.processes[p] for r in rigs.values() for p in r.processes])
        await asyncio.sleep(0.5)  # a late duplicate post would show up by now

        report = verify(await postgres.snapshot(), fake, records)
        assert report.ok, report.explain() + "".join(r.log_tails() for r in rigs.values())
        jobs = {json.loads(j["delivery_ref"])["token"]: j for j in snapshot.jobs}
        logs = {name: rigs[name].processes["gateway"].log_text() for name in GATEWAYS}
        for k, (rec, guild) in enumerate(zip(records, guilds, strict=True)):
            session = owner_of(fake, rec)
            assert session.shard == (k, SHARD_COUNT), f"guild {guild.id} reached shard {session.shard}"
            assert len(rec.attempts) == 1 and rec.attempts[0].accepted, "acknowledged exactly once"
            job = jobs[rec.token]
            queued_by = [name for name, text in logs.items() if f"job {job['id']}: queued" in text]
            assert queued_by == [process_of[session.id]], f"the gateway owning shard {k} took the command"
            clips = clip_messages(fake, guild.text_channel.id)
            assert [job_id for job_id, _ in clips] == [job["id"]] and job["state"] == "delivered"

        for name, port in ports.items():
            assert (await healthz(port))["gateway_connected"] is True, name
        for name, rig in rigs.items():
            assert set((await rig.stop_all()).values()) == {0}, f"{name} did not stop cleanly\n{rig.log_tails()}"
    finally:
        for rig in rigs.values():
            await rig.kill_all()
        await fake.close()

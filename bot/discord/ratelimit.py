"""Discord's global REST limit (50 requests/s per bot token) across processes: a pause every process shares.

discord.py keeps its rate-limit state per process. When one process gets a 429 with `global: true` it holds its
own requests (`HTTPClient._global_over`), but the other gateway and worker processes on the same token keep
sending, and each collects a 429 of its own (Discord counts them toward its ban of 10,000 invalid requests per
10 minutes).

What is built: a shared *pause*. The process that is told "global" (the body's `global: true`, or
`X-RateLimit-Global` / `X-RateLimit-Scope: global`) writes "paused until now + retry_after" to the database
(`RateLimitStore.pause_discord`; a later end only extends it), and every process reads it before its
bot-token requests (one read serves those of the next `FRESH_FOR` seconds) and waits until then. Held requests
resume at random within the second after the end (Discord counts per second) and read the pause again first, so
they do not all arrive together and start the next pause at once. A process may thus send for up to `FRESH_FOR`
after another was told to pause: about what a request takes to cross the network anyway.

Not built: a shared token bucket of 50/s, which would write the database on every request (one contended row);
the pause reads one row at most every `FRESH_FOR` per process (bench/global_rate_limit.py measures it) and
writes only on a global 429, and Discord's answer says when to resume. A REST proxy in front of every process
(README: @discordjs/proxy) is the complete answer, per-route buckets included; this is what holds without one.

Where it hooks: the aiohttp `TraceConfig` that discord.py installs on its one session (`http_trace=`, also
used for the metrics). `on_request_start` is awaited before the request is sent, so waiting there holds it;
`on_request_end` sees every answer. Only requests with the bot token wait: interaction callbacks and webhooks
are not bound to the global limit, so a command is still acknowledged within Discord's 3 s.

The end of a pause is wall-clock time (`Clock.now()`), so processes on different machines need synchronised
clocks (NTP), as the worker leases do. A database that fails or hangs holds a request for at most
`STORE_TIMEOUT`; it is then sent with what this process knows alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp

from bot.errors import StoreError

if TYPE_CHECKING:
    from bot.clock import Clock
    from bot.store.base import RateLimitStore

log = logging.getLogger(__name__)

MAX_PAUSE = 60.0
"""The longest pause written or waited: Discord's global retry_after is under a few seconds, and a far-off end
(a wrong clock, a bad row) must not hold every process for long."""
RESUME_SPREAD = 1.0
"""Held requests resume at random within this many seconds after the pause ends: Discord's window."""
STORE_TIMEOUT = 1.0
"""A database that has not answered by then does not hold a request up: it is sent without the shared pause."""
FRESH_FOR = 0.1
"""Seconds one read of the shared pause serves this process's requests: a worker posting a hundred clips a second
reads it ten times a second, not a hundred."""


def uses_bot_token(headers: Mapping[str, str]) -> bool:
    """Requests with the bot token count toward the global limit; interaction and webhook routes do not."""
    return headers.get("Authorization", "").startswith("Bot ")


def global_retry_after(status: int, headers: Mapping[str, str], body: Any) -> float | None:
    """Seconds the whole token must wait if this answer is a global 429, else None. The body's `retry_after`
    (a float) is preferred to the `Retry-After` header (whole seconds)."""
    if status != 429:
        return None
    body = body if isinstance(body, dict) else {}
    is_global = (
        body.get("global") is True
        or headers.get("X-RateLimit-Global", "").lower() == "true"
        or headers.get("X-RateLimit-Scope", "").lower() == "global"
    )
    if not is_global:
        return None
    for value in (body.get("retry_after"), headers.get("Retry-After")):
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        return min(max(seconds, 0.0), MAX_PAUSE)
    return 1.0  # global, but not said for how long: Discord's window is one second


class GlobalPause:
    """Waits out the shared pause before each bot-token request; extends it after a global 429."""

    def __init__(
        self, store: RateLimitStore, clock: Clock, *, spread: float = RESUME_SPREAD, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.clock = clock
        self.spread = spread
        self.rng = rng or random.Random()
        self.until = 0.0
        """The latest end of a pause this process knows of."""
        self.held = 0
        """Requests this process held for a pause."""
        self._unreadable = False
        self._shared = 0.0
        self._read_at = float("-inf")

    async def before_request(self) -> float:
        """Wait until no pause is in force; returns the seconds waited (0.0 almost always)."""
        waited = 0.0
        while waited < MAX_PAUSE:
            shared = await self._shared_until()
            if shared > self.until:
                self.until = shared
            delay = min(self.until - self.clock.now(), MAX_PAUSE - waited)
            if delay <= 0:
                break
            if waited == 0.0:
                self.held += 1
                log.debug("Discord's global rate limit: holding a request for %.2f s", delay)
            delay = min(delay + self.rng.uniform(0.0, self.spread), MAX_PAUSE - waited)
            await self.clock.sleep(delay)
            waited += delay
        return waited

    async def after_response(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        """Extend the shared pause when Discord answered a global 429."""
        retry_after = global_retry_after(status, headers, body)
        if retry_after is None:
            return
        until = self.clock.now() + retry_after
        self.until = max(self.until, until)
        log.warning("Discord's global rate limit: every process holds its requests for %.2f s", retry_after)
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                await self.store.pause_discord(until)
        except (StoreError, TimeoutError) as exc:
            log.warning("could not share Discord's global rate limit with the other processes: %s", exc)

    async def _shared_until(self) -> float:
        now = self.clock.now()
        if not 0.0 <= now - self._read_at < FRESH_FOR:
            self._shared, self._read_at = await self._read(), now
        return self._shared

    async def _read(self) -> float:
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                until = await self.store.discord_paused_until()
        except (StoreError, TimeoutError) as exc:
            if not self._unreadable:  # once per outage, not once per request
                log.warning("could not read Discord's shared rate-limit pause (sending without it): %s", exc)
            self._unreadable = True
            return 0.0
        self._unreadable = False
        return until

    def install(self, trace: aiohttp.TraceConfig) -> aiohttp.TraceConfig:
        """Hook into the trace of discord.py's session (`bot.discord.client.discord_http_trace`)."""

        async def starting(
            _s: aiohttp.ClientSession, _c: SimpleNamespace, start: aiohttp.TraceRequestStartParams
        ) -> None:
            if uses_bot_token(start.headers):
                await self.before_request()

        async def answered(_s: aiohttp.ClientSession, _c: SimpleNamespace, end: aiohttp.TraceRequestEndParams) -> None:
            response = end.response
            if response.status == 429:  # rare: read the body (aiohttp keeps it for discord.py)
                await self.after_response(response.status, response.headers, await _json_body(response))

        trace.on_request_start.append(starting)
        trace.on_request_end.append(answered)
        return trace


async def _json_body(response: aiohttp.ClientResponse) -> Any:
    try:
        return json.loads(await response.read())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None

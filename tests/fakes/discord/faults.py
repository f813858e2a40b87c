"""Scripted faults of the fake Discord: errors, rate limits and dropped connections, before or after applying.

Why "after applying" as well: Discord (like any server) can create the message and then fail to tell you so,
with a 5xx from its edge or a connection that dies before the answer arrives. discord.py re-sends a request
after a 500/502/504/524 on bot-token routes and after any 5xx on webhook routes (up to 5 tries, uploads
included), so a bot that does not guard its posts (an enforced nonce, or looking for the post before
repeating it) posts twice. These
knobs reproduce exactly that; the plain ones reproduce a failure that happened before anything was applied.

Patterns are those of ``route_matches``: ``"POST /channels/{channel_id}/messages"``, ``"POST /webhooks/*/*"``,
``"PATCH /webhooks/**"``, ``None`` for any route. Faults are consumed in the order they were added, one per
matching request; an after-apply fault is only consumed by a request that succeeded (a refused request has
applied nothing, so it does not use one up).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tests.fakes.discord.models import Fault, RecordedRequest
from tests.fakes.discord.rest import rate_limit_body, route_matches

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

SERVER_ERROR_MESSAGES = {
    500: "500: Internal Server Error",
    502: "502: Bad Gateway",
    503: "503: Service Unavailable",
    504: "504: Gateway Timeout",
}


def server_error_body(status: int) -> dict[str, Any]:
    return {"message": SERVER_ERROR_MESSAGES.get(status, f"{status}: Server Error"), "code": 0}


class FaultsMixin:
    """``fail_next``/``rate_limit_next``/``drop_next`` and ``fail_after_apply``/``drop_after_apply``; the global
    limit (``limit_globally``)."""

    global_per_second: int | None = None
    global_pause: float | None = None
    global_window: tuple[int, int] = (0, 0)
    """(second, bot-token requests counted in it): Discord counts in fixed one-second windows."""
    global_paused_until: float = 0.0
    global_pauses: list[tuple[float, float]]
    """(start, end) of every pause the global limit started, on the fake's clock."""
    bot_token_requests: list[RecordedRequest]
    """Every request with the bot token, accepted or refused, since ``limit_globally``."""

    def fail_next(
        self: FakeDiscord,
        pattern: str | None = None,
        *,
        status: int = 500,
        times: int = 1,
        code: int = 0,
        message: str | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``times`` requests matching ``pattern`` (``None`` = any) get ``status``; nothing is applied.

        The body is ``{"message", "code"}`` (e.g. ``status=404, code=10008, message="Unknown Message"``) unless
        ``body`` is given.
        """
        default = {"message": message or f"{status}: Fake failure", "code": code}
        self.faults.append(Fault(pattern, status, body or default, dict(headers or {}), times))

    def rate_limit_next(
        self: FakeDiscord,
        pattern: str | None = None,
        *,
        retry_after: float = 0.05,
        times: int = 1,
        is_global: bool = False,
    ) -> None:
        """429 as Discord sends it (``Via`` header, JSON ``retry_after``) so discord.py sleeps and retries."""
        body, headers = rate_limit_body(retry_after, is_global)
        self.faults.append(Fault(pattern, 429, body, headers, times))

    def drop_next(self: FakeDiscord, pattern: str | None = None, *, times: int = 1) -> None:
        """Close the connection of the next ``times`` matching requests before applying anything.

        The client sees ``aiohttp.ServerDisconnectedError`` (discord.py does not retry it). Note that aiohttp
        itself re-sends an idempotent request (GET, PUT, DELETE) once after a drop on a reused connection.
        """
        self.faults.append(Fault(pattern, 0, None, {}, times, drop=True))

    def fail_after_apply(
        self: FakeDiscord,
        pattern: str | None = None,
        *,
        status: int = 500,
        times: int = 1,
        body: dict[str, Any] | None = None,
    ) -> None:
        """The next ``times`` matching requests take effect, then answer ``status`` (default a 500).

        The message is created (or edited, or the interaction acknowledged), stored and visible to GETs, the
        gateway and tests, but the client gets ``{"message": "500: Internal Server Error", "code": 0}``;
        discord.py retries 500/502/504 by itself. ``RecordedRequest.fault == "fail_after_apply"``, with the
        real answer in ``applied_status``/``applied_response``.
        """
        if status < 500:
            raise ValueError("an after-apply failure is a 5xx: Discord never refuses what it has done")
        self.faults.append(Fault(pattern, status, body or server_error_body(status), {}, times, after_apply=True))

    def drop_after_apply(self: FakeDiscord, pattern: str | None = None, *, times: int = 1) -> None:
        """The next ``times`` matching requests take effect, then the TCP connection closes without an answer.

        The client sees ``aiohttp.ServerDisconnectedError`` (or ``ClientOSError``): it cannot know whether the
        request was applied. ``RecordedRequest.fault == "drop_after_apply"``, ``status == 0``.
        """
        self.faults.append(Fault(pattern, 0, None, {}, times, after_apply=True, drop=True))

    def limit_globally(self: FakeDiscord, per_second: int, *, pause: float | None = None) -> None:
        """Discord's global limit (50 requests/s per bot token), scaled down: a bot-token request beyond
        ``per_second`` in one second starts a pause of ``pause`` seconds (default: to the end of that second).
        During a pause every bot-token request gets a 429 with ``global: true``, ``X-RateLimit-Scope: global``
        and the time left. Interaction callbacks and webhooks carry no bot token and are never limited."""
        self.global_per_second = per_second
        self.global_pause = pause
        self.global_window = (0, 0)
        self.global_paused_until = 0.0
        self.global_pauses = []
        self.bot_token_requests = []

    def take_global_limit(self: FakeDiscord, rec: RecordedRequest, authorization: str | None) -> Fault | None:
        """The global 429 for this request, if the limit is on and it applies (a request with the bot token)."""
        if self.global_per_second is None or authorization != f"Bot {self.token}":
            return None
        self.bot_token_requests.append(rec)
        now = self.clock.now()
        if now >= self.global_paused_until:
            second, count = self.global_window
            count = count + 1 if second == math.floor(now) else 1
            self.global_window = (math.floor(now), count)
            if count <= self.global_per_second:
                return None
            pause = self.global_pause if self.global_pause is not None else math.floor(now) + 1 - now
            self.global_paused_until = now + pause
            self.global_pauses.append((now, self.global_paused_until))
        body, headers = rate_limit_body(round(self.global_paused_until - now, 3), True)
        return Fault(None, 429, body, headers, 0)

    def take_fault(self: FakeDiscord, method: str, path: str, *, after_apply: bool = False) -> Fault | None:
        """Consume the first live fault of that kind matching the request, if any."""
        for fault in self.faults:
            if fault.after_apply is after_apply and fault.remaining > 0 and route_matches(fault.pattern, method, path):
                fault.remaining -= 1
                return fault
        return None

    def pending_faults(self: FakeDiscord) -> list[Fault]:
        """Faults not used up yet (a test can assert its scripted faults were all hit)."""
        return [f for f in self.faults if f.remaining > 0]

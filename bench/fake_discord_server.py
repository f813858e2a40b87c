"""The loopback fake Discord in a process of its own, driven over a small control HTTP endpoint.

    python bench/fake_discord_server.py [--members 100] [--callback-deadline 3]

Why a process of its own: a benchmark that runs the fake inside the bot's process charges the fake's work
(building payloads, answering callbacks) to the bot's event loop. Here the bot under test has the loop to
itself, as it would against Discord.

On start it prints one JSON line to stdout: `{"api_base", "gateway_url", "token", "control"}`, then serves
until SIGTERM/SIGINT. Control routes (JSON, on 127.0.0.1):

- `GET /state`: gateway sessions, synced command names, REST calls recorded so far.
- `POST /burst` `{"command", "options", "count", "members", "timeout"}`: `count` slash commands from the first
  `members` members, all dispatched at once; answers when every callback arrived (or at the timeout) with,
  per interaction, `latency` (seconds from dispatching INTERACTION_CREATE to the callback reaching the fake),
  the callback `type`, whether it was `ephemeral` and `accepted` (a late one is refused; `null` latency: no
  callback at all).
- `GET /requests?since=N`: the REST calls recorded from index N on, as `[method, path, status]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.discord import FakeDiscord, InteractionRecord


class Control:
    def __init__(self, fake: FakeDiscord, members: int) -> None:
        self.fake = fake
        self.members = [fake.add_user(f"member{i}").id for i in range(members)]

    async def state(self, _request: web.Request) -> web.Response:
        fake = self.fake
        body = {
            "sessions": len(fake.gateway.sessions),
            "identify_count": fake.identify_count,
            "commands": [c["name"] for c in fake.global_commands],
            "requests": len(fake.requests),
        }
        return web.json_response(body)

    async def burst(self, request: web.Request) -> web.Response:
        spec = await request.json()
        count, members = int(spec["count"]), int(spec.get("members") or len(self.members))
        users = self.members[:members]
        name, options = spec["command"], dict(spec.get("options") or {})
        # All dispatched in one pass of the loop: each `slash` queues its frame and yields once. Prompts are
        # numbered so that no two commands are the same.
        records: list[InteractionRecord] = await asyncio.gather(
            *(self.fake.slash(name, _numbered(options, n), user=users[n % len(users)]) for n in range(count))
        )
        timeout = float(spec.get("timeout", 30))
        with contextlib.suppress(TimeoutError):
            answered = lambda: all(r.callback or r.attempts for r in records)  # noqa: E731
            await self.fake.wait_for(answered, timeout, what="every callback")
        results = [_result(r) for r in records]
        return web.json_response({"results": results})

    async def requests(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        calls = [[r.method, r.path, r.status] for r in self.fake.requests[since:]]
        return web.json_response({"requests": calls})


def _numbered(options: dict[str, Any], n: int) -> dict[str, Any]:
    return {k: (f"{n} {v}" if k == "prompt" else v) for k, v in options.items()}


def _result(record: InteractionRecord) -> dict[str, Any]:
    cb = record.callback or (record.attempts[0] if record.attempts else None)
    if cb is None:
        return {"latency": None, "type": None, "ephemeral": None, "accepted": False}
    latency = cb.time - record.created_at
    said = str(cb.data.get("content") or "")[:200] if cb.ephemeral else None
    return {"latency": latency, "type": cb.type, "ephemeral": cb.ephemeral, "accepted": cb.accepted, "said": said}


async def serve(members: int, callback_deadline: float) -> None:
    fake = FakeDiscord()
    fake.callback_deadline = callback_deadline
    await fake.start()
    control = Control(fake, members)
    app = web.Application()
    app.router.add_get("/state", control.state)
    app.router.add_post("/burst", control.burst)
    app.router.add_get("/requests", control.requests)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    info = {
        "api_base": fake.api_base,
        "gateway_url": fake.gateway_url,
        "token": fake.token,
        "control": f"http://127.0.0.1:{sock.getsockname()[1]}",
    }
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await fake.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100, help="members that can send commands")
    parser.add_argument("--callback-deadline", type=float, default=3.0, help="seconds to acknowledge (Discord: 3)")
    args = parser.parse_args()
    asyncio.run(serve(args.members, args.callback_deadline))


if __name__ == "__main__":
    main()

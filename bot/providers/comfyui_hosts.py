"""The ComfyUI hosts of `COMFYUI_URL`, and which one a new prompt goes to.

A new prompt goes to the host where it should start soonest: the **expected wait** of a host is
`(prompts in its queue + 1) × its seconds per prompt`, the queue (running and waiting, everyone's) read from its
`GET /queue` just before, and its seconds per prompt a moving average of the run times of the prompts this
process saw finish there (`execution_start` to `execution_success` in their history entry, ComfyUI's own
timestamps). A host not measured yet counts as the average of the measured ones, or `DEFAULT_SECONDS_PER_PROMPT`
when none is, when only queue lengths matter. Equal waits take turns.

A host that stops answering (refused, timed out, cut off, or its proxy's 502-504) is left out of the rotation
for 30 s, then asked again by the next placement; each failure of that retry doubles the pause, up to 5 min.
It still gets asked about the prompts it already has (they are polled there, never sent elsewhere), and any
answer puts it back. When every host is out, all are asked anyway: a last try beats refusing every job.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.errors import ConfigError, ProviderError

log = logging.getLogger(__name__)

CREDENTIAL_VARIABLE = "COMFYUI_URL"
DEFAULT_SECONDS_PER_PROMPT = 300.0
"""Any positive figure does: it is used only while no host has been measured, when every host has it."""
SMOOTHING = 0.3
"""Weight of the newest run time in a host's moving average: a few prompts follow a change of model or GPU."""
MIN_BACKOFF, MAX_BACKOFF = 30.0, 300.0
GATEWAY_DOWN = frozenset({502, 503, 504})
"""A proxy's answer for a ComfyUI behind it that does not answer."""
TIMED_PROMPTS = 1000
"""Prompts remembered as measured, so the several polls of a finished prompt count it once."""


@dataclass(frozen=True, slots=True)
class Host:
    """One ComfyUI server: its URL without credentials (safe to store and log), and the auth header if any."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)

    def api(self, path: str) -> str:
        return self.url + path

    def ws_url(self, client_id: str) -> str:
        return "ws" + self.url.removeprefix("http") + f"ws?clientId={client_id}"


def parse_hosts(value: str) -> tuple[Host, ...]:
    """`COMFYUI_URL`: one URL or a comma list, each `http(s)://[user:password@]host[:port][/path]`."""
    hosts = []
    for part in (item.strip() for item in value.split(",")):
        if not part:
            continue
        try:
            url = httpx.URL(part)
        except httpx.InvalidURL:
            raise ConfigError(f"{CREDENTIAL_VARIABLE} is invalid: one of its URLs cannot be read") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"{CREDENTIAL_VARIABLE} is invalid: {url.copy_with(username=None, password=None)} "
                              "is not an http(s):// URL")  # fmt: skip
        headers = {}
        if url.username or url.password:
            token = base64.b64encode(f"{url.username}:{url.password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        bare = str(url.copy_with(username=None, password=None, query=None, fragment=None))
        host = Host(bare.rstrip("/") + "/", headers)
        if host not in hosts:
            hosts.append(host)
    if not hosts:
        raise ConfigError(f"{CREDENTIAL_VARIABLE} is invalid: no URL in it")
    return tuple(hosts)


def stopped_answering(error: ProviderError) -> bool:
    """Whether a failed request says the host is not there, rather than something about the request."""
    return error.retryable and (error.status is None or error.status in GATEWAY_DOWN)


def run_seconds(entry: dict[str, Any]) -> float | None:
    """How long a prompt ran, from its history entry's `status.messages` (`[event, {..., "timestamp": ms}]`):
    `execution_start` to `execution_success`. None for a prompt that failed, or a ComfyUI without timestamps."""
    status = entry.get("status")
    messages = status.get("messages") if isinstance(status, dict) else None
    stamps: dict[str, float] = {}
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, list) and len(message) == 2 and isinstance(message[1], dict):
            stamp = message[1].get("timestamp")
            if isinstance(stamp, int | float) and not isinstance(stamp, bool):
                stamps[str(message[0])] = float(stamp)
    if "execution_start" not in stamps or "execution_success" not in stamps:
        return None
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


@dataclass(slots=True)
class HostRecord:
    """What this process knows of one host's speed and health."""

    seconds_per_prompt: float | None = None
    """Moving average of the run times seen there; None until a prompt was seen finishing."""
    failures: int = 0
    """Times in a row it did not answer; 0 while it answers."""
    back_at: float = 0.0
    """When (on the pool's clock) a host that stopped answering is asked again."""


class HostPool:
    """Chooses the host for each new prompt (see the module notes); told by the adapter how hosts answer."""

    def __init__(self, hosts: Sequence[Host], clock: Callable[[], float] = time.monotonic) -> None:
        self.hosts = tuple(hosts)
        self.clock = clock
        self.records = {host.url: HostRecord() for host in self.hosts}
        self._timed: OrderedDict[str, None] = OrderedDict()
        self._turn = 0

    def candidates(self) -> list[Host]:
        """The hosts to ask about a new prompt, from the one whose turn it is: those in rotation, else all."""
        rotated = self.hosts[self._turn :] + self.hosts[: self._turn]
        now = self.clock()
        return [host for host in rotated if self.records[host.url].back_at <= now] or list(rotated)

    def choose(self, queue_lengths: Sequence[tuple[Host, int]]) -> Host:
        """The host with the shortest expected wait, given in `candidates()` order: the first of equal waits,
        and the turn moves on, so equals take turns."""
        self._turn = (self._turn + 1) % len(self.hosts)
        return min(queue_lengths, key=lambda load: self.expected_wait(*load))[0]

    def expected_wait(self, host: Host, queue_length: int) -> float:
        return (queue_length + 1) * self.seconds_per_prompt(host)

    def seconds_per_prompt(self, host: Host) -> float:
        own = self.records[host.url].seconds_per_prompt
        if own is not None:
            return own
        measured = [r.seconds_per_prompt for r in self.records.values() if r.seconds_per_prompt is not None]
        return sum(measured) / len(measured) if measured else DEFAULT_SECONDS_PER_PROMPT

    def in_rotation(self, host: Host) -> bool:
        record = self.records.get(host.url)
        return record is not None and record.back_at <= self.clock()

    def answered(self, host: Host) -> None:
        record = self.records.get(host.url)
        if record is not None and record.failures:
            log.info("comfyui: %s answers again; new prompts may go there", host.url)
            record.failures, record.back_at = 0, 0.0

    def unreachable(self, host: Host) -> None:
        """Leave the host out for a while. A failure while it is out already (a poll of a prompt it has) does
        not lengthen the pause: only a failed retry doubles it."""
        record = self.records.get(host.url)
        now = self.clock()
        if record is None or record.back_at > now:
            return  # a host dropped from COMFYUI_URL since (only its old prompts are polled), or out already
        pause = min(MAX_BACKOFF, MIN_BACKOFF * 2**record.failures)
        record.failures += 1
        record.back_at = now + pause
        log.warning("comfyui: %s does not answer; no new prompts go there for %.0f s", host.url, pause)

    def finished(self, host: Host, prompt_id: str, entry: dict[str, Any]) -> None:
        """Count the run time of a prompt seen finished on a host (its history entry), once."""
        record = self.records.get(host.url)
        seconds = run_seconds(entry)
        if record is None or seconds is None or seconds <= 0 or prompt_id in self._timed:
            return
        self._timed[prompt_id] = None
        while len(self._timed) > TIMED_PROMPTS:
            self._timed.popitem(last=False)
        average = record.seconds_per_prompt
        record.seconds_per_prompt = seconds if average is None else average + SMOOTHING * (seconds - average)

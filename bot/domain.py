"""The nouns of the bot: requests, jobs, their states, quota policies and model capabilities.

Everything here is plain data. The engine, the store and the providers exchange these objects and nothing
from Discord, so each layer can be tested alone.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from bot.text import is_invisible

Aspect = Literal["16:9", "9:16", "1:1"]
Period = Literal["hour", "day", "week", "month"]

ASPECTS: tuple[Aspect, ...] = ("16:9", "9:16", "1:1")
PERIODS: tuple[Period, ...] = ("hour", "day", "week", "month")
MAX_PROMPT_CHARS = 2000
MAX_NEGATIVE_PROMPT_CHARS = 1000
MAX_SEED = 2_147_483_647
NO_VISIBLE_TEXT = "no_visible_text"
"""The validation error type of a prompt that renders as nothing (only spaces, format characters, marks…)."""
INPUT_REF = r"^[0-9a-f]{32}\.(png|jpg|webp)$"
"""A stored input image's id (`VideoRequest.image_ref`): safe as a file name on any disk."""
STORED: dict[str, bool] = {"stored": True}
"""Validation context for requests read back from the database: what was accepted then stays readable, so a
rule added later (the visible-text one) cannot make a queued, already-charged job unreadable."""


class JobState(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        """Held by a worker: counts against running limits."""
        return self in ACTIVE_STATES


TERMINAL_STATES = frozenset({JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.SUBMITTING, JobState.RUNNING, JobState.DOWNLOADING, JobState.DELIVERING})

_S = JobState
ALLOWED: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.SUBMITTING, _S.CANCELLED}),
    # SUBMITTING → SUBMITTING: a job on a model alias falls back to the next model before any provider took it.
    _S.SUBMITTING: frozenset({_S.SUBMITTING, _S.RUNNING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.DOWNLOADING, _S.FAILED, _S.CANCELLED}),
    # Back to RUNNING: the provider is making the video again (an offline render restarted after a crash).
    _S.DOWNLOADING: frozenset({_S.DELIVERING, _S.RUNNING, _S.FAILED, _S.CANCELLED}),
    # DELIVERING → DELIVERING records the intent to post (`post_attempted_at`) before each post.
    _S.DELIVERING: frozenset({_S.DELIVERING, _S.DELIVERED, _S.FAILED, _S.CANCELLED}),
    _S.DELIVERED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}
"""The job state machine: every move the store accepts, from each state. A claim is QUEUED → SUBMITTING; a
takeover of a lapsed lease keeps the state and is no move. The store refuses anything else (`InvalidTransition`)."""


class VideoRequest(BaseModel):
    """What a member asked for. Validated on its own here, and against the model's capabilities on enqueue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str = Field(min_length=1, max_length=200, pattern=r"^[a-z0-9_-]+(/.+)?$")
    """`provider/model`, or a model alias (`fast`) that enqueue resolves to a model of its chain."""
    duration: int = Field(ge=1, le=60)
    aspect: Aspect = "16:9"
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    negative_prompt: str | None = Field(default=None, max_length=MAX_NEGATIVE_PROMPT_CHARS)
    image_path: str | None = None
    """A first frame for image-to-video as a file on this machine: what a provider reads. The worker sets it to
    its own copy of `image_ref` just before handing the request over; `generate` (one process) sets it directly,
    and jobs queued before `image_ref` existed carry the front end's path."""
    image_ref: str | None = Field(default=None, pattern=INPUT_REF)
    """A first frame stored in the database by the front end (`InputStore`), so that any worker can read it:
    32 hex digits and the image's extension, which is also the name of the worker's copy on its disk."""

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str, info: ValidationInfo) -> str:
        # Zero-width and filler characters pass the length check but ask for nothing; the error type lets the
        # front end say so rather than quote the length limits.
        value = value.strip()
        # `all` stops at the first visible character (a prompt's first, usually): this runs before every
        # acknowledgement, and a 2,000-character prompt checked whole costs milliseconds.
        if not (info.context or {}).get("stored") and all(map(is_invisible, value)):
            raise PydanticCustomError(NO_VISIBLE_TEXT, "the prompt has no visible text")
        return value

    @field_validator("negative_prompt")
    @classmethod
    def _empty_negative_is_none(cls, value: str | None) -> str | None:
        if value is not None and all(map(is_invisible, value)):
            return None
        return value

    @property
    def provider(self) -> str:
        return self.model.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a provider offers, with what it accepts; enqueue checks requests against it."""

    id: str
    """Full name, `provider/model`."""
    label: str
    durations: tuple[int, ...]
    """Accepted durations in seconds, ascending."""
    aspects: tuple[Aspect, ...] = ASPECTS
    supports_image: bool = False
    requires_image: bool = False
    """An image-to-video model that cannot start without a first frame."""
    supports_seed: bool = True
    supports_negative_prompt: bool = False
    weight: float = 1.0
    """Credits per second of video: set by the catalogue (`bot.providers.catalog`), not by adapters."""
    description: str = ""
    usd_per_second: float | None = None
    """The vendor's list price per second of video, None when unknown."""
    price_as_of: str | None = None
    """When that price was read from the vendor's pricing (YYYY-MM); None for an operator's own price."""

    @property
    def provider(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def default_duration(self) -> int:
        return 5 if 5 in self.durations else self.durations[0]

    def credits_for(self, seconds: int) -> int:
        return max(1, math.ceil(seconds * self.weight - 1e-9))


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where the answer goes. Discord ids, but the engine treats them as opaque integers."""

    guild_id: int
    user_id: int
    channel_id: int = 0
    role_ids: tuple[int, ...] = ()
    parent_channel_id: int | None = None
    """The channel a thread belongs to, when the request comes from a thread (channel rules cover threads)."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """A model of an alias's chain that could not take the job, and why (said to the member)."""

    model: str
    reason: str


@dataclass(frozen=True, slots=True)
class Route:
    """How a job queued on a model alias may move on: the alias asked for, the models still to try (in the
    operator's order), and those tried before the one the job is on now."""

    alias: str
    remaining: tuple[str, ...] = ()
    tried: tuple[Fallback, ...] = ()


@dataclass(slots=True)
class Job:
    id: str
    guild_id: int
    user_id: int
    channel_id: int
    request: VideoRequest
    credits: int
    state: JobState
    created_at: float
    updated_at: float
    fair_rank: int = 0
    priority: int = 0
    remote_id: str | None = None
    progress: float = 0.0
    remote_position: int | None = None
    """Jobs ahead of this one in the video service's own queue, while it waits there (when it says)."""
    remote_waiting: bool = False
    """The video service has the job but has not started it (queued, throttled)."""
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    error: str | None = None
    result_path: str | None = None
    delivered_message_id: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    delivery_ref: str | None = None
    """Where the answer goes, as the front end recorded it (for Discord: the interaction and the status
    message). Opaque to the engine: stored and handed back as it is."""
    post_attempted_at: float | None = None
    """When a worker last began posting the clip: if set, a post may exist, so look before posting again."""
    status_state: JobState | None = None
    """The state the status message last showed (None: not known to show any)."""
    route: Route | None = None
    """Set for a job queued on a model alias: where it may fall back to, and where it came from."""
    cost_usd: float = 0.0
    """What the job costs at the provider by list price (the model's price × seconds), in US dollars."""
    vendor_credits: float | None = None
    """The vendor's own count of what the job cost, in its credits, where it reports one (Vidu)."""

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def provider(self) -> str:
        return self.request.provider


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker process as the registry knows it: enough to tell, on the same host, whether it is still alive."""

    id: str
    host: str
    pid: int
    pid_started: str | None
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True, slots=True)
class JobEvent:
    job_id: str
    at: float
    from_state: JobState | None
    to_state: JobState
    detail: str = ""


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """One layer of quota policy; `None` means "not set here, inherit"."""

    credits: int | None = None
    unlimited: bool | None = None
    period: Period | None = None
    max_queued: int | None = None
    max_running: int | None = None

    def overlaid(self, top: QuotaLimits | None) -> QuotaLimits:
        """These limits with every field that `top` sets replaced by `top`'s."""
        if top is None:
            return self
        return QuotaLimits(
            credits=top.credits if top.credits is not None else self.credits,
            unlimited=top.unlimited if top.unlimited is not None else self.unlimited,
            period=top.period if top.period is not None else self.period,
            max_queued=top.max_queued if top.max_queued is not None else self.max_queued,
            max_running=top.max_running if top.max_running is not None else self.max_running,
        )


DEFAULT_LIMITS = QuotaLimits(credits=60, unlimited=False, period="day", max_queued=3, max_running=1)


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """The limits that apply to one member after resolving default, roles and override."""

    credits: int
    unlimited: bool
    period: Period
    max_queued: int
    max_running: int


@dataclass(frozen=True, slots=True)
class Usage:
    """A member's standing in the current window."""

    policy: EffectivePolicy
    window_start: float
    window_end: float
    used: int
    reserved: int
    granted: int
    queued: int
    running: int

    @property
    def limit(self) -> int:
        return self.policy.credits + self.granted

    @property
    def left(self) -> int:
        if self.policy.unlimited:
            return 2**31 - 1
        return max(0, self.limit - self.used - self.reserved)


@dataclass(slots=True)
class GuildSettings:
    guild_id: int
    paused: bool = False
    default_model: str | None = None
    disabled_models: frozenset[str] = field(default_factory=frozenset)
    admin_role_id: int | None = None
    log_channel_id: int | None = None
    """Where admin changes and refusals by rule are posted (None: nowhere)."""
    monthly_budget: float | None = None
    """US dollars the server may spend on providers per calendar month (UTC), by list price; None: no cap."""
    language: str | None = None
    """The language of public messages when the server's own locale should not decide (None: the locale)."""
    blocklist: tuple[str, ...] = ()
    """Patterns refused in prompts and negative prompts: words or phrases, or `/regex/`, as the admin typed them."""
    allowed_channels: frozenset[int] = field(default_factory=frozenset)
    """Channels where `/video` and Animate work (and their threads); empty: every channel."""


JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin change, as the audit trail keeps it: who (`actor_id`; None when no member made it, e.g. an
    operator's script), when, what (`action`, the command's path such as `quota grant`), on what (`target_kind`:
    `user`, `role`, `model`, `pattern`, `channel`; `target` its id or text) and the value before and after."""

    guild_id: int
    actor_id: int | None
    at: float
    action: str
    target_kind: str | None = None
    target: str | None = None
    before: JsonValue = None
    after: JsonValue = None
    id: int | None = None
    """Assigned by the store: entries are numbered in the order they were recorded."""


@dataclass(slots=True)
class AuditDraft:
    """An admin change's audit entry, handed to the store method that makes the change so both are written in one
    transaction (a crash keeps both or neither). `describe`, when given, turns the values the transaction saw
    before and after the change into the entry's `before` and `after`; the store sets `written`."""

    entry: AuditEntry
    describe: Callable[[Any, Any], tuple[JsonValue, JsonValue]] | None = None
    written: AuditEntry | None = None


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A job as `/queue` shows it."""

    job: Job
    position: int | None
    eta: float | None

"""The exception tree, apart from the image refusals (`bot.errors.images`); import both from `bot.errors`.

One exception tree for the whole bot.

A `UserError` is something the member can fix. It carries the facts as fields and a stable `message_id`,
never words: the front end turns it into a sentence in its own markup and language (for Discord,
`bot.discord.messages`). Its `str()` names the message id and the facts, for logs and the command line. Everything
else is logged, and the member sees a short apology with a reference.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, ClassVar

from bot.errors.said import Said, untold
from bot.i18n.ids import N_

if TYPE_CHECKING:
    from bot.domain import JobState, QuotaLimits


class VideoBotError(Exception):
    """Base of every error the bot raises on purpose."""


# --- what the member can fix: facts, not words ------------------------------------------------------------
class UserError(VideoBotError):
    """Something the member can fix. Subclasses are dataclasses: their fields are what a renderer needs."""

    message_id: ClassVar[str] = N_("user-error")
    """Stable name of the sentence that explains this error (a key of the front end's message catalogue)."""

    def __str__(self) -> str:
        """For developers: the message id and the facts, e.g. `queue-full: queued=3, max_queued=3`."""
        if not is_dataclass(self):  # a base raised with a message of its own (the command line's checks)
            return super().__str__()
        facts = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{self.message_id}: {facts}" if facts else self.message_id


class InvalidRequest(UserError):
    """The request, or an option of it, does not fit the model, the server or the bot's limits."""

    message_id = N_("invalid-request")


# An option failed validation. `problem` is the validator's error type (e.g. `no_visible_text`).
@dataclass(eq=False)
class BadOption(InvalidRequest):
    option: str
    problem: str
    message: str
    message_id = N_("bad-option")


@dataclass(eq=False)
class UnknownModel(InvalidRequest):
    model: str
    message_id = N_("unknown-model")


# An admin named a model the bot does not have; `configured` lists the ones it has.
@dataclass(eq=False)
class ModelNotConfigured(UnknownModel):
    configured: tuple[str, ...]
    message_id = N_("model-not-configured")


# No model enabled on the server can start from an image.
@dataclass(eq=False)
class NoImageModel(InvalidRequest):
    message_id = N_("no-image-model")


# The model cannot make the video as asked (the subclass says why).
@dataclass(eq=False)
class ModelRejected(InvalidRequest):
    model: str
    message_id = N_("model-rejected")


@dataclass(eq=False)
class ModelDisabled(ModelRejected):
    message_id = N_("model-disabled")


@dataclass(eq=False)
class DurationNotOffered(ModelRejected):
    duration: int
    durations: tuple[int, ...]
    message_id = N_("duration-not-offered")


@dataclass(eq=False)
class AspectNotOffered(ModelRejected):
    aspect: str
    aspects: tuple[str, ...]
    message_id = N_("aspect-not-offered")


@dataclass(eq=False)
class ImageNotOffered(ModelRejected):
    message_id = N_("image-not-offered")


@dataclass(eq=False)
class ImageRequired(ModelRejected):
    message_id = N_("image-required")


@dataclass(eq=False)
class SeedNotOffered(ModelRejected):
    message_id = N_("seed-not-offered")


@dataclass(eq=False)
class NegativePromptNotOffered(ModelRejected):
    message_id = N_("negative-prompt-not-offered")


@dataclass(eq=False)
class AlreadyEnded(InvalidRequest):
    job_id: str
    state: JobState
    message_id = N_("already-ended")


@dataclass(eq=False)
class UnsupportedButton(InvalidRequest):
    action: str
    message_id = N_("unsupported-button")


# --- admin changes ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class LimitOutOfRange(InvalidRequest):
    name: str
    low: int
    high: int
    message_id = N_("limit-out-of-range")


# `max_running` 0 would hold a member's jobs forever; blocking is the way to stop them.
@dataclass(eq=False)
class RunningLimitTooLow(InvalidRequest):
    message_id = N_("running-limit-too-low")


# A role or member quota named a period: the window is the server's, for everyone.
@dataclass(eq=False)
class PeriodIsServerWide(InvalidRequest):
    message_id = N_("period-is-server-wide")


@dataclass(eq=False)
class ZeroGrant(InvalidRequest):
    message_id = N_("zero-grant")


# An admin command was given none of the options that change something.
@dataclass(eq=False)
class NothingToChange(InvalidRequest):
    options: tuple[str, ...]
    message_id = N_("nothing-to-change")


# The server's default quota was asked to change with no limit given; `current` is what applies now.
@dataclass(eq=False)
class DefaultQuotaUnchanged(InvalidRequest):
    current: QuotaLimits
    message_id = N_("default-quota-unchanged")


@dataclass(eq=False)
class ClearWithLimits(InvalidRequest):
    message_id = N_("clear-with-limits")


@dataclass(eq=False)
class LastEnabledModel(InvalidRequest):
    model: str
    message_id = N_("last-enabled-model")


@dataclass(eq=False)
class DisabledModelAsDefault(InvalidRequest):
    model: str
    message_id = N_("disabled-model-as-default")


# Every member has the @everyone role: as the admin role it would make everyone an admin.
@dataclass(eq=False)
class EveryoneAsAdminRole(InvalidRequest):
    message_id = N_("everyone-as-admin-role")


# An integration (a bot, boosts, a subscription) hands this role out, not the server's admins.
@dataclass(eq=False)
class ManagedRoleAsAdminRole(InvalidRequest):
    role_id: int
    message_id = N_("managed-role-as-admin-role")


# --- refusals by the member's standing ----------------------------------------------------------------------
# The job costs more than the member has `left` (never below zero) until `resets_at` (epoch seconds).
@dataclass(eq=False)
class QuotaExceeded(UserError):
    cost: int
    left: int
    resets_at: float
    message_id = N_("quota-exceeded")


@dataclass(eq=False)
class QueueFull(UserError):
    queued: int
    max_queued: int
    message_id = N_("queue-full")


@dataclass(eq=False)
class Blocked(UserError):
    message_id = N_("blocked")


@dataclass(eq=False)
class QueuePaused(UserError):
    message_id = N_("queue-paused")


class NotAllowed(UserError):
    """The member may not do this (the subclass says what it takes)."""

    message_id = N_("not-allowed")


# Only the member who asked for the job, or an admin, may do this to it.
@dataclass(eq=False)
class NotRequester(NotAllowed):
    job_id: str
    message_id = N_("not-requester")


@dataclass(eq=False)
class NotAdmin(NotAllowed):
    message_id = N_("not-admin")


# Holders of the admin role run every other admin command, but only Manage Server may move the role.
@dataclass(eq=False)
class AdminRoleNeedsManageServer(NotAllowed):
    message_id = N_("admin-role-needs-manage-server")


@dataclass(eq=False)
class JobNotFound(UserError):
    job_id: str
    message_id = N_("job-not-found")


class ConfigError(VideoBotError):
    """A setting is missing or malformed; the message names it."""


class StoreError(VideoBotError):
    """The database failed in a way the caller cannot fix."""


class ProviderError(VideoBotError):
    """A video provider failed.

    `retryable` says whether the same step may be tried again; `retry_after` is the provider's own wait
    (Retry-After) in seconds when it gave one. `user_message` is what the member learns of it (a content policy
    refusal with the provider's own words, say); without one, the member reads `message` as it is.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        user_message: Said | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.user_message = user_message if user_message is not None else untold(message)
        self.status = status


class RemoteJobLost(ProviderError):
    """The provider no longer knows the remote job (expired, or an in-process render died with its worker)."""

    def __init__(self, message: str, *, user_message: Said | None = None) -> None:
        # The message names the vendor's ids and answers (for the log); the member reads a sentence.
        lost = user_message if user_message is not None else Said(N_("failure.remote-job-lost"))
        super().__init__(message, retryable=False, user_message=lost)


class DeliveryError(VideoBotError):
    """The finished clip could not be handed over; `user_message` says why (else `message` as it is),
    `retryable` whether to try again."""

    def __init__(self, message: str, *, retryable: bool, user_message: Said | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.user_message = user_message if user_message is not None else untold(message)


class JobFailed(VideoBotError):
    """A job's step failed for good: the worker ends the job as failed and refunds it. `reason` is recorded on
    the job as what the member is told."""

    def __init__(self, reason: Said) -> None:
        super().__init__(str(reason))
        self.reason = reason


# --- the store: a job is not where its caller believes it is ----------------------------------------------
class LeaseLost(VideoBotError):
    """The worker no longer holds the job (it was taken over, or finished elsewhere)."""

    def __init__(self, job_id: str, *, holder: str | None, worker_id: str) -> None:
        super().__init__(f"job {job_id} is held by {holder}, not {worker_id}")
        self.job_id = job_id
        self.holder = holder
        self.worker_id = worker_id


class InvalidTransition(VideoBotError):
    """The job's state does not allow the requested move (`bot.domain.ALLOWED`). `from_state` is None when the
    job does not exist; `to_state` is None when no move at all is possible from there (a worker's view)."""

    def __init__(self, job_id: str, from_state: str | None = None, to_state: str | None = None) -> None:
        # States are `bot.domain.JobState` members (a `StrEnum`), typed as str to keep this module import-free.
        if from_state is None:
            text = f"job {job_id} does not exist"
        elif to_state is None:
            text = f"job {job_id} is {from_state}: nothing moves it from there"
        else:
            text = f"job {job_id} is {from_state}, cannot move to {to_state}"
        super().__init__(text)
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state

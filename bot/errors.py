"""One exception tree for the whole bot.

`UserError`s carry a message meant for the member and are shown as they are; everything else is logged and
the member sees a short apology with a reference.
"""

from __future__ import annotations


class VideoBotError(Exception):
    """Base of every error the bot raises on purpose."""


class UserError(VideoBotError):
    """Something the member can fix; `str(error)` is shown to them."""


class InvalidRequest(UserError):
    """The request does not fit the model or the bot's limits."""


class QuotaExceeded(UserError):
    pass


class QueueFull(UserError):
    pass


class Blocked(UserError):
    pass


class QueuePaused(UserError):
    pass


class NotAllowed(UserError):
    """The member may not do this (not the requester, not an admin)."""


class JobNotFound(UserError):
    pass


class ConfigError(VideoBotError):
    """A setting is missing or malformed; the message names it."""


class StoreError(VideoBotError):
    """The database failed in a way the caller cannot fix."""


class ProviderError(VideoBotError):
    """A video provider failed.

    `retryable` says whether the same step may be tried again; `retry_after` is the provider's own wait
    (Retry-After) in seconds when it gave one. `user_message` is the provider's own words, kept so the member
    learns why (a content policy refusal, say).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        user_message: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.user_message = user_message or message
        self.status = status


class ContentRejected(ProviderError):
    """The provider refused the prompt or image on policy grounds: final."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, retryable=False, status=status)


class RemoteJobLost(ProviderError):
    """The provider no longer knows the remote job (expired, or an in-process render died with its worker)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class DeliveryError(VideoBotError):
    """The finished clip could not be handed over; `user_message` says why, `retryable` whether to try again."""

    def __init__(self, message: str, *, retryable: bool, user_message: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.user_message = user_message or message

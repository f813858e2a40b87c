"""How a video service said no, as data. Each adapter maps its vendor's answers into these once
(`bot.providers.http` does the generic part); the worker turns a final one into a failed, refunded job.

`user_message` is what the member reads (a `Said`: a catalogue id, with the provider's own reason for a content
refusal); `message` is for the log and the admin, and names the setting to fix, never its value.

A refusal or rejection carries its reason as the vendor said it (a str, quoted to the member inside our sentence)
or, when the adapter says it itself, as a `Said`: a whole sentence of the catalogue (`failure.rejected.…`,
`failure.refused.…`), so that the member reads all of it in their language and the log reads it in English.
"""

from __future__ import annotations

from bot.errors.base import ProviderError
from bot.errors.said import Said, in_english
from bot.i18n.ids import N_


class ContentRefused(ProviderError):
    """The provider's content policy refused the prompt or image: final, and its reason reaches the member."""

    def __init__(self, provider: str, reason: str | Said) -> None:
        if isinstance(reason, Said):  # the adapter's own sentence (`failure.refused.…`), whole
            said, reason = reason, in_english(reason)
            message = f"{provider}: {reason}"
        else:
            reason = reason.strip()
            if reason:
                said = Said(N_("failure.content-refused"), {"reason": reason})
            else:
                said, reason = Said(N_("failure.content-refused.no-reason")), "no reason given"
            message = f"{provider} refused the content: {reason}"
        super().__init__(message, retryable=False, user_message=said)
        self.provider = provider
        self.reason = reason
        """The vendor's words, or the adapter's sentence in English."""


class RequestRejected(ProviderError):
    """The provider rejected a field of the request (bad value, unsupported option): final. An adapter's own
    sentence (`failure.rejected.…`) names the field itself, as `field` does for the code."""

    def __init__(
        self, provider: str, reason: str | Said, *, field: str | None = None, status: int | None = None
    ) -> None:
        if isinstance(reason, Said):
            said, reason = reason, in_english(reason)
            message = f"{provider}: {reason}"
        else:
            said = (
                Said(N_("failure.request-rejected.field"), {"field": field, "reason": reason})
                if field
                else Said(N_("failure.request-rejected"), {"reason": reason})
            )
            message = f"{provider} rejected the request{f' ({field})' if field else ''}: {reason}"
        super().__init__(message, retryable=False, status=status, user_message=said)
        self.provider = provider
        self.field = field
        self.reason = reason
        """The vendor's words, or the adapter's sentence in English."""


class CredentialsRejected(ProviderError):
    """The provider refused the bot's credentials: final. The log names the variable an admin must fix."""

    def __init__(self, provider: str, variable: str, *, status: int | None = None) -> None:
        super().__init__(
            f"{provider} refused the credentials (HTTP {status}): check {variable}",
            retryable=False,
            status=status,
            user_message=Said(N_("failure.credentials-rejected")),
        )
        self.provider = provider
        self.variable = variable


class ProviderBilling(ProviderError):
    """The account at the provider is out of quota, credit or billing: final until an admin acts."""

    def __init__(self, provider: str, reason: str, *, status: int | None = None) -> None:
        super().__init__(
            f"{provider} account cannot pay for this job: {reason}",
            retryable=False,
            status=status,
            user_message=Said(N_("failure.provider-billing")),
        )
        self.provider = provider
        self.reason = reason


class ResultExpired(ProviderError):
    """The result's URL no longer serves the file (signed URLs expire): ask the provider for a fresh one."""

    def __init__(self, provider: str, status: int | None = None) -> None:
        super().__init__(f"{provider} result URL expired (HTTP {status})", retryable=True, status=status)
        self.provider = provider


class DownloadTooLarge(ProviderError):
    """The finished video is larger than the download cap: final, nothing of it is kept."""

    def __init__(self, provider: str, limit: int) -> None:
        super().__init__(
            f"{provider} result exceeds the {limit} byte download cap",
            retryable=False,
            user_message=Said(N_("failure.download-too-large"), {"megabytes": limit // 1_000_000}),
        )
        self.provider = provider
        self.limit = limit


class ProviderUnavailable(ProviderError):
    """The provider's circuit breaker is open: it failed again and again just now, so new jobs skip it."""

    def __init__(self, provider: str, seconds: float) -> None:
        super().__init__(
            f"{provider} skipped for {seconds:.0f} s: it kept failing",
            retryable=False,
            user_message=Said(N_("failure.provider-unavailable")),
        )
        self.provider = provider


class CreateOutcomeUnknown(ProviderError):
    """A create request may have reached the provider but its answer was lost. Repeating it could make (and
    bill) the video twice, so it is final unless the provider has an idempotency key."""

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(
            f"{provider}: create request outcome unknown ({detail})",
            retryable=False,
            user_message=Said(N_("failure.outcome-unknown")),
        )
        self.provider = provider


def could_not_make(reason: str) -> Said:
    """The provider made no video, and says why in its own words (a failed run, not a refusal)."""
    if not reason.strip():
        return Said(N_("failure.could-not-make.no-reason"))
    return Said(N_("failure.could-not-make.reason"), {"reason": reason.strip()})


def no_such_model(provider: str, model: str) -> RequestRejected:
    """An adapter was handed a model it does not have (a job queued under another configuration)."""
    return RequestRejected(provider, Said(N_("failure.rejected.no-model"), {"model_id": model}), field="model")

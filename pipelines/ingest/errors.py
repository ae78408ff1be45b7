"""Why a download failed for good. Every message names the source and the URL with secret
query parameters redacted (:func:`.transport.redact`); the client re-exports these names."""

from __future__ import annotations

__all__ = [
    "DeadlineExceededError",
    "FetchError",
    "InsecureUrlError",
    "PayloadError",
    "ResponseTooLargeError",
]


class FetchError(RuntimeError):
    """A request failed for good (refused URL, non-retryable status, retries/deadline used up,
    oversized body)."""

    def __init__(
        self, source: str, url: str, status: int | None, attempts: int, reason: str
    ) -> None:
        status_text = f"HTTP {status}" if status is not None else "no HTTP status"
        super().__init__(
            f"{source}: GET {url} failed after {attempts} attempt(s) ({status_text}): {reason}"
        )
        self.source = source
        self.url = url
        self.status = status
        self.attempts = attempts


class DeadlineExceededError(FetchError):
    """The request (retries and body included) ran past ``RetryPolicy.deadline_s``."""


class ResponseTooLargeError(FetchError):
    """The body is larger than ``RetryPolicy.max_response_bytes``; it was not kept."""


class InsecureUrlError(FetchError):
    """A plain-HTTP URL (or a redirect to one) was refused; nothing was sent."""


class PayloadError(ValueError):
    """The provider answered, but not with what its API documents (bad JSON, bad shape)."""

    def __init__(self, source: str, url: str, reason: str) -> None:
        super().__init__(f"{source}: GET {url} returned an unusable payload: {reason}")
        self.source = source
        self.url = url

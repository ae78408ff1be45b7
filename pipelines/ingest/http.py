"""A small, polite JSON-over-HTTP client: retries, exponential backoff, rate limit, deadline.

Standard library only (``urllib.request``). Public market-data APIs throttle by IP and ban
clients that ignore them (Binance answers 418 after repeated 429s), so the client

- waits at least ``min_interval_s`` between the starts of two requests;
- retries only what can succeed later: timeouts, connection errors, HTTP 429 and 5xx;
- backs off exponentially with jitter ("equal jitter": a uniform draw in ``[d/2, d]`` with
  ``d = min(backoff_max_s, backoff_base_s * 2**(attempt-1))``, AWS Architecture Blog,
  *Exponential Backoff And Jitter*, 2015), and never retries earlier than ``Retry-After``;
- gives up after ``max_attempts`` or when ``deadline_s`` would be exceeded, raising
  :class:`FetchError` naming the source, the URL (API key redacted), the status and the cause.

A body that is not JSON is not retried: it is the provider's answer, and the caller rejects
the batch (:class:`PayloadError`).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FetchError", "HttpClient", "PayloadError", "RetryPolicy", "redact"]

SECRET_PARAMS = frozenset({"api_key", "apikey", "token", "signature"})
USER_AGENT = "volmargin-ingest/0.1 (+https://github.com/volmargin)"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard and how fast to ask. Defaults suit the public Binance/Deribit/FRED APIs."""

    timeout_s: float = 15.0  # per attempt (connect + each socket read)
    max_attempts: int = 5  # hard cap, first try included
    backoff_base_s: float = 1.0  # first retry waits in [0.5, 1] s
    backoff_max_s: float = 60.0  # cap on one backoff wait
    max_retry_after_s: float = 120.0  # a longer Retry-After means "come back later": give up
    min_interval_s: float = 0.25  # between request starts; Binance allows ~20 req/s by weight
    deadline_s: float = 600.0  # wall-clock cap for one logical request, retries included


class FetchError(RuntimeError):
    """A request failed for good (non-retryable status, or retries exhausted)."""

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


class PayloadError(ValueError):
    """The provider answered, but not with what its API documents (bad JSON, bad shape)."""

    def __init__(self, source: str, url: str, reason: str) -> None:
        super().__init__(f"{source}: GET {url} returned an unusable payload: {reason}")
        self.source = source
        self.url = url


def redact(url: str) -> str:
    """``url`` with the values of secret query parameters replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    query = [
        (key, "***" if key.lower() in SECRET_PARAMS else value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def retry_after_seconds(header: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if header is None:
        return None
    text = header.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class _AttemptError(Exception):
    """Internal: one attempt failed; ``retryable`` says whether another one may succeed."""

    def __init__(
        self, status: int | None, reason: str, retryable: bool, wait_at_least: float = 0.0
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retryable = retryable
        self.wait_at_least = wait_at_least


class HttpClient:
    """GET JSON with retries and a process-wide minimum interval between requests.

    Parameters
    ----------
    policy : RetryPolicy
        Timeouts, attempts, backoff and rate limit.
    sleep, clock : callable
        Injected for tests (defaults ``time.sleep`` and ``time.monotonic``).
    seed : int or None
        Seed of the jitter generator (None: nondeterministic).

    Examples
    --------
    >>> client = HttpClient(RetryPolicy(max_attempts=3))
    >>> client.get_json("binance", "https://api.binance.com", "/api/v3/klines",
    ...                 {"symbol": "BTCUSDT", "interval": "1d", "limit": 1})  # doctest: +SKIP
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._last_start: float | None = None
        self.requests_sent = 0

    def get_json(
        self, source: str, base_url: str, path: str, params: Mapping[str, object]
    ) -> Any:
        """Parsed JSON body of ``GET base_url + path ? params``.

        Raises
        ------
        FetchError
            Non-retryable status (e.g. 400, 401, 403, 404, 418), or attempts/deadline used up.
        PayloadError
            HTTP 200 with a body that is not JSON.
        """
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        url = f"{base_url.rstrip('/')}{path}?{query}"
        secrets = [str(v) for k, v in params.items() if k.lower() in SECRET_PARAMS and v]
        try:
            return self._get(source, url)
        except (FetchError, PayloadError) as err:
            for secret in secrets:  # an error body may echo the key back
                err.args = (str(err).replace(secret, "***"),)
            raise

    def _get(self, source: str, url: str) -> Any:
        shown = redact(url)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                body = self._attempt(url)
                break
            except _AttemptError as failure:
                wait, stop = self._next_wait(failure, attempt, started)
                if stop is not None:
                    raise FetchError(source, shown, failure.status, attempt, stop) from None
                self._sleep(wait)
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            snippet = body[:80].decode("utf-8", "replace")
            reason = f"not JSON ({err}); body starts {snippet!r}"
            raise PayloadError(source, shown, reason) from None

    def _next_wait(
        self, failure: _AttemptError, attempt: int, started: float
    ) -> tuple[float, str | None]:
        """(seconds to wait before the next attempt, None) or (0, why we give up)."""
        policy = self.policy
        if not failure.retryable:
            return 0.0, failure.reason
        if attempt >= policy.max_attempts:
            return 0.0, f"{failure.reason}; gave up (max_attempts={policy.max_attempts})"
        if failure.wait_at_least > policy.max_retry_after_s:
            return 0.0, (f"{failure.reason}; Retry-After {failure.wait_at_least:.0f} s exceeds "
                         f"max_retry_after_s={policy.max_retry_after_s:.0f} s, try again later")
        wait = max(self._backoff(attempt), failure.wait_at_least)
        if self._clock() - started + wait > policy.deadline_s:
            return 0.0, f"{failure.reason}; gave up (deadline_s={policy.deadline_s:g} reached)"
        return wait, None

    def _backoff(self, attempt: int) -> float:
        cap = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(cap / 2, cap)

    def _throttle(self) -> None:
        with self._lock:
            now = self._clock()
            if self._last_start is not None:
                wait = self._last_start + self.policy.min_interval_s - now
                if wait > 0:
                    self._sleep(wait)
                    now = self._clock()
            self._last_start = now
            self.requests_sent += 1

    def _attempt(self, url: str) -> bytes:
        """One request: the body on HTTP 200, else :class:`_AttemptError`."""
        self._throttle()
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": USER_AGENT}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.policy.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            retryable = err.code == 429 or err.code >= 500
            wait = retry_after_seconds(err.headers.get("Retry-After")) or 0.0
            raise _AttemptError(err.code, _error_detail(err), retryable, wait) from None
        except TimeoutError as err:
            reason = f"timed out after {self.policy.timeout_s:g} s ({err})"
            raise _AttemptError(None, reason, retryable=True) from None
        except urllib.error.URLError as err:
            reason = f"connection error: {err.reason}"
            raise _AttemptError(None, reason, retryable=True) from None
        except (ConnectionError, http.client.HTTPException, OSError) as err:
            reason = f"connection error: {type(err).__name__}: {err}"
            raise _AttemptError(None, reason, retryable=True) from None


def _error_detail(err: urllib.error.HTTPError) -> str:
    """Status line plus the start of the error body (Binance/Deribit explain errors in JSON)."""
    try:
        body = err.read()[:200].decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        body = ""
    text = f"{err.code} {err.reason}"
    return f"{text}: {body}" if body else text

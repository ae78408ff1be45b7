"""A small, polite, bounded JSON-over-HTTPS client on ``urllib3``.

Public market-data APIs throttle by IP and ban clients that ignore them (Binance answers 418
after repeated 429s), and a scheduled job must end, so the client

- speaks **HTTPS only**: a plain ``http://`` URL is refused before any connection, except to a
  loopback host when :attr:`RetryPolicy.allow_http_loopback` is set (local test servers; a
  non-loopback host is refused whatever the setting). Redirects are **not followed**: the
  providers' API endpoints do not redirect, and following one would resend the FRED key (a
  query parameter) to wherever it points; a 3xx is reported with its target, and a redirect
  from HTTPS to HTTP is named as a downgrade;
- waits at least ``min_interval_s`` between the starts of two requests (retries included);
- retries only what can succeed later: timeouts, dropped connections, HTTP 429 and 5xx.
  Which failures count, how many, and the ``Retry-After`` header (delta-seconds or HTTP-date)
  are urllib3's :class:`urllib3.util.Retry`; its backoff is replaced by "equal jitter" (a
  uniform draw in ``[d/2, d]``, ``d = min(backoff_max_s, backoff_base_s * 2**(attempt-1))``,
  AWS Architecture Blog, *Exponential Backoff And Jitter*, 2015), because urllib3's own
  retries the first failure at once and adds a fixed-width jitter; a wait is never shorter
  than ``Retry-After``, and a ``Retry-After`` above ``max_retry_after_s`` ends the request
  ("come back later");
- keeps a **wall-clock deadline** per logical request (``deadline_s``, retries and body
  included): each socket wait is capped at what is left, and a watchdog
  (:class:`~.transport.Watchdog`) shuts the socket when the deadline passes, so a server
  trickling one byte per second, in its headers or its body, cannot hold the run
  (:class:`DeadlineExceededError`);
- caps the **response size** (``max_response_bytes``, decoded bytes): a larger
  ``Content-Length`` is refused before reading, a body growing past it while streaming is
  abandoned, so memory stays bounded (:class:`ResponseTooLargeError`).

Why the attempt loop is ours and not ``PoolManager.request(retries=Retry(...))``: urllib3's
loop sleeps with ``time.sleep`` (no injected clock for tests), has no overall deadline, no
rate limit between attempts, sleeps up to six hours on a long ``Retry-After``, and reads a
body either fully into memory or outside its retry loop. Each attempt here is one urllib3
request with ``retries=False``; the decisions between attempts are ``Retry.increment`` /
``Retry.is_retry`` / ``Retry.get_retry_after``.

Every error names the source and the URL with secret parameters redacted (:func:`redact`);
a body that is not JSON is not retried: it is the provider's answer (:class:`PayloadError`).
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import (
    HTTPError,
    InvalidHeader,
    MaxRetryError,
    ProtocolError,
    SSLError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3Timeout,
)
from urllib3.util.retry import RequestHistory

from pipelines.ingest.errors import (
    DeadlineExceededError,
    FetchError,
    InsecureUrlError,
    PayloadError,
    ResponseTooLargeError,
)
from pipelines.ingest.transport import (
    SECRET_PARAMS,
    EqualJitterRetry,
    Watchdog,
    insecure_reason,
    pool_manager,
    redact,
)

__all__ = [
    "DeadlineExceededError",
    "FetchError",
    "HttpClient",
    "InsecureUrlError",
    "PayloadError",
    "ResponseTooLargeError",
    "RetryPolicy",
    "redact",  # re-exported from .transport
]

USER_AGENT = "volmargin-ingest/0.1 (+https://github.com/volmargin)"
RETRY_STATUSES = frozenset({429, *range(500, 600)})
CHUNK_BYTES = 64 * 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How hard, how fast and how much to ask. Defaults suit the public Binance/Deribit/FRED
    APIs."""

    timeout_s: float = 15.0  # per socket wait (connect, headers, each body read)
    max_attempts: int = 5  # hard cap, first try included
    backoff_base_s: float = 1.0  # first retry waits in [0.5, 1] s
    backoff_max_s: float = 60.0  # cap on one backoff wait
    max_retry_after_s: float = 120.0  # a longer Retry-After means "come back later": give up
    min_interval_s: float = 0.25  # between request starts; Binance allows ~20 req/s by weight
    deadline_s: float = 600.0  # wall-clock cap for one logical request, retries and body included
    # 50 MiB: the largest answer asked for is 1000 klines (~0.2 MB) or one FRED series in one
    # page (100k observations, ~10 MB); 5x that is still a page, more is not an API answer.
    max_response_bytes: int = 50 * MIB
    allow_http_loopback: bool = False  # plain HTTP to 127.0.0.0/8, ::1, localhost (tests only)


class _AttemptError(Exception):
    """Internal: one attempt failed; ``response`` (a status) or ``error`` (no status)."""

    def __init__(self, reason: str, status: int | None = None,
                 response: urllib3.BaseHTTPResponse | None = None,
                 error: Exception | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.response = response
        self.error = error


class HttpClient:
    """GET JSON with retries, a deadline, a size cap and a minimum interval between requests.

    Parameters
    ----------
    policy : RetryPolicy
        Timeouts, attempts, backoff, rate limit, deadline, size cap, loopback opt-in.
    sleep, clock : callable
        Injected for tests (defaults ``time.sleep`` and ``time.monotonic``).
    seed : int or None
        Seed of the jitter generator (None: nondeterministic).
    ca_certs : str or None
        CA bundle to verify servers with; None: the system store.

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
        ca_certs: str | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._last_start: float | None = None
        self._pool = pool_manager({"Accept": "application/json", "User-Agent": USER_AGENT},
                                  ca_certs)
        self.requests_sent = 0

    def _retry(self) -> EqualJitterRetry:
        policy = self.policy
        retry = EqualJitterRetry(
            total=policy.max_attempts - 1, connect=None, read=None, status=None, other=None,
            redirect=0, allowed_methods=frozenset({"GET"}), status_forcelist=RETRY_STATUSES,
            backoff_factor=policy.backoff_base_s, backoff_max=policy.backoff_max_s,
            raise_on_status=False, respect_retry_after_header=True,
        )  # urllib3 caps a parsed Retry-After at 6 h, far above max_retry_after_s (see below)
        retry.rng = self._rng
        return retry

    def get_json(
        self, source: str, base_url: str, path: str, params: Mapping[str, object]
    ) -> Any:
        """Parsed JSON body of ``GET base_url + path ? params``.

        Raises
        ------
        InsecureUrlError
            Not ``https://`` (nothing sent), or a redirect to plain HTTP.
        DeadlineExceededError
            ``deadline_s`` passed (while waiting, connecting or reading the body).
        ResponseTooLargeError
            Body above ``max_response_bytes``.
        FetchError
            Non-retryable status (e.g. 400, 401, 403, 404, 418, any 3xx), or attempts used up.
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
        refused = insecure_reason(url, self.policy.allow_http_loopback)
        if refused:
            raise InsecureUrlError(source, shown, None, 0, refused)
        started = self._clock()
        retry = self._retry()
        attempt = 0
        while True:
            attempt += 1
            try:
                body = self._attempt(source, url, shown, started, attempt)
                break
            except _AttemptError as failure:
                retry, wait = self._next_wait(source, shown, retry, failure, attempt, started)
                self._sleep(wait)
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            snippet = body[:80].decode("utf-8", "replace")
            reason = f"not JSON ({err}); body starts {snippet!r}"
            raise PayloadError(source, shown, reason) from None

    def _next_wait(
        self, source: str, shown: str, retry: EqualJitterRetry, failure: _AttemptError,
        attempt: int, started: float,
    ) -> tuple[EqualJitterRetry, float]:
        """(Retry state, seconds to wait) before the next attempt, or raise :class:`FetchError`."""
        policy = self.policy

        def give_up(reason: str, kind: type[FetchError] = FetchError) -> FetchError:
            return kind(source, shown, failure.status, attempt, reason)

        response = failure.response
        retry_after = None
        if response is not None:
            has_retry_after = response.headers.get("Retry-After") is not None
            if not retry.is_retry("GET", response.status, has_retry_after):
                raise give_up(failure.reason)
            with contextlib.suppress(InvalidHeader):
                retry_after = retry.get_retry_after(response)
        try:
            retry = retry.increment("GET", shown, response=response, error=failure.error)
        except MaxRetryError:
            raise give_up(f"{failure.reason}; gave up (max_attempts={policy.max_attempts})") \
                from None
        except Exception:  # urllib3 re-raises an error it deems not retryable
            raise give_up(failure.reason) from None
        if retry_after is not None and retry_after > policy.max_retry_after_s:
            raise give_up(f"{failure.reason}; Retry-After {retry_after:.0f} s exceeds "
                          f"max_retry_after_s={policy.max_retry_after_s:.0f} s, try again later")
        wait = max(retry.get_backoff_time(), retry_after or 0.0)
        if self._clock() - started + wait > policy.deadline_s:
            raise give_up(f"{failure.reason}; gave up (deadline_s={policy.deadline_s:g} reached)",
                          DeadlineExceededError)
        return retry, wait

    def _backoff(self, attempt: int) -> float:
        """The wait after ``attempt`` failed attempts (for inspection and tests)."""
        history = tuple(RequestHistory("GET", None, None, 500, None) for _ in range(attempt))
        return self._retry().new(history=history).get_backoff_time()

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

    def _remaining(self, source: str, shown: str, started: float, attempt: int) -> float:
        left = self.policy.deadline_s - (self._clock() - started)
        if left <= 0:
            raise DeadlineExceededError(source, shown, None, attempt,
                                   f"gave up (deadline_s={self.policy.deadline_s:g} reached)")
        return left

    def _deadline(self, source: str, shown: str, status: int | None, attempt: int,
                  what: str) -> DeadlineExceededError:
        return DeadlineExceededError(source, shown, status, attempt, f"{what}; gave up "
                                     f"(deadline_s={self.policy.deadline_s:g} reached)")

    def _attempt(self, source: str, url: str, shown: str, started: float, attempt: int) -> bytes:
        """One request: the body on HTTP 200, else :class:`_AttemptError` (or a final error).

        A :class:`~.transport.Watchdog` cuts the connection when the deadline passes, whether
        the server is slow to connect, to send its headers or its body.
        """
        self._throttle()
        left = self._remaining(source, shown, started, attempt)
        wait_s = min(self.policy.timeout_s, left)
        with Watchdog(left) as watchdog:
            try:
                response = self._pool.request(
                    "GET", url, retries=False, redirect=False, preload_content=False,
                    timeout=urllib3.Timeout(connect=wait_s, read=wait_s),
                )
            except (SSLError, Urllib3Timeout, HTTPError) as err:
                if watchdog.expired.is_set():
                    raise self._deadline(source, shown, None, attempt,
                                         "no complete answer in time") from None
                if isinstance(err, SSLError):  # a certificate problem stays on retry
                    raise FetchError(source, shown, None, attempt, f"TLS error: {err}") \
                        from None
                if isinstance(err, Urllib3Timeout):
                    raise _AttemptError(f"timed out after {wait_s:g} s ({err})",
                                        error=err) from None
                raise _AttemptError(f"connection error: {type(err).__name__}: {err}",
                                    error=err) from None
            complete = False
            try:
                if watchdog.expired.is_set():  # headers cut short by the watchdog
                    raise self._deadline(source, shown, None, attempt,
                                         "no complete answer in time")
                if response.status == 200:
                    body = self._read_body(source, shown, response, attempt, watchdog)
                    complete = True
                    return body
                if 300 <= response.status < 400:
                    raise self._redirect_error(source, shown, url, response, attempt)
                raise _AttemptError(_error_detail(response), status=response.status,
                                    response=response)
            finally:
                if not complete:  # unread bytes left: the connection must not be reused
                    response.close()
                response.release_conn()

    def _redirect_error(self, source: str, shown: str, url: str,
                        response: urllib3.BaseHTTPResponse, attempt: int) -> FetchError:
        location = response.headers.get("Location") or ""
        target = redact(urllib.parse.urljoin(url, location))
        downgrade = (urllib.parse.urlsplit(url).scheme == "https"
                     and urllib.parse.urlsplit(target).scheme != "https")
        if downgrade:
            return InsecureUrlError(source, shown, response.status, attempt,
                                    f"redirect to {target} refused: downgrade from HTTPS to "
                                    "plain HTTP")
        return FetchError(source, shown, response.status, attempt,
                          f"redirect to {target} not followed (API endpoints do not redirect; "
                          "check the configured base URL)")

    def _read_body(self, source: str, shown: str, response: urllib3.BaseHTTPResponse,
                   attempt: int, watchdog: Watchdog) -> bytes:
        """Stream the body, refusing it past ``max_response_bytes`` or the deadline."""
        cap = self.policy.max_response_bytes

        def too_large(what: str) -> ResponseTooLargeError:
            return ResponseTooLargeError(source, shown, 200, attempt,
                                         f"response body {what} exceeds max_response_bytes="
                                         f"{cap} ({cap / MIB:g} MiB); not kept")

        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise too_large(f"of {int(declared)} bytes (Content-Length)")
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = response.read1(CHUNK_BYTES)
                if watchdog.expired.is_set():
                    break
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > cap:  # stop here: at most cap + one chunk was ever held
                    raise too_large(f"while streaming (stopped after {size} bytes)")
                chunks.append(chunk)
        except (Urllib3Timeout, ProtocolError, OSError) as err:
            if not watchdog.expired.is_set():
                raise _AttemptError(f"body read failed after {size} bytes: "
                                    f"{type(err).__name__}: {err}", error=err) from None
        raise self._deadline(source, shown, 200, attempt,
                             f"body still arriving after {size} bytes")


def _error_detail(response: urllib3.BaseHTTPResponse) -> str:
    """Status line plus the start of the error body (Binance/Deribit explain errors in JSON)."""
    try:
        body = response.read(200)[:200].decode("utf-8", "replace").strip()
    except (HTTPError, OSError):
        body = ""
    text = f"{response.status} {response.reason}"
    return f"{text}: {body}" if body else text

"""urllib3 pieces under :mod:`.http`: HTTPS-only URLs, secret redaction (in errors and in
urllib3's own log records), the retry policy object, and a watchdog that cuts a request at its
wall-clock deadline whatever the server does.

Socket timeouts bound each *wait* (``recv``), not a request: a server that sends one byte
per second, in its headers or its body, never trips them. The watchdog does: urllib3's
connections are subclassed only to record, per thread, the connection a request is using
(on ``connect`` and on each ``request``, so a reused keep-alive connection is recorded too);
when the deadline passes, a timer thread shuts that socket down, the blocked read returns at
once, and the client reports :class:`~.http.DeadlineExceededError`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import re
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

__all__ = ["SECRET_PARAMS", "EqualJitterRetry", "RedactSecrets", "Watchdog", "insecure_reason",
           "is_loopback", "pool_manager", "redact"]

SECRET_PARAMS = frozenset({"api_key", "apikey", "token", "signature"})


def redact(url: str) -> str:
    """``url`` with the values of secret query parameters replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    query = [
        (key, "***" if key.lower() in SECRET_PARAMS else value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


_SECRET_IN_TEXT = re.compile(
    r"(?i)\b(" + "|".join(sorted(SECRET_PARAMS)) + r")=([^&\s\"']+)")


class RedactSecrets(logging.Filter):
    """Log filter replacing the values of secret query parameters in a record by ``***``.

    urllib3 logs each request line, query string included, at DEBUG: without this a debug
    run would write the FRED key to its logs. Installed on urllib3's loggers at import.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        cleaned = _SECRET_IN_TEXT.sub(r"\1=***", text)
        if cleaned != text:
            record.msg, record.args = cleaned, ()
        return True


for _name in ("urllib3", "urllib3.connectionpool", "urllib3.poolmanager", "urllib3.connection",
              "urllib3.util.retry", "urllib3.response"):
    # A filter applies only to records logged on its own logger, hence one per module.
    logging.getLogger(_name).addFilter(RedactSecrets())


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_reason(url: str, allow_http_loopback: bool) -> str | None:
    """Why ``url`` may not be requested (not HTTPS), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_http_loopback and is_loopback(parts.hostname):
        return None
    why = f"scheme {parts.scheme or '(none)'}:// refused: only https:// is allowed"
    if parts.scheme == "http":
        why += (" (plain HTTP is allowed only to a loopback test server, and only when "
                "allow_http_loopback is set)")
    return why


class EqualJitterRetry(Retry):
    """urllib3's :class:`~urllib3.util.Retry` with "equal jitter" backoff.

    After ``n`` failed attempts, ``d = min(backoff_max, backoff_factor * 2**(n-1))`` and the
    wait is uniform in ``[d/2, d]``: never a burst at once, never synchronised with other
    clients. ``rng`` is carried through :meth:`new` so a seeded client stays reproducible.
    """

    rng: random.Random = random.Random()

    def new(self, **kw: Any) -> EqualJitterRetry:
        retry = super().new(**kw)
        retry.rng = self.rng
        return retry

    def get_backoff_time(self) -> float:
        failures = len(self.history)
        if failures == 0:
            return 0.0
        cap = min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))
        return self.rng.uniform(cap / 2, cap)


_ACTIVE: dict[int, Any] = {}  # thread id -> the connection its current request uses
_ACTIVE_LOCK = threading.Lock()


def _track(connection: Any) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE[threading.get_ident()] = connection


class _Tracked:
    """Registers the connection for the deadline watchdog before it connects or sends."""

    def connect(self) -> None:
        _track(self)
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _TrackedHTTPConnection(_Tracked, HTTPConnection):
    pass


class _TrackedHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


def pool_manager(headers: Mapping[str, str], ca_certs: str | None) -> urllib3.PoolManager:
    """A verifying (``CERT_REQUIRED``) urllib3 pool whose connections the watchdog can cut."""
    manager = urllib3.PoolManager(headers=dict(headers), cert_reqs="CERT_REQUIRED",
                                  ca_certs=ca_certs)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


class Watchdog:
    """Shut the calling thread's connection down once ``seconds`` have passed.

    Use as a context manager around one request (connect, headers and body); ``expired``
    tells the caller whether an error it sees was caused by the watchdog.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = threading.Event()
        self._owner = threading.get_ident()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.expired.set()
        with _ACTIVE_LOCK:
            connection = _ACTIVE.get(self._owner)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by its owner
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Watchdog:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(self._owner, None)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with _ACTIVE_LOCK:
            _ACTIVE.pop(self._owner, None)

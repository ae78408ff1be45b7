"""Helpers shared by the ingestion tests: settings pointed at the fake server, a small copy
of the embedded data, and byte-level views of the stored files."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gzip
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import urllib3.util.connection

from pipelines.ingest import Endpoints, IngestSettings, RetryPolicy
from tests.conftest import write_slice
from tests.replay.fake_api import DUMMY_FRED_KEY, FakeApis, FakeServer

# Fast and bounded: 3 attempts, millisecond backoff, a short timeout, a 10 s deadline.
FAST_RETRY = RetryPolicy(
    timeout_s=0.5,
    max_attempts=3,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    max_retry_after_s=5.0,
    min_interval_s=0.0,
    deadline_s=10.0,
    allow_http_loopback=True,  # the fake server speaks plain HTTP on 127.0.0.1
)


def settings_for(url: str, **overrides: object) -> IngestSettings:
    """Settings whose three providers are the fake server at ``url``."""
    endpoints = Endpoints(binance=url, deribit=url, fred=url)
    return IngestSettings(endpoints=endpoints, retry=FAST_RETRY, **overrides)  # type: ignore[arg-type]


@functools.cache
def _template() -> Path:
    """The slice, cut once per session (reading the 68k-row hourly file is the slow part)."""
    root = Path(tempfile.mkdtemp(prefix="volmargin-ingest-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return write_slice(root, ["BTC"], "2025-06-01", "2025-06-30", macro=("US10Y", "VIX", "SPX"))


def small_market(dest: Path) -> Path:
    """June 2025 of the embedded data (BTC daily/hourly/DVOL, US10Y, VIX, SPX): real rows."""
    shutil.copytree(_template(), dest)
    return dest


def daily_market(dest: Path) -> Path:
    """:func:`small_market` with the daily files only (the hourly file is exercised elsewhere)."""
    root = small_market(dest)
    shutil.rmtree(root / "crypto" / "hourly")
    return root


def text(path: Path) -> bytes:
    """Decompressed bytes of a stored file."""
    return gzip.decompress(path.read_bytes())


def rows(path: Path) -> pd.DataFrame:
    """The stored file as strings, exactly as written."""
    return pd.read_csv(path, dtype=str)


def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any connection to a host other than 127.0.0.1 fail the test (the standard
    library's and urllib3's own ``create_connection`` both)."""
    for module in (socket, urllib3.util.connection):
        real = module.create_connection

        def guarded(address: tuple[str, int], *args: object, _real=real,
                    **kwargs: object) -> socket.socket:
            assert address[0] == "127.0.0.1", f"a test tried to reach {address}"
            return _real(address, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(module, "create_connection", guarded)


@contextlib.contextmanager
def serving(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApis]:
    """The fake providers on 127.0.0.1, a dummy FRED key, and no other host reachable."""
    loopback_only(monkeypatch)
    monkeypatch.setenv("FRED_API_KEY", DUMMY_FRED_KEY)
    with FakeServer() as apis:
        yield apis

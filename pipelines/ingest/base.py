"""What every connector shares: the file it feeds (:class:`Target`), the unit it delivers
(:class:`Page`), the settings, and the :class:`Connector` protocol.

A connector only *downloads and parses*: it turns provider payloads into frames in the
project's file layout (``timestamp`` as tz-naive UTC ``datetime64[ns]`` + lowercase float
columns) and yields them page by page, oldest first, only for periods that are complete
before ``until``. Merging, validating and writing are the store's job (:mod:`.store`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from features.loaders import SUFFIXES
from pipelines.ingest.errors import PayloadError
from pipelines.ingest.http import HttpClient, RetryPolicy
from pipelines.ingest.plausibility import PlausibilitySettings

if TYPE_CHECKING:
    from configs.schema import IngestConfig

__all__ = [
    "FRED_CLOSE_ONLY",
    "FRED_SERIES",
    "ConfigurationError",
    "Connector",
    "Endpoints",
    "IngestSettings",
    "Page",
    "Target",
    "from_ms",
    "stored_files",
    "to_ms",
]

# FRED series per macro file. FRED publishes closes only (no OHLC): DGS10 is the 10-year
# Treasury constant-maturity yield in percent (H.15). VIXCLS (CBOE VIX close) and SP500 (S&P
# 500 close, last 10 years only) also exist, but the embedded VIX and SPX files carry OHLC
# columns FRED cannot supply, so appending to them is refused; they are therefore not in the
# default mapping (pass ``fred_series`` to use them for value-only files). Extending VIX/SPX
# needs an OHLC source, not yet connected.
FRED_SERIES: Mapping[str, str] = MappingProxyType({"US10Y": "DGS10"})
FRED_CLOSE_ONLY: Mapping[str, str] = MappingProxyType(
    {"US10Y": "DGS10", "VIX": "VIXCLS", "SPX": "SP500"}
)


class ConfigurationError(RuntimeError):
    """A source cannot run as configured (e.g. no API key); nothing was requested."""


@dataclass(frozen=True)
class Endpoints:
    """Base URLs, overridable so that tests (or a proxy) can stand in for the providers."""

    binance: str = "https://api.binance.com"
    deribit: str = "https://www.deribit.com"
    fred: str = "https://api.stlouisfed.org"


@dataclass(frozen=True)
class IngestSettings:
    """Everything :func:`pipelines.ingest.run.ingest` needs besides the data directory.

    Attributes
    ----------
    endpoints : Endpoints
        Provider base URLs.
    retry : RetryPolicy
        Timeouts, retries, backoff and the minimum interval between requests.
    binance_limit : int
        Klines per request (Binance maximum 1000).
    deribit_window_days : int
        Days per DVOL request window (Deribit caps the points per answer; windows are
        walked oldest first so every page extends the file).
    max_pages : int
        Hard cap on pages (requests that return data) per file and run.
    recheck_last : bool
        Re-download the last stored row to detect provider revisions (reported as conflicts);
        an identical row is skipped silently.
    rtol : float
        Relative tolerance when comparing an incoming value with the stored one.
    fred_series : Mapping[str, str]
        Macro file name -> FRED series id.
    fred_api_key_env : str
        Environment variable holding the FRED API key.
    lock_timeout_s : float
        How long a run waits for another run on the same data directory to finish.
    settle_s : float
        Seconds a candle or session must have been closed before it is appended: a provider
        may still revise the bar it just closed, and a stored row is only ever rechecked,
        never replaced (``recheck_last`` reports a revision as a conflict).
    plausibility : PlausibilitySettings
        Thresholds of the screen that holds back implausible rows (:mod:`.plausibility`).
    """

    endpoints: Endpoints = field(default_factory=Endpoints)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    binance_limit: int = 1000
    deribit_window_days: int = 500
    max_pages: int = 200
    recheck_last: bool = True
    rtol: float = 1e-9
    fred_series: Mapping[str, str] = field(default_factory=lambda: dict(FRED_SERIES))
    fred_api_key_env: str = "FRED_API_KEY"
    lock_timeout_s: float = 600.0
    plausibility: PlausibilitySettings = field(default_factory=PlausibilitySettings)
    settle_s: float = 120.0

    @classmethod
    def from_config(
        cls,
        config: IngestConfig,
        endpoints: Endpoints | None = None,
        allow_http_loopback: bool = False,
    ) -> IngestSettings:
        """Settings from the ``ingest`` config section; everything else at its default.

        ``allow_http_loopback`` is not a config key on purpose: only code (tests, a local
        fake server) may allow plain HTTP, and then only to a loopback host.
        """
        retry = RetryPolicy(
            timeout_s=config.timeout_s, max_attempts=config.max_attempts,
            min_interval_s=config.min_interval_s, deadline_s=config.deadline_s,
            max_retry_after_s=config.max_retry_after_s,
            max_response_bytes=int(config.max_response_mb * 1024 * 1024),
            allow_http_loopback=allow_http_loopback,
        )
        screen = config.plausibility
        plausibility = PlausibilitySettings(
            enabled=screen.enabled, window=screen.window, min_history=screen.min_history,
            k_daily=screen.k_daily, k_hourly=screen.k_hourly, k_dvol=screen.k_dvol,
            k_macro=screen.k_macro,
        )
        return cls(endpoints=endpoints or Endpoints(), retry=retry, plausibility=plausibility,
                   settle_s=config.settle_s)

    def fred_api_key(self) -> str | None:
        """The FRED key from the environment (never logged, redacted from URLs)."""
        return os.environ.get(self.fred_api_key_env) or None


@dataclass(frozen=True)
class Target:
    """One file a connector feeds.

    Attributes
    ----------
    source : str
        Connector name (``binance``, ``deribit``, ``fred``).
    relpath : str
        Path under the data directory without suffix, e.g. ``crypto/daily/BTC``.
    kind : {"daily", "hourly", "dvol", "macro"}
        Validation spec (:data:`features.validation.SPECS`).
    remote : str
        Provider identifier: ``BTCUSDT``, ``BTC`` (Deribit currency), ``DGS10``.
    step : pandas.Timedelta
        Row spacing: one day or one hour.
    columns : tuple of str
        Columns a page carries (besides ``timestamp``), in the order used for new files.
    prices_positive : bool
        False for yields, which may be zero or negative.
    """

    source: str
    relpath: str
    kind: str
    remote: str
    step: pd.Timedelta
    columns: tuple[str, ...]
    prices_positive: bool = True


@dataclass
class Page:
    """Rows from one provider answer (or one window), ready for the store.

    ``rows`` has a ``timestamp`` column (tz-naive UTC) and the target's columns as floats;
    ``missing`` lists provider rows that were skipped as missing (FRED's ``"."``), verbatim.
    """

    rows: pd.DataFrame
    missing: list[str] = field(default_factory=list)


class Connector(Protocol):
    """A provider: which files it feeds, and how to fetch new rows for one of them."""

    name: str

    def targets(
        self, data_dir: Path, assets: list[str] | None, settings: IngestSettings
    ) -> list[Target]:
        """Files fed by this provider: the existing ones, plus ``assets`` it supports."""
        ...

    def pages(
        self,
        client: HttpClient,
        settings: IngestSettings,
        target: Target,
        since: pd.Timestamp,
        until: pd.Timestamp,
    ) -> Iterator[Page]:
        """Rows stamped in ``[since, until)`` whose period has closed by ``until``, oldest
        page first."""
        ...


def to_ms(stamp: pd.Timestamp) -> int:
    """Milliseconds since the Unix epoch of a tz-naive UTC stamp."""
    return int(stamp.value // 1_000_000)


def from_ms(values: list[int] | pd.Series, source: str = "", where: str = "") -> pd.Series:
    """Epoch milliseconds to tz-naive UTC ``datetime64[ns]``.

    Raises
    ------
    PayloadError
        A stamp outside what a timestamp can hold (years 1677-2262): the provider's payload
        is unusable, said with the source and the request.
    """
    try:
        return pd.Series(pd.to_datetime(pd.Series(values, dtype="int64"), unit="ms")).astype(
            "datetime64[ns]")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError) as err:
        raise PayloadError(source or "provider", where, f"timestamp out of range: {err}"
                           ) from None


def stored_files(directory: Path, prefix: str = "") -> list[str]:
    """Names (suffix and ``prefix`` removed) of data files in ``directory``, sorted."""
    if not directory.is_dir():
        return []
    names = set()
    for path in directory.iterdir():
        if path.name.startswith(".") or not path.is_file():
            continue
        for suffix in SUFFIXES:
            if path.name.endswith(suffix) and path.name.startswith(prefix):
                names.add(path.name[len(prefix) : -len(suffix)])
    return sorted(names)

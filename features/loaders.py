"""Read the raw market data directory into validated, point-in-time frames.

Layout (see ``data/market/README.md``)::

    crypto/daily/SYM.csv.gz    crypto/hourly/SYM.csv.gz    iv/DVOL_SYM.csv.gz    macro/NAME.csv.gz

Each file may also be ``.csv`` or ``.parquet`` with the same columns. Every file is validated
(:mod:`features.validation`) before anything is returned; a failure raises
:class:`DataValidationError` naming the file, line and rule. Nothing is filled, dropped or
edited: gaps stay gaps and are *reported* in :attr:`MarketData.gaps`.

Frames are indexed by tz-naive UTC stamps (``datetime64[ns]``): ``date`` (midnight, the UTC
day) for daily series, ``timestamp`` (candle open) for hourly ones.
"""

from __future__ import annotations

import datetime
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features.validation import DataValidationError, validate_frame

__all__ = [
    "DataValidationError",
    "MarketData",
    "discover_assets",
    "gap_report",
    "load_daily",
    "load_dvol",
    "load_hourly",
    "load_macro",
    "load_market",
]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SUFFIXES = (".csv.gz", ".csv", ".parquet")
GAP_COLUMNS = ["source", "gap_start", "gap_end", "missing"]
# Yields are rates, not prices: they can be zero or negative (Bunds 2019, JGBs), so only
# finiteness is checked. Keyed by the macro file's name.
YIELD_SERIES = frozenset({"US10Y"})


def _read_table(path: Path) -> pd.DataFrame:
    """The file as stored: CSV (optionally gzipped) or Parquet, no parsing beyond numbers.

    A file that cannot be read at all (truncated gzip, empty, not Parquet, wrong encoding)
    raises rule ``file_unreadable``; a ragged CSV row raises ``csv_format`` with its line.
    """
    try:
        if path.name.endswith(".parquet"):
            return pd.read_parquet(path).reset_index(drop=True)
        # Blank lines are kept (as all-NaN rows) so that row i stays on line i + 2.
        return pd.read_csv(path, dtype={"timestamp": str}, skip_blank_lines=False)
    except (EOFError, OSError, zlib.error, UnicodeDecodeError, pd.errors.EmptyDataError,
            pa.ArrowException) as err:
        raise DataValidationError(
            path, None, "file_unreadable",
            f"{path} file: rule file_unreadable failed: {type(err).__name__}: "
            f"{str(err).strip() or 'no detail'} (truncated or corrupt?). Re-fetch or repair the "
            "file; nothing was loaded.",
        ) from err
    except pd.errors.ParserError as err:
        found = re.search(r"line (\d+)", str(err))
        line = int(found.group(1)) if found else None
        where = f"line {line}" if line else "file"
        message = f"{path} {where}: rule csv_format failed: {str(err).strip()}"
        raise DataValidationError(
            path, line, "csv_format", f"{message}. Fix the source file; nothing was loaded."
        ) from err


def _parse_timestamps(raw: pd.Series) -> pd.Series:
    """ISO 8601 UTC strings (or datetimes) to tz-naive UTC ``datetime64[ns]``; NaT if invalid.

    The exact format is tried first because it is an order of magnitude faster than
    format inference on 70k-row hourly files; ISO 8601 with offsets is the fallback.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw
    else:
        try:
            parsed = pd.to_datetime(raw, format=TIMESTAMP_FORMAT)
        except (ValueError, TypeError):
            parsed = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.astype("datetime64[ns]")


def _load(
    path: Path | str, kind: str, index_name: str, prices_positive: bool = True
) -> pd.DataFrame:
    path = Path(path)
    raw = _read_table(path)
    frame = raw.copy()
    if "timestamp" in frame.columns:
        frame["timestamp"] = _parse_timestamps(frame["timestamp"])
    valid = validate_frame(frame, raw, path, kind, prices_positive)
    out = valid.set_index("timestamp")
    out.index.name = index_name
    return out


def load_daily(path: Path | str) -> pd.DataFrame:
    """Crypto daily OHLCV: index ``date`` (UTC midnight), float columns open..volume."""
    return _load(path, "daily", "date")


def load_hourly(path: Path | str) -> pd.DataFrame:
    """Crypto hourly OHLCV: index ``timestamp`` (candle open, on the hour, UTC)."""
    return _load(path, "hourly", "timestamp")


def load_dvol(path: Path | str) -> pd.DataFrame:
    """Deribit DVOL (annualised %, end-of-day level): index ``date``, ``value`` (+ OHLC)."""
    return _load(path, "dvol", "date")


def load_macro(path: Path | str) -> pd.DataFrame:
    """Macro session closes: index ``date`` (session date), ``value`` (+ OHLC/volume).

    Prices must be positive, except for yields (:data:`YIELD_SERIES`), which only need to
    be finite.
    """
    return _load(path, "macro", "date", prices_positive=_stem(Path(path)) not in YIELD_SERIES)


def _stem(path: Path) -> str:
    """File name without any of :data:`SUFFIXES` (``BTC.csv.gz`` -> ``BTC``)."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _scan(directory: Path, prefix: str = "") -> tuple[dict[str, Path], list[DataValidationError]]:
    """Data files in ``directory`` keyed by name (prefix removed), and duplicate-name errors.

    Two files for one name (``BTC.csv.gz`` and ``BTC.parquet``) are refused rather than
    one being picked silently: they may disagree. The name is left out of the result.
    """
    if not directory.is_dir():
        return {}, []
    found: dict[str, Path] = {}
    errors: dict[str, DataValidationError] = {}
    for path in sorted(directory.iterdir()):
        stem = _stem(path)
        skip = path.name.startswith(".") or not path.name.endswith(SUFFIXES)
        if skip or not path.is_file() or not stem.startswith(prefix):
            continue
        key = stem[len(prefix) :]
        if key in found or key in errors:
            first = found.pop(key, None) or errors[key].path
            errors[key] = DataValidationError(
                path,
                None,
                "duplicate_source",
                f"{directory}: rule duplicate_source failed: {first.name} and {path.name} "
                "hold the same series. Keep one of them; nothing was loaded.",
            )
            continue
        found[key] = path
    return found, list(errors.values())


def _files_by_stem(directory: Path, prefix: str = "") -> dict[str, Path]:
    """:func:`_scan`, raising the first duplicate-name error."""
    found, errors = _scan(directory, prefix)
    if errors:
        raise errors[0]
    return found


def discover_assets(data_dir: Path | str) -> list[str]:
    """Sorted asset symbols with a daily file in ``data_dir/crypto/daily/``."""
    return sorted(_files_by_stem(Path(data_dir) / "crypto" / "daily"))


def gap_report(index: pd.DatetimeIndex, freq: str, source: str) -> pd.DataFrame:
    """Runs of missing stamps on a regular grid, one row per run.

    Parameters
    ----------
    index : DatetimeIndex
        Sorted, unique stamps on the ``freq`` grid (as returned by the loaders).
    freq : {"1D", "1h"}
        Grid step.
    source : str
        Label copied into the ``source`` column (e.g. ``crypto/hourly/BTC.csv.gz``).

    Returns
    -------
    DataFrame
        Columns ``source``, ``gap_start`` (first missing stamp), ``gap_end`` (last missing
        stamp), ``missing`` (number of missing stamps). Empty (same columns) when complete.
        Macro series follow trading calendars: callers should not report their gaps.
    """
    step = pd.Timedelta(freq).to_timedelta64()
    stamps = np.asarray(index, dtype="datetime64[ns]")
    deltas = np.diff(stamps)
    jumps = np.flatnonzero(deltas > step)
    return pd.DataFrame(
        {
            "source": pd.Series([source] * len(jumps), dtype=object),
            "gap_start": pd.Series(stamps[jumps] + step, dtype="datetime64[ns]"),
            "gap_end": pd.Series(stamps[jumps + 1] - step, dtype="datetime64[ns]"),
            "missing": pd.Series(deltas[jumps] // step - 1, dtype="int64"),
        },
        columns=GAP_COLUMNS,
    )


@dataclass
class MarketData:
    """Everything under one data directory, validated and (optionally) cut at ``as_of``.

    ``failures`` maps each file skipped under ``keep_going`` (path relative to ``data_dir``) to
    the reason and its consequence; ``files`` lists only the files actually used.
    """

    daily: dict[str, pd.DataFrame]
    hourly: dict[str, pd.DataFrame]
    dvol: dict[str, pd.DataFrame]
    macro: dict[str, pd.DataFrame]
    gaps: pd.DataFrame
    data_dir: Path
    files: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def _cut(frame: pd.DataFrame, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows stamped strictly before ``end`` (all rows when ``end`` is None)."""
    return frame if end is None else frame.loc[frame.index < end]


@dataclass
class _Attempts:
    """Runs loaders: fail fast, or (``keep_going``) record the failure and carry on."""

    root: Path
    keep_going: bool
    failures: dict[str, str] = field(default_factory=dict)

    def record(self, err: DataValidationError, consequence: str) -> None:
        if not self.keep_going:
            raise err
        try:
            key = _label(self.root, err.path)
        except ValueError:  # not under the data directory
            key = str(err.path)
        self.failures[key] = f"{err} Consequence: {consequence}."

    def load(
        self, loader: Callable[[Path], pd.DataFrame], path: Path, consequence: str
    ) -> pd.DataFrame | None:
        try:
            return loader(path)
        except DataValidationError as err:
            self.record(err, consequence)
            return None

    def scan(self, directory: Path, prefix: str = "") -> dict[str, Path]:
        found, errors = _scan(directory, prefix)
        for err in errors:
            self.record(err, f"series {_stem(err.path)} not loaded")
        return found


def load_market(
    data_dir: Path | str,
    assets: list[str] | None = None,
    as_of: datetime.date | None = None,
    keep_going: bool = False,
) -> MarketData:
    """Load and validate a market data directory.

    Parameters
    ----------
    data_dir : path
        Root of the layout described in the module docstring.
    assets : list of str, optional
        Crypto symbols to load; default every symbol with a daily file. A requested symbol
        without a daily file raises ``DataValidationError`` (rule ``asset_missing``).
    as_of : date, optional
        Point-in-time cut: daily, DVOL and macro rows dated ``<= as_of``; hourly candles
        opening before the end of that UTC day (last one 23:00).
    keep_going : bool
        False (default): the first invalid file raises. True: an invalid file is recorded in
        ``MarketData.failures`` and skipped with its consequence — an asset whose daily,
        hourly or own DVOL file fails is not built at all (never silently degraded to a
        range proxy); a failed macro series leaves its features NaN; the rest still loads.

    Returns
    -------
    MarketData
        Frames keyed by symbol (DVOL: ``BTC`` from ``DVOL_BTC``) or macro name; ``gaps`` lists
        missing days and hours of the crypto files within the cut. Missing ``iv/`` or
        ``macro/`` directories give empty dicts.
    """
    root = Path(data_dir)
    run = _Attempts(root, keep_going)
    daily_files = run.scan(root / "crypto" / "daily")
    symbols = sorted(daily_files) if assets is None else list(assets)
    absent = [s for s in symbols if s not in daily_files]
    if absent:
        directory = root / "crypto" / "daily"
        err = DataValidationError(
            directory,
            None,
            "asset_missing",
            f"{directory}: rule asset_missing failed: no daily file for {', '.join(absent)} "
            f"(found: {', '.join(sorted(daily_files)) or 'none'}). Add SYM.csv.gz or drop "
            "the asset from the request; nothing was loaded.",
        )
        run.record(err, f"asset(s) {', '.join(absent)} not built")
        symbols = [s for s in symbols if s in daily_files]
    hourly_files = run.scan(root / "crypto" / "hourly")
    dvol_files = run.scan(root / "iv", prefix="DVOL_")
    macro_files = run.scan(root / "macro")

    # A daily row dated D is the whole UTC day D, so "known at as_of" means date < as_of + 1.
    end = None if as_of is None else pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1)
    dvol: dict[str, pd.DataFrame] = {}
    for name, path in dvol_files.items():
        frame = run.load(load_dvol, path, f"DVOL_{name} not used"
                         + (f"; asset {name} not built" if name in symbols else ""))
        if frame is not None:
            dvol[name] = _cut(frame, end)
    daily: dict[str, pd.DataFrame] = {}
    hourly: dict[str, pd.DataFrame] = {}
    for s in symbols:
        consequence = f"asset {s} not built"
        d = run.load(load_daily, daily_files[s], consequence)
        h = run.load(load_hourly, hourly_files[s], consequence) if s in hourly_files else None
        if d is None or (s in hourly_files and h is None) or (s in dvol_files and s not in dvol):
            continue
        daily[s] = _cut(d, end)
        if h is not None:
            hourly[s] = _cut(h, end)
    macro: dict[str, pd.DataFrame] = {}
    for name, path in macro_files.items():
        frame = run.load(load_macro, path, f"macro series {name} not used (its features NaN)")
        if frame is not None:
            macro[name] = _cut(frame, end)

    reports = [gap_report(f.index, "1D", _label(root, daily_files[s])) for s, f in daily.items()]
    reports += [gap_report(f.index, "1h", _label(root, hourly_files[s])) for s, f in hourly.items()]
    gaps = (
        pd.concat(reports, ignore_index=True)
        if reports
        else gap_report(pd.DatetimeIndex([]), "1D", "")
    )
    files = [daily_files[s] for s in daily] + [hourly_files[s] for s in hourly]
    files += [dvol_files[n] for n in dvol] + [macro_files[n] for n in macro]
    return MarketData(daily, hourly, dvol, macro, gaps, root, files, run.failures)


def _label(root: Path, path: Path) -> str:
    """Path relative to the data directory, used as the gap report's ``source``."""
    return path.relative_to(root).as_posix()

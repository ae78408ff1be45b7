"""Read the raw market data directory into validated, point-in-time frames.

Layout (see ``data/market/README.md``)::

    crypto/daily/SYM.csv.gz    crypto/hourly/SYM.csv.gz    iv/DVOL_SYM.csv.gz    macro/NAME.csv.gz

Each file may also be ``.csv`` or ``.parquet`` with the same columns. Every file is read
safely (:mod:`features.rawfiles`: broken links, size guard, empty files), validated
(:mod:`features.validation`, timestamps in the documented format included) and hourly files
are checked against the daily candles (:mod:`features.consistency`) before anything is
returned; a failure raises :class:`DataValidationError` naming the file, line and rule.
Nothing is filled or edited: gaps stay gaps and are *reported* in :attr:`MarketData.gaps`;
rows dated in the future are left out with a warning (:attr:`MarketData.warnings`).

Frames are indexed by tz-naive UTC stamps (``datetime64[ns]``): ``date`` (midnight, the UTC
day) for daily series, ``timestamp`` (candle open) for hourly ones.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from features import append_receipts
from features.candle_cache import CandleCache
from features.consistency import check_hourly_against_daily
from features.gaps import GAP_COLUMNS, gap_report, gap_reports
from features.implied import MARKET_DVOL
from features.macro import MACRO_SERIES, VIX_SERIES
from features.rawfiles import (
    DEFAULT_MAX_FILE_MB,
    FILE_ERRORS,
    SUFFIXES,  # noqa: F401  (re-exported: ingest writes the same suffixes)
    file_error,
    read_table,
    scan,
    stem,
)
from features.validation import DataValidationError, parse_timestamps, validate_frame

__all__ = [
    "DEFAULT_MAX_FILE_MB",
    "GAP_COLUMNS",
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
# Yields are rates, not prices: they can be zero or negative (Bunds 2019, JGBs), so only
# finiteness is checked. Keyed by the macro file's name.
YIELD_SERIES = frozenset({"US10Y"})
# An hourly file lost this way leaves the asset on the daily-range proxy (flagged); any other
# hourly error fails the asset (see load_market).
LOST_FILE_RULES = frozenset({"broken_link", "not_a_file", "empty_file", "only_future_rows"})
_log = logging.getLogger(__name__)


def _utcnow() -> pd.Timestamp:
    """The current time, tz-naive UTC (a function so that tests can pin it)."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


def _load(
    path: Path | str, kind: str, index_name: str, prices_positive: bool = True,
    max_file_mb: float | None = DEFAULT_MAX_FILE_MB,
) -> pd.DataFrame:
    path = Path(path)
    try:
        raw = read_table(path, max_file_mb)
        frame = raw.copy()
        wrong_format = None
        if "timestamp" in frame.columns:
            frame["timestamp"], wrong_format = parse_timestamps(frame["timestamp"], kind)
        valid = validate_frame(frame, raw, path, kind, prices_positive, wrong_format)
    except DataValidationError:
        raise
    except FILE_ERRORS as err:  # e.g. MemoryError while parsing: still this file's error
        raise file_error(path, err) from err
    out = valid.set_index("timestamp")
    out.index.name = index_name
    return out


def load_daily(path: Path | str, max_file_mb: float | None = DEFAULT_MAX_FILE_MB) -> pd.DataFrame:
    """Crypto daily OHLCV: index ``date`` (UTC midnight), float columns open..volume."""
    return _load(path, "daily", "date", max_file_mb=max_file_mb)


def load_hourly(path: Path | str, max_file_mb: float | None = DEFAULT_MAX_FILE_MB) -> pd.DataFrame:
    """Crypto hourly OHLCV: index ``timestamp`` (candle open, on the hour, UTC)."""
    return _load(path, "hourly", "timestamp", max_file_mb=max_file_mb)


def load_dvol(path: Path | str, max_file_mb: float | None = DEFAULT_MAX_FILE_MB) -> pd.DataFrame:
    """Deribit DVOL (annualised %, end-of-day level): index ``date``, ``value`` (+ OHLC)."""
    return _load(path, "dvol", "date", max_file_mb=max_file_mb)


def load_macro(path: Path | str, max_file_mb: float | None = DEFAULT_MAX_FILE_MB) -> pd.DataFrame:
    """Macro session closes: index ``date`` (session date), ``value`` (+ OHLC/volume).

    Prices must be positive, except for yields (:data:`YIELD_SERIES`), which only need to
    be finite.
    """
    positive = stem(Path(path)) not in YIELD_SERIES
    return _load(path, "macro", "date", prices_positive=positive, max_file_mb=max_file_mb)


def _files_by_stem(directory: Path, prefix: str = "") -> dict[str, Path]:
    """:func:`features.rawfiles.scan`, raising the first error (by name)."""
    found, errors = scan(directory, prefix)
    if errors:
        raise errors[min(errors)]
    return found


def discover_assets(data_dir: Path | str) -> list[str]:
    """Sorted asset symbols with a daily file in ``data_dir/crypto/daily/``.

    Raises :class:`DataValidationError` for an entry that looks like a daily file but cannot
    be one (broken symlink, directory, duplicate): the asset would otherwise vanish unseen.
    """
    return sorted(_files_by_stem(Path(data_dir) / "crypto" / "daily"))


class _Deferred:
    """A dataclass field whose value may be given as a zero-argument function, called once,
    the first time the field is read (``MarketData.gaps``: the gap report reads every stamp
    of every file, which a daily serve never needs; at 10,000 assets 2.4 GB of hourly
    stamps). :meth:`MarketData.deferred` passes the pending value on, uncalled, to
    ``dataclasses.replace``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # no class-level default: the field stays required
            raise AttributeError(self.slot)
        value = obj.__dict__[self.slot]
        if callable(value):
            value = obj.__dict__[self.slot] = value()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class MarketData:
    """Everything under one data directory, validated and (optionally) cut at ``as_of``.

    ``failures`` maps each file skipped under ``keep_going`` (path relative to ``data_dir``) to
    the reason and its consequence; ``files`` lists only the files actually used.

    ``hourly_problems`` maps an asset to the reason its hourly file could not be used (a
    broken symlink, a directory, a file without rows or with future rows only; under
    ``keep_going`` also any hourly error, the asset then being absent from ``daily``). An
    asset listed here *and* present in ``daily`` is built on the daily-range proxy instead of
    hourly realized variance: serving must flag it. An asset that simply has no hourly file
    is not listed (it never had one).

    ``warnings`` holds every non-fatal problem found while loading, one sentence each naming
    the file: hourly files lost (as above), rows dated after the current UTC time ignored (only
    when ``as_of`` is None), isolated hourly/daily disagreements. They are also logged.
    ``future_rows`` maps each file that had such future rows (path relative to ``data_dir``)
    to its first future stamp: the data was cut there, and a caller that expected none may
    refuse to go on. ``hourly_lineage`` maps an asset whose hourly frame came through the
    validated-candle cache to (the file's absolute path, its cache lineage): as loaded, the
    frame's rows are a prefix of every later frame of that lineage (:mod:`features.loss_days`
    reuses per-day values on that promise, and also compares the first candle, since
    :func:`features.window.trailing_market` trims a frame's start and keeps this map).
    ``gaps`` is built the first time it is read (a serve never reads it).
    """

    daily: dict[str, pd.DataFrame]
    hourly: dict[str, pd.DataFrame]
    dvol: dict[str, pd.DataFrame]
    macro: dict[str, pd.DataFrame]
    gaps: pd.DataFrame = _Deferred()  # type: ignore[assignment]  # or a function making it
    data_dir: Path
    files: list[Path] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    hourly_problems: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    future_rows: dict[str, pd.Timestamp] = field(default_factory=dict)
    hourly_lineage: dict[str, tuple[str, str]] = field(default_factory=dict)

    def deferred(self, name: str) -> Any:
        """Field ``name`` as given: the function still to be called for a deferred field not
        read yet (``dataclasses.replace(market, gaps=market.deferred("gaps"))`` keeps it
        deferred), else its value."""
        slot = f"_{name}"
        return self.__dict__[slot] if slot in self.__dict__ else getattr(self, name)


def _cut(frame: pd.DataFrame, end: pd.Timestamp | None) -> pd.DataFrame:
    """Rows stamped strictly before ``end`` (all rows when ``end`` is None).

    The index is sorted (validated), so this is a slice: no copy when nothing is cut.
    """
    if end is None or not len(frame) or frame.index[-1] < end:
        return frame
    return frame.iloc[: int(frame.index.searchsorted(end, side="left"))]


@dataclass
class _Attempts:
    """Runs loaders: fail fast, or (``keep_going``) record the failure and carry on."""

    root: Path
    keep_going: bool
    now: pd.Timestamp | None  # drop rows stamped after this (None: an explicit as_of cuts)
    cache: CandleCache | None = None
    failures: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    future: dict[str, pd.Timestamp] = field(default_factory=dict)
    lineage: dict[str, str] = field(default_factory=dict)  # absolute path -> cache lineage

    def label(self, path: Path) -> str:
        try:
            return _label(self.root, path)
        except ValueError:  # not under the data directory
            return str(path)

    def warn(self, message: str) -> None:
        _log.warning(message)
        self.warnings.append(message)

    def record(self, err: DataValidationError, consequence: str) -> None:
        if not self.keep_going:
            raise err
        self.failures[self.label(err.path)] = f"{err} Consequence: {consequence}."

    def read(self, loader: Callable[[Path], pd.DataFrame], path: Path) -> pd.DataFrame:
        """``loader(path)`` without its rows dated after :attr:`now` (warned about)."""
        frame = loader(path)
        if self.now is None or not len(frame) or frame.index[-1] <= self.now:
            return frame
        first = int(frame.index.searchsorted(self.now, side="right"))
        self.future[self.label(path)] = frame.index[first]
        if first == 0:  # nothing usable is left: as for a file without rows
            raise DataValidationError(
                path, 2, "only_future_rows",
                f"{path} line 2: rule only_future_rows failed: every row is dated after now "
                f"({self.now:%Y-%m-%dT%H:%M:%SZ} UTC), the first "
                f"{frame.index[0]:%Y-%m-%dT%H:%M:%SZ}. A clock or feed error upstream? Nothing "
                "was loaded.")
        self.warn(f"{path} line {first + 2}: {len(frame) - first} row(s) dated after now "
                  f"({self.now:%Y-%m-%dT%H:%M:%SZ} UTC) ignored, the first stamped "
                  f"{frame.index[first]:%Y-%m-%dT%H:%M:%SZ}. A clock or feed error upstream?")
        return frame.iloc[:first]

    def load(
        self, loader: Callable[[Path], pd.DataFrame], path: Path, consequence: str
    ) -> pd.DataFrame | None:
        try:
            return self.read(loader, path)
        except DataValidationError as err:
            self.record(err, consequence)
            return None

    def scan(self, directory: Path, consequence: Callable[[str], str],
             prefix: str = "") -> tuple[dict[str, Path], dict[str, DataValidationError]]:
        """Files by name; each entry error is recorded with ``consequence(name)`` (or raised)."""
        found, errors = scan(directory, prefix)
        for name, err in sorted(errors.items()):
            self.record(err, consequence(name))
        return found, errors


def load_market(
    data_dir: Path | str,
    assets: list[str] | None = None,
    as_of: datetime.date | None = None,
    keep_going: bool = False,
    max_file_mb: float | None = DEFAULT_MAX_FILE_MB,
    cache: CandleCache | Path | str | None = None,
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
        opening before the end of that UTC day (last one 23:00). None: the rows of the UTC
        days complete now (today's candles, still open, are cut as an as-of cuts: the as-of
        is yesterday); rows stamped after the current UTC time are future data (clock or
        feed error) and are left out with a warning naming the file and the first such
        stamp.
    keep_going : bool
        False (default): the first invalid file raises. True: an invalid file is recorded in
        ``MarketData.failures`` and skipped with its consequence — an asset whose daily,
        hourly or own DVOL file fails is not built at all (never silently degraded to a
        range proxy); a failed macro series leaves its features NaN; the rest still loads.
        In both modes an hourly file that is *lost* (broken symlink, not a regular file, no
        rows, only future rows) is a warning: the asset is built on the range proxy and listed in
        ``MarketData.hourly_problems``, so that serving flags it.
    max_file_mb : float or None
        Files larger than this (on disk or decompressed) are refused before being read
        (rule ``file_too_large``); config ``data.max_file_mb``. None: no limit.
    cache : CandleCache or path, optional
        Validated-candle cache (:mod:`features.candle_cache`; a path: its directory): files
        unchanged since it last saw them are not parsed again, appended ones only in their
        new rows. The result is the same as without it. None (default): no cache.

    Returns
    -------
    MarketData
        Frames keyed by symbol (DVOL: ``BTC`` from ``DVOL_BTC``) or macro name; ``gaps`` lists
        missing days and hours of the crypto files within the cut. Missing ``iv/`` or
        ``macro/`` directories give empty dicts, and each absent series the features read is a
        warning (:func:`absent_inputs`).
    """
    root = Path(data_dir)
    store = CandleCache(cache) if isinstance(cache, (str, Path)) else cache
    run = _Attempts(root, keep_going, _utcnow() if as_of is None else None, store)
    try:
        return _load_all(root, run, assets, as_of, max_file_mb)
    finally:
        if store is not None:  # what validated is kept even when a later file fails
            store.save()


def _load_all(root: Path, run: _Attempts, assets: list[str] | None,
              as_of: datetime.date | None, max_file_mb: float | None) -> MarketData:
    """:func:`load_market` once its cache and attempts are set up."""
    store = run.cache
    daily_files, daily_errors = run.scan(root / "crypto" / "daily",
                                         lambda s: f"asset {s} not built")
    symbols = sorted(daily_files) if assets is None else list(assets)
    absent = [s for s in symbols if s not in daily_files and s not in daily_errors]
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
    hourly_files, hourly_errors = scan(root / "crypto" / "hourly")
    if assets is None:  # every hourly file should belong to an asset; say so when one does not
        for name in sorted((set(hourly_files) | set(hourly_errors)) - set(daily_files)
                           - set(daily_errors)):
            run.warn(f"{root / 'crypto' / 'hourly'}: hourly series {name} has no daily file "
                     "in crypto/daily/; not used.")
    dvol_files, dvol_errors = run.scan(
        root / "iv", lambda n: f"DVOL_{n} not used"
        + (f"; asset {n} not built" if n in symbols else ""), prefix="DVOL_")
    macro_files, macro_errors = run.scan(root / "macro", lambda n: f"macro series {n} not used")
    for note in absent_inputs(root, symbols, set(dvol_files) | set(dvol_errors),
                              set(macro_files) | set(macro_errors)):
        run.warn(note)
    if store is not None:  # the rows appended since caching: one parse per kind, all files
        planned = [(p, "dvol") for p in dvol_files.values()]
        planned += [(daily_files[s], "daily") for s in symbols]
        planned += [(hourly_files[s], "hourly") for s in symbols if s in hourly_files]
        planned += [(p, "macro") for p in macro_files.values()]
        store.prepare([(p, k, _positive(k, p)) for p, k in planned], max_file_mb,
                      append_receipts.read(root))

    # A daily row dated D is the whole UTC day D, so "known at as_of" means date < as_of + 1.
    # Without an as-of, the UTC days complete now: today's candles are still open (a daily
    # row of today would hold a partial range, its close not yet the close)
    end = (run.now.normalize() if as_of is None and run.now is not None
           else None if as_of is None
           else pd.Timestamp(as_of).normalize() + pd.Timedelta(days=1))
    dvol: dict[str, pd.DataFrame] = {}
    for name, path in dvol_files.items():
        frame = run.load(_reader(store, "dvol", max_file_mb), path, f"DVOL_{name} not used"
                         + (f"; asset {name} not built" if name in symbols else ""))
        if frame is not None:
            dvol[name] = _cut(frame, end)
    daily: dict[str, pd.DataFrame] = {}
    hourly: dict[str, pd.DataFrame] = {}
    problems: dict[str, str] = {}
    for s in symbols:
        consequence = f"asset {s} not built"
        d = run.load(_reader(store, "daily", max_file_mb), daily_files[s], consequence)
        if d is None or (s in dvol_files and s not in dvol) or s in dvol_errors:
            continue
        d = _cut(d, end)
        try:
            h = _hourly(run, s, hourly_files, hourly_errors, d, daily_files[s], end, max_file_mb)
        except DataValidationError as err:
            problems[s] = str(err)
            run.record(err, consequence)
            continue
        if isinstance(h, str):  # lost: on the proxy, flagged
            problems[s] = h
            run.warn(f"{h} Asset {s} falls back to the daily-range proxy (flagged).")
        elif h is not None:
            hourly[s] = h
        daily[s] = d
    macro: dict[str, pd.DataFrame] = {}
    for name, path in macro_files.items():
        frame = run.load(_reader(store, "macro", max_file_mb), path,
                         f"macro series {name} not used (its features NaN)")
        if frame is not None:
            macro[name] = _cut(frame, end)

    series = [(f.index, "1D", _label(root, daily_files[s])) for s, f in daily.items()]
    series += [(f.index, "1h", _label(root, hourly_files[s])) for s, f in hourly.items()]
    gaps = partial(gap_reports, series)  # deferred: computed when first read
    files = [daily_files[s] for s in daily] + [hourly_files[s] for s in hourly]
    files += [dvol_files[n] for n in dvol] + [macro_files[n] for n in macro]
    keys = {s: os.path.abspath(hourly_files[s]) for s in hourly}
    return MarketData(daily, hourly, dvol, macro, gaps, root, files, run.failures, problems,
                      run.warnings, run.future,
                      {s: (k, run.lineage[k]) for s, k in keys.items() if k in run.lineage})


def absent_inputs(root: Path, symbols: list[str], dvol: set[str], macro: set[str]
                  ) -> list[str]:
    """One warning per kind of feature input the pipeline reads but ``root`` has no file for.

    Absent macro series and an absent market DVOL are not errors (a venue may have no licence
    for them, and the features are NaN rather than invented), but they change what the models
    see, so they are said: each missing macro series of :data:`features.macro.MACRO_SERIES`,
    and ``DVOL_<MARKET_DVOL>`` when some asset has no DVOL of its own and would read it.
    ``dvol`` and ``macro`` are the names found, a broken file included (already reported).
    """
    notes = []
    missing = [name for name in MACRO_SERIES if name not in macro]
    if missing:
        vix = " and the VIX level and regime are unknown" if VIX_SERIES in missing else ""
        notes.append(f"{root / 'macro'}: no file for macro series {', '.join(missing)} "
                     f"(NAME.csv.gz): their correlation and beta features are NaN for every "
                     f"asset{vix}.")
    borrowers = [s for s in symbols if s not in dvol]
    if MARKET_DVOL not in dvol and borrowers:
        notes.append(f"{root / 'iv'}: no DVOL_{MARKET_DVOL}.csv.gz, the market implied "
                     f"volatility read by assets without their own DVOL index "
                     f"({', '.join(borrowers)}): their DVOL features are NaN.")
    return notes


def _hourly(
    run: _Attempts, asset: str, files: dict[str, Path], errors: dict[str, DataValidationError],
    daily: pd.DataFrame, daily_path: Path, end: pd.Timestamp | None, max_file_mb: float | None,
) -> pd.DataFrame | str | None:
    """The asset's hourly candles (cut, checked against ``daily``), a reason they were lost, or
    None when the asset has no hourly file.

    Raises
    ------
    DataValidationError
        Any hourly error other than a lost file (:data:`LOST_FILE_RULES`): the caller fails
        the asset, because a wrong hourly file would silently change its margins.
    """
    err = errors.get(asset)
    if asset in files:
        try:
            frame = _cut(run.read(_reader(run.cache, "hourly", max_file_mb, run.lineage),
                                  files[asset]), end)
        except DataValidationError as caught:
            err = caught
    elif err is None:
        return None
    if err is not None:
        if err.rule in LOST_FILE_RULES:
            return str(err)
        raise err
    check = check_hourly_against_daily if run.cache is None else run.cache.check_pair
    note = check(frame, daily, files[asset], daily_path)
    if note is not None:
        run.warn(note)
    return frame


_LOADERS = {"daily": load_daily, "hourly": load_hourly, "dvol": load_dvol, "macro": load_macro}


def _reader(cache: CandleCache | None, kind: str, max_file_mb: float | None,
            lineage: dict[str, str] | None = None) -> Callable[[Path], pd.DataFrame]:
    """The loader of ``kind`` files, through ``cache`` when there is one; the cache lineage of
    each frame read is recorded in ``lineage`` (absolute path -> lineage) when given."""
    full = partial(_LOADERS[kind], max_file_mb=max_file_mb)
    if cache is None:
        return full

    def read(path: Path) -> pd.DataFrame:
        frame = cache.load(path, kind, full, max_file_mb, _positive(kind, path))
        if lineage is not None:
            got = cache.lineage(path, frame)
            if got is not None:
                lineage[os.path.abspath(path)] = got
        return frame

    return read


def _positive(kind: str, path: Path) -> bool:
    """Whether the prices of ``path`` must be > 0 (not for the yield series)."""
    return kind != "macro" or stem(path) not in YIELD_SERIES


def _label(root: Path, path: Path) -> str:
    """Path relative to the data directory, used as the gap report's ``source``."""
    return path.relative_to(root).as_posix()

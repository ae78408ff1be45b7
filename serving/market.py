"""The market data a batch job may see as of a date: one cut for ``run``, ``retrain`` and
``serve``, so that a version registered "as of D" was fitted and selected on rows dated <= D.

With an explicit as-of the loader's point-in-time cut applies (:func:`features.loaders.
load_market`); a future as-of is refused, since nothing about it can be known. Without one,
the as-of is the last day in the data that is a *complete* UTC day before today: rows dated
today (a day still trading) or later are ignored, each file with such rows named in a warning.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from configs.schema import Config
from features.candle_cache import CandleCache
from features.loaders import MarketData, load_market
from features.loss_days import LossDays

KINDS = ("daily", "hourly", "dvol", "macro")


class FutureAsOfError(ValueError):
    """The requested as-of is after today (UTC): refused, nothing was read."""


@dataclass(frozen=True)
class PointInTime:
    """Market data cut at ``as_of``; ``warnings`` name files whose later rows were ignored."""

    market: MarketData
    as_of: dt.date
    warnings: list[str] = field(default_factory=list)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def check_as_of(as_of: dt.date, today: dt.date | None = None) -> dt.date:
    """``as_of`` unless it is ``today`` (UTC) or later, which raises :class:`FutureAsOfError`.

    Today has not closed: its daily candle does not exist yet, so every asset would be stale
    and frozen, and the day's partition, once published, would refuse the real serve of that
    day after it closes (a day is published once; another content needs ``--force``)."""
    today = today or utc_today()
    if as_of > today:
        raise FutureAsOfError(
            f"as-of {as_of} is in the future (today is {today} UTC): nothing is known about "
            "it yet; give a date before today, or none for the last complete UTC day")
    if as_of == today:
        raise FutureAsOfError(
            f"as-of {as_of} is today (UTC), which has not closed: its candles are not "
            "complete; give a date before today (yesterday: the day that just closed), or "
            "none for the last complete UTC day")
    return as_of


def _labels(market: MarketData) -> dict[tuple[str, str], str]:
    """(kind, key) → file path relative to the data directory, for the warnings."""
    out: dict[tuple[str, str], str] = {}
    for path in market.files:
        try:
            rel = Path(path).relative_to(market.data_dir).as_posix()
        except ValueError:
            rel = str(path)
        parts = rel.split("/")
        stem = parts[-1].split(".")[0]
        if parts[:2] == ["crypto", "daily"]:
            out[("daily", stem)] = rel
        elif parts[:2] == ["crypto", "hourly"]:
            out[("hourly", stem)] = rel
        elif parts[0] == "iv":
            out[("dvol", stem.removeprefix("DVOL_"))] = rel
        elif parts[0] == "macro":
            out[("macro", stem)] = rel
    return out


def cut_market(market: MarketData, last_day: dt.date) -> tuple[MarketData, list[str]]:
    """Rows up to the end of ``last_day`` (UTC); one warning per file that had later rows.

    Same rule as the loader's cut: a daily row dated D and an hourly candle opening on D
    both belong to day D, so the cut keeps stamps ``< last_day + 1 day``.
    """
    end = pd.Timestamp(last_day) + pd.Timedelta(days=1)
    labels = _labels(market)
    warnings: list[str] = []
    cut: dict[str, dict[str, pd.DataFrame]] = {}
    for kind in KINDS:
        cut[kind] = {}
        for key, frame in getattr(market, kind).items():
            if not len(frame) or frame.index[-1] < end:  # sorted: nothing later, no mask
                cut[kind][key] = frame
                continue
            later = frame.index >= end
            if later.any():
                name = labels.get((kind, key), f"{kind} {key}")
                warnings.append(
                    f"{name}: {int(later.sum())} row(s) from {frame.index[later].min()} on "
                    f"ignored: after {last_day}, the last complete UTC day")
            cut[kind][key] = frame.loc[~later] if later.any() else frame  # no copy if none
    pending = market.deferred("gaps")

    def gaps() -> pd.DataFrame:  # deferred as the loader's: read by few callers
        report = pending() if callable(pending) else pending
        if not len(report):
            return report
        return report[pd.to_datetime(report["gap_start"]) < end].reset_index(drop=True)

    return replace(market, **cut, gaps=gaps), warnings


def candle_cache(cfg: Config) -> CandleCache | None:
    """The validated-candle cache the config asks for (``data.cache``), or None if disabled."""
    settings = cfg.data.cache
    if not settings.enabled:
        return None
    directory = settings.dir or Path(cfg.paths.outputs_dir) / "cache" / "candles"
    return CandleCache(directory, verify=settings.verify)


def loss_days(cfg: Config) -> LossDays | None:
    """The stored per-day worst losses (:mod:`features.loss_days`), beside the candle cache
    whose lineages they follow; None when the cache is disabled."""
    settings = cfg.data.cache
    if not settings.enabled:
        return None
    directory = settings.dir or Path(cfg.paths.outputs_dir) / "cache" / "candles"
    return LossDays(Path(directory) / "losses")


def load_as_of(
    data_dir: Path | str, assets: list[str] | None, as_of: dt.date | None,
    keep_going: bool = False, today: dt.date | None = None, max_file_mb: float = 100.0,
    cache: CandleCache | None = None,
) -> PointInTime:
    """Load the market as a job may see it on ``as_of``.

    Parameters
    ----------
    data_dir, assets, keep_going, max_file_mb
        As :func:`features.loaders.load_market` (``max_file_mb``: ``data.max_file_mb``).
    as_of : date, optional
        Explicit as-of: rows dated after it are cut (no warning: that is what was asked).
        None: the last date in the daily files that is not after yesterday (UTC).
    today : date, optional
        Today in UTC (tests pin it); default the clock.
    cache : CandleCache, optional
        Validated-candle cache (:func:`candle_cache`); same result, faster on unchanged or
        appended files.

    Raises
    ------
    FutureAsOfError
        ``as_of`` is after ``today``; raised before any file is read.
    """
    today = today or utc_today()
    if as_of is not None:
        check_as_of(as_of, today)
        market = load_market(data_dir, assets, as_of, keep_going=keep_going,
                             max_file_mb=max_file_mb, cache=cache)
        return PointInTime(market, as_of, list(getattr(market, "warnings", [])))
    market = load_market(data_dir, assets, None, keep_going=keep_going, max_file_mb=max_file_mb,
                         cache=cache)
    market, warnings = cut_market(market, today - dt.timedelta(days=1))
    warnings = [*getattr(market, "warnings", []), *warnings]
    last = [frame.index.max() for frame in market.daily.values() if len(frame)]
    if not last:
        raise ValueError(f"{data_dir}: no daily rows up to {today - dt.timedelta(days=1)}: "
                         "nothing to compute an as-of from")
    return PointInTime(market, max(last).date(), warnings)

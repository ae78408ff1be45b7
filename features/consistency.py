"""Hourly candles must add up to the daily candles of the same asset.

Each file can be valid on its own and still be wrong: an hourly file whose stamps are local
time, or shifted by a few hours, passes every per-row rule but describes other hours. Its
realized variance then belongs to other days. The check aggregates the hourly candles to UTC
days and compares them with the daily file:

- open  = open of the 00:00 candle, compared when that candle exists;
- close = close of the 23:00 candle, compared when that candle exists;
- high  = max of the hourly highs, must not exceed the daily high;
- low   = min of the hourly lows, must not be below the daily low.

(High and low are one-sided because an outage hour missing from the hourly file can hide
the day's extreme.) A day fails when a field is off by more than :data:`TOLERANCE`
(relative).

Error or warning: on the embedded data (11 hourly files, Binance 2017-2025, 25,253 compared
days) exactly one day fails: ETH 2017-09-19 (open 294.57 from the hours vs 296.00 daily, 0.5 %;
the 2017-2018 ETH hours come from another source). Shifting any of those files by 1 hour makes
93.8-98.8 % of its days fail at this tolerance, by 3 hours 97.6-99.7 %. So a failing share
above :data:`MAX_MISMATCH_SHARE` is a wrong file, not noise: rule ``hourly_daily_consistency``,
an error (the asset is not built under ``keep_going``, as for any broken hourly file). Fewer
failures are isolated prints of one venue against another: a warning naming the first and the
latest such day, and the data is used.

A share over the whole file cannot see a feed that goes wrong at its end: appended days with
shifted stamps stay under 5% of a multi-year file for months, and they are the days a serve
reads. So the latest :data:`RECENT_DAYS` days are judged on their own too: more than
:data:`RECENT_MAX_FAILING` failing day among them is the same error (one is still an isolated
print, and the warning names it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.validation import DataValidationError

# Relative tolerance per field. Hours and days from the same venue agree exactly; 0.1 % absorbs
# rounding in re-published files and is far below a typical 1-hour move (BTC: about 0.5 %).
TOLERANCE = 1e-3
# Share of compared days allowed to fail before the file is rejected (embedded data: at most
# 0.03 %; a 1-hour shift: over 90 %).
MAX_MISMATCH_SHARE = 0.05
FIELDS = ("open", "close", "high", "low")
# The file's latest days, judged on their own: up to one failing day among the last 30 (days
# up to the last hourly day) is an isolated print, two are a feed gone wrong.
RECENT_DAYS = 30
RECENT_MAX_FAILING = 1


def daily_from_hourly(hourly: pd.DataFrame) -> pd.DataFrame:
    """Hourly OHLC aggregated to UTC days: open at 00:00, close at 23:00, max high, min low.

    Returns
    -------
    DataFrame
        Index ``date`` (UTC midnight); ``open``/``close`` NaN when the 00:00 / 23:00 candle
        is missing.
    """
    day = hourly.index.normalize()
    hour = hourly.index.hour
    grouped = hourly.groupby(day)
    out = pd.DataFrame({
        "open": hourly["open"][hour == 0].groupby(day[hour == 0]).first(),
        "close": hourly["close"][hour == 23].groupby(day[hour == 23]).last(),
        "high": grouped["high"].max(),
        "low": grouped["low"].min(),
    })
    out.index.name = "date"
    return out


def mismatches(hourly: pd.DataFrame, daily: pd.DataFrame,
               tolerance: float = TOLERANCE) -> tuple[int, pd.DataFrame]:
    """Days on which hourly and daily candles disagree.

    Returns
    -------
    compared : int
        Days present in both files.
    failing : DataFrame
        One row per failing (day, field): columns ``day``, ``field``, ``hourly``, ``daily``,
        sorted by day (then in :data:`FIELDS` order). A relative excess
        ``|h / d - 1| > tolerance`` fails (one-sided for high and low, see module docstring).
    """
    agg = daily_from_hourly(hourly)
    common = agg.index.intersection(daily.index)
    agg, ref = agg.loc[common], daily.loc[common]
    excess = {
        "open": (agg["open"] / ref["open"] - 1).abs(),
        "close": (agg["close"] / ref["close"] - 1).abs(),
        "high": agg["high"] / ref["high"] - 1,
        "low": ref["low"] / agg["low"] - 1,
    }
    rows = []
    for order, name in enumerate(FIELDS):
        bad = np.flatnonzero((excess[name] > tolerance).to_numpy())
        rows += [(common[i], order, name, agg[name].iloc[i], ref[name].iloc[i]) for i in bad]
    rows.sort(key=lambda r: (r[0], r[1]))
    failing = pd.DataFrame([(d, f, h, v) for d, _, f, h, v in rows],
                           columns=["day", "field", "hourly", "daily"])
    return len(common), failing


def check_hourly_against_daily(
    hourly: pd.DataFrame, daily: pd.DataFrame, hourly_path: Path, daily_path: Path
) -> str | None:
    """Raise on a systematic disagreement; return a warning for isolated ones, else None.

    Raises
    ------
    DataValidationError
        Rule ``hourly_daily_consistency`` when more than :data:`MAX_MISMATCH_SHARE` of the
        compared days fail, or more than :data:`RECENT_MAX_FAILING` of the file's last
        :data:`RECENT_DAYS` days; the message names the share, the first (and latest) failing
        day with its line in the hourly file, the field and both values.
    """
    compared, failing = mismatches(hourly, daily)
    return judge(compared, failing, hourly, hourly_path, daily_path)


def judge(
    compared: int, failing: pd.DataFrame, hourly: pd.DataFrame, hourly_path: Path,
    daily_path: Path,
) -> str | None:
    """The verdict of :func:`check_hourly_against_daily` on :func:`mismatches`' result.

    Split out so that a caller holding the per-day result of earlier days (the validated-candle
    cache, :mod:`features.candle_cache`) gives the same warning or error without recomputing.
    """
    if failing.empty:
        return None
    days = failing["day"].nunique()

    def named(row: pd.Series) -> tuple[int, str]:
        line = int(hourly.index.searchsorted(row["day"])) + 2  # first hour of that day
        return line, (f"{row['day']:%Y-%m-%d} (line {line}): {row['field']} "
                      f"{row['hourly']:g} from the hours vs {row['daily']:g} daily")

    line, first = named(failing.iloc[0])
    latest = failing[failing["day"] == failing["day"].max()].iloc[0]
    detail = (f"{days} of {compared} UTC days disagree with {daily_path} by more than "
              f"{TOLERANCE:.1%}; first {first}")
    if days > 1:
        detail += f"; latest {named(latest)[1]}"
    since = hourly.index.max().normalize() - pd.Timedelta(days=RECENT_DAYS - 1)
    recent = failing.loc[failing["day"] >= since, "day"].drop_duplicates()
    why = ""
    if days > MAX_MISMATCH_SHARE * compared:
        why = f"more than {MAX_MISMATCH_SHARE:.0%} of the days"
    elif len(recent) > RECENT_MAX_FAILING:
        line = named(failing[failing["day"] == recent.iloc[0]].iloc[0])[0]
        why = (f"{len(recent)} of the last {RECENT_DAYS} days (from {recent.iloc[0]:%Y-%m-%d}, "
               f"line {line})")
    if why:
        raise DataValidationError(
            hourly_path, line, "hourly_daily_consistency",
            f"{hourly_path} line {line}: rule hourly_daily_consistency failed: {detail}; "
            f"{why} disagree. Stamps shifted or not UTC candle opens? Fix the hourly file; "
            "nothing was loaded.")
    return (f"{hourly_path}: {detail} (isolated, within the {MAX_MISMATCH_SHARE:.0%} and "
            f"{RECENT_MAX_FAILING} in the last {RECENT_DAYS} days allowed; used).")

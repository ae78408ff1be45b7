"""Realized-variance estimators: intraday realized variance, range estimators, HAR terms.

All outputs are daily decimal² (variance of the one-day log return). Crypto trades around the
clock, so a UTC day's candle has no overnight gap: open(t) = close(t-1) up to a tick, and the
range estimators need no overnight correction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

_ONE_HOUR = pd.Timedelta(hours=1)
_ONE_DAY = pd.Timedelta(days=1)


def log_returns(close: pd.Series) -> pd.Series:
    r"""Close-to-close log return, :math:`r_t = \ln(C_t / C_{t-1})`; NaN after a gap."""
    return np.log(close).diff()


def garman_klass(
    open_: pd.Series, high: pd.Series, low: pd.Series, close: pd.Series
) -> pd.Series:
    r"""Garman-Klass (1980) range variance of one period.

    .. math::
        \hat\sigma^2_{GK} = \tfrac12 \ln(H/L)^2 - (2\ln 2 - 1)\,\ln(C/O)^2

    Unbiased for driftless Brownian motion observed continuously, and about 7.4 times as
    efficient as the squared close-to-close return. Discrete sampling biases it low; it is used
    here as the realized proxy where no intraday data exists, and that bias is measured against
    intraday RV on BTC/ETH (see ``benchmarks/README.md``).
    """
    hl = np.log(high / low)
    co = np.log(close / open_)
    return 0.5 * hl**2 - (2.0 * np.log(2.0) - 1.0) * co**2


def hourly_realized_variance(
    hourly: pd.DataFrame, min_hours: int
) -> pd.DataFrame:
    r"""Daily realized variance from hourly closes (Andersen & Bollerslev, 1998).

    .. math:: RV_d = \sum_{i \in d} r_i^2, \qquad r_i = \ln(C_i / C_{i-1})

    A return is assigned to the UTC day in which its interval *starts* and ends, i.e. the day of
    the candle whose close ends it. Across a missing hour the return simply spans two hours,
    which keeps :math:`\sum r_i^2` unbiased for the day's integrated variance; a return whose
    interval starts in an earlier day (an outage across midnight) is not counted, so no day
    absorbs another day's move. Days with fewer than ``min_hours`` counted returns get NaN:
    the caller falls back to a range estimator and says so.

    Parameters
    ----------
    hourly : frame indexed by candle open time (tz-naive UTC), with a ``close`` column.
    min_hours : least number of hourly returns for a day's RV to be reported.

    Returns
    -------
    Frame indexed by ``date`` with ``rv_hourly`` (NaN when too few returns) and ``n_hours``.
    """
    stamps = pd.DatetimeIndex(hourly.index)
    close = hourly["close"].to_numpy(dtype=float)
    ret = np.diff(np.log(close))  # (n-1,) return ending at candle i+1's close
    interval_start = stamps[:-1] + _ONE_HOUR  # previous candle's close time
    day = stamps[1:].floor("D")
    counted = interval_start >= day  # starts inside the same UTC day
    frame = pd.DataFrame({"date": day[counted], "r2": ret[counted] ** 2})
    grouped = frame.groupby("date")["r2"]
    out = pd.DataFrame({"rv_hourly": grouped.sum(), "n_hours": grouped.size()})
    out.loc[out["n_hours"] < min_hours, "rv_hourly"] = np.nan
    out.index.name = "date"
    return out


def har_terms(rv: pd.Series, windows: Sequence[int]) -> pd.DataFrame:
    r"""HAR-RV regressors (Corsi, 2009): trailing means of RV over ``windows`` days.

    .. math:: RV^{(w)}_t = \frac{1}{w}\sum_{i=0}^{w-1} RV_{t-i}

    ``rv`` must be on a complete daily calendar; a window with any missing day is NaN.
    """
    return pd.DataFrame(
        {f"har_rv_{w}d": rv.rolling(w, min_periods=w).mean() for w in windows},
        index=rv.index,
    )


def dvol_to_daily_variance(dvol_pct: pd.Series) -> pd.Series:
    r"""Annualised implied vol in percent → daily variance: :math:`(\mathrm{DVOL}/100)^2/365`.

    Deribit annualises DVOL over 365 calendar days (crypto trades every day).
    """
    return (dvol_pct / 100.0) ** 2 / 365.0


def complete_calendar(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Every UTC day from the first to the last date (missing days become NaN rows)."""
    return pd.date_range(index.min(), index.max(), freq=_ONE_DAY, name="date")

r"""Realized measures from intraday (hourly) returns, and the HAR cascade.

All variances are daily decimal² (variance of the one-day log return). For day :math:`d` with
hourly log returns :math:`r_1, \dots, r_n` (:math:`r_i = \ln(C_i/C_{i-1})`, counted as in
:func:`hourly_realized_measures`):

.. math::

    RV_d = \sum_i r_i^2 \qquad
    RS^-_d = \sum_i r_i^2\,1\{r_i < 0\} \qquad RS^+_d = \sum_i r_i^2\,1\{r_i > 0\}

    BPV_d = \mu_1^{-2}\,\frac{n}{m} \sum_{(i-1,i)} |r_{i-1}|\,|r_i|, \qquad
    \mu_1 = E|Z| = \sqrt{2/\pi}

    J_d = \max(RV_d - BPV_d,\ 0)

    RSkew_d = \frac{\sqrt{n}\,\sum_i r_i^3}{RV_d^{3/2}} \qquad
    RKurt_d = \frac{n\,\sum_i r_i^4}{RV_d^{2}}

with :math:`m` the number of adjacent return pairs in the day (:math:`n-1` without
interruptions; the factor :math:`n/m` makes BPV unbiased for a finite :math:`n`).

References
----------
Andersen & Bollerslev (1998), Int. Econ. Rev. 39(4) — RV. Barndorff-Nielsen, Kinnebrock &
Shephard (2010), "Measuring downside risk: realised semivariance" — :math:`RS^\pm`.
Barndorff-Nielsen & Shephard (2004), J. Financ. Econometrics 2(1) — bipower variation;
Andersen, Bollerslev & Diebold (2007), Rev. Econ. Stat. 89(4) — the truncated jump component.
Amaya, Christoffersen, Jacobs & Vasquez (2015), J. Financ. Econ. 118(1) — realized skewness and
kurtosis. Corsi (2009), J. Financ. Econometrics 7(2) — HAR-RV.

Range estimators (Garman-Klass and others) live in :mod:`features.ranges`; ``garman_klass`` is
re-exported here because the realized proxy falls back to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.ranges import garman_klass

__all__ = [
    "HOURLY_MEASURES",
    "complete_calendar",
    "garman_klass",
    "har_terms",
    "hourly_realized_measures",
    "log_returns",
]

_ONE_HOUR = pd.Timedelta(hours=1)
_ONE_DAY = pd.Timedelta(days=1)
_INV_MU1_SQ = np.pi / 2.0  # 1 / E|Z|² for Z ~ N(0, 1)
HOURLY_MEASURES = ("rv_hourly", "rv_down", "rv_up", "bpv", "jump_var", "rskew", "rkurt")


def log_returns(close: pd.Series) -> pd.Series:
    r"""Close-to-close log return, :math:`r_t = \ln(C_t / C_{t-1})`; NaN after a gap."""
    return np.log(close).diff()


def hourly_realized_measures(hourly: pd.DataFrame, min_hours: int) -> pd.DataFrame:
    r"""Daily realized measures from hourly closes (formulas in the module docstring).

    A return is assigned to the UTC day in which its interval *starts* and ends, i.e. the day of
    the candle whose close ends it. Across a missing hour the return simply spans two hours,
    which keeps :math:`\sum r_i^2` unbiased for the day's integrated variance; a return whose
    interval starts in an earlier day (an outage across midnight) is not counted, so no day
    absorbs another day's move. Bipower pairs are consecutive counted returns of the same day.
    Days with fewer than ``min_hours`` counted returns get NaN in every measure (the caller
    falls back to a range estimator for ``rv`` and says so); a day with :math:`RV = 0` (a
    trading halt) has NaN skewness and kurtosis.

    Parameters
    ----------
    hourly : DataFrame
        Indexed by candle open time (tz-naive UTC), with a ``close`` column.
    min_hours : int
        Least number of hourly returns for a day's measures to be reported.

    Returns
    -------
    DataFrame
        Indexed by ``date`` (days with at least one counted return), columns
        :data:`HOURLY_MEASURES` and ``n_hours`` (counted returns, int64).
    """
    stamps = pd.DatetimeIndex(hourly.index)
    ret = np.diff(np.log(hourly["close"].to_numpy(dtype=float)))  # (n-1,) ends at candle i+1
    day = stamps[1:].floor("D")
    counted = (stamps[:-1] + _ONE_HOUR) >= day  # the interval starts inside the same UTC day
    r, d = ret[counted], day[counted]
    if len(r) == 0:
        empty = pd.DataFrame(columns=[*HOURLY_MEASURES, "n_hours"], dtype=float)
        empty.index = pd.DatetimeIndex([], name="date")
        return empty.astype({"n_hours": "int64"})
    days, code = np.unique(np.asarray(d, dtype="datetime64[ns]"), return_inverse=True)
    k = len(days)

    def per_day(values: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        if where is None:
            return np.bincount(code, weights=values, minlength=k)
        return np.bincount(code[where], weights=values[where], minlength=k)

    r2 = r**2
    n = np.bincount(code, minlength=k).astype(float)
    rv = per_day(r2)
    adjacent = code[1:] == code[:-1]  # (len(r)-1,) consecutive counted returns, same day
    pair_code = code[1:][adjacent]
    abs_prod = (np.abs(r[1:]) * np.abs(r[:-1]))[adjacent]
    m = np.bincount(pair_code, minlength=k).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        bpv = _INV_MU1_SQ * (n / m) * np.bincount(pair_code, weights=abs_prod, minlength=k)
        bpv = np.where(m > 0, bpv, np.nan)
        flat = rv <= 0.0
        rskew = np.where(flat, np.nan, np.sqrt(n) * per_day(r**3) / rv**1.5)
        rkurt = np.where(flat, np.nan, n * per_day(r2**2) / rv**2)
    out = pd.DataFrame(
        {
            "rv_hourly": rv,
            "rv_down": per_day(r2, r < 0),
            "rv_up": per_day(r2, r > 0),
            "bpv": bpv,
            "jump_var": np.maximum(rv - bpv, 0.0),
            "rskew": rskew,
            "rkurt": rkurt,
        },
        index=pd.DatetimeIndex(days, name="date"),
    )
    out.loc[n < min_hours, list(HOURLY_MEASURES)] = np.nan
    out["n_hours"] = n.astype("int64")
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


def complete_calendar(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Every UTC day from the first to the last date (missing days become NaN rows)."""
    return pd.date_range(index.min(), index.max(), freq=_ONE_DAY, name="date")

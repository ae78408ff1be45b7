r"""Macro-crypto co-movement across calendars: crypto trades every day, macro on sessions.

Two rules keep these features point-in-time and meaningful:

1. **Same-period pairs.** A macro session change (previous session's close → this session's
   close) is paired with the crypto log return over the *same* calendar span: the sum of the
   crypto daily returns of the days after the previous session up to this session's date.
   Weekend crypto moves are thus paired with Monday's macro change, not dropped.
2. **Lagged publication.** Macro closes print around 20-22 UTC on the session date; the
   feature at crypto row ``t`` uses only sessions dated ``<= t - lag`` (config
   ``features.macro_lag_days``, default 1). Between sessions the latest known value is carried
   as-of (that is what a desk would see) for at most ``features.macro_max_carry_days``
   (default 7), never interpolated; past that the series is stale and the feature is NaN.

Factors (:data:`MACRO_FACTORS`): equity indices, the dollar and gold enter as log returns;
VIX and the 10-year yield as *changes in level* (index points, percentage points), because a
yield can be zero or negative and a log return of it is meaningless.

Over the sessions of the trailing :math:`w` calendar days (:data:`CORR_WINDOWS`), with
:math:`x` the crypto span return and :math:`m` the macro change,

.. math::

    \mathrm{corr}_{w} = \rho(x, m), \qquad
    \mathrm{beta}_{w} = \frac{\mathrm{Cov}(x, m)}{\mathrm{Var}(m)}

so ``beta_spx_30d`` is the crypto log return per unit S&P 500 log return, ``beta_vix_30d`` per
VIX point and ``beta_us10y_30d`` per percentage point of yield. A window needs
``ceil(corr_min_obs · w / 30)`` valid pairs.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Literal

import numpy as np
import pandas as pd

from configs.schema import FeaturesConfig
from features.rolling import calendar_starts, rolling_corr_beta

Transform = Literal["log", "diff"]

# column stem -> (macro file name, how a session change is measured). One registry.
MACRO_FACTORS: dict[str, tuple[str, Transform]] = {
    "spx": ("SPX", "log"),
    "ndx": ("NDX", "log"),
    "dxy": ("DXY", "log"),
    "gold": ("GOLD", "log"),
    "vix": ("VIX", "diff"),
    "us10y": ("US10Y", "diff"),
}
MACRO_SERIES = tuple(name for name, _ in MACRO_FACTORS.values())  # the files the features read
CORR_WINDOWS = (30, 90)  # calendar days; part of the column names, hence not configurable
# every corr_*/beta_* column, in the panel's order
CORR_COLUMNS = tuple(f"{kind}_{stem}_{w}d" for stem in MACRO_FACTORS for w in CORR_WINDOWS
                     for kind in ("corr", "beta"))
VIX_SERIES = "VIX"


def session_aligned_returns(
    crypto_ret: pd.Series, macro_close: pd.Series, transform: Transform = "log"
) -> pd.DataFrame:
    """Pairs of (crypto log return, macro change) over each macro session's span.

    Parameters
    ----------
    crypto_ret : Series
        Daily crypto log returns on a complete calendar, indexed by date.
    macro_close : Series
        Macro closes indexed by session date.
    transform : {"log", "diff"}
        ``log``: macro log return; ``diff``: change in level (for yields and VIX).

    Returns
    -------
    DataFrame
        Indexed by session date with ``crypto`` and ``macro`` columns; a session whose crypto
        span has a missing day gets NaN crypto (no partial sums).
    """
    sessions = pd.DatetimeIndex(macro_close.index)
    level = macro_close.to_numpy(dtype=float)
    macro_chg = np.full(len(level), np.nan)
    macro_chg[1:] = np.diff(np.log(level) if transform == "log" else level)
    r = crypto_ret.to_numpy(dtype=float)
    csum = np.cumsum(np.where(np.isnan(r), 0.0, r))
    nan_count = np.cumsum(np.isnan(r))
    pos = pd.DatetimeIndex(crypto_ret.index).get_indexer(sessions)  # -1: no crypto day
    known = pos >= 0
    at = np.where(known, csum[pos], np.nan)
    nan_at = np.where(known, nan_count[pos], 0)
    span = np.full(len(sessions), np.nan)
    if len(sessions) > 1:
        complete = known[1:] & known[:-1] & (np.diff(nan_at) == 0)
        span[1:] = np.where(complete, np.diff(at), np.nan)
    return pd.DataFrame({"crypto": span, "macro": macro_chg}, index=sessions)


def rolling_session_stats(
    pairs: pd.DataFrame, window_days: int, min_obs: int
) -> pd.DataFrame:
    """Correlation and beta over the sessions of the trailing ``window_days`` calendar days.

    Values exist only at sessions whose own pair is valid (elsewhere NaN, so the as-of join
    carries the last valid one).
    """
    starts = calendar_starts(pairs.index.to_numpy(), window_days)
    crypto, macro = pairs["crypto"].to_numpy(), pairs["macro"].to_numpy()
    corr, beta = rolling_corr_beta(crypto, macro, starts, min_obs)
    own = np.isfinite(crypto) & np.isfinite(macro)
    return pd.DataFrame({"corr": np.where(own, corr, np.nan), "beta": np.where(own, beta, np.nan)},
                        index=pairs.index)


def as_of_daily(
    session_values: pd.Series | pd.DataFrame,
    calendar: pd.DatetimeIndex,
    lag_days: int,
    max_carry_days: int = 7,
) -> pd.Series | pd.DataFrame:
    """Value known at the end of each crypto day: the last session dated ``<= day - lag``.

    A value is carried over non-session days for at most ``max_carry_days`` (long enough for
    any holiday weekend); past that the series is stale and the feature is NaN. Missing values
    are skipped (the last *valid* session is carried); for a frame, each column on its own.
    """
    lagged = pd.DatetimeIndex(session_values.index) + pd.Timedelta(days=lag_days)
    known_from = lagged.as_unit("ns").asi8  # pandas 3 defaults to µs: compare in one unit
    days = pd.DatetimeIndex(calendar).as_unit("ns").asi8
    carry = pd.Timedelta(days=max_carry_days).value

    def carried(values: np.ndarray) -> np.ndarray:
        valid = np.isfinite(values)
        stamps, kept = known_from[valid], values[valid]
        if len(kept) == 0:
            return np.full(len(days), np.nan)
        pos = np.searchsorted(stamps, days, side="right") - 1  # last session known by the day
        at = np.maximum(pos, 0)
        fresh = (pos >= 0) & (days - stamps[at] <= carry)
        return np.where(fresh, kept[at], np.nan)

    if isinstance(session_values, pd.DataFrame):
        return pd.DataFrame({c: carried(session_values[c].to_numpy(dtype=float))
                             for c in session_values.columns}, index=calendar)
    return pd.Series(carried(session_values.to_numpy(dtype=float)), index=calendar,
                     name=session_values.name)


def min_obs_for(window_days: int, min_obs_per_30d: int) -> int:
    """``corr_min_obs`` is stated per 30 calendar days of window; scale it to ``window_days``."""
    return max(3, math.ceil(min_obs_per_30d * window_days / 30))


def macro_columns(
    crypto_ret: pd.Series, macro: dict[str, pd.DataFrame], cfg: FeaturesConfig,
    wanted: Collection[str],
) -> dict[str, pd.Series]:
    """The ``corr_*``/``beta_*`` columns of :func:`macro_features` named in ``wanted``, and
    only those factors' and windows' statistics computed (the serve's fast builder asks for
    the few a model reads): the same values, by the same code."""
    calendar = pd.DatetimeIndex(crypto_ret.index)
    lag, carry = cfg.macro_lag_days, cfg.macro_max_carry_days
    cols: dict[str, pd.Series] = {}
    for stem, (name, transform) in MACRO_FACTORS.items():
        windows = [w for w in CORR_WINDOWS
                   if {f"corr_{stem}_{w}d", f"beta_{stem}_{w}d"} & set(wanted)]
        if not windows:
            continue
        series = macro.get(name)
        usable = series is not None and len(series) > 2
        pairs = session_aligned_returns(crypto_ret, series["value"], transform) if usable else None
        for w in windows:
            if pairs is None:
                cols[f"corr_{stem}_{w}d"] = cols[f"beta_{stem}_{w}d"] = pd.Series(
                    np.nan, index=calendar)
                continue
            stats = rolling_session_stats(pairs, w, min_obs_for(w, cfg.corr_min_obs))
            daily = as_of_daily(stats, calendar, lag, carry)
            cols[f"corr_{stem}_{w}d"] = daily["corr"]
            cols[f"beta_{stem}_{w}d"] = daily["beta"]
    return {c: v for c, v in cols.items() if c in wanted}


def macro_features(
    crypto_ret: pd.Series, macro: dict[str, pd.DataFrame], cfg: FeaturesConfig
) -> pd.DataFrame:
    """``corr_*``/``beta_*`` for every factor and window, ``vix_level`` and ``vix_regime``.

    ``crypto_ret`` is one asset's ``ret_1d`` on its complete calendar; factors whose file is
    absent give NaN columns (reported by the loader, never invented).
    """
    calendar = pd.DatetimeIndex(crypto_ret.index)
    lag, carry = cfg.macro_lag_days, cfg.macro_max_carry_days
    out = pd.DataFrame(macro_columns(crypto_ret, macro, cfg, CORR_COLUMNS), index=calendar)
    vix = macro.get(VIX_SERIES)
    if vix is not None and len(vix) > 0:
        out["vix_level"] = as_of_daily(vix["value"], calendar, lag, carry)
    else:
        out["vix_level"] = np.nan
    out["vix_regime"] = vix_regime(out["vix_level"], cfg.vix_regime_level)
    return out


def vix_regime(vix_level: pd.Series, threshold: float) -> pd.Series:
    """Stress flag: the (already lagged) VIX close above ``threshold``; <NA> where VIX is unknown.

    A nullable boolean, so an unknown regime can never be read as calm.
    """
    flag = pd.Series(vix_level > threshold, dtype="boolean")
    flag[vix_level.isna()] = pd.NA
    return flag

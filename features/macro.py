"""Macro-crypto co-movement across calendars: crypto trades every day, macro on sessions.

Two rules keep these features point-in-time and meaningful:

1. **Same-period pairs.** A macro session return (previous session's close → this session's
   close) is paired with the crypto log return over the *same* calendar span: the sum of the
   crypto daily returns of the days after the previous session up to this session's date.
   Weekend crypto moves are thus paired with Monday's macro return, not dropped.
2. **Lagged publication.** Macro closes print around 20-22 UTC on the session date; the
   feature at crypto row ``t`` uses only sessions dated ``<= t - lag`` (config
   ``features.macro_lag_days``, default 1). Between sessions the latest known value is carried
   as-of (that is what a desk would see), never interpolated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def session_aligned_returns(
    crypto_ret: pd.Series, macro_close: pd.Series
) -> pd.DataFrame:
    """Pairs of (crypto, macro) log returns over each macro session's span.

    Parameters
    ----------
    crypto_ret : daily crypto log returns on a complete calendar, indexed by date.
    macro_close : macro closes indexed by session date.

    Returns
    -------
    Frame indexed by session date with ``crypto`` and ``macro`` columns; a session whose crypto
    span has a missing day gets NaN crypto (no partial sums).
    """
    sessions = pd.DatetimeIndex(macro_close.index)
    macro_ret = np.log(macro_close).diff()
    csum = crypto_ret.fillna(0.0).cumsum()
    nan_count = crypto_ret.isna().cumsum()
    at = csum.reindex(sessions)
    nan_at = nan_count.reindex(sessions)
    crypto_span = at.diff()
    has_nan = nan_at.diff() > 0
    crypto_span[has_nan | at.isna() | at.shift(1).isna()] = np.nan
    return pd.DataFrame({"crypto": crypto_span.to_numpy(), "macro": macro_ret.to_numpy()},
                        index=sessions)


def rolling_correlation(
    pairs: pd.DataFrame, window_days: int, min_obs: int
) -> pd.Series:
    """Correlation over the sessions of the trailing ``window_days`` calendar days."""
    valid = pairs.dropna()
    corr = valid["crypto"].rolling(f"{window_days}D", min_periods=min_obs).corr(valid["macro"])
    return corr.reindex(pairs.index)


def as_of_daily(
    session_values: pd.Series,
    calendar: pd.DatetimeIndex,
    lag_days: int,
    max_carry_days: int = 7,
) -> pd.Series:
    """Value known at the end of each crypto day: the last session dated ``<= day - lag``.

    A value is carried over non-session days for at most ``max_carry_days`` (long enough for
    any holiday weekend); past that the series is stale and the feature is NaN.
    """
    known_from = pd.DatetimeIndex(session_values.index) + pd.Timedelta(days=lag_days)
    shifted = pd.Series(session_values.to_numpy(), index=known_from).dropna()
    shifted = shifted[~shifted.index.duplicated(keep="last")]
    return shifted.reindex(
        calendar, method="ffill", tolerance=pd.Timedelta(days=max_carry_days)
    )

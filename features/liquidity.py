r"""Liquidity features: how much trades, and how far the price moves per unit traded.

They feed the margin policy's liquidity add-on (the slippage of liquidating a reference size).
With :math:`DV_t = C_t \cdot V_t` the day's dollar volume in USDT (Binance volume is in units
of the base asset) and :math:`r_t` the close-to-close log return:

.. math::

    \mathrm{ldv}_t = \ln DV_t

    z_t = \frac{\mathrm{ldv}_t - \overline{\mathrm{ldv}}_{[t-w,\,t-1]}}
               {s(\mathrm{ldv})_{[t-w,\,t-1]}}

    \mathrm{ILLIQ}_t = \frac{1}{n}\sum_{i=t-w+1}^{t}
        \frac{10^4\,|r_i|}{DV_i / 10^6}

The volume z-score compares day :math:`t` with the *previous* :math:`w` days, so a volume spike
is not diluted by itself. ``ILLIQ`` is Amihud's (2002, J. Financ. Markets 5(1)) illiquidity
ratio in basis points of price move per million USDT traded (BTC ≈ 0.1, a thin altcoin tens).
A zero-volume day has no dollar volume (NaN, not −∞ or ∞) and is skipped by the rolling means;
a window needs ``features.liquidity_min_obs`` valid days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LIQUIDITY_WINDOW = 30  # days; part of the column names, hence not configurable
_BP = 1e4
_MILLION = 1e6


def dollar_volume(close: pd.Series, volume: pd.Series) -> pd.Series:
    """USDT traded on the day, :math:`C_t V_t`; NaN where it is not positive."""
    dv = close * volume
    return dv.where(dv > 0)


def volume_zscore(log_dollar_volume: pd.Series, window: int, min_obs: int) -> pd.Series:
    """z-score of ``ldv_t`` against the mean and sd (ddof 1) of days ``t-window .. t-1``."""
    past = log_dollar_volume.shift(1).rolling(window, min_periods=min_obs)
    sd = past.std(ddof=1)
    return (log_dollar_volume - past.mean()) / sd.where(sd > 0)


def amihud(ret: pd.Series, dv: pd.Series, window: int, min_obs: int) -> pd.Series:
    """Amihud illiquidity, bp per million USDT, averaged over days ``t-window+1 .. t``."""
    daily = _BP * ret.abs() / (dv / _MILLION)
    return daily.rolling(window, min_periods=min_obs).mean()


def liquidity_features(
    close: pd.Series, volume: pd.Series, ret: pd.Series, min_obs: int
) -> pd.DataFrame:
    """``log_dollar_volume``, ``volume_z_30d``, ``amihud_30d`` of one asset (complete calendar)."""
    dv = dollar_volume(close, volume)
    ldv = np.log(dv)
    return pd.DataFrame(
        {
            "log_dollar_volume": ldv,
            f"volume_z_{LIQUIDITY_WINDOW}d": volume_zscore(ldv, LIQUIDITY_WINDOW, min_obs),
            f"amihud_{LIQUIDITY_WINDOW}d": amihud(ret, dv, LIQUIDITY_WINDOW, min_obs),
        },
        index=close.index,
    )

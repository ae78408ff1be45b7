r"""Point-in-time inputs of the learned tail models, from the panel row at ``t`` only.

Scale inputs are volatilities (square roots of the panel's daily variances), so a linear
quantile is a mix of volatility forecasts, as in a location-scale model; recent covered
losses (the interval ending at ``t``, and the worst of the last 7) carry the jump and
liquidation-cascade risk that a variance misses. DVOL is NaN where ``dvol_available`` is
False; each model says how it treats that (a 0/1 regime flag beside it, never a pretend
level on its own).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.tail.base import calendar_series, loss_column, to_fraction

RECENT_DAYS = 7  # a week of covered losses: the memory of a liquidation cascade
FLOOR = 1e-4  # log inputs: losses and volatilities below 0.01% are floored
SCALE_INPUTS = ("sig_1d", "sig_7d", "sig_30d", "dvol_sig", "dvol_available",
                "recent_loss", "recent_max_loss")
CONTEXT_INPUTS = ("ret_1d", "vrp", "iv_rv_ratio", "rskew", "corr_spx_30d",
                  "basket_corr_30d", "beta_btc_30d", "log_dollar_volume", "amihud_30d",
                  "volume_z_30d", "vix_level")
# optional groups of intraday measures (``tail_nn.extra_inputs``), each a few columns of the
# row at ``t`` and its trailing week: hourly-data measures are NaN where an asset has no
# hourly candles, so their groups carry the ``rv_is_hourly`` flag beside them
EXTRA_INPUTS = {
    # signed semivariances (Barndorff-Nielsen, Kinnebrock and Shephard 2010; Patton and
    # Sheppard 2015): log σ of the downside and upside realized semivariance, day t and week
    "semivariance": ("log_sig_down", "log_sig_up", "log_sig_down_7d", "log_sig_up_7d",
                     "rv_is_hourly"),
    # jumps: the jump share of realized variance (RV − bipower variation) over the week
    "jumps": ("jump_share_7d", "rv_is_hourly"),
    # tails of the hourly returns: realized kurtosis, mean of the week
    "kurtosis": ("rkurt_7d", "rv_is_hourly"),
    # implied volatility moves: DVOL's log change over 1 and 7 days (NaN without DVOL)
    "dvol_changes": ("dvol_change_1d", "dvol_change_7d"),
}


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)  # an optional input missing from this panel
    return frame[name].to_numpy(dtype=float)


def recent_losses(frame: pd.DataFrame, side: str, variant: str) -> tuple[np.ndarray, ...]:
    """Covered loss fraction of the interval ending at each row, and its 7-day maximum."""
    log_loss = calendar_series(frame, loss_column(side, variant))
    frac = pd.Series(to_fraction(log_loss.to_numpy(), side), index=log_loss.index)
    worst = frac.rolling(RECENT_DAYS, min_periods=1).max()  # rows <= t only
    return frac.reindex(frame.index).to_numpy(), worst.reindex(frame.index).to_numpy()


def scale_inputs(frame: pd.DataFrame, side: str, variant: str) -> np.ndarray:
    """(N, 7) :data:`SCALE_INPUTS` of one asset's rows; DVOL NaN where unavailable."""
    has_dvol = frame["dvol_available"].eq(True).fillna(False).to_numpy(dtype=bool)
    dvol = np.where(has_dvol, np.sqrt(np.maximum(_col(frame, "dvol_var_1d"), 0.0)), np.nan)
    last, worst = recent_losses(frame, side, variant)
    return np.column_stack([
        np.sqrt(np.maximum(_col(frame, c), 0.0)) for c in ("har_rv_1d", "har_rv_7d",
                                                           "har_rv_30d")
    ] + [dvol, has_dvol.astype(float), last, worst])


def context_inputs(frame: pd.DataFrame) -> np.ndarray:
    """(N, 11) :data:`CONTEXT_INPUTS`: returns, implied-vs-realized, co-movement, liquidity."""
    return np.column_stack([_col(frame, c) for c in CONTEXT_INPUTS])


def _week_mean(frame: pd.DataFrame, column: str) -> np.ndarray:
    """Mean of ``column`` over the 7 calendar days ending at each row (rows <= t only)."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    s = calendar_series(frame, column)
    return s.rolling(RECENT_DAYS, min_periods=1).mean().reindex(frame.index).to_numpy()


def extra_inputs(frame: pd.DataFrame, groups: list[str] | tuple[str, ...]) -> np.ndarray:
    """(N, F) columns of the :data:`EXTRA_INPUTS` ``groups`` (in that order); a flag
    shared by several groups appears once, after them."""
    def log_sig(var: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(np.sqrt(np.maximum(var, 0.0)), FLOOR))

    unknown = [g for g in groups if g not in EXTRA_INPUTS]
    if unknown:
        raise ValueError(f"unknown tail input groups {unknown}; known: {sorted(EXTRA_INPUTS)}")
    names = [n for g in groups for n in EXTRA_INPUTS[g] if n != "rv_is_hourly"]
    if any("rv_is_hourly" in EXTRA_INPUTS[g] for g in groups):
        names.append("rv_is_hourly")
    columns = {
        "log_sig_down": lambda: log_sig(_col(frame, "rv_down")),
        "log_sig_up": lambda: log_sig(_col(frame, "rv_up")),
        "log_sig_down_7d": lambda: log_sig(_week_mean(frame, "rv_down")),
        "log_sig_up_7d": lambda: log_sig(_week_mean(frame, "rv_up")),
        "jump_share_7d": lambda: _week_mean(frame, "jump_var")
        / np.maximum(_week_mean(frame, "rv_hourly"), 1e-12),
        "rkurt_7d": lambda: _week_mean(frame, "rkurt"),
        "dvol_change_1d": lambda: _col(frame, "dvol_change_1d"),
        "dvol_change_7d": lambda: _col(frame, "dvol_change_7d"),
        "rv_is_hourly": lambda: frame["rv_is_hourly"].eq(True).fillna(False).to_numpy(float)
        if "rv_is_hourly" in frame.columns else np.zeros(len(frame)),
    }
    if not names:
        return np.empty((len(frame), 0))
    return np.column_stack([columns[n]() for n in names])

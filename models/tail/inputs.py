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
SCALE_INPUTS = ("sig_1d", "sig_7d", "sig_30d", "dvol_sig", "dvol_available",
                "recent_loss", "recent_max_loss")
CONTEXT_INPUTS = ("ret_1d", "vrp", "iv_rv_ratio", "rskew", "corr_spx_30d",
                  "basket_corr_30d", "beta_btc_30d", "log_dollar_volume", "amihud_30d",
                  "volume_z_30d", "vix_level")


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

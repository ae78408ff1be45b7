"""Forward-looking quantities, defined once: the panel's ``target_*`` columns and the training
targets models build from a (truncated) feature history both come from here.

A forward value at row ``t`` uses rows ``t+1 .. t+h`` of the same asset; where any of them is
missing (end of sample, or a gap) the result is NaN, never a partial sum.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.losses import LOSS_COLUMNS, PROXY_FLAG

VARIANCE_HORIZONS = (1, 7, 30)  # days; target_variance_{h}d
RETURN_HORIZONS = (1, 7)  # days; target_return_{h}d


def forward_sum(values: pd.Series, horizon: int) -> pd.Series:
    r"""Sum of the next ``horizon`` values of one asset's daily series.

    .. math:: y_t^{(h)} = \sum_{i=1}^{h} x_{t+i}

    ``values`` must be one asset's series on a complete daily index (sorted, no missing days).
    """
    out = forward_sums(values.to_numpy(dtype=float), horizon)
    return pd.Series(out, index=values.index, name=values.name)


def forward_sums(x: np.ndarray, horizon: int) -> np.ndarray:
    """:func:`forward_sum` along the last axis of ``x`` (each row one asset's complete daily
    calendar; NaN where a day is missing): a running sum from 0, one day at a time along
    the row, differenced, so a row gives bit for bit what it gives alone."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    x = np.asarray(x, dtype=float)
    out = np.full(x.shape, np.nan)
    n = x.shape[-1]
    if n > horizon:
        missing = np.isnan(x)
        lead = np.zeros((*x.shape[:-1], 1))
        csum = np.concatenate([lead, np.cumsum(np.where(missing, 0.0, x), axis=-1)], axis=-1)
        nan_count = np.concatenate([lead.astype(np.int64), np.cumsum(missing, axis=-1)],
                                   axis=-1)
        sums = csum[..., horizon + 1:] - csum[..., 1:n - horizon + 1]
        has_nan = (nan_count[..., horizon + 1:] - nan_count[..., 1:n - horizon + 1]) > 0
        out[..., :n - horizon] = np.where(has_nan, np.nan, sums)
    return out


def forward_variance(rv: pd.Series, horizon: int) -> pd.Series:
    """Realized variance of the log return over days t+1..t+h (daily decimal² summed)."""
    return forward_sum(rv, horizon)


def forward_return(ret: pd.Series, horizon: int) -> pd.Series:
    r"""Log return over days t+1..t+h, :math:`\ln(C_{t+h}/C_t)`; NaN across a gap."""
    return forward_sum(ret, horizon)


def next_interval(values: pd.Series, interval_days: int) -> pd.Series:
    """The value of the interval ``(t, t+U]``: the row ``t+U`` value, on a complete calendar.

    Booleans become nullable (``<NA>`` where no next interval exists yet).
    """
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype("boolean")
    return values.shift(-interval_days)


def target_frame(features: pd.DataFrame, interval_days: int) -> pd.DataFrame:
    """Every ``target_*`` column of one asset from its feature columns (complete calendar).

    ``target_variance_{h}d`` sums ``rv`` over t+1..t+h; ``target_return_{h}d`` sums ``ret_1d``;
    ``target_worst_loss_*`` are the worst-loss columns of the next update interval.
    """
    out = pd.DataFrame(index=features.index)
    for h in VARIANCE_HORIZONS:
        out[f"target_variance_{h}d"] = forward_variance(features["rv"], h)
    for h in RETURN_HORIZONS:
        out[f"target_return_{h}d"] = forward_return(features["ret_1d"], h)
    for col in (*LOSS_COLUMNS, PROXY_FLAG):
        out[f"target_{col}"] = next_interval(features[col], interval_days)
    return out

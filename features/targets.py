"""Forward-looking quantities, defined once: the panel's ``target_*`` columns and the training
targets models build from a (truncated) feature history both come from here.

A forward value at row ``t`` uses rows ``t+1 .. t+h`` of the same asset; where any of them is
missing (end of sample, or a gap) the result is NaN, never a partial sum.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def forward_sum(values: pd.Series, horizon: int) -> pd.Series:
    r"""Sum of the next ``horizon`` values of one asset's daily series.

    .. math:: y_t^{(h)} = \sum_{i=1}^{h} x_{t+i}

    ``values`` must be one asset's series on a complete daily index (sorted, no missing days).
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    x = values.to_numpy(dtype=float)
    out = np.full(x.shape, np.nan)
    if len(x) > horizon:
        csum = np.concatenate([[0.0], np.cumsum(np.where(np.isnan(x), 0.0, x))])
        nan_count = np.concatenate([[0], np.cumsum(np.isnan(x))])
        idx = np.arange(len(x) - horizon)
        sums = csum[idx + horizon + 1] - csum[idx + 1]
        has_nan = (nan_count[idx + horizon + 1] - nan_count[idx + 1]) > 0
        out[idx] = np.where(has_nan, np.nan, sums)
    return pd.Series(out, index=values.index, name=values.name)


def forward_variance(rv: pd.Series, horizon: int) -> pd.Series:
    """Realized variance of the log return over days t+1..t+h (daily decimal² summed)."""
    return forward_sum(rv, horizon)

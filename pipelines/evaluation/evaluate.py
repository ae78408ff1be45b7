"""Forecast evaluation: loss functions robust to the noisy variance proxy, and model selection.

QLIKE and MSE are the two losses that rank variance forecasts consistently when the target is
an unbiased but noisy proxy of the true variance (Patton, 2011); QLIKE is the one that does not
let a handful of crash days decide the ranking, hence the selection metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.targets import forward_variance

VARIANCE_FLOOR = 1e-12  # a zero realized variance (exchange halt) must not yield log(0)


def qlike(realized: np.ndarray | pd.Series, forecast: np.ndarray | pd.Series) -> np.ndarray:
    r"""Patton's (2011) QLIKE loss, normalised so that a perfect forecast scores 0.

    .. math:: L(\hat\sigma^2, h) = \frac{\hat\sigma^2}{h} - \ln\frac{\hat\sigma^2}{h} - 1

    Examples
    --------
    >>> float(qlike([2.0], [1.0])[0])  # 2 - ln 2 - 1
    0.3068528194400547
    """
    ratio = np.maximum(np.asarray(realized, float), VARIANCE_FLOOR) / np.asarray(forecast, float)
    return ratio - np.log(ratio) - 1.0


def squared_error(
    realized: np.ndarray | pd.Series, forecast: np.ndarray | pd.Series
) -> np.ndarray:
    """MSE loss on variance, :math:`(\\hat\\sigma^2 - h)^2`."""
    return (np.asarray(realized, float) - np.asarray(forecast, float)) ** 2


def realized_for(panel: pd.DataFrame, horizons: Sequence[int]) -> pd.DataFrame:
    """Realized forward variance per (asset, cutoff, horizon) from the panel's ``rv``."""
    blocks = []
    for asset, frame in panel.groupby(level="asset", sort=True):
        rv = frame.droplevel("asset")["rv"]
        for h in horizons:
            fwd = forward_variance(rv, h)
            blocks.append(pd.DataFrame({"asset": asset, "cutoff": fwd.index,
                                        "horizon_days": int(h), "realized": fwd.to_numpy(),
                                        "proxy_is_hourly": frame["rv_is_hourly"].to_numpy()}))
    return pd.concat(blocks, ignore_index=True)


def _member(rows: pd.DataFrame, of: pd.DataFrame, on: list[str]) -> np.ndarray:
    """Which of ``rows`` have their ``on`` values among those of ``of`` (order kept)."""
    hit = rows[on].merge(of[on].drop_duplicates(), on=on, how="left", indicator=True)
    return hit["_merge"].eq("both").to_numpy()


def scored(forecasts: dict[str, pd.DataFrame], panel: pd.DataFrame) -> pd.DataFrame:
    """Every model's forecasts with realized values and losses, on their **common support**.

    Within each (asset, horizon), only cutoffs that every model covering that pair forecast
    and whose realized value is known are kept, so that no model is scored on days another
    one skipped. A model with no forecast at all for a pair (its failed rows were dropped by
    the walk-forward) leaves the pair to the others instead of emptying it.
    """
    horizons = sorted({int(h) for fc in forecasts.values() for h in fc["horizon_days"].unique()})
    realized = realized_for(panel, horizons).dropna(subset=["realized"])
    keys = ["asset", "cutoff", "horizon_days"]
    pair = ["asset", "horizon_days"]
    common = realized[keys]
    for fc in forecasts.values():
        covered = _member(common, fc, pair)
        common = common[~covered | _member(common, fc, keys)]
    rows = []
    for name, fc in forecasts.items():
        df = common.merge(fc[[*keys, "variance"]], on=keys).merge(realized, on=keys)
        df.insert(0, "model", name)
        rows.append(df)
    out = pd.concat(rows, ignore_index=True)
    out["qlike"] = qlike(out["realized"], out["variance"])
    out["mse"] = squared_error(out["realized"], out["variance"])
    return out


def loss_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean QLIKE and MSE per model, asset and horizon, with the number of forecasts."""
    return (
        scores.groupby(["model", "asset", "horizon_days"])
        .agg(qlike=("qlike", "mean"), mse=("mse", "mean"), n=("qlike", "size"),
             start=("cutoff", "min"), end=("cutoff", "max"))
        .reset_index()
    )

r"""Summaries of a feature panel, and how well the daily proxies stand in for intraday truth.

Pure functions returning dicts and frames (the pipeline logs them to MLflow; the benchmark
script prints them). For an estimator :math:`\hat x` of a truth :math:`x` over :math:`n` days:

.. math::

    \mathrm{bias} = \frac{\overline{\hat x}}{\overline{x}} - 1, \qquad
    \mathrm{corr} = \rho(\hat x, x), \qquad
    \mathrm{corr\_log} = \rho(\ln \hat x, \ln x), \qquad
    \mathrm{coverage} = \frac{1}{n}\sum 1\{\hat x \ge x\}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from configs.schema import FeaturesConfig
from features.losses import LOSS_COLUMNS, hourly_worst_losses, range_worst_losses
from features.realized import complete_calendar

RANGE_ESTIMATORS = ("gk_var", "parkinson_var", "rogers_satchell_var")
SMOOTH_DAYS = 30


def feature_summary(panel: pd.DataFrame) -> dict[str, Any]:
    """Row counts and the missing-value share of every column, JSON-able.

    Returns
    -------
    dict
        ``rows``, ``assets``, ``columns``, ``date_min``/``date_max`` (ISO dates),
        ``rows_per_asset`` {asset: rows}, ``missing_share`` {column: share of NaN/<NA> in
        [0, 1]}, ``missing_share_per_asset`` {asset: {column: share}} for columns with any gap.
    """
    dates = panel.index.get_level_values("date")
    assets = panel.index.get_level_values("asset")
    missing = panel.isna()
    per_asset = missing.groupby(assets).mean()
    gappy = [c for c in panel.columns if missing[c].any()]
    return {
        "rows": len(panel),
        "assets": int(assets.nunique()),
        "columns": len(panel.columns),
        "date_min": dates.min().date().isoformat() if len(panel) else None,
        "date_max": dates.max().date().isoformat() if len(panel) else None,
        "rows_per_asset": {str(a): int(n) for a, n in assets.value_counts().sort_index().items()},
        "missing_share": {c: float(v) for c, v in missing.mean().items()},
        "missing_share_per_asset": {
            str(a): {c: float(per_asset.loc[a, c]) for c in gappy} for a in per_asset.index
        },
    }


def _compare(estimate: pd.Series, truth: pd.Series) -> dict[str, float]:
    both = pd.concat([estimate, truth], axis=1, keys=["e", "t"]).dropna()
    e, t = both["e"], both["t"]
    positive = (e > 0) & (t > 0)
    return {
        "n": len(both),
        "corr": float(e.corr(t)) if len(both) > 2 else np.nan,
        "corr_log": float(np.log(e[positive]).corr(np.log(t[positive])))
        if positive.sum() > 2 else np.nan,
        "mean_estimate": float(e.mean()),
        "mean_truth": float(t.mean()),
        "bias": float(e.mean() / t.mean() - 1.0) if t.mean() != 0 else np.nan,
        "median_ratio": float((e[positive] / t[positive]).median()) if positive.any() else np.nan,
        "coverage": float((e >= t).mean()) if len(both) else np.nan,
    }


def proxy_comparison(panel: pd.DataFrame) -> pd.DataFrame:
    """Range estimators against intraday RV, on every asset-day that has hourly RV.

    Daily rows compare each of :data:`RANGE_ESTIMATORS` with ``rv_hourly`` of the same day;
    ``30d`` rows compare 30-day trailing means (``yang_zhang_var_30d`` included), which is what
    the HAR terms and models see. One row per (asset, estimator, horizon) plus ``ALL`` pooled.
    """
    rows = []
    for asset, frame in panel.groupby(level="asset"):
        f = frame.droplevel("asset")
        if not f["rv_hourly"].notna().any():
            continue
        truth = f["rv_hourly"]
        smooth_truth = truth.rolling(SMOOTH_DAYS, min_periods=SMOOTH_DAYS).mean()
        for est in RANGE_ESTIMATORS:
            rows.append({"asset": asset, "estimator": est, "horizon": "1d",
                         **_compare(f[est], truth)})
            smooth = f[est].rolling(SMOOTH_DAYS, min_periods=SMOOTH_DAYS).mean()
            rows.append({"asset": asset, "estimator": est, "horizon": "30d",
                         **_compare(smooth, smooth_truth)})
        rows.append({"asset": asset, "estimator": "yang_zhang_var_30d", "horizon": "30d",
                     **_compare(f["yang_zhang_var_30d"], smooth_truth)})
    return pd.DataFrame(rows)


def worst_loss_proxy_comparison(
    daily: dict[str, pd.DataFrame], hourly: dict[str, pd.DataFrame], cfg: FeaturesConfig
) -> pd.DataFrame:
    """The daily-range proxy of the worst H-hour loss against its hourly truth.

    For every asset with hourly candles, on the intervals with enough windows complete on the
    hourly grid (the panel's ``min_hours_for_rv`` rule; the intervals it also measures from
    fewer hours, across an outage, are left out): one row per (asset, variant) with the
    :func:`_compare` figures, ``coverage`` being the share of intervals where the proxy is at
    least the truth.
    """
    rows = []
    U = cfg.update_interval_days
    for asset in sorted(hourly):
        d = daily[asset].reindex(complete_calendar(pd.DatetimeIndex(daily[asset].index)))
        proxy = range_worst_losses(d, U)
        truth = hourly_worst_losses(hourly[asset], cfg.liquidation_delay_hours, U,
                                    cfg.outage_bridge_hours)
        truth = truth[truth["n_windows"] >= cfg.min_hours_for_rv * U].reindex(d.index)
        for col in LOSS_COLUMNS:
            rows.append({"asset": asset, "variant": col.removeprefix("worst_loss_"),
                         **_compare(proxy[col], truth[col])})
    return pd.DataFrame(rows)

"""The model comparison a volatility econometrician expects, per asset and horizon.

* Diebold-Mariano (HLN-corrected) of every model's QLIKE against ``garch11_t``;
* the Model Confidence Set at 90% (``arch.bootstrap.MCS``);
* Mincer-Zarnowitz regressions of realized on forecast variance (R², a, b);
* 1-day VaR at 99% from each model's σ by filtered historical simulation (the empirical
  quantile of its own past out-of-sample standardized losses, trailing window), with Kupiec,
  Christoffersen and Basel traffic-light backtests.

Pure: the scored frame (:func:`pipelines.evaluation.evaluate.scored`) and the panel in, frames out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.evaluation.coverage import var_backtest
from pipelines.evaluation.stats import diebold_mariano, mincer_zarnowitz, model_confidence_set

BENCHMARK = "garch11_t"


def _wide(scores: pd.DataFrame, value: str) -> pd.DataFrame:
    return scores.pivot_table(index="cutoff", columns="model", values=value)


def dm_table(scores: pd.DataFrame, benchmark: str = BENCHMARK) -> pd.DataFrame:
    """DM statistic and p-values of each model's QLIKE against ``benchmark``."""
    rows = []
    for (asset, h), g in scores.groupby(["asset", "horizon_days"], sort=True):
        wide = _wide(g, "qlike")
        if benchmark not in wide:
            continue
        for model in wide.columns.drop(benchmark):
            r = diebold_mariano(wide[model], wide[benchmark], horizon=int(h))
            rows.append({"asset": asset, "horizon_days": h, "model": model,
                         "dm_stat": r.statistic, "dm_p": r.p_value,
                         "dm_p_better": r.p_value_a_better, "mean_diff": r.mean_diff})
    return pd.DataFrame(rows, columns=["asset", "horizon_days", "model", "dm_stat", "dm_p",
                                       "dm_p_better", "mean_diff"])


def mcs_table(scores: pd.DataFrame, size: float = 0.10, reps: int = 500,
              seed: int = 0) -> pd.DataFrame:
    """Membership of each model in the 90% MCS on QLIKE, per asset and horizon."""
    rows = []
    for (asset, h), g in scores.groupby(["asset", "horizon_days"], sort=True):
        wide = _wide(g, "qlike")
        if wide.shape[1] == 1:  # one model is trivially its own confidence set
            rows.append({"asset": asset, "horizon_days": h, "model": wide.columns[0],
                         "mcs_p": 1.0, "in_mcs": True})
            continue
        res = model_confidence_set(wide, size=size, reps=reps, seed=seed)
        rows += [{"asset": asset, "horizon_days": h, "model": m, "mcs_p": res.p_values[m],
                  "in_mcs": m in res.included} for m in res.p_values]
    return pd.DataFrame(rows)


def mz_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mincer-Zarnowitz regression of realized on forecast variance (levels)."""
    rows = []
    for (model, asset, h), g in scores.groupby(["model", "asset", "horizon_days"], sort=True):
        r = mincer_zarnowitz(g["realized"], g["variance"], maxlags=max(int(h) - 1, 1))
        rows.append({"model": model, "asset": asset, "horizon_days": h, "mz_r2": r.r_squared,
                     "mz_a": r.intercept, "mz_b": r.slope, "mz_p": r.p_value})
    return pd.DataFrame(rows)


def fhs_var(sigma: pd.Series, ret_next: pd.Series, level: float, window: int = 500,
            min_obs: int = 100) -> pd.Series:
    """1-day VaR (as a positive log loss) at each cutoff from FHS on past standardized losses.

    ``z_s = -r_{s+1}/σ_s`` is known at ``s+1``, so the quantile at ``t`` uses ``z`` up to
    ``t-1`` only.
    """
    z = (-ret_next / sigma).shift(1)
    q = z.rolling(window, min_periods=min_obs).quantile(level)
    return q * sigma


def var_table(forecasts: dict[str, pd.DataFrame], panel: pd.DataFrame,
              level: float = 0.99) -> pd.DataFrame:
    """Kupiec / Christoffersen / traffic light of each model's FHS VaR on next-day returns."""
    rows = []
    for model, fc in forecasts.items():
        one = fc[fc["horizon_days"] == 1]
        for asset, g in one.groupby("asset", sort=True):
            sigma = np.sqrt(g.set_index("cutoff")["variance"].sort_index())
            ret = panel.xs(asset, level="asset")["ret_1d"]
            ret_next = ret.shift(-1, freq="D").reindex(sigma.index)
            var = fhs_var(sigma, ret_next, level)
            bt = var_backtest(-ret_next, var, 1.0 - level)
            rows.append({"model": model, "asset": asset, "var_n": bt.n,
                         "var_breaches": bt.breaches, "kupiec_p": bt.pof.p_value,
                         "christoffersen_lr_cc": bt.cc.statistic, "cc_p": bt.cc.p_value,
                         "red_windows": bt.traffic_light.n_red, "worst_zone": bt.worst_zone,
                         "var_pass": bool(bt.pof.p_value > 0.05 and bt.cc.statistic < 5.99)})
    return pd.DataFrame(rows)


def comparison(scores: pd.DataFrame, table: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
               panel: pd.DataFrame) -> pd.DataFrame:
    """The loss table joined with DM vs the benchmark, MCS membership and MZ R²."""
    keys = ["model", "asset", "horizon_days"]
    out = table.merge(dm_table(scores), on=keys, how="left")
    out = out.merge(mcs_table(scores), on=keys, how="left").merge(mz_table(scores), on=keys)
    var = var_table(forecasts, panel)
    return out.merge(var.assign(horizon_days=1), on=["model", "asset", "horizon_days"],
                     how="left")

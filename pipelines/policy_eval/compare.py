"""The policy backtest's comparators, all run through the same replay and summary code:

* ``policy:<alias>``       the full policy driven by each forecaster's walk-forward forecasts
* ``policy:<alias>:no_apc`` the selected forecaster without anti-procyclicality tools
* ``ewma_fhs``             the policy on RiskMetrics EWMA(0.94) σ: what clearing houses run
* ``static``               one constant MMF per asset: the in-sample (before the out-of-sample
                           start) ES of the covered loss at the same confidence
* ``aave_v3``              Aave v3's published WETH / WBTC parameters, for ETH and BTC
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from configs.schema import Config
from pipelines.policy_eval.backtest import policy_path, static_path
from pipelines.policy_eval.report import stress_table, summarize
from serving.policy import fraction_lost

# Aave v3 Ethereum market, published risk parameters (LTV, LT, LB).
AAVE_V3 = {"ETH": (0.805, 0.83, 1.05), "BTC": (0.73, 0.78, 1.05)}
STATIC_LB = 1.05
MIN_IN_SAMPLE = 60  # days of in-sample losses a static calibration needs


def no_apc(cfg: Config) -> Config:
    return cfg.with_overrides({"policy.apc.buffer_enabled": False,
                               "policy.apc.stress_enabled": False,
                               "policy.apc.floor_enabled": False})


def static_mmf(panel: pd.DataFrame, asset: str, cfg: Config) -> float:
    """In-sample ES of the covered loss (as a fraction), or NaN with too little history."""
    frame = panel.xs(asset, level="asset")
    col = "target_worst_loss_long" if cfg.policy.loss == "worst_window" else "target_return_1d"
    losses = frame.loc[frame.index < pd.Timestamp(cfg.backtest.oos_start), col].dropna()
    if cfg.policy.loss == "close_to_close":
        losses = (-losses).clip(lower=0.0)
    if len(losses) < MIN_IN_SAMPLE:
        return np.nan
    frac = np.array([fraction_lost(v) for v in losses])
    var = np.quantile(frac, cfg.policy.confidence, method="higher")
    return float(max(frac[frac >= var].mean(), cfg.policy.mmf_floor))


def _static_paths(template: pd.DataFrame, panel: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    blocks = []
    for asset, g in template.groupby("asset"):
        mmf = static_mmf(panel, asset, cfg)
        if np.isfinite(mmf):
            imf = min(mmf * (1 + cfg.policy.apc.buffer), 0.99)
            blocks.append(static_path(g, mmf, (1 - mmf) / STATIC_LB, STATIC_LB, imf))
    return pd.concat(blocks, ignore_index=True) if blocks else template.iloc[0:0]


def _aave_paths(template: pd.DataFrame) -> pd.DataFrame:
    blocks = []
    for asset, (ltv, lt, lb) in AAVE_V3.items():
        g = template[template["asset"] == asset]
        if len(g):
            blocks.append(static_path(g, 1 - lt * lb, lt, lb, 1 - ltv * lb))
    return pd.concat(blocks, ignore_index=True) if blocks else template.iloc[0:0]


def _summaries(paths: dict[str, pd.DataFrame], cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = 1.0 - cfg.policy.coverage_level
    summaries, stresses = [], []
    for name, path in paths.items():
        if len(path):
            summaries.append(summarize(path, p).assign(policy=name))
            stresses.append(stress_table(path).assign(policy=name))
    summary = pd.concat(summaries, ignore_index=True)
    summary = summary[["policy", *[c for c in summary.columns if c != "policy"]]]
    return summary, pd.concat(stresses, ignore_index=True)


def forecaster_policies(
    panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame], cfg: Config
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The full policy driven by each forecaster: (summary, daily paths).

    Replays are independent, so they run in ``backtest.n_jobs`` processes (joblib/loky)."""
    aliases = list(forecasts)
    results = Parallel(n_jobs=cfg.backtest.n_jobs)(
        delayed(policy_path)(panel, forecasts[a], cfg) for a in aliases)
    paths = {f"policy:{a}": path for a, path in zip(aliases, results, strict=True)}
    return _summaries(paths, cfg)[0], paths


def compare_policies(
    panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame], selected: str, cfg: Config,
    ewma: pd.DataFrame | None = None, paths: dict[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame]:
    """(summary with a ``policy`` column, daily paths by policy, stress-episode table).

    ``paths`` may carry the forecaster policies already replayed (they are not redone).
    """
    paths = dict(paths or {})
    for alias, fc in forecasts.items():
        if f"policy:{alias}" not in paths:
            paths[f"policy:{alias}"] = policy_path(panel, fc, cfg)
    paths[f"policy:{selected}:no_apc"] = policy_path(panel, forecasts[selected], no_apc(cfg))
    if ewma is not None:
        paths["ewma_fhs"] = policy_path(panel, ewma, cfg)
    template = paths[f"policy:{selected}"]
    paths["static"] = _static_paths(template, panel, cfg)
    paths["aave_v3"] = _aave_paths(template)
    summary, stress = _summaries(paths, cfg)
    return summary, paths, stress

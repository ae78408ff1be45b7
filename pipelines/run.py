"""The end-to-end pipeline: features → walk-forward backtest and comparison → policy backtest
and selection → register the policy (challenger → gate → champion) → serve.

One MLflow run per step (:mod:`pipelines.steps`), nested runs per forecaster in the backtest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from configs.schema import Config
from features.loaders import load_market
from pipelines.steps import (
    Progress,
    _noop,
    step_backtest,
    step_features,
    step_policy,
    step_register,
)
from serving.ops.tracking import setup
from serving.serve import ServeResult, serve


@dataclass(frozen=True)
class RunResult:
    fingerprint: str
    table: pd.DataFrame           # loss per model × asset × horizon
    comparison: pd.DataFrame      # + DM vs garch11_t, MCS, Mincer-Zarnowitz, VaR backtests
    selected: str
    selection_reason: str
    selection: pd.DataFrame       # one row per model: screen shares, QLIKE, policy coverage
    policy_summary: pd.DataFrame  # policy backtest: one row per policy × asset
    stress: pd.DataFrame          # stress-episode table
    model_version: str
    promoted: bool
    gate_reason: str
    failures: dict[str, str]      # files that failed to load (with keep_going)
    served: ServeResult | None    # None when run(publish=False)


def run(
    cfg: Config, as_of: dt.date | None = None, progress: Progress = _noop,
    publish: bool = True, keep_going: bool = False,
) -> RunResult:
    """Run the whole pipeline on ``cfg.paths.data_dir``; publish parameters as of ``as_of``
    unless ``publish`` is False (``volmargin retrain`` trains and promotes, serving is separate).
    With ``keep_going`` a malformed file fails only its asset (listed in ``failures``).
    """
    setup(cfg)
    progress("load data", 0, 1)
    market = load_market(cfg.paths.data_dir, cfg.data.assets, keep_going=keep_going)
    progress("features", 0, 1)
    panel, fp = step_features(cfg, market)
    forecasts, table, compared = step_backtest(cfg, panel, progress)
    choice, summary, stress = step_policy(cfg, panel, forecasts, compared, progress)
    progress("register", 0, 1)
    version, promoted, reason = step_register(cfg, panel, choice, forecasts[choice.model],
                                              summary)
    served = None
    if publish:
        progress("serve", 0, 1)
        served = serve(cfg, as_of)
    return RunResult(fp, table, compared, choice.model, choice.reason, choice.table, summary,
                     stress, version, promoted, reason, dict(market.failures), served)

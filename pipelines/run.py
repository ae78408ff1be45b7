"""The end-to-end pipeline: features → walk-forward backtest → evaluate/select → register the
policy → serve. One MLflow run per step (nested runs per forecaster in the backtest).

Each ``step_*`` function does the tracking and storage around pure computations that live in
``features/``, ``models/``, ``pipelines/evaluate.py`` and ``serving/``.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from features.loaders import MarketData, load_market
from features.schema import feature_view
from features.store import load_or_build
from models.backtest import walk_forward
from models.registry import build_forecaster
from pipelines import registry
from pipelines.config import Config
from pipelines.evaluate import loss_table, scored, select_model
from pipelines.tracking import log_context, setup
from serving.apply import BUNDLE_FORMAT, std_losses_from_forecasts
from serving.serve import ServeResult, serve

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunResult:
    fingerprint: str
    table: pd.DataFrame          # loss per model × asset × horizon
    ranking: pd.Series           # mean QLIKE at the selection horizon, best first
    selected: str
    model_version: str
    promoted: bool
    served: ServeResult


def _noop(step: str, done: int, total: int) -> None:
    return None


def step_features(cfg: Config, market: MarketData) -> tuple[pd.DataFrame, str]:
    with mlflow.start_run(run_name="features"):
        log_context(cfg, "features")
        panel, fp, reused = load_or_build(
            market, cfg.features, Path(cfg.paths.outputs_dir) / "features")
        mlflow.log_params({"fingerprint": fp, "reused": reused,
                           "assets": ",".join(sorted(market.daily))})
        mlflow.log_metrics({"rows": len(panel), "assets": len(market.daily),
                            "gaps": len(market.gaps)})
        missing = panel.isna().mean().rename("missing_share").reset_index()
        mlflow.log_table(missing.rename(columns={"index": "column"}), "features/missing.json")
        if len(market.gaps):
            mlflow.log_table(market.gaps.astype(str), "features/gaps.json")
    return panel, fp


def step_backtest(
    cfg: Config, panel: pd.DataFrame, progress: Progress = _noop
) -> dict[str, pd.DataFrame]:
    bt = cfg.backtest
    out: dict[str, pd.DataFrame] = {}
    with mlflow.start_run(run_name="backtest"):
        log_context(cfg, "backtest")
        mlflow.log_params({"oos_start": bt.oos_start, "refit_every": bt.refit_every,
                           "horizons": bt.horizons, "models": ",".join(cfg.models.enabled)})
        for alias in cfg.models.enabled:
            with mlflow.start_run(run_name=alias, nested=True):
                log_context(cfg, "backtest", {"model": alias})
                fc = walk_forward(
                    lambda a=alias: build_forecaster(a, cfg.models, bt.horizons),
                    panel, bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                    progress=lambda d, t, a=alias: progress(f"backtest {a}", d, t),
                )
                out[alias] = fc
                path = Path(cfg.paths.outputs_dir) / "backtest" / f"forecasts_{alias}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                fc.to_parquet(path)
                mlflow.log_metric("forecast_rows", len(fc))
    return out


def step_evaluate(
    cfg: Config, panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, pd.Series, str]:
    with mlflow.start_run(run_name="evaluate"):
        log_context(cfg, "evaluate")
        table = loss_table(scored(forecasts, panel))
        selected, ranking = select_model(table, cfg.selection.horizon)
        for row in table.itertuples():
            mlflow.log_metric(f"qlike_h{row.horizon_days}_{row.model}_{row.asset}", row.qlike)
        for model, value in ranking.items():
            mlflow.log_metric(f"qlike_h{cfg.selection.horizon}_mean_{model}", value)
        mlflow.log_params({"selected": selected, "selection_metric": cfg.selection.metric})
        mlflow.set_tag("selection.reason", f"lowest mean QLIKE at h={cfg.selection.horizon}: "
                       + ", ".join(f"{m}={v:.4f}" for m, v in ranking.items()))
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "loss_table.csv"
            table.to_csv(csv, index=False)
            (Path(tmp) / "loss_table.md").write_text(table.to_markdown(index=False))
            mlflow.log_artifacts(tmp, "comparison")
    return table, ranking, selected


def step_register(
    cfg: Config,
    panel: pd.DataFrame,
    selected: str,
    forecasts: pd.DataFrame,
    ranking: pd.Series,
) -> tuple[str, bool]:
    """Refit the selected forecaster on all data, bundle it with the policy, register, promote."""
    with mlflow.start_run(run_name="register") as run:
        log_context(cfg, "register", {"model": selected})
        features = feature_view(panel)
        fit_cutoff = features.index.get_level_values("date").max()
        model = build_forecaster(selected, cfg.models, cfg.backtest.horizons).fit(features)
        bundle = {
            "format": BUNDLE_FORMAT,
            "forecaster": model.state(),
            "fit_cutoff": fit_cutoff.date().isoformat(),
            "policy": cfg.policy.model_dump(mode="json"),
            "stale_after_days": cfg.data.stale_after_days,
            "std_losses": std_losses_from_forecasts(forecasts, panel),
        }
        info = registry.log_policy_model(bundle)
        version = registry.register(
            info.model_uri, cfg.registry.model_name,
            {"forecaster": selected, "fit_cutoff": bundle["fit_cutoff"],
             "run_id": run.info.run_id},
        )
        registry.set_alias(cfg.registry.model_name, registry.CHALLENGER, version,
                           f"new version from run {run.info.run_id}")
        # Gate (first cut): the challenger is the backtest's selected model, so it is promoted.
        # Coverage- and capital-based gates replace this once the policy backtest exists.
        reason = f"selected by lowest QLIKE ({selected}={ranking.iloc[0]:.4f})"
        promoted = registry.promote(cfg.registry.model_name, version, True, reason)
        mlflow.log_params({"model_version": version, "promoted": promoted})
    return version, promoted


def run(cfg: Config, as_of: dt.date | None = None, progress: Progress = _noop) -> RunResult:
    """Run the whole pipeline on ``cfg.paths.data_dir`` and publish parameters as of ``as_of``."""
    setup(cfg)
    progress("load data", 0, 1)
    market = load_market(cfg.paths.data_dir, cfg.data.assets)
    progress("features", 0, 1)
    panel, fp = step_features(cfg, market)
    forecasts = step_backtest(cfg, panel, progress)
    progress("evaluate", 0, 1)
    table, ranking, selected = step_evaluate(cfg, panel, forecasts)
    progress("register", 0, 1)
    version, promoted = step_register(cfg, panel, selected, forecasts[selected], ranking)
    progress("serve", 0, 1)
    served = serve(cfg, as_of)
    return RunResult(fp, table, ranking, selected, version, promoted, served)

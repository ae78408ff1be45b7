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
from models.registry import REGISTRY, build_forecaster
from pipelines import registry
from pipelines.config import Config
from pipelines.evaluate import loss_table, scored, select_model
from pipelines.gate import gate
from pipelines.policy_compare import compare_policies
from pipelines.policy_plots import margin_path_figures
from pipelines.tracking import log_context, setup
from serving.apply import BUNDLE_FORMAT, bundle_forecasts
from serving.serve import ServeResult, serve

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunResult:
    fingerprint: str
    table: pd.DataFrame          # loss per model × asset × horizon
    ranking: pd.Series           # mean QLIKE at the selection horizon, best first
    selected: str
    policy_summary: pd.DataFrame  # policy backtest: one row per policy × asset
    model_version: str
    promoted: bool
    gate_reason: str
    served: ServeResult | None   # None when run(publish=False)


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


def step_policy(
    cfg: Config, panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame], selected: str,
    progress: Progress = _noop,
) -> pd.DataFrame:
    """Replay the policy and its comparators on the walk-forward forecasts; log everything."""
    with mlflow.start_run(run_name="policy-backtest"):
        log_context(cfg, "policy-backtest", {"model": selected})
        ewma = forecasts.get("ewma94")
        if ewma is None and "ewma94" in REGISTRY:
            bt = cfg.backtest
            ewma = walk_forward(lambda: build_forecaster("ewma94", cfg.models, bt.horizons),
                                panel, bt.oos_start, bt.refit_every, bt.horizons,
                                bt.min_train_days)
        progress("policy backtest", 0, 1)
        summary, paths, stress = compare_policies(panel, forecasts, selected, cfg, ewma)
        progress("policy backtest", 1, 1)
        for row in summary.itertuples():
            for metric in ("breaches", "christoffersen_lr_cc", "mean_mmf", "bad_debt_sum"):
                mlflow.log_metric(f"{metric}.{row.policy}.{row.asset}".replace(":", "_"),
                                  float(getattr(row, metric)))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            summary.to_csv(out / "policy_summary.csv", index=False)
            (out / "policy_summary.md").write_text(summary.to_markdown(index=False))
            stress.to_csv(out / "stress_episodes.csv", index=False)
            (out / "stress_episodes.md").write_text(stress.to_markdown(index=False))
            for asset, fig in margin_path_figures(paths[f"policy:{selected}"]).items():
                fig.savefig(out / f"margin_path_{asset}.png", dpi=90)
            mlflow.log_artifacts(tmp, "policy")
        dest = Path(cfg.paths.outputs_dir) / "backtest"
        summary.to_csv(dest / "policy_summary.csv", index=False)
        stress.to_csv(dest / "stress_episodes.csv", index=False)
    return summary


def step_register(
    cfg: Config,
    panel: pd.DataFrame,
    selected: str,
    forecasts: pd.DataFrame,
    ranking: pd.Series,
    summary: pd.DataFrame,
) -> tuple[str, bool, str]:
    """Refit the selected forecaster on all data, bundle it with the policy, register, gate."""
    name = cfg.registry.model_name
    with mlflow.start_run(run_name="register") as run:
        log_context(cfg, "register", {"model": selected})
        features = feature_view(panel)
        fit_cutoff = features.index.get_level_values("date").max()
        model = build_forecaster(selected, cfg.models, cfg.backtest.horizons).fit(features)
        bundle = {
            "format": BUNDLE_FORMAT,
            "forecaster": model.state(),
            "fit_cutoff": fit_cutoff.date().isoformat(),
            "config": cfg.resolved(),
            "forecasts": bundle_forecasts(forecasts, cfg.features.update_interval_days),
        }
        info = registry.log_policy_model(bundle)
        mine = summary[summary["policy"] == f"policy:{selected}"]
        version = registry.register(
            info.model_uri, name,
            {"forecaster": selected, "fit_cutoff": bundle["fit_cutoff"],
             "run_id": run.info.run_id, "qlike": f"{ranking.iloc[0]:.6f}",
             "policy.mean_mmf": f"{mine['mean_mmf'].mean():.6f}"},
        )
        registry.set_alias(name, registry.CHALLENGER, version,
                           f"new version from {run.info.run_id}")
        champion = registry.champion_version(name)
        champ_alias = registry.version_tag(name, champion, "forecaster") if champion else None
        champ_rows = summary[summary["policy"] == f"policy:{champ_alias}"] if champ_alias else None
        decision = gate(mine, champ_rows, cfg.registry.gate)
        passed, reason = decision.passed, decision.reason
        if not passed and champion is None and cfg.registry.gate.promote_first:
            passed, reason = True, f"first version promoted with its gate result: {reason}"
        promoted = registry.promote(name, version, passed, reason)
        mlflow.log_params({"model_version": version, "promoted": promoted})
        mlflow.set_tag("gate.reason", reason)
    return version, promoted, reason


def run(
    cfg: Config, as_of: dt.date | None = None, progress: Progress = _noop, publish: bool = True
) -> RunResult:
    """Run the whole pipeline on ``cfg.paths.data_dir``; publish parameters as of ``as_of``
    unless ``publish`` is False (``volmargin retrain`` trains and promotes, serving is separate).
    """
    setup(cfg)
    progress("load data", 0, 1)
    market = load_market(cfg.paths.data_dir, cfg.data.assets)
    progress("features", 0, 1)
    panel, fp = step_features(cfg, market)
    forecasts = step_backtest(cfg, panel, progress)
    progress("evaluate", 0, 1)
    table, ranking, selected = step_evaluate(cfg, panel, forecasts)
    summary = step_policy(cfg, panel, forecasts, selected, progress)
    progress("register", 0, 1)
    version, promoted, reason = step_register(cfg, panel, selected, forecasts[selected],
                                              ranking, summary)
    served = None
    if publish:
        progress("serve", 0, 1)
        served = serve(cfg, as_of)
    return RunResult(fp, table, ranking, selected, summary, version, promoted, reason, served)

"""The tail-forecast step: walk forward every enabled tail model, score it, log it to MLflow.

One parent run ``tail-backtest`` with one **nested run per tail model** (its pooled FZ0 at
each level on the evaluation period, its DM p-value against the best classical model of the
selection period, and how many assets pass one-sided coverage and independence at 99%), and
the scoring tables of :func:`pipelines.evaluation.tail_compare.run_tail_backtest` as CSV and
Markdown artifacts. The same tables are written under ``outputs/tail/`` for
``volmargin report``.

The step runs inside ``volmargin run`` when ``tail.in_run`` is set, and on its own as
``volmargin tail`` (the seven models' walk-forwards take a few minutes on two cores, more than
the daily run's budget). Inside the run the choice spans both kinds: when the rule ranks the
frozen tail-driven policy first, it is the one the run registers (:func:`pipelines.steps.
step_register`); on its own the step registers nothing and says what the rule prefers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd

from configs.schema import Config
from pipelines.evaluation.coverage import MIN_VERDICT_DAYS, too_few_days
from pipelines.evaluation.tail_compare import POOLED_STAGE, run_tail_backtest
from pipelines.ops.lines import capped
from pipelines.run import EXIT_COMPLETED_WITH_FAILURES, MAX_DIAGNOSTIC_LINES, skipped_file_lines
from serving.layout import step_outputs
from serving.ops.tracking import log_context, metric_key

if TYPE_CHECKING:
    from pipelines.policy_eval.tail_driven import TailPolicyEvaluation

HEADLINE_LEVEL = 0.99


@dataclass(frozen=True)
class TailStep:
    forecasts: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    out_dir: Path
    # what the policy part wants read at the end of the run (tail_driven.across_lines)
    warnings: list[str] = field(default_factory=list)
    # the tail-driven policies' evaluation (None without tail.drive_policy or forecasts)
    policy: TailPolicyEvaluation | None = None


def model_metrics(model: str, tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """The figures a reviewer compares tail models by, for one model's nested run."""
    out: dict[str, float] = {}
    fz0 = tables.get("fz0_evaluation", pd.DataFrame())
    for r in fz0[fz0.get("model", pd.Series(dtype=str)) == model].itertuples():
        out[metric_key(f"fz0_{r.side}_{r.level:g}")] = float(r.fz0)
    dm = tables.get("dm", pd.DataFrame())
    for r in dm[dm.get("model", pd.Series(dtype=str)) == model].itertuples():
        if r.model != r.benchmark and np.isfinite(r.p_better):
            out[metric_key(f"dm_p_better_vs_{r.benchmark}")] = float(r.p_better)
    bt = tables.get("backtests", pd.DataFrame())
    if len(bt) and "passes" in bt:
        mine = bt[(bt["model"] == model) & (bt["side"] == "long")]
        out["assets_passing_99_long"] = float(mine["passes"].sum())
        out["assets_99_long"] = float(len(mine))
    return out


def step_tail(cfg: Config, panel: pd.DataFrame,
              progress: Callable[[str, int, int], None] | None = None,
              inside_run: bool = False, fingerprint: str | None = None) -> TailStep:
    """Walk forward and score the enabled tail models; log and write the tables.
    ``inside_run``: called by ``volmargin run`` (``tail.in_run``), whose choice then spans
    both kinds and registers the policy ranked first; ``volmargin tail`` registers nothing."""
    out_dir = step_outputs(Path(cfg.paths.outputs_dir) / "tail")
    with mlflow.start_run(run_name="tail-backtest"):
        log_context(cfg, "tail-backtest")
        mlflow.log_params({"tail_models": ",".join(cfg.tail.enabled),
                           "levels": ",".join(f"{x:g}" for x in cfg.tail.levels),
                           "refit_every": cfg.tail.refit_every})
        forecasts, tables = run_tail_backtest(
            panel, cfg, (lambda m, k, n: progress(f"tail {m}", k, n)) if progress else None)
        forecasts.to_parquet(out_dir / "forecasts.parquet")
        for name, table in tables.items():
            table.to_csv(out_dir / f"{name}.csv", index=False)
            mlflow.log_text(table.to_csv(index=False), f"tail/{name}.csv")
            mlflow.log_text(table.to_markdown(index=False, floatfmt=".4f"), f"tail/{name}.md")
        for model in forecasts["model"].unique():
            with mlflow.start_run(run_name=f"tail:{model}", nested=True):
                log_context(cfg, "tail-backtest", {"model": str(model)})
                mlflow.log_metrics(model_metrics(str(model), tables))
        warnings: list[str] = []
        policy = None
        if cfg.tail.drive_policy and len(forecasts):
            from pipelines.policy_eval.tail_driven import across_lines
            from pipelines.tail_policy import step_tail_policy

            policy = step_tail_policy(cfg, panel, forecasts, out_dir, one_choice=inside_run,
                                      fingerprint=fingerprint, notes=warnings)
            warnings += across_lines(policy.across, registers=inside_run)
    return TailStep(forecasts, tables, out_dir, warnings, policy)


def headline(tables: dict[str, pd.DataFrame], side: str = "long") -> pd.DataFrame:
    """Evaluation-period pooled FZ0 at 99% per model with its DM p-value against the best
    classical model and the assets passing coverage + independence (the README's table)."""
    fz0 = tables["fz0_evaluation"]
    fz0 = fz0[(fz0["side"] == side) & np.isclose(fz0["level"], HEADLINE_LEVEL)]
    cols = ["model", "fz0", "days"] + [c for c in ("asset_days", "coverage") if c in fz0]
    out = fz0[cols].sort_values("fz0").reset_index(drop=True)
    choice = tables.get("choice", pd.DataFrame())
    best = str(choice.iloc[0].get("best_classical", "")) if len(choice) else ""
    dm = tables.get("dm", pd.DataFrame())
    if best and len(dm):
        vs = dm[(dm["benchmark"] == best)].set_index("model")["p_better"]
        out[f"dm_p_vs_{best}"] = out["model"].map(vs)
    bt = tables.get("backtests", pd.DataFrame())
    if len(bt) and "passes" in bt:
        mine = bt[bt["side"] == side].groupby("model")["passes"]
        out["assets_passing"] = out["model"].map(mine.sum()).astype("Int64")
        out["assets"] = out["model"].map(mine.size()).astype("Int64")
    return out


def failure_lines(step: TailStep, skipped: dict[str, str] | None = None,
                  most: int = MAX_DIAGNOSTIC_LINES) -> list[str]:
    """What the tail step left out, one line each (empty when nothing was): tail models whose
    walk-forward failed, assets a model declined to fit, statistics undefined on a
    model/side/asset with enough days to judge (:func:`not_judged_lines` says the others),
    skipped data files."""
    table = step.tables.get("failures", pd.DataFrame())
    models = [f"tail model failed: {r.model}: {r.reason}"
              for r in table.itertuples() if r.stage == "walk-forward"]
    models += [f"tail model declined: {r.model} {r.asset} {r.side}: {r.reason}"
               for r in table.itertuples() if r.stage == "fit"]
    failing = table[~too_few_days(table, "days")] if len(table) else table
    stats = [f"statistic undefined: {' '.join(p for p in (r.stage, r.model, r.side, r.asset) if p)}"
             f": {r.reason}" for r in failing.itertuples()
             if r.stage not in ("walk-forward", "fit", POOLED_STAGE)]
    stats = capped(stats, most, "(outputs/tail/failures.csv)")
    return models + stats + skipped_file_lines(skipped or {})


def not_judged_lines(step: TailStep) -> list[str]:
    """One line per asset whose tail statistics were undefined on too few scored days, and
    one per model left out of a pooled comparison (notes: the exit status does not change)."""
    table = step.tables.get("failures", pd.DataFrame())
    if not len(table):
        return []
    pooled = table[table["stage"] == POOLED_STAGE]
    short = table[too_few_days(table, "days") & (table["stage"] != POOLED_STAGE)]
    return [f"not judged: {asset or 'pooled over assets'}: tail scored on "
            f"{int(g['days'].max())} days (< {MIN_VERDICT_DAYS}); {len(g)} statistics not "
            f"computable yet ({', '.join(sorted(set(g['stage'])))})"
            for asset, g in short.groupby("asset", sort=True)] + [
        f"not pooled: {r.model} {r.side}: {r.reason}" for r in pooled.itertuples()]


def tail_job(cfg: Config, as_of: dt.date | None, keep_going: bool = False,
             say: Callable[[str], None] = print) -> int:
    """``volmargin tail``: features as of ``as_of`` (cut there), then :func:`step_tail`.

    Returns the exit status: 0, or :data:`pipelines.run.EXIT_COMPLETED_WITH_FAILURES` when a
    tail model, a statistic or (with ``keep_going``) a data file was left out (listed)."""
    from features.store import load_or_build
    from serving.market import candle_cache, load_as_of
    from serving.ops.lock import EX_TEMPFAIL, LockHeldError, training_lock
    from serving.ops.tracking import setup

    try:  # one training job at a time: outputs/tail and the run's backtest it reads
        with training_lock(cfg.paths.outputs_dir, "tail"):
            setup(cfg)
            pit = load_as_of(cfg.paths.data_dir, cfg.data.assets, as_of, keep_going=keep_going,
                             max_file_mb=cfg.data.max_file_mb, cache=candle_cache(cfg))
            # built and fingerprinted as `volmargin run` builds it (the market already cut at
            # the as-of): the same panel has the same fingerprint, and the run's frozen
            # policy is recognised as of this panel (tail_policy.frozen_variance_policy)
            panel, fingerprint, _ = load_or_build(pit.market, cfg.features,
                                                  Path(cfg.paths.outputs_dir) / "features")
            step = step_tail(cfg, panel, lambda what, k, n: say(f"{what}: refit {k}/{n}")
                             if k == n else None, fingerprint=fingerprint)
    except LockHeldError as exc:
        say(str(exc))
        return EX_TEMPFAIL
    say(headline(step.tables).to_markdown(index=False, floatfmt=".4f"))
    for line in not_judged_lines(step):  # young assets: too few days, not failures
        say(f"note: {line}")
    for line in step.warnings:
        say(f"warning: {line}")
    lines = failure_lines(step, dict(pit.market.failures))
    if lines:
        say("Completed with failures, left out of the tables:\n  " + "\n  ".join(lines))
    return EXIT_COMPLETED_WITH_FAILURES if lines else 0

"""The tail step's policy part: replay the policies whose MMF comes from the tail models'
walk-forward ES, freeze one on the selection period, write and log the comparison.

Runs inside the ``tail-backtest`` MLflow run (:func:`pipelines.tail_step.step_tail`) when
``tail.drive_policy`` is set. σ for every tail-driven candidate is the ``ewma94``
walk-forward (:data:`pipelines.policy_eval.tail_driven.SIGMA_MODEL`), recomputed here on the
same panel. The frozen variance-driven policy is read from what ``volmargin run`` wrote
under ``outputs/backtest/`` (``frozen.json``, ``policy_paths.parquet``) and reported beside
it when present.

Files under ``outputs/tail/``: ``policy_headline.csv`` (evaluation beside selection, capital
saving against EWMA-FHS at 99 %), ``policy_acceptance.csv`` (per policy × period × asset),
``policy_selection.csv`` (the candidates ranked on the selection period),
``policy_capital.csv`` (where each one's capital goes on the evaluation period, beside its
tail term and its margin's swings), ``policy_as_safe.csv`` (EWMA-FHS's cheapest level of
its sweep as safe as the frozen candidate), ``policy_fallback.csv`` and
``policy_frozen.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import pandas as pd

from configs.schema import Config
from models.backtest import WalkForward, backtest
from models.registry import build_forecaster
from pipelines.policy_eval.pipeline import known_before, run_identity
from pipelines.policy_eval.protocol import EVALUATION, period_label
from pipelines.policy_eval.tail_driven import (
    SIGMA_MODEL,
    TailPolicyEvaluation,
    evaluate_tail_policies,
    tail_capital_table,
)
from serving.ops.tracking import metric_key


def sigma_forecasts(cfg: Config, panel: pd.DataFrame) -> WalkForward:
    """Walk-forward ``ewma94`` forecasts of the update interval (the σ the policy reads),
    with what it left out."""
    bt, u = cfg.backtest, cfg.features.update_interval_days
    return backtest(lambda: build_forecaster(SIGMA_MODEL, cfg.models, [u]), panel,
                    bt.oos_start, bt.refit_every, [u], bt.min_train_days,
                    plausibility=bt.plausibility, chunk_assets=bt.chunk_assets)


def judged_sigma(sigma: WalkForward, cfg: Config) -> pd.DataFrame:
    """The σ forecasts the tail-driven policies are replayed and chosen on: the walk-forward's
    healthy rows and, of a triple that failed after the selection period, the rows made
    before the failure up to that period's end (:func:`pipelines.policy_eval.pipeline.
    known_before`): without them the asset would leave the choice on information from after
    the freeze."""
    judged, _ = known_before({SIGMA_MODEL: sigma.forecasts}, {SIGMA_MODEL: sigma.withheld},
                             cfg.evaluation.selection_end)
    return judged[SIGMA_MODEL]


def frozen_variance_policy(outputs_dir: Path, identity: dict[str, str | None] | None = None,
                           notes: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The frozen variance-driven policy's path from ``volmargin run`` (empty if none).

    ``identity`` (:func:`run_identity` of the caller's panel and config): a ``frozen.json``
    recording another (another data or as-of, other settings, or none: written before it was
    recorded) is of another run, not compared (said in ``notes``)."""
    bt = Path(outputs_dir) / "backtest"
    if not ((bt / "frozen.json").is_file() and (bt / "policy_paths.parquet").is_file()):
        return {}
    record = json.loads((bt / "frozen.json").read_text())
    if identity is not None:
        differ = [k for k, v in identity.items() if v is not None and record.get(k) != v]
        if differ:
            if notes is not None:
                notes.append(f"{bt / 'frozen.json'} is of another run ({', '.join(differ)} "
                             f"differ{'s' if len(differ) == 1 else ''}: another data, as-of "
                             "or settings): the tail-driven policies are not compared with "
                             "its frozen policy; run `volmargin run` on these first")
            return {}
    name = record["policy"]
    # only that policy's rows are read (every candidate's paths: 0.7 M rows at 12 assets)
    mine = pd.read_parquet(bt / "policy_paths.parquet", filters=[("policy", "==", name)])
    mine = mine.drop(columns="policy").reset_index(drop=True)
    return {name: mine} if len(mine) else {}


def step_tail_policy(cfg: Config, panel: pd.DataFrame, forecasts: pd.DataFrame,
                     out_dir: Path, one_choice: bool = False, fingerprint: str | None = None,
                     notes: list[str] | None = None) -> TailPolicyEvaluation:
    """Evaluate the tail-driven policies on ``forecasts``; write and log the tables.
    ``one_choice``: inside ``volmargin run``, whose choice spans both kinds (recorded in
    ``policy_frozen.json``). ``fingerprint``: the panel's, so that only the frozen policy of a
    run on the same panel and settings is compared (:func:`frozen_variance_policy`; why not,
    in ``notes``)."""
    reference = frozen_variance_policy(Path(cfg.paths.outputs_dir),
                                       run_identity(cfg, fingerprint), notes)
    sigma = sigma_forecasts(cfg, panel)
    ev = dataclasses.replace(
        evaluate_tail_policies(panel, judged_sigma(sigma, cfg), forecasts, cfg, reference,
                               next(iter(reference), None)),
        sigma=sigma.forecasts,  # what a registered bundle stores: the healthy rows only
        sigma_failures=sigma.failures)  # what the σ walk-forward left out
    tables = {"policy_headline": ev.headline, "policy_acceptance": ev.table,
              "policy_selection": ev.frozen.table, "policy_fallback": ev.fallback,
              "policy_capital": tail_capital_table(ev, forecasts, cfg),
              "policy_as_safe": ev.as_safe}
    for name, table in tables.items():
        table.to_csv(out_dir / f"{name}.csv", index=False)
        mlflow.log_text(table.to_csv(index=False), f"tail/{name}.csv")
    frozen = {"policy": ev.frozen.name, "tail_model": ev.frozen.forecaster,
              "settings": ev.frozen.overrides, "reason": ev.frozen.reason,
              "frozen_at": ev.frozen.frozen_at, "sigma_model": SIGMA_MODEL,
              "comparator": ev.ewma, "reference": sorted(reference),
              "selection_period": [str(cfg.evaluation.selection_start),
                                   str(cfg.evaluation.selection_end)],
              "evaluation_period": period_label(cfg, EVALUATION, ev.paths[ev.frozen.name]),
              # one choice spanning both kinds: which frozen policy its rule would keep, and
              # whether this command's choice spans both (inside volmargin run: it registers
              # the one ranked first)
              "across_kinds": ev.across, "one_choice": bool(one_choice)}
    (out_dir / "policy_frozen.json").write_text(json.dumps(frozen, indent=2))
    mlflow.log_dict(frozen, "tail/policy_frozen.json")
    mlflow.set_tags({"tail_policy.frozen": ev.frozen.name,
                     "tail_policy.reason": ev.frozen.reason[:4000],
                     **({"tail_policy.rule_prefers": ev.across["rule_prefers"]}
                        if ev.across else {})})
    head = ev.headline.set_index("policy")
    if ev.frozen.name in head.index:
        row = head.loc[ev.frozen.name]
        mlflow.log_metrics({metric_key(f"tail_policy.{k}"): float(row[k])
                            for k in row.index
                            if k.endswith(("_eva", "_sel")) and pd.notna(row[k])})
    return ev

"""The pipeline's steps. Each opens one MLflow run and does the tracking and storage around
pure computations that live in ``features/``, ``models/``, ``pipelines/`` and ``serving/``."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric

from configs.schema import Config
from features.freshness import freshness_report
from features.loaders import MarketData
from features.plots import rolling_correlations, rv_vs_dvol, worst_losses
from features.schema import feature_view
from features.store import load_or_build
from features.summary import feature_summary
from models.backtest import (
    FAILURE_COLUMNS,
    Mapper,
    NoForecastsError,
    backtest,
    no_eligible_asset,
    whole_failures,
)
from models.registry import REGISTRY, build_forecaster
from pipelines.engine import Engine
from pipelines.evaluation.common import common_assets
from pipelines.evaluation.comparison import comparison, diagnostic_failures
from pipelines.evaluation.evaluate import loss_table, narrowed_support, scored
from pipelines.evaluation.plots import forecast_vs_realized, loss_over_time
from pipelines.policy_eval.frontier import frontier_figure
from pipelines.policy_eval.pipeline import (
    evaluate_policies,
    frozen_record,
    preferred_lines,
    stress_day_lines,
)
from pipelines.policy_eval.plots import margin_path_figures
from pipelines.policy_eval.protocol import EVALUATION
from pipelines.selection.gate import FIRST_PROMOTED, gate, not_acceptable, policy_rows
from pipelines.selection.select import Selection, period_comparison
from pipelines.stress.gate import stress_gate_refusal
from pipelines.walk_forwards import start_walk_forwards
from serving.apply import BUNDLE_FORMAT, bundle_forecasts
from serving.layout import step_outputs
from serving.ops import registry
from serving.ops.tracking import code_identity, log_context, metric_key

if TYPE_CHECKING:
    from pipelines.policy_eval.tail_driven import TailPolicyEvaluation

PARAM_CHARS = 6000  # MLflow's longest param value

Progress = Callable[[str, int, int], None]


def _noop(step: str, done: int, total: int) -> None:
    return None


def _log_tables(tables: dict[str, pd.DataFrame], artifact_dir: str | None) -> None:
    """Each table as CSV and Markdown under one artifact directory."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, table in tables.items():
            table.to_csv(Path(tmp) / f"{name}.csv", index=False)
            (Path(tmp) / f"{name}.md").write_text(table.to_markdown(index=False))
        mlflow.log_artifacts(tmp, artifact_dir)


def step_features(cfg: Config, market: MarketData) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """The feature panel, its fingerprint and the freshness report of every series."""
    with mlflow.start_run(run_name="features"):
        log_context(cfg, "features")
        panel, fp, reused = load_or_build(
            market, cfg.features, Path(cfg.paths.outputs_dir) / "features")
        summary = feature_summary(panel)
        fresh = freshness_report(market, None, cfg.data.stale_after_days,
                                 cfg.features.macro_max_carry_days)
        names = ",".join(sorted(market.daily))
        # MLflow cuts a param at 6,000 characters (about 1,000 assets): the list goes to an
        # artifact, the param holds it whole or says where it is
        mlflow.log_params({"fingerprint": fp, "reused": reused, "n_assets": len(market.daily),
                           "assets": names if len(names) <= PARAM_CHARS
                           else f"{len(market.daily)} assets: features/assets.txt"})
        mlflow.log_text("\n".join(sorted(market.daily)) + "\n", "features/assets.txt")
        mlflow.log_metrics({"rows": len(panel), "assets": len(market.daily),
                            "columns": summary["columns"], "gaps": len(market.gaps),
                            "load_failures": len(market.failures),
                            "stale_series": int(fresh["stale"].sum())})
        mlflow.log_dict(summary, "features/summary.json")
        mlflow.log_table(fresh.astype(str), "features/freshness.json")
        if market.failures:
            mlflow.log_dict(market.failures, "features/failures.json")
        if market.warnings or market.hourly_problems:
            mlflow.log_dict({"warnings": market.warnings,
                             "hourly_problems": market.hourly_problems},
                            "features/warnings.json")
        if len(market.gaps):
            mlflow.log_table(market.gaps.astype(str), "features/gaps.json")
        for asset in sorted({"BTC", "ETH"} & set(market.daily)):
            for plot in (rv_vs_dvol, rolling_correlations, worst_losses):
                mlflow.log_figure(plot(panel, asset), f"features/{plot.__name__}_{asset}.png")
    return panel, fp, fresh


@dataclass(frozen=True)
class BacktestStep:
    forecasts: dict[str, pd.DataFrame]  # healthy rows by alias; a model that failed everywhere
                                        # is absent
    table: pd.DataFrame                 # loss per model × asset × horizon
    compared: pd.DataFrame              # + DM/MCS/MZ/VaR (with *_note where undefined)
    failures: pd.DataFrame              # failed (model, asset, horizon): stage, reason, rows
    diagnostics: pd.DataFrame           # diagnostics that could not be computed, and why
    narrowed: list[str] = field(default_factory=list)  # pairs compared on few common days
    # per model, the failed triples' forecasts made before their first failure
    # (:attr:`models.backtest.WalkForward.withheld`): for the policy choice only
    withheld: dict[str, pd.DataFrame] = field(default_factory=dict)


def comparison_with_failures(compared: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """The comparison table as logged: healthy rows, then one row per failed (model, asset,
    horizon) with NaN metrics and its ``failure`` reason (empty on healthy rows). A triple
    that only had forecasts dropped alone (stage ``unverifiable``) or a refit declined
    (``declined``) is a healthy row."""
    failed = whole_failures(failures).rename(
        columns={"reason": "failure"})[["model", "asset", "horizon_days", "failure"]]
    return pd.concat([compared.assign(failure=""), failed], ignore_index=True)


def step_backtest(
    cfg: Config, panel: pd.DataFrame, progress: Progress = _noop, mapper: Mapper = map,
    engine: Engine | None = None,
) -> BacktestStep:
    """Walk-forward every enabled forecaster (one nested run each), then compare them.

    A forecaster that raises or forecasts implausibly fails only the (model, asset, horizon)
    triples concerned (:func:`models.backtest.backtest`): they are left out of the forecasts
    and the comparison handed on, listed in ``failures`` and logged (tag ``failures``,
    artifact ``failures.csv``). ``mapper`` runs the walk-forward's tasks (builtin ``map``:
    sequentially, here; ``engine``, when given, is used instead).

    Every model's walk-forward is started before any is read (:func:`start_backtest`), so on
    a cluster the workers go from one model's tasks to the next without waiting for the
    slowest refit of each: the pooled models first — one long task per refit, which would
    otherwise be the last to finish with the other workers idle (longest tasks first) — then
    the per-asset ones. The feature panel is built and sent to the workers once for all of
    them. Locally the tasks run when read, in the configured model order, as before; the
    forecasts are the same either way (a test compares them).
    """
    bt = cfg.backtest
    forecasts: dict[str, pd.DataFrame] = {}
    withheld: dict[str, pd.DataFrame] = {}
    failed: list[pd.DataFrame] = []
    run_ids: dict[str, str] = {}
    out_dir = step_outputs(Path(cfg.paths.outputs_dir) / "backtest")
    if engine is not None:
        mapper = engine.mapper
    with mlflow.start_run(run_name="backtest"), (
            engine.sharing() if engine is not None else contextlib.nullcontext()):
        log_context(cfg, "backtest")
        mlflow.log_params({"oos_start": bt.oos_start, "refit_every": bt.refit_every,
                           "horizons": bt.horizons, "models": ",".join(cfg.models.enabled)})
        pending = start_walk_forwards(cfg, panel, mapper)
        for alias in cfg.models.enabled:
            with mlflow.start_run(run_name=alias, nested=True) as child:
                log_context(cfg, "backtest", {"model": alias})
                wf = pending[alias].result(
                    lambda d, t, a=alias: progress(f"backtest {a}", d, t))
                fc = wf.forecasts
                run_ids[alias] = child.info.run_id
                if len(fc):
                    forecasts[alias] = fc
                if len(wf.withheld):
                    withheld[alias] = wf.withheld
                failed.append(wf.failures)
                fc.to_parquet(out_dir / f"forecasts_{alias}.parquet")
                whole = len(whole_failures(wf.failures))
                mlflow.log_metrics({"forecast_rows": len(fc), "failed_pairs": whole,
                                    "task_seconds": round(wf.task_seconds, 3)})
                if len(wf.failures):
                    mlflow.set_tag("failures", len(wf.failures))
                    _log_tables({"failures": wf.failures}, None)
        failures = pd.concat(failed, ignore_index=True) if failed else pd.DataFrame(
            columns=FAILURE_COLUMNS)
        mlflow.set_tag("failures", len(failures))
        failures.to_csv(out_dir / "failures.csv", index=False)
        _log_tables({"failures": failures}, None)
        if not forecasts:
            if not len(failures):  # no model failed: no asset was ever eligible
                raise NoForecastsError(no_eligible_asset(
                    panel, f"backtest.oos_start ({bt.oos_start})", bt.refit_every,
                    bt.min_train_days, "backtest"))
            raise NoForecastsError("every forecaster failed on every asset:\n" + "\n".join(
                f"  {r.model} {r.asset} h={r.horizon_days}: {r.reason}"
                for r in failures.itertuples()))
        progress("evaluate", 0, 1)
        scores = scored(forecasts, panel)
        table = loss_table(scores)
        narrowed = narrowed_support(forecasts, table)
        if narrowed:
            mlflow.log_dict({"narrowed_support": narrowed}, "comparison/narrowed_support.json")
        # the per-asset diagnostics fan out like the walk-forward (one pass when sequential)
        compared = comparison(scores, table, forecasts, panel,
                              mapper=None if mapper is map else mapper,
                              chunk_assets=bt.chunk_assets if engine is None else
                              engine.chunk_size(scores["asset"].nunique(), bt.chunk_assets))
        diagnostics = diagnostic_failures(compared)
        mlflow.set_tag("diagnostic_failures", len(diagnostics))
        if len(diagnostics):
            _log_tables({"diagnostic_failures": diagnostics}, "comparison")
        # per forecaster's nested run: the whole out-of-sample period's scores (qlike_h1.BTC,
        # through the selection period) and, below, the evaluation period's (qlike_eva_h1.BTC)
        metrics: dict[str, dict[str, float]] = {}
        for row in compared.itertuples():
            mine, h, a = metrics.setdefault(row.model, {}), row.horizon_days, row.asset
            mine[metric_key(f"qlike_h{h}.{a}")] = float(row.qlike)
            for name in ("dm_stat", "mcs_p", "mz_r2"):
                value = getattr(row, name)
                if pd.notna(value):
                    mine[metric_key(f"{name}_h{h}.{a}")] = float(value)
        for key, value in common_means(table, "qlike_h{h}").items():
            metrics.setdefault(key[0], {})[key[1]] = value
        logged = comparison_with_failures(compared, failures)
        logged.to_csv(out_dir / "comparison.csv", index=False)
        _log_tables({"comparison": logged, "loss_table": table}, "comparison")
        # the same comparison on the evaluation period alone: the whole period above runs
        # through the selection period, on which some forecasters' settings were chosen
        ev = cfg.evaluation
        evaluation = period_comparison(
            forecasts, panel, ev.evaluation_start, ev.evaluation_end,
            mapper=None if mapper is map else mapper,
            chunk_assets=bt.chunk_assets if engine is None else
            engine.chunk_size(scores["asset"].nunique(), bt.chunk_assets))
        if evaluation is not None:  # with the failed triples, as the whole period's
            judged = evaluation[evaluation["qlike"].notna()]
            for row in judged.itertuples():
                metrics.setdefault(row.model, {})[
                    metric_key(f"qlike_eva_h{row.horizon_days}.{row.asset}")] = float(row.qlike)
            for key, value in common_means(judged, "qlike_eva_h{h}").items():
                metrics.setdefault(key[0], {})[key[1]] = value
            evaluation = comparison_with_failures(evaluation, failures)
            evaluation.to_csv(out_dir / "comparison_evaluation.csv", index=False)
            _log_tables({"comparison_evaluation": evaluation}, "comparison")
        _log_batches({run_ids[m]: values for m, values in metrics.items() if m in run_ids})
        for asset in sorted({"BTC", "ETH"} & set(table["asset"])):
            mlflow.log_figure(forecast_vs_realized(scores, asset), f"plots/forecast_{asset}.png")
        for h in bt.horizons:
            mlflow.log_figure(loss_over_time(scores, h), f"plots/qlike_over_time_h{h}.png")
        progress("evaluate", 1, 1)
    return BacktestStep(forecasts, table, compared, failures, diagnostics, narrowed, withheld)


def common_means(scores: pd.DataFrame, stem: str) -> dict[tuple[str, str], float]:
    """(model, metric key) → each model's mean QLIKE at a horizon over the assets every model
    scored there (``{stem}.mean``; their number ``{stem}.assets``), so that the means logged
    side by side compare models on the same assets (the report's tables do the same)."""
    out: dict[tuple[str, str], float] = {}
    scored = scores[scores["qlike"].notna()]
    common_by_h = common_assets(scored)
    for h, rows in scored.groupby("horizon_days"):
        kept = rows[rows["asset"].isin(common_by_h[int(h)])]
        for model in rows["model"].unique():
            mine = kept[kept["model"] == model]
            key = stem.format(h=h)
            if len(mine):
                out[(model, f"{key}.mean")] = float(mine["qlike"].mean())
            out[(model, f"{key}.assets")] = float(len(mine))
    return out


def step_policy(
    cfg: Config, panel: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
    compared: pd.DataFrame, progress: Progress = _noop, engine: Engine | None = None,
    withheld: dict[str, pd.DataFrame] | None = None, fingerprint: str | None = None,
) -> tuple[Selection, pd.DataFrame, pd.DataFrame, list[str]]:
    """Replay candidates and comparators, choose on the selection period and freeze, report
    the evaluation period beside it (:mod:`pipelines.policy_eval.pipeline`); log everything.
    Returns the choice, the evaluation period's summary, the stress table and the warnings:
    one line per comparator the choice's rule would prefer (:func:`preferred_lines`) and per
    evaluation-period stress day no configured episode lists (:func:`stress_day_lines`).
    ``withheld``: :attr:`BacktestStep.withheld` (a failure after the selection period does
    not take a forecaster's asset out of the choice). ``fingerprint``: the panel's, recorded
    in ``frozen.json`` (:func:`~pipelines.policy_eval.pipeline.run_identity`)."""
    with mlflow.start_run(run_name="policy-backtest"):
        log_context(cfg, "policy-backtest")
        progress("policy backtest", 0, 2)
        ewma = forecasts.get("ewma94")
        if ewma is None and "ewma94" in REGISTRY:
            bt = cfg.backtest  # a comparator: assets it fails on are compared without it
            wf = backtest(lambda: build_forecaster("ewma94", cfg.models, bt.horizons),
                          panel, bt.oos_start, bt.refit_every, bt.horizons,
                          bt.min_train_days, plausibility=bt.plausibility,
                          chunk_assets=bt.chunk_assets)
            ewma = wf.forecasts  # its later failures, as known at the freeze (known_before)
            withheld = {**(withheld or {}), "ewma94": wf.withheld}
        ev = evaluate_policies(panel, forecasts, compared, cfg, ewma, engine, withheld)
        choice = ev.choice
        progress("policy backtest", 1, 2)
        mlflow.set_tags({"selection.model": choice.model, "selection.policy": choice.policy,
                         "selection.reason": choice.reason[:4000]})
        record = frozen_record(ev, cfg, fingerprint)
        mlflow.log_params({"frozen.policy": choice.policy, "frozen.forecaster": choice.model,
                           **{f"frozen.{k}": v for k, v in choice.overrides.items()},
                           "frozen.selection_period": "..".join(record["selection_period"]),
                           "frozen.evaluation_period": "..".join(record["evaluation_period"])})
        mlflow.log_dict(record, "policy/frozen.json")
        if ev.preferred:  # a comparator the rule ranks above the frozen policy
            mlflow.set_tag("selection.comparators_preferred",
                           ", ".join(c["policy"] for c in ev.preferred)[:4000])
        summary = ev.table[ev.table["period"] == "evaluation"].reset_index(drop=True)
        mlflow.log_metrics({  # one batch: a call per metric was a round trip each
            metric_key(f"{metric}.{row.policy}.{row.asset}"):
                float(getattr(row, metric))
            for row in summary.itertuples()
            for metric in ("breaches", "capital", "bad_debt_lt_sum", "stress_bad_debt")})
        # the policy's capital relative to each comparator's cheapest level as safe (its
        # safest where none is: ``as_safe`` 0), one batch
        safe = ev.as_safe[ev.as_safe["period"] == "evaluation"] if len(ev.as_safe) else ev.as_safe
        as_safe = {metric_key(f"as_safe.{row.family}.{row.measure}.{name}"): float(value)
                   for row in safe.itertuples()
                   for name, value in (("capital_vs", row.capital_vs), ("as_safe", row.as_safe))}
        if as_safe:
            mlflow.log_metrics(as_safe)
        if "period" in ev.stress_days:  # stress days found by rule, per period (0: none)
            found = ev.stress_days
            mlflow.log_metrics({
                f"stress_days.{period}.{kind}": float(n)
                for period in ("selection", "evaluation")
                for cut in [found[found["period"] == period]]
                for kind, n in (("found", len(cut)), ("unlisted", (cut["episode"] == "").sum()))})
        tables = {"acceptance": ev.table, "headline": ev.headline, "frontier": ev.frontier,
                  "stress_episodes": ev.stress, "joint_breaches": ev.joint,
                  "static_schedule": ev.static_schedule, "selection": choice.table,
                  "by_year": ev.by_year, "as_safe": ev.as_safe,
                  "choice_stability": ev.stability, "stress_days": ev.stress_days}
        _log_tables(tables, "policy")
        for period in ("evaluation", "selection"):
            points = ev.frontier[ev.frontier["period"] == period]
            if not len(points) or "capital" not in points:
                continue  # no day of that period in the data yet (an as-of inside the
                # selection period): no frontier to draw
            for measure in ("bad_debt", "stress_bad_debt"):
                mlflow.log_figure(frontier_figure(points, measure),
                                  f"policy/frontier_{measure}_{period}.png")
        for asset, fig in margin_path_figures(ev.paths[choice.policy]).items():
            mlflow.log_figure(fig, f"policy/margin_path_{asset}.png")
        dest = Path(cfg.paths.outputs_dir) / "backtest"
        for name, table in tables.items():
            table.to_csv(dest / f"policy_{name}.csv", index=False)
        summary.to_csv(dest / "policy_summary.csv", index=False)
        ev.stress.to_csv(dest / "stress_episodes.csv", index=False)
        (dest / "frozen.json").write_text(json.dumps(record, indent=2))  # the logged one
        pd.concat(ev.paths.values(), keys=ev.paths.keys(), names=["policy"]).reset_index(
            level=0).to_parquet(dest / "policy_paths.parquet")
        progress("policy backtest", 2, 2)
    return (choice, summary, ev.stress,
            [*preferred_lines(ev.preferred), *stress_day_lines(ev.stress_days, cfg)])


def failed_in_walk_forward(failures: pd.DataFrame, model: str, horizon: int
                           ) -> dict[str, str]:
    """Asset → reason for each asset ``model`` failed at ``horizon`` in its walk-forward (a
    fit that raised, no forecast, implausible forecasts: the triple was left out of the
    comparison and the policy backtest; forecasts dropped one by one do not count)."""
    if failures is None or not len(failures):
        return {}
    whole = whole_failures(failures)
    mine = whole[(whole["model"] == model) & (whole["horizon_days"] == horizon)]
    return {str(r.asset): f"{r.stage}: {r.reason}" for r in mine.itertuples()}


@dataclass(frozen=True)
class _TailVersion:
    """What a tail-driven version bundles beyond a variance-driven one."""

    cfg: Config                  # the run's config with the frozen tail policy's settings
    frozen: dict[str, Any]       # those settings (dotted keys), as the serve records them
    entry: dict[str, Any]        # the bundle's ``tail`` entry (serving.tail_source)
    alias: str                   # the tail model


def _tail_version(cfg: Config, features: pd.DataFrame, tail: TailPolicyEvaluation
                  ) -> _TailVersion:
    """The frozen tail-driven policy's bundle parts: its tail model refitted on every row of
    the assets the walk-forward's refit would take (``tail.min_train_days``), its walk-forward
    forecasts at the frozen level stored up to the fit cutoff (:mod:`serving.tail_source`)."""
    from pipelines.policy_eval.tail_driven import tail_overrides
    from serving.tail_source import refitted_entry

    alias = tail.frozen.forecaster
    frozen = dict(tail.frozen.overrides) | tail_overrides(alias)  # as its replay
    cfg = cfg.with_overrides(frozen)
    cutoff = features.index.get_level_values("date").max()
    mine = tail.tails[tail.tails["model"] == alias]
    return _TailVersion(cfg, frozen, refitted_entry(alias, cfg, features, cutoff, mine), alias)


class Registration(NamedTuple):
    """What :func:`step_register` did: the version, whether it became ``@champion``, whether
    its gate passed (a first version may be promoted though it did not), the gate's reason
    and the registered policy's name."""

    version: str
    promoted: bool
    gate_passed: bool
    reason: str
    policy: str


def _log_batches(by_run: dict[str, dict[str, float]], size: int = 1000) -> None:
    """Metrics to several runs, ``size`` at a time (MLflow's batch limit): one request per
    batch rather than per metric (~2.6 ms each on SQLite: minutes at 1,000 assets)."""
    client = MlflowClient()
    stamp = int(time.time() * 1000)
    for run_id, values in by_run.items():
        items = [Metric(key, value, stamp, 0) for key, value in values.items()]
        for start in range(0, len(items), size):
            client.log_batch(run_id, metrics=items[start:start + size])


def step_register(
    cfg: Config, panel: pd.DataFrame, choice: Selection, forecasts: pd.DataFrame,
    summary: pd.DataFrame, failed: dict[str, str] | None = None,
    tail: TailPolicyEvaluation | None = None, fingerprint: str | None = None,
) -> Registration:
    """Refit the selected forecaster on all data, bundle it with the policy, register, gate.

    The bundle names the assets on which the policy was not acceptable in the backtest the
    gate judged (``not_acceptable``; unproven ones are not listed): a version promoted as the
    store's first although its gate refused it (``registry.gate.promote_first``) is served
    with those assets frozen (:func:`serving.serve.gate_refused`).

    ``fingerprint``: the feature panel's, tagged on the version (``feature_fingerprint``) beside
    the code's version (``code_version``), so the registry says what a version was fitted on.

    ``failed`` (:func:`failed_in_walk_forward`) names the assets the forecaster failed in its
    walk-forward: the bundle carries them, and serving gives them the fail-safe (their
    margins were never validated), whatever a day's forecast looks like.

    ``tail``: the tail-driven policies' evaluation when the tail step ran inside the run. Its
    evaluation-period verdicts join ``summary``, so that the gate compares a challenger with
    a champion of either kind; and when the choice's rule ranks its frozen tail-driven policy
    above ``choice`` (:attr:`TailPolicyEvaluation.preferred`: one choice over both kinds),
    that policy is registered instead: its σ forecaster (``ewma94``) and its tail model
    refitted on all data (its stored forecasts: the tail walk-forward's), ``failed`` taken from
    the σ walk-forward, judged by the same gate. A tail model that cannot be refitted leaves
    the variance-driven choice registered, the gate's reason saying why."""
    name = cfg.registry.model_name
    note = ""
    features = feature_view(panel)
    version_tail: _TailVersion | None = None
    if tail is not None:
        judged = tail.table[(tail.table["period"] == EVALUATION)
                            & ~tail.table["policy"].isin(set(summary["policy"]))]
        summary = pd.concat([summary, judged], ignore_index=True)
        if tail.preferred:
            try:
                version_tail = _tail_version(cfg, features, tail)
            except Exception as err:  # the variance-driven choice is still there
                note = (f"; {tail.frozen.name} ranked first but its tail model could not be "
                        f"refitted ({type(err).__name__}: {err}): {choice.policy} registered")
    if version_tail is not None:
        from pipelines.policy_eval.tail_driven import SIGMA_MODEL

        assert tail is not None
        selected, policy_name = SIGMA_MODEL, tail.frozen.name
        forecasts, reason_text = tail.sigma, tail.frozen.reason
        failed = failed_in_walk_forward(tail.sigma_failures, SIGMA_MODEL,
                                        cfg.features.update_interval_days)
        cfg, frozen = version_tail.cfg, version_tail.frozen
    else:
        selected, policy_name = choice.model, choice.policy or f"policy:{choice.model}"
        reason_text, frozen = choice.reason, dict(choice.overrides)
        cfg = cfg.with_overrides(choice.overrides) if choice.overrides else cfg
    mine = policy_rows(summary, policy_name)
    with mlflow.start_run(run_name="register") as run:
        log_context(cfg, "register", {"model": selected})
        model = build_forecaster(selected, cfg.models, cfg.backtest.horizons).fit(features)
        bundle = {
            "format": BUNDLE_FORMAT,
            "forecaster": model.state(),
            "fit_cutoff": features.index.get_level_values("date").max().date().isoformat(),
            "config": cfg.resolved(),
            "frozen": frozen,  # the settings the protocol chose (serve logs)
            "forecasts": bundle_forecasts(forecasts, cfg.features.update_interval_days),
            "failed_assets": dict(failed or {}),
            # the assets a refused first version serves frozen: those the coverage test
            # refused on, so none where the config asks no coverage
            "not_acceptable": (not_acceptable(mine) if cfg.registry.gate.require_coverage
                               else {}),
            **({"tail": version_tail.entry} if version_tail is not None else {}),
        }
        info = registry.log_policy_model(bundle)
        version = registry.register(info.model_uri, name, {
            "forecaster": selected, "fit_cutoff": bundle["fit_cutoff"],
            "run_id": run.info.run_id, "selection": reason_text[:4000],
            "policy": policy_name,
            "code_version": code_identity()[1],  # the code that fitted and judged it
            **({"feature_fingerprint": fingerprint} if fingerprint else {}),
            **({"tail_model": version_tail.alias} if version_tail is not None else {}),
            "policy.capital": f"{mine['capital'].mean():.6f}",
            "policy.mean_mmf": f"{mine['mean_mmf'].mean():.6f}",
            "policy.acceptable": f"{int(mine['acceptable'].sum())}/{len(mine)}",
            # the three figures above are the evaluation period's (the selection tag's are the
            # selection period's)
            "policy.period": f"evaluation {cfg.evaluation.evaluation_start}"
                             f"..{cfg.evaluation.evaluation_end or 'end of data'}"})
        registry.set_alias(name, registry.CHALLENGER, version,
                           f"new version from {run.info.run_id}")
        champion = registry.champion_version(name)
        champ_alias = registry.version_tag(name, champion, "forecaster") if champion else None
        champ_policy = (registry.version_tag(name, champion, "policy") or f"policy:{champ_alias}"
                        ) if champ_alias else None
        champ_rows = summary[summary["policy"] == champ_policy] if champ_policy else None
        refusal = stress_gate_refusal(cfg, model, bundle, features)  # None unless budgeted
        decision = gate(mine, champ_rows, cfg.registry.gate, stress_refusal=refusal)
        passed, reason = decision.passed, decision.reason + note
        champ_cutoff = registry.version_tag(name, champion, "fit_cutoff") if champion else None
        if passed and champ_cutoff and bundle["fit_cutoff"] < champ_cutoff:
            # a run for an earlier day (a backfill, a rerun of a past as-of) registers its
            # version, never to replace a champion fitted on later data
            passed, reason = False, (
                f"refused: fitted through {bundle['fit_cutoff']}, before the fit cutoff "
                f"{champ_cutoff} of @champion v{champion} (a run for an earlier day does not "
                f"replace a later fit); the gate's verdict: {reason}")
        if champ_policy and champ_rows is not None and not len(champ_rows):
            # e.g. a tail-driven champion and a run without the tail step: the gate refused;
            # which policy, and how to compare them, said here
            reason += (f"; capital not compared with the champion: {champ_policy} was not "
                       "replayed in this run (a tail-driven champion is replayed with "
                       "tail.in_run: true)")
        if failed:  # not judged (no backtest path) and served the fail-safe: named here
            reason += (f"; served the fail-safe on {', '.join(sorted(failed))} (its "
                       "forecaster failed them in the walk-forward)")
        first = not passed and champion is None and cfg.registry.gate.promote_first
        if first:
            reason = f"{FIRST_PROMOTED}{reason}"
        outcome = registry.promote(name, version, passed, reason, first=first,
                                   judged_against=champion)
        # the compare-and-set may have refused it (another run moved @champion meanwhile):
        # what is tagged on the version is what the run reports
        promoted, passed, reason = outcome.promoted, outcome.passed, outcome.reason
        mlflow.log_params({"model_version": version, "promoted": promoted,
                           "gate_passed": passed})
        mlflow.set_tag("gate.reason", reason)
    return Registration(version, promoted, passed, reason, policy_name)

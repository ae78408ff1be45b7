"""The end-to-end pipeline: features → walk-forward backtest and comparison → policy backtest
and selection → register the policy (challenger → gate → champion) → serve.

One MLflow run per step (:mod:`pipelines.steps`), nested runs per forecaster in the backtest.

A run *completes with failures* when a forecaster failed for some (model, asset, horizon), a
diagnostic could not be computed or a data file was skipped (``--keep-going``): the healthy
assets are still selected on, registered and published, :meth:`RunResult.failure_lines`
lists what failed and :func:`exit_status` is :data:`EXIT_COMPLETED_WITH_FAILURES`.

A diagnostic undefined on fewer scored days than a verdict needs
(:data:`~pipelines.evaluation.coverage.MIN_VERDICT_DAYS`) is not a failure: a young asset's
statistics cannot be computed yet (the MCS on 3 days, a VaR backtest before the FHS has 100
past losses), and no verdict would be drawn from them if they could. The run says so in one
line per asset (:meth:`RunResult.not_judged_lines`) and its exit status does not change: a
retrain after each new listing would otherwise report a failure until the listing is a year
in the backtest.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd

from configs.schema import Config
from features.freshness import stale_lines
from models.backtest import FAILURE_COLUMNS, Mapper
from pipelines.engine import Engine
from pipelines.evaluation.comparison import DIAGNOSTIC_FAILURE_COLUMNS
from pipelines.evaluation.coverage import MIN_VERDICT_DAYS, too_few_days
from pipelines.ops.lines import capped
from pipelines.steps import (
    Progress,
    _noop,
    failed_in_walk_forward,
    step_backtest,
    step_features,
    step_policy,
    step_register,
)
from serving.layout import sweep_outputs
from serving.market import candle_cache, load_as_of
from serving.ops.tracking import setup
from serving.serve import ServeResult, serve

EXIT_COMPLETED_WITH_FAILURES = 4  # = the jobs' EXIT_PARTIAL: published, something failed
MAX_DIAGNOSTIC_LINES = 20  # the rest are in comparison.csv / the MLflow run


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=columns)


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
    forecast_failures: pd.DataFrame = field(  # failed (model, asset, horizon): stage, reason
        default_factory=lambda: _empty(FAILURE_COLUMNS))
    diagnostic_failures: pd.DataFrame = field(  # diagnostics left NaN, why, on how many days
        default_factory=lambda: _empty(DIAGNOSTIC_FAILURE_COLUMNS))
    # data, staleness, narrow comparisons, comparators the choice's rule would prefer
    warnings: list[str] = field(default_factory=list)
    tail_failures: list[str] = field(default_factory=list)  # with tail.in_run: what it left out
    tail_not_judged: list[str] = field(default_factory=list)  # ... and its young assets
    # the policy registered: the frozen variance-driven one, or with tail.in_run the
    # tail-driven one when the choice's rule ranks it first ("": not recorded)
    registered_policy: str = ""
    # the gate's verdict; False with promoted True: the store's first version, promoted all
    # the same (registry.gate.promote_first) and served with its refused assets frozen
    gate_passed: bool = True
    # a step that failed on its own while the run went on (the tail step inside the run, the
    # stress after the serve): one line each, and the run completed with failures
    step_failures: list[str] = field(default_factory=list)

    def _too_short(self) -> pd.Series:
        """Which undefined diagnostics were on fewer scored days than a verdict needs."""
        return too_few_days(self.diagnostic_failures, "scored_days")

    @property
    def completed_with_failures(self) -> bool:
        return bool(len(self.forecast_failures) or (~self._too_short()).any()
                    or self.failures or self.tail_failures or self.step_failures)

    def not_judged_lines(self) -> list[str]:
        """One line per asset whose diagnostics were left undefined on too few scored days
        (not failures: see the module docstring)."""
        short = self.diagnostic_failures[self._too_short()]
        lines = []
        for asset, g in short.groupby("asset", sort=True):
            days = int(g["scored_days"].max())
            names = ", ".join(sorted(set(g["diagnostic"])))
            lines.append(f"not judged: {asset}: scored on {days} days (< {MIN_VERDICT_DAYS}); "
                         f"{len(g)} diagnostics not computable yet ({names})")
        return lines + self.tail_not_judged

    def failure_lines(self) -> list[str]:
        """The end-of-run list of what failed, one line each (empty when nothing did)."""
        what = {"unverifiable": "forecasts dropped", "declined": "forecasts missing"}
        lines = [f"{what.get(r.stage, 'forecast failed')}"
                 f": {r.model} {r.asset} h={r.horizon_days}d ({r.stage}): {r.reason}"
                 for r in self.forecast_failures.itertuples()]
        failing = self.diagnostic_failures[~self._too_short()]
        diag = [f"diagnostic undefined: {r.diagnostic} {r.model} {r.asset} "
                f"h={r.horizon_days}d: {r.reason}" for r in failing.itertuples()]
        diag = capped(diag, MAX_DIAGNOSTIC_LINES, "undefined diagnostics "
                      "(outputs/backtest/comparison.csv, *_note columns)")
        return (lines + diag + self.tail_failures + self.step_failures
                + skipped_file_lines(self.failures))


def skipped_file_lines(failures: dict[str, str]) -> list[str]:
    """One end-of-job line per data file skipped under ``--keep-going``."""
    return [f"skipped file {name}: {why}" for name, why in failures.items()]


EXIT_STALE = 3  # = the jobs' EXIT_STALE: published, stale assets, serving.on_stale = fail


def exit_status(result: RunResult, on_stale: str = "warn") -> int:
    """0 when nothing failed, else :data:`EXIT_COMPLETED_WITH_FAILURES` (the run published
    the healthy assets; :meth:`RunResult.failure_lines` says what it left out); with
    ``serving.on_stale: fail`` (``on_stale``), :data:`EXIT_STALE` first when the serve step
    published stale assets on their fail-safe parameters, as ``volmargin serve`` exits."""
    if on_stale == "fail" and result.served is not None and result.served.stale_assets:
        return EXIT_STALE
    return EXIT_COMPLETED_WITH_FAILURES if result.completed_with_failures else 0


def run(
    cfg: Config, as_of: dt.date | None = None, progress: Progress = _noop,
    publish: bool = True, keep_going: bool = False, mapper: Mapper = map,
    engine: Engine | None = None,
) -> RunResult:
    """Run the whole pipeline on ``cfg.paths.data_dir``; publish parameters as of ``as_of``
    unless ``publish`` is False (``volmargin retrain`` trains and promotes, serving is separate).
    With ``keep_going`` a malformed file fails only its asset (listed in ``failures``); a
    forecaster failing for an asset fails only that (model, asset, horizon), always.
    ``mapper`` runs the walk-forward's independent tasks (builtin ``map``: sequentially).
    """
    setup(cfg)
    sweep_outputs(cfg.paths.outputs_dir)  # temporary files and orphan panels of killed runs
    progress("load data", 0, 1)
    # every step sees only rows up to the as-of: the registered version is fitted through it
    pit = load_as_of(cfg.paths.data_dir, cfg.data.assets, as_of, keep_going=keep_going,
                     max_file_mb=cfg.data.max_file_mb, cache=candle_cache(cfg))
    market, as_of = pit.market, pit.as_of
    progress("features", 0, 1)
    panel, fp, fresh = step_features(cfg, market)
    bt = step_backtest(cfg, panel, progress, mapper, engine)
    forecasts, table, compared = bt.forecasts, bt.table, bt.compared
    choice, summary, stress, policy_lines = step_policy(cfg, panel, forecasts, compared,
                                                        progress, engine, bt.withheld, fp)
    tail_failures: list[str] = []
    tail_not_judged: list[str] = []
    tail_warnings: list[str] = []
    step_failures: list[str] = []
    tail = None
    if cfg.tail.in_run:  # direct VaR/ES forecasts, scored by FZ0 (pipelines/tail_step.py),
        # after the policy step: the tail-driven policies are read beside the policy it froze
        from pipelines.tail_step import failure_lines, not_judged_lines, step_tail
        try:
            tail = step_tail(cfg, panel, progress, inside_run=True, fingerprint=fp)
        except Exception as err:  # the tail step's own (every tail model failed, ...): the
            # variance-driven choice is registered and served, the failure listed
            step_failures.append(f"tail step failed: {type(err).__name__}: {err}; the "
                                 "variance-driven choice was registered without it")
        else:
            tail_failures, tail_not_judged = failure_lines(tail), not_judged_lines(tail)
            tail_warnings = tail.warnings
    progress("register", 0, 1)
    failed = failed_in_walk_forward(bt.failures, choice.model,
                                    cfg.features.update_interval_days)
    # with the tail step, one choice over both kinds: step_register registers the
    # tail-driven policy when the rule ranks it first
    evaluated = tail.policy if tail is not None else None
    registration = step_register(
        cfg, panel, choice, forecasts[choice.model], summary, failed, evaluated, fp)
    served = None
    if publish:
        progress("serve", 0, 1)
        served = serve(cfg, as_of, keep_going=keep_going)
        from pipelines.stress.job import stress_published  # beside it; failure is local
        stress_published(cfg, served.as_of, skipped=step_failures)
    return RunResult(fp, table, compared, choice.model, choice.reason, choice.table, summary,
                     stress, registration.version, registration.promoted,
                     registration.reason, dict(market.failures), served,
                     bt.failures, bt.diagnostics,
                     list(dict.fromkeys([*pit.warnings, *stale_lines(fresh), *bt.narrowed,
                                         *policy_lines, *tail_warnings,
                                         *(served.warnings if served is not None else [])])),
                     tail_failures,
                     tail_not_judged,
                     registration.policy, registration.gate_passed, step_failures)

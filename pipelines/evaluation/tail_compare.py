"""Comparing tail forecasters: FZ0 scores, DM and MCS on FZ0, VaR and ES backtests.

Protocol (``evaluation`` section of the config): every tail model is walked forward over the
selection and the evaluation periods with the same refits; the **best classical model** is
chosen by pooled FZ0 at 99 % on the selection period only (by code,
:func:`best_classical`), and every figure reported comes from the evaluation period.

Pooling: the FZ0 of a (model, side, level) is averaged over assets per day first, and DM and
the MCS run on that daily series (assets move together: treating asset-days as independent
would overstate significance).

Fault isolation, as in the variance walk-forward: a tail model whose walk-forward raises is
left out of every table, and a statistic undefined on one model, side and asset (too few
rows for the DQ regression, say, on an asset listed weeks ago) is NaN there; each is one row
of the ``failures`` table, with the reason, and the step goes on.

Entry point: :func:`run_tail_backtest`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config
from models.backtest import NoForecastsError, no_eligible_asset
from models.tail.backtest import TailRefitError, tail_walk_forward
from models.tail.base import LOSS_VARIANTS, SIDES, to_fraction
from models.tail.registry import TAIL_REGISTRY, build_tail_forecaster
from pipelines.evaluation.coverage import MIN_VERDICT_DAYS, christoffersen_independence
from pipelines.evaluation.stats import DM_MIN_PAIRS, diebold_mariano, model_confidence_set
from pipelines.evaluation.tail_tests import (
    acerbi_szekely_z2,
    dq_test,
    fz0_loss,
    kupiec_one_sided,
    mcneil_frey,
    outside_fz0_domain,
)
from pipelines.evaluation.years import year_blocks

FAILURE_COLUMNS = ["stage", "model", "side", "asset", "reason", "days"]
UNDEFINED = (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError)

LEARNED = ("tail_nn",)
CLASSICAL = tuple(a for a in TAIL_REGISTRY if a not in LEARNED)  # every other registered one
HEADLINE_LEVEL = 0.99
TEST_SIZE = 0.05
# An asset "passes" only on MIN_VERDICT_DAYS scored days (pipelines.evaluation.coverage).


def realized(panel: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Long frame ``asset, cutoff, side, loss, is_proxy`` of the realized covered loss."""
    blocks = []
    for side in SIDES:
        col = "target_" + LOSS_VARIANTS[variant].format(side=side)
        frame = pd.DataFrame({
            "asset": panel.index.get_level_values("asset"),
            "cutoff": panel.index.get_level_values("date"), "side": side,
            "loss": to_fraction(panel[col].to_numpy(dtype=float), side),
            "is_proxy": panel["target_worst_loss_is_proxy"].eq(True).fillna(False).to_numpy(),
        })
        blocks.append(frame)
    return pd.concat(blocks, ignore_index=True)


def score(forecasts: pd.DataFrame, panel: pd.DataFrame, variant: str = "close") -> pd.DataFrame:
    """Forecast rows (with a ``model`` column) joined to their loss, with ``fz0`` and ``hit``."""
    out = forecasts.merge(realized(panel, variant), on=["asset", "cutoff", "side"], how="left")
    out = out[np.isfinite(out["loss"])].copy()
    fz = np.full(len(out), np.nan)
    for level, rows in out.groupby("level").groups.items():
        r = out.loc[rows]
        fz[out.index.get_indexer(rows)] = fz0_loss(r["loss"], r["var"], r["es"], float(level))
    out["fz0"], out["hit"] = fz, out["loss"] > out["var"]
    return out.reset_index(drop=True)


def period(scores: pd.DataFrame, start: object, end: object | None) -> pd.DataFrame:
    """Rows whose loss happens in ``[start, end]`` (``end`` None: no upper bound).

    A row's loss is that of the interval after its cutoff, so it is dated ``target_date``
    (``cutoff + U``), as the policy's periods date a loss day
    (:func:`pipelines.policy_eval.protocol.in_period`) and the selection's comparison a target
    day (:func:`pipelines.selection.select.in_window`): the forecast made at the selection
    period's last cutoff is judged on the evaluation period's first day, so it belongs to the
    evaluation period, not the selection one.
    """
    day = pd.to_datetime(scores["target_date"])
    keep = day >= pd.Timestamp(start)
    if end is not None:
        keep &= day <= pd.Timestamp(end)
    return scores[keep]


# a model forecasting fewer of a (side, level)'s asset-days than this share of the best-covered
# model's is left out of that pooled comparison: kept, it would shrink every model's support to
# its own (CAViaR at 99.5% forecasts only assets with 2,000 training rows)
POOLED_COVERAGE = 0.95


def _wide_fz0(scores: pd.DataFrame, side: str, level: float) -> pd.DataFrame:
    s = scores[(scores["side"] == side) & np.isclose(scores["level"], level)]
    return s.pivot_table(index=["cutoff", "asset"], columns="model", values="fz0")


def pooled_models(wide: pd.DataFrame, min_coverage: float = POOLED_COVERAGE) -> list[str]:
    """The models of a (asset-day × model) FZ0 frame that cover at least ``min_coverage`` of
    the asset-days the best-covered model does."""
    counts = wide.notna().sum()
    return [str(m) for m in counts.index if counts[m] >= min_coverage * counts.max()]


def daily_fz0(scores: pd.DataFrame, side: str, level: float,
              models: Sequence[str] | None = None) -> pd.DataFrame:
    """(date × model) FZ0 averaged over the assets every pooled model forecast that day
    (:func:`pooled_models`: a model that forecasts far fewer asset-days is left out;
    ``models``: the pool decided on a longer period, for its parts)."""
    wide = _wide_fz0(scores, side, level)
    pool = pooled_models(wide) if models is None else [m for m in models if m in wide]
    return wide[pool].dropna().groupby(level="cutoff").mean()


POOLED_STAGE = "pooled"  # a note, not a failure (pipelines.tail_step.not_judged_lines)


def left_out(scores: pd.DataFrame, side: str, level: float,
             failures: list[dict[str, Any]] | None) -> list[str]:
    """The models :func:`daily_fz0` leaves out of the pool at (``side``, ``level``), each a
    ``failures`` row of stage :data:`POOLED_STAGE` saying how much it covers against the
    best-covered model (an intended exclusion, e.g. CAViaR at a level its short histories
    cannot fit: said, not a failure)."""
    wide = _wide_fz0(scores, side, level)
    coverage = wide.notna().mean()
    pool = pooled_models(wide)
    out = [str(m) for m in wide.columns if m not in pool]
    if failures is not None and out:
        best = float(coverage.max())
        failures += [failure(POOLED_STAGE, m, (
            f"at {level:g} it forecasts {coverage[m]:.1%} of the asset-days, the best-covered "
            f"model {best:.1%} (under {POOLED_COVERAGE:.0%} of it): left out of the pooled "
            "FZ0, DM and MCS there"), side) for m in out]
    return out


def fz0_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Pooled mean FZ0 per model, side and level (rows every pooled model has), lower is
    better; ``asset_days``: the asset-days pooled, ``coverage``: the share of the (side,
    level)'s asset-days the model forecast. A model below :data:`POOLED_COVERAGE` of the
    best-covered one is listed with NaN (left out of the pooled comparison there)."""
    rows = []
    for (side, level), _ in scores.groupby(["side", "level"]):
        wide = _wide_fz0(scores, str(side), float(level))
        pooled = pooled_models(wide)
        common = wide[pooled].dropna()
        daily = common.groupby(level="cutoff").mean()
        coverage = wide.notna().mean()
        for model in wide.columns:
            inside = model in pooled
            rows.append({"side": side, "level": level, "model": model,
                         "fz0": float(daily[model].mean()) if inside else float("nan"),
                         "days": len(daily), "asset_days": len(common),
                         "coverage": float(coverage[model])})
    return pd.DataFrame(rows)


def failure(stage: str, model: str, reason: str, side: str = "", asset: str = "",
            days: int | None = None) -> dict[str, Any]:
    """One row of the ``failures`` table; ``days``: the scored days of a per-asset statistic
    (fewer than :data:`MIN_VERDICT_DAYS` marks a young asset, not a failure:
    :func:`pipelines.tail_step.failure_lines`), None where not per asset."""
    return {"stage": stage, "model": model, "side": side, "asset": asset, "reason": reason,
            "days": days}


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def best_classical(selection_scores: pd.DataFrame, side: str = "long") -> str:
    """The classical model with the lowest pooled FZ0 at 99 % on the selection period
    (``""`` when no classical model has a score there)."""
    t = fz0_table(selection_scores)
    if t.empty:
        return ""
    t = t[(t["side"] == side) & np.isclose(t["level"], HEADLINE_LEVEL)
          & t["model"].isin(CLASSICAL) & t["fz0"].notna()]
    return str(t.sort_values("fz0")["model"].iloc[0]) if len(t) else ""


DM_COLUMNS = ["model", "benchmark", "mean_diff", "dm", "p_better", "p_two_sided", "days",
              "lag1_autocorr", "kernel", "bandwidth"]


def dm_table(scores: pd.DataFrame, benchmarks: list[str], side: str = "long",
             level: float = HEADLINE_LEVEL, failures: list[dict[str, Any]] | None = None,
             models: Sequence[str] | None = None) -> pd.DataFrame:
    """DM (HLN) of each model against each benchmark on the daily pooled FZ0; one-sided p.
    A pair whose test is undefined is left out (a ``failures`` row); a benchmark left out of
    the pool has no DM against it (:func:`left_out` says so; ``models``: a pool decided on a
    longer period)."""
    daily = daily_fz0(scores, side, level, models)
    rows = []
    for bench in benchmarks:
        for model in daily.columns:
            if model == bench or bench not in daily.columns:
                continue
            try:
                r = diebold_mariano(daily[model], daily[bench], horizon=1)
            except UNDEFINED as exc:
                if failures is not None:
                    failures.append(failure(f"dm vs {bench}", str(model), _why(exc), side))
                continue
            if r.n < DM_MIN_PAIRS:  # a short period: not computable yet, not a failure
                if failures is not None:
                    failures.append(failure(f"dm vs {bench}", str(model),
                                            f"{r.n} days < {DM_MIN_PAIRS}: too few to test",
                                            side, days=r.n))
                continue
            rows.append({"model": model, "benchmark": bench, "mean_diff": r.mean_diff,
                         "dm": r.statistic, "p_better": r.p_value_a_better,
                         "p_two_sided": r.p_value, "days": r.n,
                         # the DM's size holds where d is close to white noise (stats)
                         "lag1_autocorr": r.lag1_autocorr, "kernel": r.kernel,
                         "bandwidth": r.bandwidth})
    return pd.DataFrame(rows, columns=DM_COLUMNS)


def fz0_by_year(scores: pd.DataFrame, best: str, start: object,
                level: float = HEADLINE_LEVEL,
                failures: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Per twelve-month block of the evaluation period (:func:`year_blocks` from ``start``)
    and side: each model's pooled FZ0 at ``level`` and its one-sided DM p-value against
    ``best`` (the best classical model of the selection period), as the headline computes
    them on the whole period. A DM test undefined in a block is a ``failures`` row."""
    s = scores[np.isclose(scores["level"], level)]
    last = pd.to_datetime(s["target_date"]).max() if len(s) else None
    # the pool of the whole period in every block (blocks compared on one set of models)
    pools = {side: list(daily_fz0(s, side, level).columns) if len(s) else []
             for side in SIDES}
    rows = []
    for label, lo, hi in year_blocks(start, last):  # type: ignore[arg-type]
        part = period(s, lo, hi)
        for side in SIDES:
            daily = daily_fz0(part, side, level, pools[side])
            if daily.empty:
                continue
            undefined: list[dict[str, Any]] = []
            dm = (dm_table(part, [best], side, level, undefined, pools[side])
                  if best in pools[side] else None)  # out of the pool: said once, by left_out
            p = (dm.set_index("model")["p_better"] if dm is not None and len(dm)
                 else pd.Series(dtype=float))
            if failures is not None:
                failures.extend({**f, "stage": f"{f['stage']} in {label}"} for f in undefined)
            for model in daily.columns:
                rows.append({"block": label, "start": lo, "end": hi, "side": side,
                             "level": level, "model": model, "fz0": float(daily[model].mean()),
                             "days": len(daily), "benchmark": best,
                             "p_better": float(p.get(model, np.nan))})
    return pd.DataFrame(rows, columns=["block", "start", "end", "side", "level", "model",
                                       "fz0", "days", "benchmark", "p_better"])


def mcs_frame(scores: pd.DataFrame, side: str = "long", level: float = HEADLINE_LEVEL,
              size: float = 0.10, reps: int = 1000,
              failures: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Hansen-Lunde-Nason MCS on the daily pooled FZ0 (seeded stationary bootstrap; ``days``:
    the days every model has a pooled score, the set's support); empty
    when undefined (a ``failures`` row; with the pool's days where two or more models could
    be compared, so that on a short period it is not judged)."""
    daily = daily_fz0(scores, side, level)
    try:
        res = model_confidence_set(daily, size=size, reps=reps)
        return res.to_frame().assign(days=res.n)  # the common days the set compared on
    except UNDEFINED as exc:
        if failures is not None:
            failures.append(failure("mcs", "", _why(exc), side,
                                    days=len(daily) if daily.shape[1] >= 2 else None))
        return pd.DataFrame()


def backtest_table(scores: pd.DataFrame, level: float = HEADLINE_LEVEL, dq_lags: int = 4,
                   failures: list[dict[str, Any]] | None = None,
                   test_size: float = TEST_SIZE) -> pd.DataFrame:
    """Per model, side and asset: breaches, one-sided Kupiec, independence, DQ, ES tests.

    ``passes`` = one-sided coverage and Christoffersen independence both not rejected at
    ``test_size`` on at least :data:`MIN_VERDICT_DAYS` scored days (False when either is
    undefined or the days are fewer; ``n`` says how many); DQ and the ES tests are reported
    beside it, not part of it. A test undefined on a group is NaN there and a ``failures``
    row. Days without a loss or a VaR are left out of every test (the independence test's
    breach sequence included: such a day is not a day without a breach).
    """
    rows = []
    s = scores[np.isclose(scores["level"], level)].sort_values("cutoff")
    for (model, side, asset), g in s.groupby(["model", "side", "asset"]):
        loss, var, es = (g[c].to_numpy(float) for c in ("loss", "var", "es"))
        scored = np.isfinite(loss) & np.isfinite(var)
        # a forecast of no loss at all (VaR = ES = 0) has no ES to test, as it has no FZ0
        none = (var == 0.0) & (es == 0.0)
        var_es, es_t = np.where(none, np.nan, var), np.where(none, np.nan, es)
        scored_days = int(scored.sum())
        tests = {
            "coverage": partial(kupiec_one_sided, loss, var, level),
            "independence": partial(christoffersen_independence, (loss > var)[scored]),
            "dq": partial(dq_test, loss, var, level, lags=dq_lags),
            "mcneil_frey": partial(mcneil_frey, loss, var_es, es_t),
            "z2": partial(acerbi_szekely_z2, loss, var_es, es_t, level)}
        got: dict[str, Any] = {}
        for name, run in tests.items():
            try:
                got[name] = run()
            except UNDEFINED as exc:
                got[name] = None
                if failures is not None:
                    failures.append(failure(f"backtest {name}", str(model), _why(exc),
                                            str(side), str(asset), scored_days))
        cov = got["coverage"]
        p = {k: (float("nan") if v is None else float(v.p_value)) for k, v in got.items()}
        n = scored_days if cov is None else cov.n
        rows.append({
            "model": model, "side": side, "asset": asset, "n": n,
            "hourly": bool((~g["is_proxy"]).mean() > 0.5),
            "breaches": int((loss > var).sum()) if cov is None else cov.breaches,
            "expected": (1.0 - level) * scored_days if cov is None else cov.expected,
            "p_coverage": p["coverage"], "p_independence": p["independence"],
            "p_dq": p["dq"], "p_mcneil_frey": p["mcneil_frey"], "p_z2": p["z2"],
            "passes": bool(n >= MIN_VERDICT_DAYS and p["coverage"] >= test_size
                           and p["independence"] >= test_size),
        })
    return pd.DataFrame(rows)


def walk_forward_all(panel: pd.DataFrame, cfg: Config,
                     progress: Callable[[str, int, int], None] | None = None,
                     failures: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """Tail forecasts of every ``tail.enabled`` model over selection + evaluation periods;
    a model whose walk-forward raises is left out (a ``failures`` row, when a list is given;
    without one the error propagates). A refit failing after the selection period leaves
    the model its forecasts made before that refit, so a failure nobody knew of at the freeze
    does not take it out of the choice; from that refit on it has none (the policy's replay
    takes the FHS tail there, and says so)."""
    t, ev, u = cfg.tail, cfg.evaluation, cfg.features.update_interval_days
    blocks = []
    for alias in t.enabled:
        hook = None if progress is None else (lambda k, n, a=alias: progress(a, k, n))
        declined: list[dict[str, Any]] = []
        try:
            fc = tail_walk_forward(lambda a=alias: build_tail_forecaster(a, t, u, cfg.models),
                                   panel, ev.selection_start, ev.evaluation_end, t.refit_every,
                                   t.levels, t.min_train_days, hook, declined)
        except Exception as exc:  # one failing model is flagged and skipped, never fatal
            if failures is None:
                raise
            late = (isinstance(exc, TailRefitError) and len(exc.done) > 0
                    and exc.fit_end.date() > ev.selection_end)
            failures.append(failure("walk-forward", alias, _why(exc) + (
                "; its forecasts before that refit kept" if late else "")))
            if not late:
                continue
            assert isinstance(exc, TailRefitError)
            fc = exc.done
        if failures is not None:
            failures += refused_rows(alias, declined)
        fc.insert(0, "model", alias)
        blocks.append(fc)
    if not any(len(b) for b in blocks):
        if not failures:  # no model failed: no asset was ever eligible
            raise NoForecastsError(no_eligible_asset(
                panel, f"evaluation.selection_start ({ev.selection_start})", t.refit_every,
                t.min_train_days, "tail"))
        raise NoForecastsError("no tail model produced a forecast: "
                               + "; ".join(f"{f['model']}: {f['reason']}" for f in failures))
    return pd.concat(blocks, ignore_index=True)


def refused_rows(alias: str, declined: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``failures`` row per asset and side a tail model's refits declined to fit (no
    forecast there from those refits), with the first refit, how many and the first reason."""
    rows = []
    if not declined:
        return rows
    frame = pd.DataFrame(declined).sort_values("fit_end", kind="stable")
    for (asset, side), g in frame.groupby(["asset", "side"], sort=True):
        rows.append(failure("fit", alias, (
            f"declined at {len(g)} of its refits from {pd.Timestamp(g['fit_end'].iloc[0]):%F}: "
            f"{g['reason'].iloc[0]}"), str(side), str(asset)))
    return rows


def select_scale_model(panel: pd.DataFrame, cfg: Config,
                       candidates: tuple[str, ...] = ("fhs_ewma", "evt_garch")
                       ) -> tuple[str, pd.DataFrame]:
    """``tail_nn.scale_model`` with the lowest pooled FZ0 at 99 % (long) on the selection period.

    Each candidate is walked forward from ``selection_start`` to ``selection_end`` on the rows
    dated up to ``selection_end`` and scored on the losses that happen in the selection period
    (:func:`period`: the last cutoff's loss, on the evaluation period's first day, is left
    out), so nothing of the evaluation period is read.
    """
    ev, u = cfg.evaluation, cfg.features.update_interval_days
    upto = panel[panel.index.get_level_values("date") <= pd.Timestamp(ev.selection_end)]
    rows = []
    for name in candidates:
        tail = cfg.tail.model_copy(update={"tail_nn": cfg.tail.tail_nn.model_copy(
            update={"scale_model": name})})
        fc = tail_walk_forward(lambda t=tail: build_tail_forecaster("tail_nn", t, u, cfg.models),
                               upto,
                               ev.selection_start, ev.selection_end, tail.refit_every,
                               tail.levels, tail.min_train_days)
        fc.insert(0, "model", "tail_nn")
        s = period(score(fc, upto, cfg.tail.tail_nn.loss_variant), ev.selection_start,
                   ev.selection_end)
        daily = daily_fz0(s, "long", HEADLINE_LEVEL)
        rows.append({"scale_model": name, "fz0": float(daily["tail_nn"].mean()),
                     "days": len(daily)})
    table = pd.DataFrame(rows)
    return str(table.sort_values("fz0")["scale_model"].iloc[0]), table


def score_tables(forecasts: pd.DataFrame, panel: pd.DataFrame, cfg: Config,
                 failures: list[dict[str, Any]] | None = None) -> dict[str, pd.DataFrame]:
    """Every table of :func:`run_tail_backtest` from walk-forward ``forecasts``; the
    ``failures`` table holds the given rows and those of the statistics left undefined."""
    failures = [] if failures is None else failures
    ev = cfg.evaluation
    forecasts = in_fz0_domain(forecasts, failures)
    if forecasts.empty:
        raise NoForecastsError("no tail model left to score: " + "; ".join(
            f"{f['model']}: {f['reason']}" for f in failures))
    models = list(forecasts["model"].unique())
    variants = {getattr(cfg.tail, a).loss_variant for a in models}
    if len(variants) != 1:
        raise ValueError(f"tail models must score one loss variant, got {variants}")
    scores = score(forecasts, panel, variants.pop())
    sel = period(scores, ev.selection_start, ev.selection_end)
    evl = period(scores, ev.evaluation_start, ev.evaluation_end)
    best = best_classical(sel)
    benchmarks = [b for b in dict.fromkeys([best, "fhs_garch", "fhs_ewma"]) if b in models]
    for (side, level), _ in evl.groupby(["side", "level"]):  # said once per side and level
        left_out(evl, str(side), float(level), failures)
    return {
        "fz0_selection": fz0_table(sel), "fz0_evaluation": fz0_table(evl),
        "dm": dm_table(evl, benchmarks, failures=failures),
        "mcs": mcs_frame(evl, failures=failures).reset_index(),
        "backtests": backtest_table(evl, dq_lags=ev.dq_lags, failures=failures,
                                    test_size=ev.test_size),
        "fz0_by_year": fz0_by_year(evl, best, ev.evaluation_start, failures=failures),
        "choice": pd.DataFrame({"best_classical": [best]}),
        "failures": pd.DataFrame(failures, columns=FAILURE_COLUMNS),
    }


def in_fz0_domain(forecasts: pd.DataFrame, failures: list[dict[str, Any]]) -> pd.DataFrame:
    """``forecasts`` without the models that forecast outside FZ0's domain (VaR < 0, ES <= 0
    or ES < VaR on some row): such a model is not scored, and a ``failures`` row says how often
    (a model scored on its other rows would be compared on the days it got right)."""
    bad = outside_fz0_domain(forecasts["var"], forecasts["es"])
    if not bad.any():
        return forecasts
    wrong = forecasts[bad].groupby("model").size()
    for model, rows in wrong.items():
        first = forecasts[bad & (forecasts["model"] == model)].iloc[0]
        failures.append(failure("scoring", str(model), (
            f"{rows} forecasts outside FZ0's domain (0 <= VaR <= ES, ES > 0), first "
            f"{first['asset']} {first['side']} {float(first['level'])} at "
            f"{pd.Timestamp(first['cutoff']):%F}: "
            f"VaR {float(first['var']):.6g}, ES {float(first['es']):.6g}; not scored")))
    return forecasts[~forecasts["model"].isin(wrong.index)]


def run_tail_backtest(panel: pd.DataFrame, cfg: Config,
                      progress: Callable[[str, int, int], None] | None = None
                      ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Walk forward every enabled tail model and score it (module docstring).

    Returns the forecasts (``model`` + :data:`models.tail.base.TAIL_COLUMNS` +
    ``fitted_through``) and the tables: ``fz0_selection``, ``fz0_evaluation`` (pooled FZ0
    per model, side and level), ``dm`` (evaluation, each model against the best classical
    model of the selection period and the two FHS), ``mcs`` (evaluation), ``backtests``
    (evaluation, per model/side/asset at 99 %) and ``choice`` (the best classical model).
    """
    failures: list[dict[str, Any]] = []
    forecasts = walk_forward_all(panel, cfg, progress, failures)
    return forecasts, score_tables(forecasts, panel, cfg, failures)

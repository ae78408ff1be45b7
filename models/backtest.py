"""Walk-forward backtest: expanding window, refit every ``refit_every`` days, parameters fixed
between refits (Nixtla's ``cross_validation`` with ``refit``, arch's ``fix`` + ``forecast``).

At refit date ``c_k`` the model is fitted on feature rows dated ``<= c_k`` (no ``target_*``
column ever reaches it) and then forecasts every cutoff ``t`` in ``[c_k, c_{k+1})`` from rows
dated ``<= t``. Each forecast row keeps its ``cutoff`` and the ``fitted_through`` date of the
parameters that made it.

**Fault isolation.** The work is a list of independent :class:`Task`\\ s — one per (asset,
refit) for a forecaster that fits each asset on its own (``per_asset = True``), one per refit
for a pooled one — run through a ``mapper`` (builtin :func:`map` by default; any callable with
its signature, e.g. a Dask client's ``map`` + ``gather``, runs them elsewhere). A task that
raises fails the (model, asset, horizon) triples it covers (a pooled task first retries
without each asset in turn, so one asset's data costs only that asset), an asset the model
forecast at no cutoff (it declined every fit) fails too, and every forecast is checked by
:func:`models.plausibility.forecast_implausibility`, and a triple with one implausible row
fails whole (a model is never scored on a support its rivals do not share). Failed triples
are dropped from the forecasts and listed in :attr:`WalkForward.failures`, so a pooled model
that fails on one asset loses that asset only and one that cannot fit loses every asset.
A forecast the market gives nothing to check against (a gap in an asset's data leaves too few
realized-variance days in the trailing window) is dropped alone: that is the data's fault,
not the model's. Its triple stays, and one ``unverifiable`` row of the failures counts the
forecasts dropped.
On data where nothing fails the forecasts are those of fitting all assets at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from configs.schema import PlausibilityConfig
from features.schema import feature_view
from models.base import FORECAST_COLUMNS, Forecaster, concat_forecasts
from models.plausibility import TrailingVariance, forecast_implausibility, unverifiable

ProgressHook = Callable[[int, int], None]
FAILURE_COLUMNS = ["model", "asset", "horizon_days", "stage", "reason", "rows"]
WITHHELD_COLUMNS = [*FORECAST_COLUMNS, "fitted_through", "failed_from"]


def no_withheld() -> pd.DataFrame:
    return pd.DataFrame(columns=WITHHELD_COLUMNS)


# stages of a failures row that keep the triple's other forecasts: forecasts dropped one by
# one (unverifiable), a refit the model declined (its segment has none)
PARTIAL_STAGES = ("unverifiable", "declined")


def whole_failures(failures: pd.DataFrame) -> pd.DataFrame:
    """The failures rows whose whole (model, asset, horizon) triple was left out: every stage
    but :data:`PARTIAL_STAGES`."""
    return failures[~failures["stage"].isin(PARTIAL_STAGES)]


@dataclass(frozen=True)
class Task:
    """Fit on rows dated ``<= fit_end`` of ``assets``, forecast every day up to ``seg_end``."""

    k: int
    fit_end: pd.Timestamp
    seg_end: pd.Timestamp
    assets: tuple[str, ...]
    separable: bool = False  # a chunk of a per-asset model: each asset is fitted on its own


@dataclass(frozen=True)
class TaskResult:
    task: Task
    forecasts: pd.DataFrame
    error: str = ""  # "" when the task ran; else the exception, one line
    left_out: tuple[str, str] | None = None  # (asset, error): a pooled fit failed with it
    failed: tuple[tuple[str, str], ...] = ()  # (asset, error) of a chunk's assets that failed
    seconds: float = 0.0  # the task's own run time, retries included (where it ran)


_In = TypeVar("_In", contravariant=True)
_Out = TypeVar("_Out")


class Mapper(Protocol):
    """Anything shaped like builtin :func:`map`: ``mapper(fn, items)`` gives ``fn(item)`` for
    every item, in order (:meth:`pipelines.engine.Engine.mapper` runs them on an engine). The
    walk-forward's tasks and the model comparison's asset chunks both fan out through one."""

    def __call__(self, fn: Callable[[_In], _Out], items: Iterable[_In], /) -> Iterable[_Out]:
        ...

# Up to this many assets a pooled fit that fails is retried without each asset in turn (the
# first that fits wins); above, the culprit is found by bisection (:func:`_bisect_culprit`).
LEAVE_EACH_OUT_MAX = 16


@dataclass(frozen=True)
class WalkForward:
    forecasts: pd.DataFrame  # healthy rows only (FORECAST_COLUMNS + fitted_through)
    failures: pd.DataFrame   # FAILURE_COLUMNS: one row per failed (model, asset, horizon)
    #                          or per triple with unverifiable forecasts dropped alone
    task_seconds: float = 0.0  # the tasks' own run times summed (fits and forecasts)
    # the failed triples' forecasts made before their first failure (``failed_from``: the
    # cutoff of the first implausible forecast, or the refit whose fit failed): what an
    # observer had before the fault showed, kept apart for a choice made before it
    # (:func:`pipelines.policy_eval.pipeline.known_before`); never scored or served
    withheld: pd.DataFrame = field(default_factory=no_withheld)


class ForecastFailureError(RuntimeError):
    """A strict walk-forward met failed forecasts (the message lists them)."""


class NoForecastsError(RuntimeError):
    """A walk-forward made no forecast at all (every model failed on every asset, or no asset
    was ever eligible): nothing to score, select or publish."""


def no_eligible_asset(panel: pd.DataFrame, start: object, refit_every: int,
                      min_train_days: int, section: str, shown: int = 10) -> str:
    """Why a walk-forward made no forecast although no model failed: no asset had
    ``min_train_days`` of history at any refit date (a universe of new listings, or data that
    ends before the out-of-sample start); ``section`` names the config section of the
    settings (``backtest``, ``tail``)."""
    dates = panel.index.get_level_values("date")
    first = (pd.Series(dates, index=panel.index.get_level_values("asset")).groupby(level=0)
             .min().sort_values())
    listed = ", ".join(f"{a} {d:%Y-%m-%d}" for a, d in first.head(shown).items())
    more = f" and {len(first) - shown} more" if len(first) > shown else ""
    last = f"{dates.max():%Y-%m-%d}" if len(dates) else "none"
    return (f"no out-of-sample forecast: no asset has {section}.min_train_days "
            f"({min_train_days}) days of history at any refit date from {start} to the data's "
            f"last day ({last}), every {refit_every} days, so there is nothing to score, select "
            f"or publish. First day of each asset: {listed or 'none'}{more}.")


def refit_dates(start: pd.Timestamp, end: pd.Timestamp, every: int) -> pd.DatetimeIndex:
    """Fit cutoffs ``start, start+every, ...`` up to ``end`` inclusive."""
    return pd.date_range(start, end, freq=pd.Timedelta(days=every))


def eligible_assets(panel: pd.DataFrame, cutoff: pd.Timestamp, min_days: int) -> list[str]:
    """Assets with at least ``min_days`` daily returns up to ``cutoff``."""
    ret = panel["ret_1d"]  # the one column read, not a copy of the whole panel per refit
    upto = ret[ret.index.get_level_values("date") <= cutoff]
    counts = upto.notna().groupby(level="asset").sum()
    return sorted(counts.index[counts >= min_days])


class Eligibility:
    """:func:`eligible_assets` of one feature frame, each (cutoff, min_days) computed once:
    the walk-forwards of every model of a retrain plan the same refit dates on the same
    frame (9 models × 5 refits were 45 passes over a 1,000-asset panel, ~4 s of the
    driver's CPU, for 5 distinct answers)."""

    def __init__(self, features: pd.DataFrame) -> None:
        self.features = features
        self._seen: dict[tuple[pd.Timestamp, int], list[str]] = {}

    def __call__(self, cutoff: pd.Timestamp, min_days: int) -> list[str]:
        key = (pd.Timestamp(cutoff), int(min_days))
        if key not in self._seen:
            self._seen[key] = eligible_assets(self.features, *key)
        return list(self._seen[key])


def plan(features: pd.DataFrame, oos_start: dt.date, refit_every: int, min_train_days: int,
         per_asset: bool, chunk_assets: int = 1, eligible: Eligibility | None = None
         ) -> list[Task]:
    """The walk-forward's tasks in refit order (assets sorted within a refit).

    A per-asset model's assets go ``chunk_assets`` to a task: one fit and one forecast call
    over the chunk's rows (each asset still fitted on its own rows alone) instead of one task
    per asset, whose fixed cost (slicing, frames, shipping to a worker) dominated cheap models
    at 1,000 assets. A chunk that fails is redone asset by asset (:func:`run_task`).
    ``eligible``: an :class:`Eligibility` of ``features`` shared with other models' plans."""
    if eligible is None:
        eligible = Eligibility(features)
    elif eligible.features is not features:
        raise ValueError("plan: the shared Eligibility was computed on another feature frame")
    dates = features.index.get_level_values("date")
    last = dates.max()
    fits = refit_dates(pd.Timestamp(oos_start), last, refit_every)
    tasks = []
    for k, fit_end in enumerate(fits):
        seg_end = min(fits[k + 1] - pd.Timedelta(days=1), last) if k + 1 < len(fits) else last
        assets = tuple(eligible(fit_end, min_train_days))
        if not assets:
            continue
        size = max(1, chunk_assets)
        groups = ([assets[i:i + size] for i in range(0, len(assets), size)] if per_asset
                  else [assets])
        tasks += [Task(k, fit_end, seg_end, g, separable=per_asset) for g in groups]
    return tasks


def run_task(task: Task, make_model: Callable[[], Forecaster], features: pd.DataFrame,
             horizons: Sequence[int]) -> TaskResult:
    """Fit and forecast one task; an exception becomes the result's ``error``, not a crash.

    A chunk of a per-asset model that fails is redone one asset at a time: the assets that
    fail alone are listed in ``failed``, the others keep their forecasts. A pooled task that
    fails is retried without each of its assets in turn (leave one out, in asset order): the
    first that succeeds is the result, with the asset it had to leave out in ``left_out`` —
    one asset's data cannot cost a pooled model every other asset. Above
    :data:`LEAVE_EACH_OUT_MAX` assets that asset is located by bisection first, so a failure
    of the whole (a bug, a systematic data fault) costs O(log A) probe fits, not A full fits.
    Healthy tasks never retry, so their numbers are those of one fit.
    """
    start = time.perf_counter()
    return dataclasses.replace(_run_task(task, make_model, features, horizons),
                               seconds=time.perf_counter() - start)


def _run_task(task: Task, make_model: Callable[[], Forecaster], features: pd.DataFrame,
              horizons: Sequence[int]) -> TaskResult:
    result = _attempt(task, make_model, features, horizons)
    if not result.error or len(task.assets) < 2:
        return result
    if task.separable:
        parts = [_attempt(Task(task.k, task.fit_end, task.seg_end, (a,), True), make_model,
                          features, horizons) for a in task.assets]
        return TaskResult(task, concat_forecasts([p.forecasts for p in parts if not p.error]),
                          failed=tuple((p.task.assets[0], p.error) for p in parts if p.error))
    suspects: tuple[str, ...] = task.assets
    if len(task.assets) > LEAVE_EACH_OUT_MAX:
        culprit = _bisect_culprit(task, make_model, features, horizons)
        suspects = () if culprit is None else (culprit,)
    for culprit in suspects:
        rest = tuple(a for a in task.assets if a != culprit)
        retry = _attempt(Task(task.k, task.fit_end, task.seg_end, rest), make_model, features,
                         horizons)
        if not retry.error:
            return TaskResult(task, retry.forecasts, "", left_out=(culprit, result.error))
    return result


def _bisect_culprit(task: Task, make_model: Callable[[], Forecaster], features: pd.DataFrame,
                    horizons: Sequence[int]) -> str | None:
    """The asset whose data makes a pooled fit fail, located by fitting halves: of the two
    halves of the suspects, the one that fails alone while the other fits holds it. None when
    both halves fail or both fit (a failure of the whole, or of no single asset), after at most
    2·log2(A) probe fits, each on fewer rows than the task's: leaving out each of 1,000 assets
    in turn would be 1,000 full fits per refit."""
    suspects = task.assets
    while len(suspects) > 1:
        halves = suspects[: len(suspects) // 2], suspects[len(suspects) // 2:]
        fails = [bool(_attempt(Task(task.k, task.fit_end, task.seg_end, half), make_model,
                               features, horizons).error) for half in halves]
        if fails[0] == fails[1]:
            return None
        suspects = halves[0] if fails[0] else halves[1]
    return suspects[0]


def _task_rows(features: pd.DataFrame, assets: tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``assets``. One asset of an (asset, date)-sorted frame is a contiguous
    block found by binary search, so a per-asset walk-forward stays linear in the number of
    assets instead of scanning the whole panel once per task."""
    if len(assets) == 1 and features.index.is_monotonic_increasing:
        return features.loc[[assets[0]]]
    return features[features.index.get_level_values("asset").isin(assets)]


def _attempt(task: Task, make_model: Callable[[], Forecaster], features: pd.DataFrame,
             horizons: Sequence[int]) -> TaskResult:
    features = _task_rows(features, task.assets)
    dates = features.index.get_level_values("date")
    in_assets = np.ones(len(features), dtype=bool)
    try:
        model = make_model().fit(features[in_assets & (dates <= task.fit_end)])
        seg_dates = pd.date_range(task.fit_end, task.seg_end, freq="D")
        fc = model.forecast(features[in_assets & (dates <= task.seg_end)], horizons, seg_dates)
    except Exception as exc:  # isolation is the point: any fault fails this task only
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return TaskResult(task, concat_forecasts([]), f"{type(exc).__name__}: {exc} "
                          f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})")
    fc["fitted_through"] = task.fit_end
    return TaskResult(task, fc)


def _declined(alias: str, results: list[TaskResult], forecasts: pd.DataFrame,
              panel: pd.DataFrame | None, horizons: Sequence[int]) -> list[dict[str, Any]]:
    """One row (stage ``declined``) per refit at which the model ran, the asset was eligible
    (in the task) and had rows in the segment, the model forecast it at another refit, and yet
    no forecast came: a fit the model judged degenerate there. Its segment's days then drop
    out of every model's score on that asset (the common support), which nothing said before.
    A refit before the model's first forecast of the asset counts too (an eligible asset whose
    first fit was declined: 120 days of ETH left every model's score, unsaid); a model that
    never forecast the asset is not said here (it does not narrow the support)."""
    if panel is None or not len(forecasts) or not len(panel):
        return []
    index = panel.index
    codes, names = pd.factorize(index.get_level_values("asset"))
    stamps = index.get_level_values("date").to_numpy("datetime64[ns]")
    order = np.lexsort((stamps, codes))
    cut = np.searchsorted(codes[order], np.arange(len(names) + 1))
    days = {str(a): stamps[order[cut[i]:cut[i + 1]]] for i, a in enumerate(names)}
    got = forecasts[["asset", "fitted_through", "horizon_days"]].drop_duplicates()
    made = {(str(a), pd.Timestamp(t), int(h)) for a, t, h in got.itertuples(index=False)}
    first = {(str(a), int(h)): pd.Timestamp(t) for (a, h), t in
             got.groupby(["asset", "horizon_days"])["fitted_through"].min().items()}
    declined: dict[tuple[str, int], list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
    for r in results:
        if r.error:
            continue
        gone = {a for a, _ in r.failed} | ({r.left_out[0]} if r.left_out else set())
        fit_end, seg_end = pd.Timestamp(r.task.fit_end), pd.Timestamp(r.task.seg_end)
        lo, hi = np.datetime64(fit_end, "ns"), np.datetime64(seg_end, "ns")
        for a in r.task.assets:
            mine = days.get(a)
            if a in gone or mine is None or (np.searchsorted(mine, lo, "left")
                                            >= np.searchsorted(mine, hi, "right")):
                continue  # failed (said), or no row in the segment: nothing to forecast
            for h in horizons:
                since = first.get((a, int(h)))
                if since is None or fit_end == since or (a, fit_end, int(h)) in made:
                    continue
                declined.setdefault((a, int(h)), []).append((fit_end, seg_end))
    rows = []
    for (a, h), segments in sorted(declined.items()):
        (start, end), n = min(segments), len(segments)
        more = f" and {n - 1} later refit(s)" if n > 1 else ""
        rows.append({"model": alias, "asset": a, "horizon_days": h, "stage": "declined",
                     "rows": n, "reason": (
                         f"refit {start.date()}{more}: no forecast for {start.date()}.."
                         f"{end.date()} although forecast from the refit of "
                         f"{first[(a, h)].date()} (the model declined the fit); those days "
                         "are scored for no model on this asset")})
    return rows


def _failures(alias: str, results: list[TaskResult], forecasts: pd.DataFrame,
              reasons: pd.Series, alone: np.ndarray, horizons: Sequence[int],
              panel: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per failed (model, asset, horizon), and one per triple whose only flagged
    forecasts are ``alone`` (unverifiable: dropped one by one, the triple kept) or whose only
    gap is a refit the model declined (``declined``, :func:`_declined`)."""
    rows = []
    for r in results:
        if r.error:
            rows += [{"model": alias, "asset": a, "horizon_days": int(h), "stage": "fit",
                      "reason": f"refit {r.task.fit_end.date()}: {r.error}", "rows": 0}
                     for a in r.task.assets for h in horizons]
        if r.left_out is not None:
            asset, error = r.left_out
            rows += [{"model": alias, "asset": asset, "horizon_days": int(h), "stage": "fit",
                      "rows": 0, "reason": f"refit {r.task.fit_end.date()}: the pooled fit "
                                           f"fails with this asset ({error}), not without it"}
                     for h in horizons]
        rows += [{"model": alias, "asset": asset, "horizon_days": int(h), "stage": "fit",
                  "reason": f"refit {r.task.fit_end.date()}: {error}", "rows": 0}
                 for asset, error in r.failed for h in horizons]
    # the distinct (asset, horizon) pairs first: iterating every row's asset string was 1.8 s
    # a model at 1,000 assets, in the process that gathers a cluster's results
    pairs = forecasts[["asset", "horizon_days"]].drop_duplicates()
    covered = set(zip(pairs["asset"].astype(str), pairs["horizon_days"].astype(int),
                      strict=True))
    ran = sorted({a for r in results if not r.error for a in r.task.assets}
                 - {a for r in results for a, _ in r.failed})
    rows += [{"model": alias, "asset": a, "horizon_days": int(h), "stage": "no_forecast",
              "rows": 0, "reason": "no forecast at any cutoff: the model declined the asset "
                                   "at every refit (e.g. a fit it judged degenerate)"}
             for a in ran for h in horizons if (a, int(h)) not in covered]
    flagged = np.asarray(reasons != "")
    bad = forecasts[flagged].assign(reason=reasons[flagged], alone=alone[flagged])
    for (asset, h), g in bad.groupby(["asset", "horizon_days"], sort=True):
        wrong = g[~g["alone"]]  # one forecast the model got wrong fails the triple
        first = (wrong if len(wrong) else g).sort_values("cutoff").iloc[0]
        if len(wrong):
            stage, what = "plausibility", f"{len(wrong)} implausible forecasts"
        else:
            stage, what = "unverifiable", f"{len(g)} forecasts dropped (the others kept)"
        rows.append({"model": alias, "asset": asset, "horizon_days": int(h),
                     "stage": stage, "rows": len(wrong) or len(g),
                     "reason": f"{what}, first at {first['cutoff'].date()}: "
                               f"{first['reason']}"})
    # last: a triple failed for any other reason keeps that row (drop_duplicates below)
    rows += _declined(alias, results, forecasts, panel, horizons)
    out = pd.DataFrame(rows, columns=FAILURE_COLUMNS)
    # one row per triple: a fit failure explains the rest, the first refit's error is enough
    out = out.drop_duplicates(["model", "asset", "horizon_days"], ignore_index=True)
    return out.sort_values(["asset", "horizon_days"], kind="stable", ignore_index=True)


def _withheld(fc: pd.DataFrame, failed_rows: np.ndarray, flagged: np.ndarray,
              alone: np.ndarray, results: list[TaskResult]) -> pd.DataFrame:
    """The rows of failed triples (``failed_rows``) dated before their triple's first failure,
    with that date as ``failed_from``: the first implausible forecast's cutoff (``flagged``
    rows not ``alone``) or the first refit whose fit failed for the asset (all horizons)."""
    first: dict[tuple[str, int], pd.Timestamp] = {}

    def note(asset: str, horizon: int, when: pd.Timestamp) -> None:
        key = (str(asset), int(horizon))
        first[key] = min(first.get(key, when), when)

    wrong = flagged[~alone[flagged]]
    for (asset, h), when in fc.iloc[wrong].groupby(["asset", "horizon_days"])["cutoff"].min(
            ).items():
        note(asset, h, pd.Timestamp(when))
    horizons = sorted({int(h) for h in fc["horizon_days"].unique()})
    for r in results:
        broken = ([*r.task.assets] if r.error else []) + (
            [r.left_out[0]] if r.left_out is not None else []) + [a for a, _ in r.failed]
        for asset in broken:
            for h in horizons:
                note(asset, h, pd.Timestamp(r.task.fit_end))
    rows = fc[failed_rows]
    if not len(rows) or not first:
        return no_withheld()
    keys = list(zip(rows["asset"].astype(str), rows["horizon_days"].astype(int), strict=True))
    since = pd.to_datetime(pd.Series([first.get(k, pd.NaT) for k in keys], index=rows.index))
    rows = rows.assign(failed_from=since)
    return rows[rows["cutoff"] < rows["failed_from"]].reset_index(drop=True)


@dataclass
class PendingBacktest:
    """A walk-forward whose tasks have been handed to the mapper: :meth:`result` reads them
    (waiting where they still run) and checks the forecasts. With builtin ``map`` nothing has
    run yet and :meth:`result` runs the tasks in order; on a cluster they already run."""

    alias: str
    tasks: list[Task]
    results: Iterable[TaskResult]
    n_refits: int
    panel: pd.DataFrame
    horizons: Sequence[int]
    plausibility: PlausibilityConfig | None
    trailing: TrailingVariance | None = None   # shared by the walk-forwards of one panel

    def result(self, progress: ProgressHook | None = None) -> WalkForward:
        results: list[TaskResult] = []
        for result in self.results:
            results.append(result)
            if progress is not None:
                progress(result.task.k + 1, self.n_refits)
        fc = concat_forecasts([r.forecasts for r in results])
        if "fitted_through" not in fc.columns:
            fc["fitted_through"] = pd.Series(dtype="datetime64[ns]")
        reasons = forecast_implausibility(fc, self.panel,
                                          self.plausibility or PlausibilityConfig(),
                                          self.trailing)
        flagged = np.flatnonzero(np.asarray(reasons != ""))
        alone = np.zeros(len(fc), dtype=bool)  # unverifiable: dropped one by one
        alone[flagged[unverifiable(np.asarray(reasons)[flagged])]] = True
        failures = _failures(self.alias, results, fc, reasons, alone, self.horizons,
                             self.panel)
        whole = whole_failures(failures)
        failed = pd.MultiIndex.from_frame(whole[["asset", "horizon_days"]].astype(
            {"horizon_days": int}))
        in_failed = pd.MultiIndex.from_frame(fc[["asset", "horizon_days"]].astype(
            {"horizon_days": int})).isin(failed)
        keep = ~in_failed & ~alone
        return WalkForward(fc[keep].reset_index(drop=True), failures,
                           sum(r.seconds for r in results),
                           _withheld(fc, in_failed & ~alone, flagged, alone, results))


def start_backtest(
    make_model: Callable[[], Forecaster],
    panel: pd.DataFrame,
    oos_start: dt.date,
    refit_every: int,
    horizons: Sequence[int],
    min_train_days: int,
    mapper: Mapper = map,
    plausibility: PlausibilityConfig | None = None,
    chunk_assets: int = 1,
    features: pd.DataFrame | None = None,
    trailing: TrailingVariance | None = None,
    eligible: Eligibility | None = None,
    per_asset: bool | None = None,
    alias: str | None = None,
) -> PendingBacktest:
    """Plan :func:`backtest`'s tasks and hand them to ``mapper``; read them with
    :meth:`PendingBacktest.result`. Starting several models before reading any lets a
    mapper that runs tasks at once (a Dask engine's) keep every worker busy across models.
    ``features``: ``feature_view(panel)`` when the caller already holds it (one copy shared
    by every model, not one per model); ``trailing``: the panel's
    :class:`~models.plausibility.TrailingVariance` for ``plausibility``, likewise shared;
    ``eligible``: the features' :class:`Eligibility`, likewise. ``per_asset`` and ``alias``,
    when both given, are the model's (:func:`models.registry.fits_per_asset`): the model is
    then built only where its tasks run, not here to ask it."""
    features = feature_view(panel) if features is None else features
    if per_asset is None or alias is None:
        probe = make_model()
        per_asset, alias = bool(getattr(probe, "per_asset", False)), str(probe.alias)
    tasks = plan(features, oos_start, refit_every, min_train_days, per_asset, chunk_assets,
                 eligible)
    n_refits = len(refit_dates(pd.Timestamp(oos_start),
                               features.index.get_level_values("date").max(), refit_every))
    results = mapper(partial(run_task, make_model=make_model, features=features,
                             horizons=horizons), tasks)
    return PendingBacktest(alias, tasks, results, n_refits, panel, horizons, plausibility,
                           trailing)


def backtest(
    make_model: Callable[[], Forecaster],
    panel: pd.DataFrame,
    oos_start: dt.date,
    refit_every: int,
    horizons: Sequence[int],
    min_train_days: int,
    progress: ProgressHook | None = None,
    mapper: Mapper = map,
    plausibility: PlausibilityConfig | None = None,
    chunk_assets: int = 1,
) -> WalkForward:
    """Out-of-sample forecasts for every cutoff from ``oos_start`` to the panel's last date,
    with every failed (model, asset, horizon) dropped and listed (module docstring); a
    per-asset model's assets go ``chunk_assets`` to a task (:func:`plan`)."""
    return start_backtest(make_model, panel, oos_start, refit_every, horizons, min_train_days,
                          mapper, plausibility, chunk_assets).result(progress)


def walk_forward(
    make_model: Callable[[], Forecaster],
    panel: pd.DataFrame,
    oos_start: dt.date,
    refit_every: int,
    horizons: Sequence[int],
    min_train_days: int,
    progress: ProgressHook | None = None,
    mapper: Mapper = map,
    plausibility: PlausibilityConfig | None = None,
    chunk_assets: int = 1,
) -> pd.DataFrame:
    """:func:`backtest`'s forecasts, strict: any failure raises :class:`ForecastFailureError`
    naming every failed (model, asset, horizon) and why, for callers that cannot go on
    without every asset (benchmarks, one-model studies)."""
    out = backtest(make_model, panel, oos_start, refit_every, horizons, min_train_days,
                   progress, mapper, plausibility, chunk_assets)
    if len(out.failures):
        lines = [f"  {r.model} {r.asset} h={r.horizon_days}: {r.reason}"
                 for r in out.failures.itertuples()]
        raise ForecastFailureError("failed forecasts:\n" + "\n".join(lines))
    return out.forecasts

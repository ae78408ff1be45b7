"""The model comparison a volatility econometrician expects, per asset and horizon.

* Diebold-Mariano (HLN-corrected) of every model's QLIKE against ``garch11_t``;
* the Model Confidence Set at 90% (``arch.bootstrap.MCS``);
* Mincer-Zarnowitz regressions of realized on forecast variance (R², a, b);
* 1-day VaR at 99% from each model's σ by filtered historical simulation (the empirical
  quantile of its own past out-of-sample standardized losses, trailing window), with Kupiec,
  Christoffersen and Basel traffic-light backtests; ``var_pass``: no more breaches than the
  exact one-sided binomial test allows and Christoffersen independence not rejected, at 5 %
  (the acceptance function's rule: a VaR breached too rarely is costly, not wrong).

A diagnostic that cannot be computed for a group (too few pairs, a singular design, a
constant loss differential) is NaN there and its ``*_note`` column says why
(:func:`diagnostic_failures` lists them); it never stops the comparison of the others.

Pure: the scored frame (:func:`pipelines.evaluation.evaluate.scored`) and the panel in, frames out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from scipy.stats import binom

from models.backtest import Mapper
from pipelines.engine import chunked
from pipelines.evaluation.coverage import MIN_VERDICT_DAYS, var_backtest
from pipelines.evaluation.stats import (
    DM_MIN_PAIRS,
    diebold_mariano,
    mincer_zarnowitz,
    model_confidence_set,
    newey_west_lags,
)

BENCHMARK = "garch11_t"
T = TypeVar("T")
VAR_COLUMNS = ["model", "asset", "var_n", "var_breaches", "kupiec_p", "christoffersen_lr_cc",
               "cc_p", "red_windows", "worst_zone", "var_pass", "var_unproven", "var_note"]


def _wide(scores: pd.DataFrame, value: str) -> pd.DataFrame:
    """``scores.pivot_table(index="cutoff", columns="model", values=value)``: one column per
    model, one row per cutoff. With one score per (cutoff, model), as the walk-forward gives,
    the mean pivot_table takes is the value itself, so a plain ``pivot`` (half the time; the
    comparison pivots every asset × horizon twice) gives the same frame once the rows and
    columns that pivot_table drops (all NaN) are dropped (test)."""
    if scores.duplicated(["cutoff", "model"]).any():
        return scores.pivot_table(index="cutoff", columns="model", values=value)
    wide = scores.pivot(index="cutoff", columns="model", values=value)
    return wide.dropna(how="all").dropna(axis=1, how="all")


def _attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, str]:
    """``fn(...)`` and "", or None and why: one diagnostic that cannot be computed for one
    group is NaN with its reason, never an error that loses every other model and asset."""
    try:
        return fn(*args, **kwargs), ""
    except Exception as exc:  # numpy/statsmodels/arch raise many kinds; all mean "undefined"
        return None, f"{type(exc).__name__}: {exc}".strip()


def _qlike_by_pair(scores: pd.DataFrame) -> list[tuple[tuple[str, int], pd.DataFrame]]:
    """Each (asset, horizon)'s QLIKE, one column per model (:func:`_wide`), in sorted order:
    what the DM and MCS tables both read (pivoted once for both)."""
    return [(key, _wide(g, "qlike"))
            for key, g in scores.groupby(["asset", "horizon_days"], sort=True)]


def dm_table(scores: pd.DataFrame, benchmark: str = BENCHMARK,
             wides: list[tuple[tuple[str, int], pd.DataFrame]] | None = None) -> pd.DataFrame:
    """DM statistic and p-values of each model's QLIKE against ``benchmark``; ``dm_note`` says
    why the test is NaN where it is; ``dm_pairs``: the days on which both have a loss, the
    test's support (fewer than the model's scored days where the benchmark lacks some).
    ``wides``: :func:`_qlike_by_pair` of ``scores`` when the caller has it."""
    rows = []
    nan = float("nan")
    for (asset, h), wide in (_qlike_by_pair(scores) if wides is None else wides):
        if benchmark not in wide:
            rows += [{"asset": asset, "horizon_days": h, "model": m, "dm_stat": nan,
                      "dm_p": nan, "dm_p_better": nan, "mean_diff": nan, "dm_pairs": 0,
                      "dm_note": f"benchmark {benchmark} has no forecasts here"}
                     for m in wide.columns]
            continue
        for model in wide.columns.drop(benchmark):
            r, why = _attempt(diebold_mariano, wide[model], wide[benchmark], horizon=int(h))
            pairs = int((np.isfinite(wide[model]) & np.isfinite(wide[benchmark])).sum())
            if r is not None and r.n < DM_MIN_PAIRS:
                r, why = None, f"{r.n} complete pairs < {DM_MIN_PAIRS}: too few to test"
            if r is None:
                rows.append({"asset": asset, "horizon_days": h, "model": model, "dm_stat": nan,
                             "dm_p": nan, "dm_p_better": nan, "mean_diff": nan,
                             "dm_pairs": pairs, "dm_note": why})
                continue
            rows.append({"asset": asset, "horizon_days": h, "model": model,
                         "dm_stat": r.statistic, "dm_p": r.p_value,
                         "dm_p_better": r.p_value_a_better, "mean_diff": r.mean_diff,
                         "dm_pairs": r.n, "dm_note": r.note if np.isnan(r.statistic) else ""})
    return pd.DataFrame(rows, columns=["asset", "horizon_days", "model", "dm_stat", "dm_p",
                                       "dm_p_better", "mean_diff", "dm_pairs", "dm_note"])


def mcs_table(scores: pd.DataFrame, size: float = 0.10, reps: int = 500,
              seed: int = 0, wides: list[tuple[tuple[str, int], pd.DataFrame]] | None = None
              ) -> pd.DataFrame:
    """Membership of each model in the 90% MCS on QLIKE, per asset and horizon (``mcs_note``:
    why membership is unknown where it is; ``mcs_days``: the days on which every model of the
    asset and horizon has a loss, the set's common support, which a model with a short or
    broken history shortens for all). ``wides`` as :func:`dm_table`'s."""
    rows = []
    for (asset, h), wide in (_qlike_by_pair(scores) if wides is None else wides):
        if wide.shape[1] == 1:  # one model is trivially its own confidence set
            rows.append({"asset": asset, "horizon_days": h, "model": wide.columns[0],
                         "mcs_p": 1.0, "in_mcs": True,
                         "mcs_days": int(np.isfinite(wide.iloc[:, 0]).sum()), "mcs_note": ""})
            continue
        res, why = _attempt(model_confidence_set, wide, size=size, reps=reps, seed=seed)
        if res is None:
            common = int(np.isfinite(wide.to_numpy(float)).all(axis=1).sum())
            rows += [{"asset": asset, "horizon_days": h, "model": m, "mcs_p": float("nan"),
                      "in_mcs": None, "mcs_days": common, "mcs_note": why}
                     for m in wide.columns]
            continue
        rows += [{"asset": asset, "horizon_days": h, "model": m, "mcs_p": res.p_values[m],
                  "in_mcs": m in res.included, "mcs_days": res.n, "mcs_note": ""}
                 for m in res.p_values]
    return pd.DataFrame(rows, columns=["asset", "horizon_days", "model", "mcs_p", "in_mcs",
                                       "mcs_days", "mcs_note"])


def mz_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mincer-Zarnowitz regression of realized on forecast variance (levels); ``mz_note``
    says why it is NaN where it is (e.g. "singular design")."""
    rows = []
    nan = float("nan")
    for (model, asset, h), g in scores.groupby(["model", "asset", "horizon_days"], sort=True):
        # Bartlett weights need about twice the overlap's h - 1 lags (diebold_mariano's
        # docstring), and never fewer than the Newey-West rule's
        pairs = int((g["realized"].notna() & g["variance"].notna()).sum())
        r, why = _attempt(mincer_zarnowitz, g["realized"], g["variance"],
                          maxlags=max(newey_west_lags(pairs), 2 * (int(h) - 1)))
        if r is None:
            rows.append({"model": model, "asset": asset, "horizon_days": h, "mz_r2": nan,
                         "mz_a": nan, "mz_b": nan, "mz_p": nan, "mz_note": why})
            continue
        rows.append({"model": model, "asset": asset, "horizon_days": h, "mz_r2": r.r_squared,
                     "mz_a": r.intercept, "mz_b": r.slope, "mz_p": r.p_value,
                     "mz_note": r.note})
    return pd.DataFrame(rows, columns=["model", "asset", "horizon_days", "mz_r2", "mz_a",
                                       "mz_b", "mz_p", "mz_note"])


def fhs_var(sigma: pd.Series, ret_next: pd.Series, level: float, window: int = 500,
            min_obs: int = 100) -> pd.Series:
    """1-day VaR (as a positive log loss) at each cutoff from FHS on past standardized losses.

    ``z_s = -r_{s+1}/σ_s`` is known at ``s+1``, so the quantile at ``t`` uses ``z`` up to
    ``t-1`` only.
    """
    z = (-ret_next / sigma).shift(1)
    q = z.rolling(window, min_periods=min_obs).quantile(level)
    return q * sigma


Window = tuple[pd.Timestamp, pd.Timestamp | None]


def var_table(forecasts: dict[str, pd.DataFrame], panel: pd.DataFrame,
              level: float = 0.99, window: Window | None = None) -> pd.DataFrame:
    """Kupiec / Christoffersen / traffic light of each model's FHS VaR on next-day returns.

    ``window`` (first and last loss day, the last None: open): the backtest counts only the
    days whose loss (``cutoff + 1``) lies in it, the VaR of each being built from every
    standardized loss before it. A period's backtest is a cut of the whole out-of-sample
    path: run on the period's forecasts alone, the FHS quantile started again from nothing at
    the period's start (its first ``min_obs`` days without a VaR, the next ones from a
    hundred-odd losses), which failed the frozen forecaster on 9 of 12 assets of the
    evaluation period that pass on the same days read with the losses already known."""
    rows = []
    for model, fc in forecasts.items():
        one = fc[fc["horizon_days"] == 1]
        for asset, g in one.groupby("asset", sort=True):
            sigma = np.sqrt(g.set_index("cutoff")["variance"].sort_index())
            ret = panel.xs(asset, level="asset")["ret_1d"]
            ret_next = ret.shift(-1, freq="D").reindex(sigma.index)
            var = fhs_var(sigma, ret_next, level)
            if window is not None:
                loss_day = sigma.index + pd.Timedelta(days=1)
                keep = loss_day >= window[0]
                if window[1] is not None:
                    keep &= loss_day <= window[1]
                var, ret_next = var[keep], ret_next[keep]
                if not len(var):
                    continue  # no day of the window: nothing to say (not a failure)
            bt, why = _attempt(var_backtest, -ret_next, var, 1.0 - level)
            if bt is None:
                rows.append({"model": model, "asset": asset, "var_n": 0, "var_pass": None,
                             "var_note": why})
                continue
            # the project's one-sided rule (policy_eval.acceptance): too many breaches (exact
            # binomial tail) or clustered ones fail; too few is a cost, not a failure
            too_many_p = float(binom.sf(bt.breaches - 1, bt.n, 1.0 - level))
            passes = bool(too_many_p > 0.05 and not bt.ind.p_value <= 0.05)
            short = bt.n < MIN_VERDICT_DAYS  # passing on fewer days is unproven, not a pass
            rows.append({"model": model, "asset": asset, "var_n": bt.n,
                         "var_breaches": bt.breaches, "kupiec_p": bt.pof.p_value,
                         "christoffersen_lr_cc": bt.cc.statistic, "cc_p": bt.cc.p_value,
                         "red_windows": bt.traffic_light.n_red, "worst_zone": bt.worst_zone,
                         "var_pass": passes and not short, "var_unproven": passes and short,
                         "var_note": ""})
    return pd.DataFrame(rows, columns=VAR_COLUMNS)


NOTE_COLUMNS = {"dm_note": "diebold_mariano", "mcs_note": "model_confidence_set",
                "mz_note": "mincer_zarnowitz", "var_note": "var_backtest"}


DIAGNOSTIC_FAILURE_COLUMNS = ["model", "asset", "horizon_days", "diagnostic", "reason",
                              "scored_days"]


def diagnostic_failures(compared: pd.DataFrame) -> pd.DataFrame:
    """One row per diagnostic that could not be computed: model, asset, horizon, which, why,
    and the days the (model, asset, horizon) was scored on (``n``; NaN where unknown), which
    tells a young asset's statistics (too few days to compute) from a failure."""
    rows = []
    for col, name in NOTE_COLUMNS.items():
        if col not in compared:
            continue
        bad = compared[compared[col].fillna("").astype(str) != ""]
        days = bad["n"] if "n" in bad else pd.Series(np.nan, index=bad.index)
        rows += [{"model": r.model, "asset": r.asset, "horizon_days": int(r.horizon_days),
                  "diagnostic": name, "reason": getattr(r, col), "scored_days": n}
                 for r, n in zip(bad.itertuples(), days, strict=True)]
    return pd.DataFrame(rows, columns=DIAGNOSTIC_FAILURE_COLUMNS)


def diagnostics(scores: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
                panel: pd.DataFrame, var_window: Window | None = None
                ) -> tuple[pd.DataFrame, ...]:
    """(DM, MCS, MZ, VaR) tables; every row is about one asset, so any split by asset gives
    the same rows. ``forecasts`` feed the VaR backtest alone, counted on ``var_window``."""
    wides = _qlike_by_pair(scores)
    return (dm_table(scores, wides=wides), mcs_table(scores, wides=wides), mz_table(scores),
            var_table(forecasts, panel, window=var_window))


def _diagnostics_task(item: tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame,
                                  Window | None]) -> tuple[pd.DataFrame, ...]:
    return diagnostics(*item)


def _by_asset_chunks(scores: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
                     panel: pd.DataFrame, size: int
                     ) -> list[tuple[pd.DataFrame, dict[str, pd.DataFrame], pd.DataFrame]]:
    """The inputs cut by sorted asset into tasks of ``size`` assets (the panel reduced to the
    returns the VaR backtest reads)."""
    rets = panel[["ret_1d"]]
    # each frame's rows per asset found once (a comparison of every row per chunk was
    # chunks × frames passes over ~700,000 rows at 1,000 assets, in the driver)
    where = {"scores": _positions(scores["asset"]),
             **{f"fc:{m}": _positions(f["asset"]) for m, f in forecasts.items()},
             "rets": _positions(rets.index.get_level_values("asset"))}
    assets = sorted(set(where["scores"]).union(*(set(where[f"fc:{m}"]) for m in forecasts)))
    items = []
    for chunk in chunked(assets, size):
        items.append((_rows(scores, where["scores"], chunk),
                      {m: _rows(f, where[f"fc:{m}"], chunk) for m, f in forecasts.items()},
                      _rows(rets, where["rets"], chunk)))
    return items


def _positions(assets: pd.Series | pd.Index) -> dict[str, np.ndarray]:
    """Each asset's row positions, in row order, from one hashing pass."""
    codes, names = pd.factorize(assets)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return {str(name): order[bounds[i]:bounds[i + 1]] for i, name in enumerate(names)}


def _rows(frame: pd.DataFrame, where: dict[str, np.ndarray], assets: Sequence[str]
          ) -> pd.DataFrame:
    """The rows of ``assets``, in the frame's order: ``frame[frame.asset.isin(assets)]``."""
    parts = [where[a] for a in assets if a in where]
    return frame.take(np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.intp))


def comparison(scores: pd.DataFrame, table: pd.DataFrame, forecasts: dict[str, pd.DataFrame],
               panel: pd.DataFrame, mapper: Mapper | None = None,
               chunk_assets: int = 50, var_window: Window | None = None) -> pd.DataFrame:
    """The loss table joined with DM vs the benchmark, MCS membership and MZ R².

    ``mapper`` (e.g. a Dask engine's) runs the diagnostics in tasks of ``chunk_assets``
    assets; without one they run here in one pass. The table is the same either way: every
    diagnostic is per asset, and the merges keep the loss table's row order.

    ``var_window``: the VaR backtest counts the loss days in it only, on VaRs built from the
    whole of ``forecasts`` (a period's comparison: :func:`var_table`).
    """
    if mapper is None:
        parts = [diagnostics(scores, forecasts, panel, var_window)]
    else:
        parts = list(mapper(_diagnostics_task,
                            [(*item, var_window) for item in
                             _by_asset_chunks(scores, forecasts, panel, chunk_assets)]))
    dm, mcs, mz, var = (pd.concat([p[i] for p in parts], ignore_index=True) for i in range(4))
    keys = ["model", "asset", "horizon_days"]
    out = table.merge(dm, on=keys, how="left")
    out = out.merge(mcs, on=keys, how="left").merge(mz, on=keys)
    return out.merge(var.assign(horizon_days=1), on=["model", "asset", "horizon_days"],
                     how="left")

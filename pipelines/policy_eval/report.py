"""Summaries of a policy path: acceptance, bad debt, capital, procyclicality.

Pure: a policy path (from :mod:`pipelines.policy_eval.backtest`) in, small frames out. Every
verdict comes from :func:`pipelines.policy_eval.acceptance.accept_asset`, the function the
selection and the gate use too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from pipelines.evaluation.coverage import red_windows
from pipelines.policy_eval.acceptance import accept_arrays
from pipelines.policy_eval.episodes import Episodes, stress_bad_debt
from pipelines.policy_eval.reductions import series_mean, series_sum


def procyclicality(values: np.ndarray) -> dict[str, float]:
    """Peak-to-trough ratio and the largest 5- and 30-day increases (absolute, in fractions)
    of one series' values in date order (NaN skipped, the lags counted in rows of the values
    that remain)."""
    s = values[~np.isnan(values)]
    if not len(s):
        return {"peak_to_trough": np.nan, "max_increase_5d": np.nan, "max_increase_30d": np.nan}
    return {"peak_to_trough": float(s.max() / s.min()),
            "max_increase_5d": _max_increase(s, 5), "max_increase_30d": _max_increase(s, 30)}


def _max_increase(s: np.ndarray, lag: int) -> float:
    rise = s[lag:] - s[:-lag]
    rise = rise[~np.isnan(rise)]
    return float(rise.max()) if len(rise) else np.nan


COLUMNS = ("loss_frac", "mmf", "ltv", "short_loss_frac", "bad_debt_short", "bad_debt_lt",
           "bad_debt_ltv", "imf", "lt", "lb")


def summarize(path: pd.DataFrame, p: float, episodes: Episodes, size: float = 0.05,
              lags: int = 4, budgets: Mapping[str, float] | None = None,
              budget_path: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per asset: the acceptance verdict and its parts, capital, bad debt, the
    two-sided Kupiec band (for the over-coverage reading), Basel red windows, procyclicality
    of the initial margin.

    ``budgets`` caps the stress-episode bad debt per asset (None: no budget test; an asset
    missing from it has no budget, and the test is not judged there: at best unproven,
    :mod:`pipelines.policy_eval.acceptance` item 4);
    ``budget_path`` is the same policy with LB held at the comparison LB, whose stress bad
    debt is the one compared with a budget set at that LB (Aave): ``stress_bad_debt`` is at
    that LB on every row (at the policy's own without it), ``stress_bad_debt_lt`` at its own.

    The path is sorted once and each asset read as slices of its columns (a frame per asset
    cost ~3 ms of pandas calls, times every asset of every path judged); the figures are
    those of the pandas reductions they replace, bit for bit (test).
    """
    caps = None if budgets is None else dict(budgets)
    stress = stress_bad_debt(path, episodes)
    stress_cmp = stress_bad_debt(budget_path, episodes) if budget_path is not None else stress
    ordered = path.sort_values(["asset", "date"], kind="stable")
    col = {c: ordered[c].to_numpy(float) for c in COLUMNS if c in ordered.columns}
    names = ordered["asset"].to_numpy(object)
    cut = np.flatnonzero(names[1:] != names[:-1]) + 1
    bounds = zip(np.r_[0, cut], np.r_[cut, len(names)], strict=True) if len(names) else []
    rows = []
    for a, b in bounds:
        asset = names[a]
        g = {c: v[a:b] for c, v in col.items()}
        known = ~np.isnan(g["loss_frac"]) & ~np.isnan(g["mmf"])
        if not known.any():
            continue  # no realized day in this period: nothing to judge
        # a few days (an asset listed just before the period's end) still make a row: at
        # best unproven, named by the gate, where a skipped asset would go unmentioned
        k = {c: v[known] for c, v in g.items()}
        budget = math.inf if caps is None else caps.get(asset, math.nan)
        # on one basis for every row: at the comparison LB when that path is given, whether
        # or not this asset has a budget (own LB: ``stress_bad_debt_lt``)
        spent = float(stress_cmp.get(asset, 0.0))
        row = {"asset": asset, **accept_arrays(k["loss_frac"], k["mmf"], k["ltv"], p, size,
                                               lags, spent, budget)}
        if "short_loss_frac" in k and (~np.isnan(k["short_loss_frac"])).any():
            row["short_breaches"] = int((k["short_loss_frac"] > k["mmf"]).sum())
            if "bad_debt_short" in k:
                row["short_bad_debt_sum"] = series_sum(k["bad_debt_short"])
        row["red_windows"] = red_windows(k["loss_frac"] > k["mmf"], 250, p)
        row.update({"bad_debt_lt_sum": series_sum(k["bad_debt_lt"]),
                    "bad_debt_ltv_sum": series_sum(k["bad_debt_ltv"]),
                    "stress_bad_debt_lt": float(stress.get(asset, 0.0)),
                    "mean_mmf": series_mean(g["mmf"]), "mean_imf": series_mean(g["imf"]),
                    "mean_lt": series_mean(g["lt"]), "mean_ltv": series_mean(g["ltv"]),
                    "mean_lb": series_mean(g["lb"])})
        row.update(procyclicality(g["imf"]))
        rows.append(row)
    return pd.DataFrame(rows)

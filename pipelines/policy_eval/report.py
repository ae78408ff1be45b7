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

from pipelines.evaluation.coverage import basel_traffic_light
from pipelines.policy_eval.acceptance import accept_asset
from pipelines.policy_eval.episodes import Episodes, stress_bad_debt


def procyclicality(series: pd.Series) -> dict[str, float]:
    """Peak-to-trough ratio and the largest 5- and 30-day increases (absolute, in fractions)."""
    s = series.dropna()
    if s.empty:
        return {"peak_to_trough": np.nan, "max_increase_5d": np.nan, "max_increase_30d": np.nan}
    return {"peak_to_trough": float(s.max() / s.min()),
            "max_increase_5d": float((s - s.shift(5)).max()),
            "max_increase_30d": float((s - s.shift(30)).max())}


def summarize(path: pd.DataFrame, p: float, episodes: Episodes, size: float = 0.05,
              lags: int = 4, budgets: Mapping[str, float] | None = None,
              budget_path: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per asset: the acceptance verdict and its parts, capital, bad debt, the
    two-sided Kupiec band (for the over-coverage reading), Basel red windows, procyclicality
    of the initial margin.

    ``budgets`` caps the stress-episode bad debt per asset (missing asset: no cap);
    ``budget_path`` is the same policy with LB held at the comparison LB, whose stress bad
    debt is the one compared with a budget set at that LB (Aave).
    """
    budgets = dict(budgets or {})
    stress = stress_bad_debt(path, episodes)
    stress_cmp = stress_bad_debt(budget_path, episodes) if budget_path is not None else stress
    rows = []
    for asset, g in path.groupby("asset", sort=True):
        g = g.sort_values("date")
        known = g[g["loss_frac"].notna() & g["mmf"].notna()]
        if len(known) <= lags + 2:
            continue  # too few realized days in this period to judge the asset
        budget = budgets.get(asset, math.inf)
        spent = float(stress_cmp.get(asset, 0.0)) if math.isfinite(budget) else float(
            stress.get(asset, 0.0))
        row = {"asset": asset, **accept_asset(known, p, size, lags, spent, budget)}
        if "short_loss_frac" in known and known["short_loss_frac"].notna().any():
            row["short_breaches"] = int((known["short_loss_frac"] > known["mmf"]).sum())
        hits = (known["loss_frac"] > known["mmf"]).to_numpy()
        row["red_windows"] = basel_traffic_light(hits, 250, p).n_red
        row.update({"bad_debt_lt_sum": float(known["bad_debt_lt"].sum()),
                    "bad_debt_ltv_sum": float(known["bad_debt_ltv"].sum()),
                    "stress_bad_debt_lt": float(stress.get(asset, 0.0)),
                    "mean_mmf": float(g["mmf"].mean()), "mean_imf": float(g["imf"].mean()),
                    "mean_lt": float(g["lt"].mean()), "mean_ltv": float(g["ltv"].mean()),
                    "mean_lb": float(g["lb"].mean())})
        row.update(procyclicality(g.set_index("date")["imf"]))
        rows.append(row)
    return pd.DataFrame(rows)

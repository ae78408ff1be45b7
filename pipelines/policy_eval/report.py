"""Summaries of a policy path: coverage, bad debt, capital, procyclicality, stress episodes.

Pure: a policy path (from :mod:`pipelines.policy_eval.backtest`) in, small frames out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.evaluation.coverage import var_backtest

# Stress episodes named in the issue; inclusive UTC days of the *loss* (the interval after t).
EPISODES: dict[str, tuple[str, str]] = {
    "2020-03-12 Black Thursday": ("2020-03-12", "2020-03-13"),
    "2021-05-19 China ban crash": ("2021-05-19", "2021-05-19"),
    "2022-05 LUNA": ("2022-05-09", "2022-05-12"),
    "2022-11 FTX": ("2022-11-08", "2022-11-10"),
    "2024-08-05 yen carry unwind": ("2024-08-05", "2024-08-05"),
}


def coverage(losses: pd.Series, margin: pd.Series, p: float) -> dict[str, float]:
    """Kupiec, Christoffersen and traffic-light figures of losses against a margin series."""
    bt = var_backtest(losses, margin, p)
    return {"n": bt.n, "breaches": bt.breaches, "breach_rate": bt.breach_rate,
            "kupiec_lr": bt.pof.statistic, "kupiec_p": bt.pof.p_value,
            "band_low": bt.pof.band_lo, "band_high": bt.pof.band_hi,
            "christoffersen_lr_cc": bt.cc.statistic, "christoffersen_p": bt.cc.p_value,
            "red_windows": bt.traffic_light.n_red, "worst_zone": bt.worst_zone}


def procyclicality(series: pd.Series) -> dict[str, float]:
    """Peak-to-trough ratio and the largest 5- and 30-day increases (absolute, in fractions)."""
    s = series.dropna()
    if s.empty:
        return {"peak_to_trough": np.nan, "max_increase_5d": np.nan, "max_increase_30d": np.nan}
    return {"peak_to_trough": float(s.max() / s.min()),
            "max_increase_5d": float((s - s.shift(5)).max()),
            "max_increase_30d": float((s - s.shift(30)).max())}


def summarize(path: pd.DataFrame, p: float) -> pd.DataFrame:
    """One row per asset: coverage (long side, and short side for perps), bad debt, capital,
    procyclicality of the initial margin."""
    rows = []
    for asset, g in path.groupby("asset", sort=True):
        g = g.sort_values("date").set_index("date")
        row = {"asset": asset, **coverage(g["loss_frac"], g["mmf"], p)}
        has_short = g["short_loss_frac"].notna().any()
        short = coverage(g["short_loss_frac"], g["mmf"], p) if has_short else {}
        row.update({"short_breaches": short.get("breaches", np.nan),
                    "short_christoffersen_lr_cc": short.get("christoffersen_lr_cc", np.nan)})
        row.update({"bad_debt_sum": float(g["bad_debt"].sum()),
                    "mean_mmf": float(g["mmf"].mean()), "mean_imf": float(g["imf"].mean()),
                    "mean_lt": float(g["lt"].mean()), "mean_ltv": float(g["ltv"].mean())})
        row.update(procyclicality(g["imf"]))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["coverage_pass"] = (out["kupiec_p"] > 0.05) & (out["christoffersen_lr_cc"] < 5.99)
    return out


def stress_table(path: pd.DataFrame) -> pd.DataFrame:
    """Per episode and asset: the worst realized loss, the margin held, breaches, bad debt.

    A row's loss happens in the interval after its date, so an episode day D is covered by the
    parameters published at the end of D-1.
    """
    rows = []
    dates = path["date"] + pd.Timedelta(days=1)  # the day the loss happened
    for name, (start, end) in EPISODES.items():
        mask = (dates >= pd.Timestamp(start)) & (dates <= pd.Timestamp(end))
        for asset, g in path[mask].groupby("asset", sort=True):
            if g["loss_frac"].notna().any():
                rows.append({"episode": name, "asset": asset,
                             "worst_loss": float(g["loss_frac"].max()),
                             "mmf_held": float(g["mmf"].iloc[0]),
                             "lt_held": float(g["lt"].iloc[0]),
                             "breaches": int(g["breach"].fillna(False).astype(bool).sum()),
                             "bad_debt": float(g["bad_debt"].sum())})
    return pd.DataFrame(rows, columns=["episode", "asset", "worst_loss", "mmf_held", "lt_held",
                                       "breaches", "bad_debt"])

"""Markdown tables of the last run's results (``volmargin report``), read from ``outputs/``.

The README's result tables are this command's output, so every figure there can be
reproduced with ``make run && .venv/bin/volmargin report``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HOURLY = ("BTC", "ETH")  # assets whose realized proxy is intraday RV


def _fmt(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.round(digits).to_markdown(index=False)


def forecast_tables(comparison: pd.DataFrame) -> str:
    """QLIKE by model (all assets, BTC/ETH, the rest) and the DM/MCS/VaR summary."""
    c = comparison.copy()
    c["group"] = c["asset"].isin(HOURLY).map({True: "BTC/ETH", False: "range-proxy assets"})
    wide = c.pivot_table(index="model", columns="horizon_days", values="qlike", aggfunc="mean")
    wide.columns = [f"QLIKE h={h}" for h in wide.columns]
    groups = c.pivot_table(index="model", columns=["group", "horizon_days"], values="qlike",
                           aggfunc="mean")
    groups.columns = [f"{g} h={h}" for g, h in groups.columns]
    one = c[c["horizon_days"] == 1].groupby("model").agg(
        in_mcs_h1=("in_mcs", "mean"),
        dm_better_p05=("dm_p_better", lambda x: int((x < 0.05).sum())),
        dm_worse_p05=("dm_p_better", lambda x: int((x > 0.95).sum())),
        var99_pass=("var_pass", lambda x: int(x.fillna(False).astype(bool).sum())))
    table = wide.join(groups).join(one).sort_values(wide.columns[0]).reset_index()
    return _fmt(table)


def per_asset_qlike(comparison: pd.DataFrame, horizon: int) -> str:
    c = comparison[comparison["horizon_days"] == horizon]
    return _fmt(c.pivot_table(index="asset", columns="model", values="qlike").reset_index())


def policy_tables(summary: pd.DataFrame, stress: pd.DataFrame, selected: str) -> str:
    agg = summary.groupby("policy", sort=False).agg(
        coverage_pass=("coverage_pass", "sum"), assets=("asset", "size"),
        breaches=("breaches", "sum"), mean_mmf=("mean_mmf", "mean"), mean_lt=("mean_lt", "mean"),
        bad_debt_sum=("bad_debt_sum", "sum"), imf_peak_to_trough=("peak_to_trough", "mean"),
        imf_max_30d_increase=("max_increase_30d", "mean")).reset_index()
    mine = summary[summary["policy"] == f"policy:{selected}"][[
        "asset", "n", "breaches", "band_low", "band_high", "kupiec_p", "christoffersen_lr_cc",
        "red_windows", "mean_mmf", "mean_imf", "mean_lt", "bad_debt_sum", "peak_to_trough",
        "max_increase_30d", "coverage_pass"]]
    hourly = stress[stress["asset"].isin(HOURLY)].groupby(["policy", "asset"]).agg(
        stress_breaches=("breaches", "sum"), stress_bad_debt=("bad_debt", "sum")).reset_index()
    lt = summary[summary["asset"].isin(HOURLY)][["policy", "asset", "mean_lt", "mean_mmf"]]
    aave = hourly.merge(lt, on=["policy", "asset"])
    keep = [f"policy:{selected}", "aave_v3", "static", "ewma_fhs", "policy:garch11_t"]
    aave = aave[aave["policy"].isin(keep)].sort_values(["asset", "policy"])
    return ("### All policies, summed or averaged over assets\n\n" + _fmt(agg)
            + f"\n\n### Selected policy (`policy:{selected}`) per asset\n\n" + _fmt(mine)
            + "\n\n### BTC and ETH against Aave v3 (stress episodes summed)\n\n" + _fmt(aave))


def report(outputs_dir: Path, selected: str | None = None) -> str:
    """The whole Markdown report from a run's ``outputs/backtest`` files."""
    bt = Path(outputs_dir) / "backtest"
    comparison = pd.read_csv(bt / "comparison.csv")
    summary = pd.read_csv(bt / "policy_summary.csv")
    stress = pd.read_csv(bt / "stress_episodes.csv")
    if selected is None:
        own = summary["policy"].str.fullmatch(r"policy:[^:]+:no_apc")
        selected = summary.loc[own, "policy"].iloc[0].split(":")[1]
    return ("## Forecasts\n\n" + forecast_tables(comparison)
            + "\n\n### QLIKE per asset, h=1\n\n" + per_asset_qlike(comparison, 1)
            + "\n\n## Policy backtest\n\n" + policy_tables(summary, stress, selected)
            + "\n\n### Stress episodes (selected policy)\n\n"
            + _fmt(stress[stress["policy"] == f"policy:{selected}"]) + "\n")

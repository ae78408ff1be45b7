"""Model selection: a forecast-quality screen, then the criterion that matters for publishing.

1. **Screen** (issue's rule): at the selection horizon a model must be inside the 90% Model
   Confidence Set on at least ``min_mcs_share`` of the assets and its 1-day FHS VaR99 must pass
   Kupiec and Christoffersen on at least ``min_var_share`` of them. If no model passes, all
   are kept and the reason says so.
2. **Choose**: ``rule="forecast"`` takes the lowest mean QLIKE; ``rule="policy"`` (default)
   takes the model whose margin policy passes its coverage backtest on the most assets, then
   the least capital (mean MMF), then QLIKE — the published policy, not the forecast, is what
   a venue relies on, and the lowest-QLIKE model is not always the best margin driver.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from configs.schema import SelectionConfig


@dataclass(frozen=True)
class Selection:
    model: str
    reason: str
    table: pd.DataFrame  # one row per model: shares, QLIKE, policy coverage and capital


def select(comparison: pd.DataFrame, policy: pd.DataFrame | None, cfg: SelectionConfig
           ) -> Selection:
    """Pick the forecaster from the comparison table (and policy summary when rule=policy)."""
    at_h = comparison[comparison["horizon_days"] == cfg.horizon]
    if at_h.empty:
        raise ValueError(f"no forecasts at the selection horizon {cfg.horizon} to select from")
    one_day = comparison[comparison["horizon_days"] == 1]
    per = at_h.groupby("model").agg(qlike=("qlike", "mean"),
                                    mcs_share=("in_mcs", lambda x: x.fillna(False).mean()))
    per["var_share"] = one_day.groupby("model")["var_pass"].apply(
        lambda x: x.fillna(False).astype(bool).mean())
    per["screened"] = (per["mcs_share"] >= cfg.min_mcs_share) & (
        per["var_share"] >= cfg.min_var_share)
    notes = []
    pool = per[per["screened"]]
    if pool.empty:
        pool = per
        notes.append("no model passed the MCS/VaR screen; all considered")
    if policy is not None and len(policy):
        mine = policy[policy["policy"].str.fullmatch(r"policy:[^:]+")]
        stats = mine.assign(model=mine["policy"].str.slice(7)).groupby("model").agg(
            policy_pass=("coverage_pass", "sum"), mean_mmf=("mean_mmf", "mean"))
        per = per.join(stats)
        pool = per.loc[pool.index]
    if cfg.rule == "policy" and "policy_pass" in pool:
        ranked = pool.sort_values(["policy_pass", "mean_mmf", "qlike"],
                                  ascending=[False, True, True])
        best = ranked.index[0]
        notes.append(f"policy coverage on {int(ranked.loc[best, 'policy_pass'])} assets, "
                     f"mean MMF {ranked.loc[best, 'mean_mmf']:.4f}")
    else:
        ranked = pool.sort_values("qlike")
        best = ranked.index[0]
    notes.append(f"QLIKE h={cfg.horizon}: " + ", ".join(
        f"{m}={v:.4f}" for m, v in per["qlike"].sort_values().items()))
    reason = f"{best} selected (rule={cfg.rule}): " + "; ".join(notes)
    return Selection(str(best), reason, per.reset_index())

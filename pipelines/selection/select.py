"""Model selection: an optional forecast-quality screen, then the policy acceptance rule.

1. **Screen** (off by default): at the selection horizon a model must be inside the 90% Model
   Confidence Set on at least ``min_mcs_share`` of the assets and its 1-day FHS VaR99 must pass
   on at least ``min_var_share`` of them. If no model passes, all are kept and the reason says
   so. (The comparison table covers the whole out-of-sample period: with a screen on, the
   choice also reads evaluation-period forecasts, which the reason states.)
2. **Choose**: ``rule="policy"`` (default) freezes the candidate (forecaster × policy
   settings) that is acceptable (:mod:`pipelines.policy_eval.acceptance`) on the most assets
   of the *selection period*, then has the least capital, mean(1 - LTV)
   (:func:`pipelines.policy_eval.protocol.choose`); ``rule="forecast"`` takes the lowest
   mean QLIKE with the configured policy settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from configs.schema import SelectionConfig
from pipelines.policy_eval.protocol import choose


@dataclass(frozen=True)
class Selection:
    model: str                   # the forecaster
    reason: str
    table: pd.DataFrame          # one row per model: shares, QLIKE, acceptable assets, capital
    policy: str = ""             # the frozen candidate's name
    overrides: dict[str, Any] = field(default_factory=dict)  # frozen policy settings


def _screen(comparison: pd.DataFrame, cfg: SelectionConfig) -> pd.DataFrame:
    at_h = comparison[comparison["horizon_days"] == cfg.horizon]
    if at_h.empty:
        raise ValueError(f"no forecasts at the selection horizon {cfg.horizon} to select from")
    one_day = comparison[comparison["horizon_days"] == 1]
    per = at_h.groupby("model").agg(qlike=("qlike", "mean"),
                                    mcs_share=("in_mcs", lambda x: x.fillna(False).mean()))
    # over the assets with a verdict: one passing its VaR test on fewer days than a verdict
    # needs (var_unproven, a young asset) counts neither way; an undefined test counts as a fail
    judged = (one_day[~one_day["var_unproven"].fillna(False).astype(bool)]
              if "var_unproven" in one_day else one_day)
    per["var_share"] = judged.groupby("model")["var_pass"].apply(
        lambda x: x.fillna(False).astype(bool).mean())
    per["screened"] = (per["mcs_share"] >= cfg.min_mcs_share) & (
        per["var_share"] >= cfg.min_var_share)
    return per


def select(comparison: pd.DataFrame, selection_table: pd.DataFrame | None,
           settings: Mapping[str, Mapping[str, Any]] | None, cfg: SelectionConfig,
           default_names: Mapping[str, str] | None = None) -> Selection:
    """Pick the forecaster and the policy settings.

    ``selection_table`` is the selection-period acceptance table (policy × asset, from
    :func:`pipelines.policy_eval.protocol.judge`), ``settings`` maps each candidate name to
    its forecaster and settings, ``default_names`` each forecaster to the name of its
    candidate with the configured settings (used by ``rule="forecast"``).
    """
    per = _screen(comparison, cfg)
    notes = []
    pool = list(per.index[per["screened"]])
    if not pool:
        pool = list(per.index)
        notes.append("no model passed the MCS/VaR screen; all considered")
    elif cfg.min_mcs_share > 0 or cfg.min_var_share > 0:
        notes.append("forecast screen read the whole out-of-sample comparison")
    settings = dict(settings or {})
    if cfg.rule == "policy" and selection_table is not None and len(selection_table):
        mine = {n: s for n, s in settings.items() if s["forecaster"] in pool}
        # counted over every candidate's assets, as the knob step is (a screened-out
        # forecaster's assets are still assets the policy must serve)
        frozen = choose(selection_table, mine, set(selection_table["asset"]))
        stats = frozen.table.assign(model=frozen.table["policy"].map(
            {n: s["forecaster"] for n, s in mine.items()}))
        # the frozen table is in the choice's order (like for like): each model's first row
        best = stats.groupby("model", sort=False).head(1).set_index("model")
        per = per.join(best[["policy", "acceptable", "assets", "capital"]])
        notes.insert(0, frozen.reason)
        model, name, overrides = frozen.forecaster, frozen.name, frozen.overrides
    else:
        model = str(per.loc[pool, "qlike"].idxmin())
        name = dict(default_names or {}).get(model, f"policy:{model}")
        overrides = {k: v for k, v in settings.get(name, {}).items() if k != "forecaster"}
    notes.append(f"QLIKE h={cfg.horizon}: " + ", ".join(
        f"{m}={v:.4f}" for m, v in per["qlike"].sort_values().items()))
    reason = f"{model} selected (rule={cfg.rule}): " + "; ".join(notes)
    return Selection(model, reason, per.reset_index(), name, overrides)

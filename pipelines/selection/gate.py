"""The promotion gate: may the challenger policy replace the champion? Pure function.

Both policies are summarized on the same policy backtest (same data, same days), so the
capital comparison is like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from configs.schema import GateConfig


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def gate(challenger: pd.DataFrame, champion: pd.DataFrame | None, cfg: GateConfig) -> GateDecision:
    """Decide from per-asset summaries (:func:`pipelines.policy_eval.report.summarize` rows)."""
    failures, notes = [], []
    if cfg.require_coverage:
        failing = sorted(challenger.loc[~challenger["coverage_pass"], "asset"])
        if failing:
            failures.append(f"coverage fails for {', '.join(failing)}")
        else:
            notes.append(f"coverage passes on all {len(challenger)} assets")
    red = int(challenger["red_windows"].sum())
    if red > cfg.max_red_windows:
        failures.append(f"{red} red traffic-light windows (> {cfg.max_red_windows})")
    if champion is not None and len(champion):
        common = sorted(set(challenger["asset"]) & set(champion["asset"]))
        new = challenger.set_index("asset").loc[common, "mean_mmf"].mean()
        old = champion.set_index("asset").loc[common, "mean_mmf"].mean()
        change = new / old - 1.0
        text = f"mean MMF {new:.4f} vs champion {old:.4f} ({change:+.1%})"
        if change > cfg.max_capital_increase:
            failures.append(text + f" > +{cfg.max_capital_increase:.0%}")
        else:
            notes.append(text)
    if failures:
        return GateDecision(False, "refused: " + "; ".join(failures + notes))
    return GateDecision(True, "passed: " + "; ".join(notes))

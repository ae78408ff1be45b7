"""The promotion gate: may the challenger policy replace the champion? Pure function.

Both policies are judged on the same policy backtest (same data, same days) by the one
acceptance function (:func:`pipelines.policy_eval.acceptance.accept_asset`, rows from
:func:`pipelines.policy_eval.report.summarize`), so the capital comparison is like for like.
Capital is mean(1 - LTV), what a borrower gives up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from configs.schema import GateConfig
from pipelines.policy_eval.protocol import assets_without

FIRST_PROMOTED = "first version promoted with its gate result: "


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str


def not_acceptable(rows: pd.DataFrame) -> dict[str, str]:
    """Asset → why, for the per-asset rows (:func:`policy_rows`) that are not acceptable and
    not merely unproven: the assets on which the gate's ``require_coverage`` refuses."""
    if not len(rows):
        return {}
    unproven = (rows["unproven"].fillna(False).astype(bool) if "unproven" in rows
                else pd.Series(False, index=rows.index))
    bad = rows[~rows["acceptable"].astype(bool) & ~unproven]
    why = bad["why_not"] if "why_not" in bad else pd.Series("", index=bad.index)
    return {str(a): w if isinstance(w, str) else ""  # "": no reason recorded
            for a, w in sorted(zip(bad["asset"], why, strict=True))}


def policy_rows(summary: pd.DataFrame, policy: str) -> pd.DataFrame:
    """``policy``'s per-asset acceptance rows, over every asset ``summary`` judged for any
    policy: an asset where the policy has no path (its forecaster failed there in the
    walk-forward) is a row that is not acceptable, with that reason, so the gate does not pass
    a challenger on the assets it happens to cover (as :func:`pipelines.policy_eval.protocol.
    rank_like_for_like` does for the choice)."""
    mine = summary[summary["policy"] == policy]
    missing = assets_without(summary, policy)
    if not missing:
        return mine
    absent = pd.DataFrame({"policy": policy, "asset": missing, "acceptable": False,
                           "unproven": False,
                           "why_not": "no backtest path: its forecaster failed here",
                           "red_windows": 0})
    return pd.concat([mine, absent], ignore_index=True)


def gate(challenger: pd.DataFrame, champion: pd.DataFrame | None, cfg: GateConfig,
         stress_refusal: str | None = None) -> GateDecision:
    """Decide from per-asset rows with ``asset``, ``acceptable``, ``red_windows``, ``capital``
    (and ``why_not`` when present). ``champion``: None when there is none; its rows in this
    run's backtest otherwise (empty: it was not replayed, and the gate refuses)."""
    failures, notes = [], []
    if cfg.require_coverage:
        # an unproven asset passed every test on too few days to be judged (a new listing):
        # it does not hold the gate, which would otherwise stay shut until it has a year of
        # days, and it is named; an asset that failed a test on few days does hold it
        unproven = (challenger["unproven"].fillna(False).astype(bool)
                    if "unproven" in challenger else pd.Series(False, index=challenger.index))
        bad = not_acceptable(challenger)
        judged = len(challenger) - int(unproven.sum())
        if bad:
            failures.append("not acceptable on " + ", ".join(
                f"{a} ({w})" if w else a for a, w in bad.items()))
        elif judged < cfg.min_judged_assets:
            failures.append(f"judged on {judged} assets (< min_judged_assets "
                            f"{cfg.min_judged_assets}): the period is too short to show it")
        else:
            notes.append(f"acceptable on all {judged} assets" if judged == len(challenger)
                         else f"acceptable on all {judged} assets judged")
        if unproven.any():
            short = challenger[unproven]
            notes.append("unproven on " + ", ".join(
                f"{a} ({w})" for a, w in sorted(zip(short["asset"], short["why_not"],
                                                    strict=True))))
    red = int(challenger["red_windows"].sum())
    if red > cfg.max_red_windows:
        failures.append(f"{red} red traffic-light windows (> {cfg.max_red_windows})")
    if champion is not None and not len(champion):
        # the champion's policy has no row in this run's backtest (a tail-driven champion and
        # a run without the tail step, a changed candidate grid): capital cannot be compared,
        # and what cannot be compared does not pass, as with no asset in common
        failures.append("the champion was not replayed in this run: capital not compared")
    elif champion is not None:
        mine, theirs = (frame.set_index("asset")["capital"].astype(float)
                        for frame in (challenger, champion))
        # the assets where both have a capital: a NaN (no path there) would drop out of one
        # mean and not the other
        common = sorted(set(mine[np.isfinite(mine)].index) & set(theirs[np.isfinite(theirs)].index))
        new, old = mine.loc[common].mean(), theirs.loc[common].mean()
        change = new / old - 1.0 if common else float("nan")
        text = f"capital {new:.4f} vs champion {old:.4f} ({change:+.1%})"
        if not common:
            failures.append("no asset with a capital for both it and the champion: capital "
                            "not compared")
        elif not (math.isfinite(change) and old > 0):  # NaN > x is False: never a pass
            failures.append(text + ": not comparable")
        elif change > cfg.max_capital_increase:
            failures.append(text + f" > +{cfg.max_capital_increase:.0%}")
        else:
            notes.append(text)
    if stress_refusal:  # pipelines.stress.gate.challenger_stress: bad debt over budget
        failures.append(stress_refusal)
    if failures:
        return GateDecision(False, "refused: " + "; ".join(failures + notes))
    # nothing to note (no coverage test asked, no champion to compare with): said so
    return GateDecision(True, "passed: " + ("; ".join(notes) or "no check failed (coverage "
                                            "not required, no champion to compare with)"))

"""benchmarks.per_asset_knob: the cheapest variant acceptable per asset, judged again."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.per_asset_knob import family, outcome, per_asset_choice

FIRST = "policy:m@confidence=0.99"
FROZEN = f"{FIRST},w=1.0"
RECORD = {"policy": FROZEN, "forecaster": "m", "knobs": {"policy.w": [0.0, 1.0]}}


def _row(policy: str, period: str, asset: str, ok: bool, capital: float, bad: float) -> dict:
    return {"policy": policy, "period": period, "asset": asset, "acceptable": ok,
            "capital": capital, "bad_debt_lt_sum": bad, "stress_bad_debt": bad / 2,
            "why_not": None if ok else "breaches"}


def _table() -> pd.DataFrame:
    rows = []
    for period, cheap_ok in (("selection", True), ("evaluation", False)):
        rows += [_row(FIRST, period, "A", cheap_ok, 0.20, 0.0 if cheap_ok else 0.4),
                 _row(f"{FIRST},w=0.0", period, "A", cheap_ok, 0.10, 0.0 if cheap_ok else 0.8),
                 _row(FROZEN, period, "A", True, 0.30, 0.0),
                 _row(FIRST, period, "B", False, 0.20, 0.5),
                 _row(f"{FIRST},w=0.0", period, "B", False, 0.10, 0.9),
                 _row(FROZEN, period, "B", False, 0.30, 0.1),
                 _row(f"{FROZEN}:no_apc", period, "A", True, 0.01, 0.0),  # not of the family
                 _row("policy:other@confidence=0.99", period, "A", True, 0.01, 0.0)]
    return pd.DataFrame(rows)


def test_each_asset_takes_its_cheapest_acceptable_variant_else_the_frozen_one() -> None:
    rows = family(_table(), RECORD)
    assert set(rows["policy"]) == {FIRST, f"{FIRST},w=0.0", FROZEN}
    assert dict(zip(rows["policy"], rows["variant"], strict=True)) == {
        FIRST: "(first choice)", f"{FIRST},w=0.0": "w=0.0", FROZEN: "w=1.0"}
    choice = per_asset_choice(rows, FROZEN)
    assert choice.to_dict() == {"A": f"{FIRST},w=0.0", "B": FROZEN}
    sel, eva = outcome(rows, choice, "selection"), outcome(rows, choice, "evaluation")
    assert sel == {"acceptable": 1, "assets": 2, "capital": pytest.approx(0.20),
                   "bad_debt_lt": pytest.approx(0.1), "stress_bad_debt": pytest.approx(0.05)}
    assert eva["acceptable"] == 0 and eva["bad_debt_lt"] == pytest.approx(0.9)


def test_the_first_choice_frozen_keeps_its_family_and_no_variants_is_refused() -> None:
    first = {**RECORD, "policy": FIRST}  # the knob step kept the first choice
    assert set(family(_table(), first)["policy"]) == {FIRST, f"{FIRST},w=0.0", FROZEN}
    with pytest.raises(SystemExit, match="no knob variants"):
        family(_table(), {**RECORD, "knobs": {}, "policy": "policy:other@confidence=0.99",
                          "forecaster": "other"})

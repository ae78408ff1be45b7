"""The report reads the frozen policy's own frontier points, whichever step chose it."""

from __future__ import annotations

import pandas as pd

from pipelines.report_md import _frozen_points, _knob_note, later_failure_note, unserved_note

POINTS = pd.DataFrame({
    "family": ["har_rv", "har_rv", "har_rv:stress_floor_weight", "har_rv:stress_floor_weight",
               "static"],
    "knob": [0.975, 0.99, 0.5, 1.0, 0.99],
    "asset": "BTC"})


def test_the_frozen_points_follow_a_knob_chosen_beside_the_first_choice():
    knobs = {"policy.stress_floor_weight": [0.0, 1.0]}
    moved = {"forecaster": "har_rv", "knobs": knobs,
             "settings": {"policy.confidence": 0.99, "policy.stress_floor_weight": 1.0}}
    assert _frozen_points(POINTS, moved).tolist() == [False, False, False, True, False]
    kept = {"forecaster": "har_rv", "knobs": knobs, "settings": {"policy.confidence": 0.99}}
    assert _frozen_points(POINTS, kept).tolist() == [False, True, False, False, False]
    # a record written before knobs were chosen has no "knobs": the forecaster's family
    old = {"forecaster": "har_rv", "settings": {"policy.confidence": 0.975}}
    assert _frozen_points(POINTS, old).tolist() == [True, False, False, False, False]
    assert "then its knob variants (policy.stress_floor_weight in [0.0, 1.0])" in \
        _knob_note(moved)
    assert _knob_note(old) == ""


def test_the_protocol_names_the_assets_the_frozen_policy_cannot_serve():
    """The frozen forecaster failed on LUNC (no path), which other policies were judged on:
    the protocol paragraph says so; with every asset judged it adds nothing."""
    summary = pd.DataFrame({"policy": ["frozen", "frozen", "static", "static", "static",
                                       "other"],
                            "asset": ["BTC", "ETH", "BTC", "ETH", "LUNC", "AAA"]})
    note = unserved_note(summary, "frozen")
    assert note.startswith(" **Not judged on AAA, LUNC**: the frozen forecaster has no path")
    assert unserved_note(summary[summary["asset"].isin(["BTC", "ETH"])], "frozen") == ""


def test_the_protocol_names_the_pairs_judged_before_a_later_failure():
    frozen = {"judged_before_a_later_failure": ["egarch_t TRX h=1 failed from 2024-12-03",
                                                "egarch_t TRX h=7 failed from 2024-12-03"]}
    note = later_failure_note(frozen)
    assert note.endswith("egarch_t TRX h=1 failed from 2024-12-03; egarch_t TRX h=7 failed "
                         "from 2024-12-03.")
    assert later_failure_note({}) == "" and later_failure_note(
        {"judged_before_a_later_failure": []}) == ""  # records of before the rule: none

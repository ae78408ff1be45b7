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


def test_the_as_safe_section_leads_with_the_evaluation_period(tmp_path):
    from pipelines.report_md import as_safe_section

    assert as_safe_section(tmp_path) == ""  # a run before the comparison: no section
    rows = pd.DataFrame({
        "period": ["selection", "evaluation"], "measure": "bad_debt", "family": "ewma94",
        "knob": [0.999, 0.995], "capital": [0.31, 0.28], "bad_debt": [0.2, 0.0],
        "as_safe": [True, False], "policy_knob": 1.0, "policy_capital": [0.29, 0.266],
        "policy_bad_debt": [0.25, 0.0], "capital_vs": [-0.0645, -0.05]})
    rows.to_csv(tmp_path / "policy_as_safe.csv", index=False)
    md = as_safe_section(tmp_path)
    assert "### Capital at equal-or-better bad debt" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| bad_debt")]
    assert [ln.split("|")[2].strip() for ln in lines] == ["evaluation", "selection"]
    assert "-0.05" in lines[0] and "False" in lines[0]


def test_the_protocol_names_a_comparator_the_rule_prefers():
    from pipelines.report_md import preferred_note

    assert preferred_note({"policy": "p"}) == ""  # a record from before the check
    assert preferred_note({"comparators_the_rule_prefers": []}) == ""
    note = preferred_note({"comparators_the_rule_prefers": [
        {"policy": "static@confidence=0.995", "acceptable": 12, "assets": 12,
         "capital": 0.26738}]})
    assert note.startswith(" **The rule prefers a comparator**")
    assert "`static@confidence=0.995` (12/12, capital 0.2674)" in note


def test_the_protocol_says_how_firm_the_first_choice_is():
    from pipelines.report_md import stability_note

    assert stability_note({"policy": "p"}) == ""  # a record from before the check
    note = stability_note({"leave_one_asset_out": {
        "first_step": "policy:a", "kept": 7, "runs": 12, "not_run": 0, "assets": 12,
        "others": {"policy:b": 3, "policy:c": 2}}})
    assert note == (" Leave one asset out (the first step, selection period only): "
                    "`policy:a` is chosen in 7 of 12 runs; otherwise `policy:b` 3, "
                    "`policy:c` 2.")
    # a sample of a large universe, and runs that could not choose, are said
    sampled = stability_note({"leave_one_asset_out": {
        "first_step": "policy:a", "kept": 48, "runs": 49, "not_run": 1, "assets": 1000,
        "others": {"policy:b": 1}}})
    assert "(50 of 1000 assets left out in turn)" in sampled
    assert sampled.endswith("; 1 could not choose.")

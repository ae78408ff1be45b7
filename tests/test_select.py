"""Model selection: the forecast screen, then the policy or forecast criterion."""

import pandas as pd
import pytest

from configs.schema import SelectionConfig
from pipelines.selection.select import select


def _comparison():
    rows = []
    for model, q, mcs, var in (("a", 0.40, True, True), ("b", 0.45, False, True),
                               ("c", 0.50, False, False)):
        for asset in ("X", "Y"):
            rows.append({"model": model, "asset": asset, "horizon_days": 1, "qlike": q,
                         "in_mcs": mcs, "var_pass": var})
    return pd.DataFrame(rows)


def _policy(passes: dict[str, int], mmf: dict[str, float]):
    rows = []
    for model in passes:
        for k, asset in enumerate(("X", "Y")):
            rows.append({"policy": f"policy:{model}", "asset": asset,
                         "coverage_pass": k < passes[model], "mean_mmf": mmf[model]})
    rows.append({"policy": "policy:a:no_apc", "asset": "X", "coverage_pass": True,
                 "mean_mmf": 0.0})  # comparators never compete
    return pd.DataFrame(rows)


def test_policy_rule_prefers_coverage_then_capital():
    policy = _policy({"a": 1, "b": 2, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    choice = select(_comparison(), policy, SelectionConfig(rule="policy"))
    assert choice.model == "c" and "coverage on 2 assets" in choice.reason


def test_screen_removes_models_outside_the_mcs_or_failing_var():
    policy = _policy({"a": 1, "b": 2, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    cfg = SelectionConfig(rule="policy", min_mcs_share=0.5, min_var_share=0.5)
    assert select(_comparison(), policy, cfg).model == "a"


def test_forecast_rule_is_lowest_qlike_among_the_screened():
    cfg = SelectionConfig(rule="forecast", min_mcs_share=0.0, min_var_share=0.5)
    choice = select(_comparison(), None, cfg)
    assert choice.model == "a"
    assert choice.table.set_index("model").loc["c", "screened"] == False  # noqa: E712


def test_when_nothing_passes_the_screen_all_are_considered_and_it_is_said():
    comp = _comparison().assign(in_mcs=False)
    choice = select(comp, None, SelectionConfig(rule="forecast", min_mcs_share=0.5))
    assert choice.model == "a" and "no model passed" in choice.reason


def test_no_forecasts_at_the_selection_horizon_is_an_error():
    with pytest.raises(ValueError, match="selection horizon 7"):
        select(_comparison(), None, SelectionConfig(horizon=7))

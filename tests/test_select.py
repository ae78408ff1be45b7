"""Model selection (forecast screen, then the acceptance rule on the selection period) and
the promotion gate, both on the one acceptance function's verdicts."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from configs.schema import GateConfig, SelectionConfig
from pipelines.selection.gate import gate, policy_rows
from pipelines.selection.select import NothingToSelectError, select


def _comparison():
    rows = []
    for model, q, mcs, var in (("a", 0.40, True, True), ("b", 0.45, False, True),
                               ("c", 0.50, False, False)):
        for asset in ("X", "Y"):
            rows.append({"model": model, "asset": asset, "horizon_days": 1, "qlike": q,
                         "in_mcs": mcs, "var_pass": var})
    return pd.DataFrame(rows)


def _selection_table(accepts: dict[str, int], cap: dict[str, float]):
    """Selection-period acceptance rows of candidates ``policy:<model>@confidence=0.99``."""
    rows = []
    for model in accepts:
        for k, asset in enumerate(("X", "Y")):
            rows.append({"policy": f"policy:{model}@confidence=0.99", "period": "selection",
                         "asset": asset, "acceptable": k < accepts[model],
                         "capital": cap[model], "breaches": 1, "bad_debt_lt_sum": 0.0,
                         "stress_bad_debt_lt": 0.0})
    rows.append({"policy": "static", "period": "selection", "asset": "X", "acceptable": True,
                 "capital": 0.0, "breaches": 0, "bad_debt_lt_sum": 0.0,
                 "stress_bad_debt_lt": 0.0})  # comparators never compete
    return pd.DataFrame(rows)


def _settings(models):
    return {f"policy:{m}@confidence=0.99": {"forecaster": m, "policy.confidence": 0.99}
            for m in models}


def test_policy_rule_prefers_acceptable_assets_then_least_capital():
    table = _selection_table({"a": 1, "b": 2, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    choice = select(_comparison(), table, _settings("abc"), SelectionConfig(rule="policy"))
    assert choice.model == "c" and choice.policy == "policy:c@confidence=0.99"
    assert choice.overrides == {"policy.confidence": 0.99}
    assert "acceptable on 2/2 assets, capital 0.2000" in choice.reason
    assert choice.table.set_index("model").loc["c", "acceptable"] == 2


def _whole_period_opposite():
    """A whole-period comparison that ranks the models the other way round from
    :func:`_comparison` (the selection period's): a choice that read it would differ."""
    comp = _comparison()
    return comp.assign(qlike=1.0 - comp["qlike"], in_mcs=~comp["in_mcs"].astype(bool),
                       var_pass=~comp["var_pass"].astype(bool))


def test_screen_removes_models_outside_the_mcs_or_failing_var():
    table = _selection_table({"a": 1, "b": 2, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    cfg = SelectionConfig(rule="policy", min_mcs_share=0.5, min_var_share=0.5)
    choice = select(_whole_period_opposite(), table, _settings("abc"), cfg,
                    screened_on=_comparison())
    assert choice.model == "a" and "screen on the selection period's forecasts" in choice.reason
    assert ("QLIKE h=1 (selection period, over the 2 assets every model the screen kept "
            "scored): a=0.4000" in choice.reason)


def test_the_forecast_rule_compares_models_on_the_assets_all_of_them_scored():
    """A model that failed the hardest asset is not ranked first for averaging over the
    easier ones alone: QLIKE is read over the assets every model scored."""
    comp = pd.DataFrame({
        "model": ["good", "good", "good", "gappy", "gappy", "gappy"],
        "asset": ["X", "Y", "HARD", "X", "Y", "HARD"], "horizon_days": 1,
        "qlike": [0.30, 0.30, 2.0, 0.35, 0.35, float("nan")],
        "in_mcs": True, "var_pass": True})
    choice = select(comp, None, {}, SelectionConfig(rule="forecast"), screened_on=comp)
    assert choice.model == "good"  # 0.30 against 0.35 on X and Y; 0.87 against 0.35 raw
    assert "over the 2 assets every model scored): good=0.3000, gappy=0.3500" in choice.reason
    per = choice.table.set_index("model")
    assert per.loc["good", "qlike_assets"] == per.loc["gappy", "qlike_assets"] == 2
    # a model the screen leaves out does not narrow the others' comparison: "bad" fails its
    # VaR test and lacks HARD; "good" and "other" are still compared on HARD too
    comp = pd.DataFrame({
        "model": ["good"] * 3 + ["other"] * 3 + ["bad"] * 3,
        "asset": ["X", "Y", "HARD"] * 3, "horizon_days": 1,
        "qlike": [0.31, 0.31, 1.0, 0.30, 0.30, 2.0, 0.2, 0.2, float("nan")],
        "in_mcs": True, "var_pass": [True] * 6 + [False] * 3})
    cfg = SelectionConfig(rule="forecast", min_var_share=0.5)
    choice = select(comp, None, {}, cfg, screened_on=comp)
    assert choice.model == "good"  # 0.54 against 0.87 over X, Y and HARD
    assert "over the 3 assets every model the screen kept scored" in choice.reason
    # no asset in common: each model's own, said
    apart = pd.DataFrame({"model": ["a", "a", "b"], "asset": ["X", "Y", "Z"],
                          "horizon_days": 1, "qlike": [0.4, 0.6, 0.3], "in_mcs": True,
                          "var_pass": True})
    choice = select(apart, None, {}, SelectionConfig(rule="forecast"), screened_on=apart)
    assert choice.model == "b" and "over each model's own assets, none common to all" in \
        choice.reason
    per = choice.table.set_index("model")
    assert (per.loc["a", "qlike"], per.loc["a", "qlike_assets"]) == (pytest.approx(0.5), 2)


def test_forecast_rule_is_lowest_qlike_among_the_screened():
    cfg = SelectionConfig(rule="forecast", min_mcs_share=0.0, min_var_share=0.5)
    choice = select(_whole_period_opposite(), None, None, cfg, screened_on=_comparison())
    assert choice.model == "a" and choice.policy == "policy:a" and choice.overrides == {}
    assert choice.table.set_index("model").loc["c", "screened"] == False  # noqa: E712


def test_when_nothing_passes_the_screen_all_are_considered_and_it_is_said():
    comp = _comparison().assign(in_mcs=False)
    choice = select(_whole_period_opposite(), None, None,
                    SelectionConfig(rule="forecast", min_mcs_share=0.5), screened_on=comp)
    assert choice.model == "a" and "no model passed" in choice.reason


def test_nothing_scored_in_the_selection_period_screens_nothing_and_cannot_rank_by_qlike():
    """The whole period's figures never stand in for the selection period's."""
    table = _selection_table({"a": 1, "b": 2, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    cfg = SelectionConfig(rule="policy", min_mcs_share=0.5, min_var_share=0.5)
    choice = select(_comparison(), table, _settings("abc"), cfg, screened_on=None)
    assert choice.model == "c"  # no screen applied: the acceptance rule alone
    assert "no forecast scored in the selection period: nothing screened" in choice.reason
    with pytest.raises(NothingToSelectError, match="rule=forecast: no forecast is scored"):
        select(_comparison(), None, None, SelectionConfig(rule="forecast"), screened_on=None)


def test_the_policy_rule_without_a_judged_selection_period_is_an_error_not_a_qlike_choice():
    empty = _selection_table({"a": 1}, {"a": 0.1}).iloc[0:0]
    with pytest.raises(NothingToSelectError,
                       match="no candidate was judged on the selection period"):
        select(_comparison(), empty, _settings("a"), SelectionConfig(rule="policy"))


def test_the_default_choice_quotes_the_whole_periods_qlike_and_says_so():
    table = _selection_table({"a": 1, "b": 2, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    choice = select(_comparison(), table, _settings("abc"), SelectionConfig(rule="policy"))
    assert ("QLIKE h=1 (whole out-of-sample period, over the 2 assets every model scored): "
            "a=0.4000") in choice.reason


def _iid_panel_and_forecasts(seed: int = 5):
    """Two assets, 500 days of iid returns with σ = 2%, ``rv`` their squares; forecasts of
    two models at 1 and 7 days (the true variance, and twice it)."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2022-01-01", periods=500)
    frames, fc = [], {"garch11_t": [], "m": []}
    for asset in ("AAA", "BBB"):
        ret = rng.normal(0.0, 0.02, len(dates))
        idx = pd.MultiIndex.from_product([[asset], dates], names=["asset", "date"])
        frames.append(pd.DataFrame({"ret_1d": ret, "rv": ret**2 + 1e-6, "rv_is_hourly": True},
                                   index=idx))
        for h in (1, 7):
            for model, scale in (("garch11_t", 1.0), ("m", 2.0)):
                fc[model].append(pd.DataFrame({
                    "asset": asset, "cutoff": dates, "horizon_days": h,
                    "target_date": dates + pd.Timedelta(days=h),
                    "variance": scale * h * 0.02**2 * rng.uniform(0.9, 1.1, len(dates))}))
    return (pd.concat(frames).sort_index(),
            {m: pd.concat(f, ignore_index=True) for m, f in fc.items()})


def test_in_window_keeps_forecasts_whose_target_days_all_lie_in_the_period():
    from pipelines.selection.select import in_window

    _, fc = _iid_panel_and_forecasts()
    start, end = pd.Timestamp("2022-03-01"), pd.Timestamp("2022-06-30")
    kept = in_window(fc, start.date(), end.date())["m"]
    for h, g in kept.groupby("horizon_days"):
        cut = g["cutoff"]
        # first target day cutoff + 1 on the start; last cutoff + h on the end
        assert cut.min() == start - pd.Timedelta(days=1)
        assert cut.max() == end - pd.Timedelta(days=int(h))
        assert len(g) == 2 * ((end - start).days + 2 - int(h))
    assert len(in_window(fc, start.date(), None)["m"]) == len(
        fc["m"][fc["m"]["cutoff"] >= start - pd.Timedelta(days=1)])


def test_the_period_comparison_cannot_see_past_the_period():
    """Forecasts scored after the selection period changed beyond recognition: the period's
    comparison (QLIKE, DM, MCS, MZ, VaR) is the same frame; inside the period it is not."""
    from pipelines.selection.select import period_comparison

    panel, fc = _iid_panel_and_forecasts()
    start, end = dt.date(2022, 1, 1), dt.date(2022, 12, 31)
    base = period_comparison(fc, panel, start, end)
    assert base is not None and set(base["model"]) == {"garch11_t", "m"}
    assert (base["n"] > 250).all()
    per = base.set_index(["model", "asset", "horizon_days"])
    # the true variance scores better than twice it on every asset and horizon
    assert (per.xs("garch11_t")["qlike"] < per.xs("m")["qlike"]).all()
    later = {m: f.assign(variance=np.where(f["cutoff"] > pd.Timestamp(end),
                                           f["variance"] * 50.0, f["variance"]))
             for m, f in fc.items()}
    pd.testing.assert_frame_equal(period_comparison(later, panel, start, end), base)
    inside = {m: f.assign(variance=np.where(f["cutoff"] == pd.Timestamp("2022-06-01"),
                                            f["variance"] * 50.0, f["variance"]))
              for m, f in fc.items()}
    assert not period_comparison(inside, panel, start, end)["qlike"].equals(base["qlike"])
    assert period_comparison(fc, panel, dt.date(2030, 1, 1), None) is None


def test_a_periods_var_backtest_is_a_cut_of_the_whole_path_not_a_fresh_start():
    """The VaR backtest of a later period counts every loss day of the period, each VaR built
    from the standardized losses realized before it (those of earlier periods too): the same
    breaches as the whole out-of-sample path's VaR read on the period's days. Started afresh
    at the period's start, its first 100 days had no VaR and the next ones a quantile of a
    hundred-odd losses."""
    from pipelines.evaluation.comparison import fhs_var
    from pipelines.selection.select import period_comparison

    panel, fc = _iid_panel_and_forecasts()
    start, end = dt.date(2022, 9, 1), dt.date(2023, 4, 30)
    table = period_comparison(fc, panel, start, end)
    assert table is not None
    # run in tasks (a Dask engine's mapper), the same table
    pd.testing.assert_frame_equal(period_comparison(fc, panel, start, end, mapper=map,
                                                    chunk_assets=1), table)
    var = table[table["horizon_days"] == 1].set_index(["model", "asset"])
    days = (end - start).days + 1
    for (model, asset), row in var.iterrows():
        one = fc[model][(fc[model]["asset"] == asset) & (fc[model]["horizon_days"] == 1)]
        sigma = np.sqrt(one.set_index("cutoff")["variance"].sort_index())
        ret_next = panel.xs(asset, level="asset")["ret_1d"].shift(-1, freq="D").reindex(
            sigma.index)
        whole = fhs_var(sigma, ret_next, 0.99)
        loss_day = sigma.index + pd.Timedelta(days=1)
        inside = (loss_day >= pd.Timestamp(start)) & (loss_day <= pd.Timestamp(end))
        assert row["var_n"] == days == inside.sum()
        assert row["var_breaches"] == int((-ret_next[inside] > whole[inside]).sum())
    # a crash on the period's first day is one of its breaches (the loss of the forecast made
    # the day before); a crash on the day after its last day is not
    calm = var.xs("AAA", level="asset")["var_breaches"]
    for day, more in ((start, 1), (end + dt.timedelta(days=1), 0)):
        shocked = panel.copy()
        shocked.loc[("AAA", pd.Timestamp(day)), "ret_1d"] = -0.5
        after = period_comparison(fc, shocked, start, end)
        assert after is not None
        one = after[after["horizon_days"] == 1].set_index(["model", "asset"])
        assert (one.xs("AAA", level="asset")["var_breaches"] == calm + more).all(), day


def test_no_forecasts_at_the_selection_horizon_is_an_error():
    with pytest.raises(ValueError, match="selection horizon 7"):
        select(_comparison(), None, None, SelectionConfig(horizon=7))


def _summary(capital: float, acceptable: bool = True, red: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"asset": ["BTC", "ETH"], "acceptable": [acceptable, True],
                         "why_not": ["DQ p=0.010" if not acceptable else "", ""],
                         "red_windows": [red, 0], "capital": [capital, capital]})


def test_gate_passes_an_acceptable_cheaper_challenger():
    d = gate(_summary(0.10), _summary(0.11), GateConfig())
    assert d.passed and "acceptable on all 2 assets" in d.reason and "-9.1%" in d.reason


def test_gate_refuses_what_the_acceptance_function_refuses_and_says_why():
    d = gate(_summary(0.05, acceptable=False), _summary(0.10), GateConfig())
    assert not d.passed and "not acceptable on BTC (DQ p=0.010)" in d.reason


def test_gate_refuses_red_windows_and_capital_worse_than_allowed():
    assert not gate(_summary(0.10, red=1), None, GateConfig()).passed
    d = gate(_summary(0.12), _summary(0.10), GateConfig(max_capital_increase=0.05))
    assert not d.passed and "capital 0.1200 vs champion 0.1000 (+20.0%)" in d.reason


def test_the_gate_counts_an_asset_the_challenger_has_no_path_on():
    """The challenger's forecaster failed on LUNC (no path), which another policy of the run
    was judged on: the gate refuses it there instead of passing it on BTC and ETH alone."""
    summary = pd.concat([_summary(0.10).assign(policy="policy:new"),
                         pd.DataFrame({"policy": "static", "asset": ["BTC", "ETH", "LUNC"],
                                       "acceptable": True, "why_not": "", "red_windows": 0,
                                       "capital": 0.2})], ignore_index=True)
    alone = summary[summary["policy"] == "policy:new"]
    assert gate(alone, None, GateConfig()).passed  # what the gate saw before
    rows = policy_rows(summary, "policy:new")
    assert sorted(rows["asset"]) == ["BTC", "ETH", "LUNC"]
    d = gate(rows, None, GateConfig())
    assert not d.passed
    assert "not acceptable on LUNC (no backtest path: its forecaster failed here)" in d.reason
    # with every asset covered the rows are the policy's own
    pd.testing.assert_frame_equal(policy_rows(summary[summary["asset"] != "LUNC"],
                                              "policy:new"), alone)


def test_the_gate_names_an_unproven_asset_and_is_held_only_by_a_failure():
    """A new listing passed every test on too few days (unproven): the gate passes the
    challenger on the assets judged and names it; a short asset that failed a test holds it."""
    young = pd.DataFrame({"asset": ["NEW"], "acceptable": [False], "unproven": [True],
                          "why_not": ["too short to judge: 40 days < 250"], "red_windows": [0],
                          "capital": [0.10]})
    rows = pd.concat([_summary(0.10).assign(unproven=False), young], ignore_index=True)
    d = gate(rows, None, GateConfig())
    assert d.passed and "acceptable on all 2 assets judged" in d.reason
    assert "unproven on NEW (too short to judge: 40 days < 250)" in d.reason
    failed = rows.assign(unproven=False, why_not=rows["why_not"].where(
        rows["asset"] != "NEW", "3 breaches > 2; too short to judge: 40 days < 250"))
    d = gate(failed, None, GateConfig())
    assert not d.passed and "not acceptable on NEW (3 breaches > 2; too short" in d.reason


def test_the_gate_needs_evidence_an_asset_judged_and_a_capital_it_can_compare():
    """Every asset unproven (an evaluation period of weeks), no row at all, a champion with no
    asset in common or a capital that is not a number: refused, never passed by default; the
    5 % capital tolerance is a bound (+4 % passes, +6 % does not), on the common assets."""
    young = _summary(0.10).assign(acceptable=False, unproven=True,
                                  why_not="too short to judge: 20 days < 250")
    d = gate(young, None, GateConfig())
    assert not d.passed and "judged on 0 assets (< min_judged_assets 1)" in d.reason
    assert not gate(young.iloc[0:0], None, GateConfig()).passed
    other = _summary(0.10).assign(asset=["SOL", "AVAX"])
    d = gate(_summary(0.10), other, GateConfig())
    assert not d.passed and "no asset with a capital for both it and the champion" in d.reason
    d = gate(_summary(0.10), _summary(float("nan")), GateConfig())
    assert not d.passed and "capital not compared" in d.reason
    # a champion with no row in this run's backtest (not replayed): refused, as with no
    # asset in common; no champion at all is judged on the challenger alone
    d = gate(_summary(0.10), _summary(0.10).iloc[0:0], GateConfig())
    assert not d.passed and "the champion was not replayed in this run" in d.reason
    assert gate(_summary(0.10), None, GateConfig()).passed
    d = gate(_summary(0.10), _summary(0.0), GateConfig())
    assert not d.passed and "not comparable" in d.reason
    assert gate(_summary(0.104), _summary(0.10), GateConfig()).passed
    assert not gate(_summary(0.106), _summary(0.10), GateConfig()).passed
    # a challenger without a path on ETH (NaN capital): compared on BTC alone, on both sides
    # (over BTC and ETH the champion's mean, 0.085, would refuse it at +17.6 %)
    gap = _summary(0.10).assign(capital=[0.10, float("nan")])
    d = gate(gap, _summary(0.10).assign(capital=[0.12, 0.05]),
             GateConfig(require_coverage=False))
    assert d.passed and "capital 0.1000 vs champion 0.1200 (-16.7%)" in d.reason
    # a champion with an extra, expensive asset: compared on BTC and ETH only (+4 %)
    champ = pd.concat([_summary(0.10), _summary(0.90).iloc[:1].assign(asset="AAVE")],
                      ignore_index=True)
    d = gate(_summary(0.104), champ, GateConfig())
    assert d.passed and "capital 0.1040 vs champion 0.1000 (+4.0%)" in d.reason


def test_the_choice_counts_an_unproven_asset_as_not_acceptable_and_says_so():
    table = _selection_table({"a": 2, "b": 2}, {"a": 0.1, "b": 0.2}).assign(unproven=False)
    young = (table["policy"] == "policy:a@confidence=0.99") & (table["asset"] == "Y")
    table.loc[young, ["acceptable", "unproven"]] = [False, True]
    choice = select(_comparison(), table, _settings("ab"), SelectionConfig(rule="policy"))
    assert choice.model == "b"  # 2/2 beats 1/2 with one unproven, whatever the capital
    assert ("next policy:a@confidence=0.99 (1/2 (1 unproven: too few days, or no stress "
            "budget, to judge)") in choice.reason


def test_a_var_test_passed_on_a_short_sample_is_unproven_and_the_screen_skips_it():
    """iid returns and their true σ: the FHS VaR99 passes on a long sample; the same on the
    last 120 days of a young asset is unproven (neither pass nor fail), and the screen's share
    is taken over the assets with a verdict."""
    from pipelines.evaluation.comparison import var_table
    from pipelines.selection.select import _screen

    rng = np.random.default_rng(11)
    dates = pd.date_range("2021-01-01", periods=900)
    sigma = 0.02
    frames, forecasts = [], []
    for asset, first in (("OLD", 0), ("NEW", 900 - 220)):  # NEW: 100 to warm FHS, 120 judged
        d = dates[first:]
        frames.append(pd.DataFrame({"ret_1d": rng.normal(0.0, sigma, len(d))},
                                   index=pd.MultiIndex.from_product([[asset], d],
                                                                    names=["asset", "date"])))
        forecasts.append(pd.DataFrame({"asset": asset, "cutoff": d, "horizon_days": 1,
                                       "variance": sigma**2}))
    var = var_table({"m": pd.concat(forecasts, ignore_index=True)},
                    pd.concat(frames).sort_index()).set_index("asset")
    assert var.at["OLD", "var_n"] >= 250 and var.at["OLD", "var_pass"]
    assert not var.at["OLD", "var_unproven"]
    assert var.at["NEW", "var_n"] < 250 and var.at["NEW", "var_breaches"] <= 2
    assert var.at["NEW", "var_unproven"] and not var.at["NEW", "var_pass"]
    assert var.at["NEW", "var_note"] == ""  # not a failure to list
    comparison = var.reset_index().assign(horizon_days=1, qlike=0.3, in_mcs=True)
    per = _screen(comparison, SelectionConfig(min_var_share=1.0))
    assert per.at["m", "var_share"] == 1.0 and per.at["m", "screened"]
    # without the rule the young asset would count against it
    per = _screen(comparison.drop(columns="var_unproven"), SelectionConfig(min_var_share=1.0))
    assert per.at["m", "var_share"] == 0.5 and not per.at["m", "screened"]


def test_the_runs_console_table_names_a_screened_out_model_instead_of_failing():
    """A model the screen removed has no policy verdict (NaN after the join): the run's
    final table says so, where ``int(NaN)`` used to end the run after its work was done."""
    from types import SimpleNamespace

    from rich.console import Console

    from configs.schema import Config
    from pipelines.ops.console import forecast_table

    table = _selection_table({"a": 1, "b": 2, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    cfg = Config().with_overrides({"selection.min_mcs_share": 0.5,
                                   "selection.min_var_share": 0.5})
    choice = select(_whole_period_opposite(), table, _settings("abc"), cfg.selection,
                    screened_on=_comparison())
    assert choice.table.set_index("model")["acceptable"].isna().tolist() == [False, True, True]
    result = SimpleNamespace(table=_comparison(), selection=choice.table, selected=choice.model)
    console = Console(width=200, record=True)
    console.print(forecast_table(cfg, result))
    text = console.export_text()
    assert "selection period" in text
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ ")}
    assert "1/2" in rows["a"] and "10.00%" in rows["a"]
    assert "screened out" in rows["b"] and "screened out" in rows["c"]


def test_with_the_screens_off_a_model_without_any_var_verdict_stays_in_the_pool():
    """Every asset of ``c`` unproven on its VaR test (a share of nothing: NaN): the screens
    are off, so the whole-period table cannot take it out of the choice."""
    comp = _comparison()
    comp["var_unproven"] = comp["model"].eq("c")
    table = _selection_table({"a": 1, "b": 1, "c": 2}, {"a": 0.1, "b": 0.3, "c": 0.2})
    choice = select(comp, table, _settings("abc"), SelectionConfig(rule="policy"))
    assert choice.model == "c"
    # with a VaR screen on, no verdict is no pass
    on = SelectionConfig(rule="policy", min_var_share=0.5)
    screened = select(comp, table, _settings("abc"), on, screened_on=comp)
    assert screened.model != "c"
    assert screened.table.set_index("model").loc["c", "screened"] == False  # noqa: E712


def test_the_var_screen_is_one_sided_and_the_dm_needs_thirty_pairs():
    """A VaR that is never breached (its σ jumped tenfold after FHS's warm-up) passes: costly,
    not wrong, the acceptance function's rule (the two-sided Kupiec test rejects it); a DM
    on 20 days is NaN with a note."""
    from pipelines.evaluation.comparison import dm_table, var_table

    rng = np.random.default_rng(2)
    dates = pd.date_range("2021-01-01", periods=601)
    panel = pd.DataFrame({"ret_1d": rng.normal(0.0, 0.02, 601)},
                         index=pd.MultiIndex.from_product([["WIDE"], dates],
                                                          names=["asset", "date"]))
    sigma = np.where(np.arange(601) < 100, 0.02, 0.2)
    fc = pd.DataFrame({"asset": "WIDE", "cutoff": dates, "horizon_days": 1,
                       "variance": sigma**2})
    var = var_table({"m": fc}, panel).set_index("asset")
    assert var.at["WIDE", "var_n"] >= 400 and var.at["WIDE", "var_breaches"] == 0
    assert var.at["WIDE", "kupiec_p"] < 0.05  # the two-sided test's verdict
    assert var.at["WIDE", "var_pass"]
    scores = pd.DataFrame({"asset": "A", "horizon_days": 1, "cutoff": dates[:20].repeat(2),
                           "model": ["garch11_t", "m"] * 20,
                           "qlike": rng.uniform(0, 1, 40)})
    dm = dm_table(scores)
    assert dm["dm_stat"].isna().all()
    assert dm["dm_note"].iloc[0] == "20 complete pairs < 30: too few to test"

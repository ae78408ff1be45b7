"""Tail-driven policy replay: a known-answer equivalence with the FHS replay, the fallback,
the fail-safe and the parameter roles under a direct tail, the out-of-sample checks, the
frozen choice and the capital saving against EWMA-FHS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from models.base import asset_frame
from pipelines.policy_eval.compare import slim_replay
from pipelines.policy_eval.protocol import SELECTION, rank
from pipelines.policy_eval.stability import liquidated_by_parameters
from pipelines.policy_eval.tail_driven import (
    candidate_name,
    check_tail_forecasts,
    evaluate_tail_policies,
    tail_capital_table,
    tail_policy_path,
    with_saving,
)
from serving.inputs import asset_history, policy_inputs
from serving.policy import fraction_lost, standardized_tail
from tests.tail_panel import rv_sigma, tail_panel

ASSETS = ("AAA", "BBB")
CFG = Config().with_overrides({
    "backtest.n_jobs": 1, "evaluation.budget": "none",
    "evaluation.selection_start": "2020-04-01", "evaluation.selection_end": "2020-12-31",
    "evaluation.evaluation_start": "2021-01-01", "evaluation.evaluation_end": "2021-09-30"})
NUMERIC = ["sigma_1d", "liquidity_addon", "mmf", "imf", "lt", "ltv", "lb", "loss_frac",
           "bad_debt_lt", "bad_debt_ltv", "capital"]


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return tail_panel(ASSETS, n_days=640, seed=3)


@pytest.fixture(scope="module")
def variance(panel: pd.DataFrame) -> pd.DataFrame:
    return rv_sigma(panel)


def fhs_tails(panel: pd.DataFrame, variance: pd.DataFrame, cfg: Config, model: str,
              scale: float = 1.0) -> pd.DataFrame:
    """The policy's own FHS tail (same σ, same z-window) written as a tail forecast frame."""
    rows = []
    for asset in ASSETS:
        h = asset_history(asset_frame(panel, asset), variance[variance["asset"] == asset], cfg)
        for i in range(len(h.dates)):
            x = policy_inputs(h, i, 1, 1.0, cfg.policy.fhs_window)
            var_z, es_z, _ = standardized_tail(x.z_window, cfg.policy)
            sigma = float(np.sqrt(h.variance[i])) * scale
            rows.append({"model": model, "asset": asset, "cutoff": h.dates[i],
                         "target_date": h.dates[i] + pd.Timedelta(days=1), "side": "long",
                         "level": cfg.policy.confidence, "var": fraction_lost(var_z * sigma),
                         "es": fraction_lost(es_z * sigma), "fitted_through": h.dates[i]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def same(panel: pd.DataFrame, variance: pd.DataFrame) -> pd.DataFrame:
    return fhs_tails(panel, variance, CFG, "fhs_ewma")


def test_a_tail_built_from_the_same_sigma_and_z_window_replays_exactly_as_fhs(
        panel, variance, same):
    fhs = slim_replay(panel, variance, CFG)
    tail = tail_policy_path(panel, variance, same, "fhs_ewma", CFG.policy.confidence, CFG)
    assert len(tail) == len(fhs) > 1000 and not tail["tail_fallback"].any()
    pd.testing.assert_frame_equal(tail[["asset", "date"]], fhs[["asset", "date"]])
    np.testing.assert_allclose(tail[NUMERIC].to_numpy(float), fhs[NUMERIC].to_numpy(float),
                               rtol=1e-10, atol=1e-12)
    pd.testing.assert_series_equal(tail["breach"], fhs["breach"])
    assert fhs["breach"].sum() > 0
    # the test can fail: a tail 20% wider is a different policy
    wider = same.assign(var=same["var"] * 1.2, es=same["es"] * 1.2)
    moved = tail_policy_path(panel, variance, wider, "fhs_ewma", CFG.policy.confidence, CFG)
    assert (moved["mmf"] > fhs["mmf"] + 1e-6).mean() > 0.5


def test_a_missing_forecast_falls_back_to_fhs_and_is_flagged(panel, variance, same):
    holes = same.drop(index=same.index[200:260])  # 60 AAA cutoffs without a forecast
    tail = tail_policy_path(panel, variance, holes, "fhs_ewma", CFG.policy.confidence, CFG)
    fhs = slim_replay(panel, variance, CFG)
    np.testing.assert_allclose(tail["mmf"], fhs["mmf"], rtol=1e-10)
    flagged = tail.loc[tail["tail_fallback"], ["asset", "date"]]
    assert len(flagged) == 60 and set(flagged["asset"]) == {"AAA"}
    assert set(flagged["date"]) == set(same.loc[same.index[200:260], "cutoff"])


def test_an_invalid_tail_freezes_and_roles_protect_open_positions(panel, variance, same):
    rng = np.random.default_rng(11)
    wild = same.copy()
    # any tail sequence: ES jumping between 1% and 45% of value from day to day
    wild["es"] = rng.uniform(0.01, 0.45, len(wild))
    wild["var"] = wild["es"] * rng.uniform(0.5, 1.0, len(wild))
    bad = wild.index[[300, 301, 700]]
    wild.loc[bad, "var"] = wild.loc[bad, "es"] + 0.05  # VaR above ES: invalid
    path = tail_policy_path(panel, variance, wild, "fhs_ewma", CFG.policy.confidence, CFG)
    key = path.set_index(["asset", "date"])
    for i in bad:
        day = (wild.at[i, "asset"], wild.at[i, "cutoff"])
        before = (day[0], day[1] - pd.Timedelta(days=1))
        assert key.at[day, "ltv"] == 0.0  # frozen: no new borrowing ...
        assert key.at[day, "lt"] >= key.at[before, "lt"] - 1e-12  # ... and LT never lowered
    assert key["mmf"].std() > 0.01  # the wild tail does drive the margin
    liq = liquidated_by_parameters(path, CFG.policy.roles.protect_days)
    assert liq["days"].sum() > 1000 and liq["violations"].sum() == 0
    # without the roles the same sequence does liquidate open positions
    off = CFG.with_overrides({"policy.roles.enabled": False})
    raw = tail_policy_path(panel, variance, wild, "fhs_ewma", off.policy.confidence, off)
    assert liquidated_by_parameters(raw, off.policy.roles.protect_days)["violations"].sum() > 0


def test_forecasts_of_another_interval_loss_or_fitted_after_the_cutoff_are_refused(same):
    with pytest.raises(ValueError, match="next 1-day interval"):
        check_tail_forecasts(same.assign(target_date=same["cutoff"] + pd.Timedelta(days=7)),
                             CFG)
    late = same.copy()
    late.loc[5, "fitted_through"] = late.loc[5, "cutoff"] + pd.Timedelta(days=1)
    with pytest.raises(ValueError, match="not out of sample"):
        check_tail_forecasts(late, CFG)
    intrabar = CFG.with_overrides({"tail.fhs_ewma.loss_variant": "intrabar"})
    with pytest.raises(ValueError, match="loss_variant"):
        check_tail_forecasts(same, intrabar)
    check_tail_forecasts(same, CFG)


@pytest.mark.slow  # five replays and the comparators: ~15 s on two busy cores
def test_every_model_and_level_is_a_candidate_and_the_cheapest_acceptable_is_frozen(
        panel, variance):
    cfg99 = CFG.with_overrides({"policy.confidence": 0.99})
    tails = pd.concat([
        fhs_tails(panel, variance, cfg99, "fhs_ewma"),
        fhs_tails(panel, variance, cfg99, "evt_garch", scale=1.5),  # the same tail, 50% wider
    ], ignore_index=True)
    # the first step alone (the knob step: the next test)
    ev = evaluate_tail_policies(panel, variance, tails,
                                CFG.with_overrides({"evaluation.choose_knobs": False}))
    names = [candidate_name("evt_garch", 0.99), candidate_name("fhs_ewma", 0.99)]
    assert sorted(ev.fallback["policy"]) == names and set(names) <= set(ev.paths)
    ranked = ev.frozen.table.set_index("policy")
    best = ranked.loc[ev.frozen.name]
    assert best["acceptable"] == ranked["acceptable"].max()
    assert best["capital"] == ranked.loc[ranked["acceptable"] == best["acceptable"],
                                         "capital"].min()
    assert ev.frozen.overrides == {"policy.confidence": 0.99}
    # the wider tail costs more capital than the same tail at the same level
    assert ranked.loc[names[0], "capital"] > ranked.loc[names[1], "capital"]
    head = ev.headline.set_index("policy")
    assert ev.ewma in head.index and "static" in head.index
    # fhs_ewma at 99% is EWMA-FHS at 99% on this σ: no saving, same bad debt
    assert head.loc[names[1], "capital_saving_eva"] == pytest.approx(0.0, abs=1e-9)
    assert head.loc[names[1], "bad_debt_ok_eva"]
    assert head.loc[names[0], "capital_saving_eva"] < -0.01
    assert (ev.fallback[["fallback_days_sel", "fallback_days_eva"]] == 0).all().all()


def test_the_tail_driven_policy_is_read_against_ewma_fhs_s_whole_sweep(panel, variance):
    """FHS on the EWMA σ through the tail protocol is EWMA-FHS: at 99% EWMA-FHS is exactly
    as safe and as costly, so no level of its sweep is as safe for less capital."""
    cfg = CFG.with_overrides({"policy.confidence": 0.99, "evaluation.choose_knobs": False,
                              "evaluation.comparator_levels": [0.999]})
    ev = evaluate_tail_policies(panel, variance, fhs_tails(panel, variance, cfg, "fhs_ewma"),
                                cfg)
    safe = ev.as_safe
    assert ev.frozen.name == candidate_name("fhs_ewma", 0.99)
    assert set(zip(safe["period"], safe["measure"], strict=True)) == {
        (p, m) for p in ("selection", "evaluation") for m in ("bad_debt", "stress_bad_debt")}
    assert (safe["family"] == "ewma94").all() and safe["as_safe"].all()
    assert (safe["policy_knob"] == 0.99).all()
    assert (safe["capital_vs"] >= -1e-9).all()  # never cheaper than an as-safe level
    at99 = safe[safe["knob"] == 0.99]
    assert len(at99) and (at99["capital_vs"].abs() < 1e-9).all()
    # a cheaper level picked only where it is exactly as safe (no bad debt at either)
    cheaper = safe[safe["knob"] < 0.99]
    assert (cheaper["bad_debt"] <= cheaper["policy_bad_debt"] + 1e-9).all()


def test_where_the_tail_driven_capital_goes(panel, variance):
    """The capital table: parts that sum to the capital, the tail term each candidate's model
    forecast (by hand for the FHS one), the margin's swings, and EWMA-FHS as the unit."""
    cfg99 = CFG.with_overrides({"policy.confidence": 0.99, "evaluation.choose_knobs": False})
    same99 = fhs_tails(panel, variance, cfg99, "fhs_ewma")
    tails = pd.concat([same99, fhs_tails(panel, variance, cfg99, "evt_garch", scale=1.5)],
                      ignore_index=True)
    ev = evaluate_tail_policies(panel, variance, tails, cfg99)
    table = tail_capital_table(ev, tails, cfg99).set_index("policy")
    fhs, evt = candidate_name("fhs_ewma", 0.99), candidate_name("evt_garch", 0.99)
    assert {fhs, evt, ev.ewma} <= set(table.index)
    parts = table[["mmf", "imf_over_mmf", "lb_part", "freeze_part"]].sum(axis=1)
    np.testing.assert_allclose(parts, table["capital"], atol=1e-12)
    assert table.loc[fhs, "vs_ewma_fhs"] == pytest.approx(0.0, abs=1e-9)  # same σ, same tail
    assert table.loc[evt, "capital"] > table.loc[fhs, "capital"]
    assert table.loc[evt, "tail_es"] > table.loc[fhs, "tail_es"]
    assert np.isnan(table.loc[ev.ewma, "tail_es"])
    # by hand: the FHS tail's mean ES over the evaluation period's judged days, per asset
    path = ev.paths[fhs]
    start, end = pd.Timestamp("2021-01-01"), pd.Timestamp("2021-09-30")
    day = path["date"] + pd.Timedelta(days=1)  # the loss day of an update
    judged = path[(day >= start) & (day <= end) & np.isfinite(path["loss_frac"])]
    es = judged.merge(same99.rename(columns={"cutoff": "date"})[["asset", "date", "es"]])
    assert table.loc[fhs, "tail_es"] == pytest.approx(es.groupby("asset")["es"].mean().mean())
    move = es.sort_values(["asset", "date"]).groupby("asset")["es"].apply(
        lambda e: np.abs(np.diff(np.log(e.to_numpy()))).mean()).mean()
    assert table.loc[fhs, "tail_es_daily_move"] == pytest.approx(move)
    # the same tail 50% wider moves by the same log steps
    assert table.loc[evt, "tail_es_daily_move"] == pytest.approx(move, rel=0.05)
    assert (table["mmf_peak_to_trough"] >= 1.0).all() and (table["mmf_max_rise_30d"] >= 0).all()


def test_the_frozen_tail_candidate_s_knob_variants_are_judged_beside_it(panel, variance):
    cfg = CFG.with_overrides({"evaluation.frontier_knobs": {
        "policy.stress_floor_weight": [0.0, 0.5, 1.0]}})   # 0.5 is the configured value
    tails = fhs_tails(panel, variance, cfg.with_overrides({"policy.confidence": 0.99}),
                      "fhs_ewma")
    ev = evaluate_tail_policies(panel, variance, tails, cfg)
    first = candidate_name("fhs_ewma", 0.99)
    variants = [f"{first},stress_floor_weight={w}" for w in (0.0, 1.0)]
    assert set(variants) <= set(ev.paths) and f"{first},stress_floor_weight=0.5" not in ev.paths
    # each variant is the candidate replayed with its weight: the full floor holds a higher
    # margin (on average: the roles' announced, rate-limited changes make the daily paths
    # differ both ways)
    assert ev.paths[variants[1]]["mmf"].mean() > ev.paths[variants[0]]["mmf"].mean()
    # frozen: the best of the three by the one rule on the selection period's verdicts
    sel = rank(ev.table[(ev.table["period"] == SELECTION)
                        & ev.table["policy"].isin([first, *variants])])
    assert ev.frozen.name == sel.iloc[0]["policy"]
    weight = {first: None, variants[0]: 0.0, variants[1]: 1.0}[ev.frozen.name]
    expected = {"policy.confidence": 0.99}
    if weight is not None:
        expected["policy.stress_floor_weight"] = weight
    assert ev.frozen.overrides == expected
    assert "then, among it and its knob variants" in ev.frozen.reason
    assert set(variants) <= set(ev.headline["policy"])
    assert set(variants) <= set(ev.fallback["policy"])


def test_capital_saving_is_one_minus_the_capital_ratio_with_bad_debt_no_higher():
    table = pd.DataFrame({
        "policy": ["tail:x", "policy:ewma94@confidence=0.99", "static"],
        "capital_eva": [0.18, 0.20, 0.25], "bad_debt_lt_sum_eva": [0.10, 0.10, 0.30],
        "stress_bad_debt_eva": [0.05, 0.06, 0.01]})
    out = with_saving(table, "policy:ewma94@confidence=0.99").set_index("policy")
    assert out.loc["tail:x", "capital_saving_eva"] == pytest.approx(0.10)
    assert out.loc["static", "capital_saving_eva"] == pytest.approx(-0.25)
    assert out.loc["tail:x", "bad_debt_ok_eva"] and not out.loc["static", "bad_debt_ok_eva"]


def test_report_section_shows_the_frozen_tail_policy_or_nothing(tmp_path):
    from pipelines.report_extra import tail_policy_section

    assert tail_policy_section(tmp_path) == ""
    root = tmp_path / "tail"
    root.mkdir()
    pd.DataFrame({"policy": ["tail:tail_nn@confidence=0.99", "static"],
                  "capital_eva": [0.2, 0.25], "capital_saving_eva": [0.12, -0.1],
                  "bad_debt_ok_eva": [True, False], "extra": [1, 2]}).to_csv(
        root / "policy_headline.csv", index=False)
    (root / "policy_frozen.json").write_text(
        '{"policy": "tail:tail_nn@confidence=0.99", "reason": "r", "sigma_model": "ewma94",'
        ' "comparator": "policy:ewma94@confidence=0.99"}')
    text = tail_policy_section(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| tail:")]
    assert "**`tail:tail_nn@confidence=0.99`**" in text and "extra" not in text
    assert len(rows) == 1 and "0.12" in rows[0]
    assert "Where the tail-driven capital goes" not in text  # no capital table written
    pd.DataFrame({"policy": ["tail:tail_nn@confidence=0.99"], "capital": [0.2007],
                  "mmf": [0.131], "tail_es": [0.1035]}).to_csv(root / "policy_capital.csv",
                                                               index=False)
    text = tail_policy_section(tmp_path)
    part = text.split("Where the tail-driven capital goes")[1]
    assert "| tail:tail_nn@confidence=0.99 |" in part and "0.1035" in part
    assert "equal-or-better bad debt" not in text  # no as-safe table written
    pd.DataFrame({"period": ["selection", "evaluation"], "measure": "bad_debt",
                  "family": "ewma94", "knob": [0.995, 0.999], "capital": [0.25, 0.2807],
                  "bad_debt": [0.5, 0.0417], "as_safe": [True, False], "policy_knob": 0.99,
                  "policy_capital": [0.24, 0.2041], "policy_bad_debt": [0.6, 0.168],
                  "capital_vs": [-0.04, -0.2729]}).to_csv(root / "policy_as_safe.csv",
                                                          index=False)
    part = tail_policy_section(tmp_path).split("#### The tail-driven policy against")[1]
    rows = [line for line in part.splitlines() if line.startswith("| bad_debt")]
    assert [r.split("|")[2].strip() for r in rows] == ["evaluation", "selection"]
    assert "-0.2729" in rows[0] and "False" in rows[0]


def test_the_frozen_variance_policy_is_read_from_what_the_run_wrote(tmp_path):
    from pipelines.tail_policy import frozen_variance_policy

    assert frozen_variance_policy(tmp_path) == {}
    bt = tmp_path / "backtest"
    bt.mkdir()
    (bt / "frozen.json").write_text('{"policy": "policy:b@confidence=0.99"}')
    pd.DataFrame({"policy": ["policy:a", "policy:b@confidence=0.99", "static"],
                  "asset": ["X"] * 3, "mmf": [0.1, 0.2, 0.3]}).to_parquet(
        bt / "policy_paths.parquet")
    got = frozen_variance_policy(tmp_path)
    assert list(got) == ["policy:b@confidence=0.99"]
    assert got["policy:b@confidence=0.99"]["mmf"].tolist() == [0.2]
    assert "policy" not in got["policy:b@confidence=0.99"].columns


def test_the_replay_is_decide_day_by_day_and_skips_an_asset_without_daily_forecasts(
        panel, variance):
    from pipelines.policy_eval.backtest import policy_path
    from serving.policy import PARAMETER_FIELDS
    from tests.served import served_path

    # CCC forecasts only 7 days ahead: no update-interval forecast, nothing to publish
    weekly = variance[variance["asset"] == "AAA"].assign(asset="CCC", horizon_days=7)
    ccc = asset_frame(panel, "AAA").assign(asset="CCC").set_index("asset", append=True)
    both = pd.concat([panel, ccc.reorder_levels(panel.index.names)]).sort_index()
    path = policy_path(both, pd.concat([variance, weekly], ignore_index=True), CFG)
    assert set(path["asset"]) == set(ASSETS)
    assert path[NUMERIC].dtypes.eq(float).all() and path["breach"].notna().any()
    # as the batch job serves it, day by day, seasoned against the universe seen that day
    want = served_path(both, variance[variance["asset"] == "BBB"], CFG)
    h = asset_history(asset_frame(panel, "BBB"), variance[variance["asset"] == "BBB"], CFG)
    got = path[path["asset"] == "BBB"].reset_index(drop=True)
    fields = list(PARAMETER_FIELDS)
    pd.testing.assert_frame_equal(got[fields], want[fields])
    assert got["flag_young"].any() and not got["flag_young"].all()  # BBB seasons in the path
    assert list(got["date"]) == list(h.dates) and len(got) > 500


def test_an_unconditional_tail_keeps_only_the_imf_buffer(panel, variance, same):
    """The same tail figures labelled as historical simulation (a tail that does not scale
    with σ) get no σ-rescaled APC terms: the path equals the configured policy's with the
    stressed-σ and long-run-σ terms off, and new borrowing needs a lower IMF and less capital
    than under the conditional label. (Not on every day, nor the IMF's margin over MMF: the
    lower IMF admits higher LTVs, whose floor holds LT, so the two MMF paths differ too; on
    this panel the mean margin over MMF came out equal to 0.1% once the roles stopped letting a
    loosening take effect on a day its target had turned.)"""
    hs = same.assign(model="hs")
    as_hs = tail_policy_path(panel, variance, hs, "hs", CFG.policy.confidence, CFG)
    off = CFG.with_overrides({"policy.apc.stress_enabled": False,
                              "policy.apc.floor_enabled": False})
    pd.testing.assert_frame_equal(
        as_hs, tail_policy_path(panel, variance, same, "fhs_ewma", CFG.policy.confidence, off))
    conditional = tail_policy_path(panel, variance, same, "fhs_ewma", CFG.policy.confidence,
                                   CFG)
    assert as_hs["imf"].mean() < conditional["imf"].mean()
    assert as_hs["capital"].mean() < conditional["capital"].mean()
    # where both paths hold the same MMF, the unconditional IMF is the lower on almost every day
    held = np.isclose(as_hs["mmf"], conditional["mmf"], rtol=0, atol=1e-12)
    assert held.mean() > 0.5
    assert (as_hs["imf"][held] <= conditional["imf"][held] + 1e-12).mean() > 0.95


def _verdicts(rows: list[tuple[str, str, str, bool, float]]) -> pd.DataFrame:
    """A hand-built acceptance table: (policy, period, asset, acceptable, capital)."""
    out = pd.DataFrame(rows, columns=["policy", "period", "asset", "acceptable", "capital"])
    return out.assign(breaches=0, bad_debt_lt_sum=0.0, stress_bad_debt_lt=0.0)


def test_one_choice_across_both_kinds_is_ranked_by_the_rule_on_the_selection_period():
    from pipelines.policy_eval.tail_driven import across_kinds, across_lines

    frozen, tail = "policy:g@confidence=0.99", "tail:fhs_garch@confidence=0.995"
    rows = [(p, period, a, True, c) for p, c in ((frozen, 0.29), (tail, 0.25))
            for period in ("selection", "evaluation") for a in ("A", "B")]
    table = _verdicts(rows)
    table.loc[(table["policy"] == tail) & (table["period"] == "evaluation"), "acceptable"] = False
    across = across_kinds(table, frozen, tail)  # the evaluation period is never read
    assert across["rule_prefers"] == tail
    assert across["tail_driven"] == {"policy": tail, "acceptable": 2, "assets": 2,
                                     "capital": 0.25, "capital_compared": 0.25}
    assert across["variance_driven"]["capital"] == 0.29
    (line,) = across_lines(across)
    assert line.startswith(f"on the selection period the choice's rule ranks the tail-driven "
                           f"{tail} (2/2 acceptable, capital 0.2500) above the variance-driven "
                           f"{frozen} that volmargin run froze (2/2, capital 0.2900)")
    assert "volmargin run registers the variance-driven one unless" in line
    # inside volmargin run (tail.in_run) the choice spans both kinds and registers it: no line
    assert across_lines(across, registers=True) == []
    # fewer assets acceptable loses whatever the capital; no line then
    table.loc[(table["policy"] == tail) & (table["asset"] == "B"), "acceptable"] = False
    assert across_kinds(table, frozen, tail)["rule_prefers"] == frozen
    assert across_lines(across_kinds(table, frozen, tail)) == []
    # like for like: the tail-driven policy without a path on B counts B as not acceptable
    without_b = _verdicts([r for r in rows if not (r[0] == tail and r[2] == "B")])
    lfl = across_kinds(without_b, frozen, tail)
    assert lfl["rule_prefers"] == frozen and lfl["tail_driven"]["assets"] == 2
    assert lfl["tail_driven"]["acceptable"] == 1
    # either one not judged on the selection period: nothing to rank
    assert across_kinds(table[table["policy"] != frozen], frozen, tail) == {}
    assert across_lines({}) == []


def test_a_tie_broken_on_the_shared_assets_says_the_capital_it_was_broken_by():
    """Each acceptable on two of three assets: the one cheaper where both have a path ranks
    first, though its own mean capital is higher; the text gives both capitals."""
    from pipelines.policy_eval.tail_driven import across_kinds, across_lines

    frozen, tail = "policy:d", "tail:t"
    table = _verdicts([(frozen, "selection", "A", True, 0.20),
                       (frozen, "selection", "B", True, 0.50),
                       (tail, "selection", "A", True, 0.30),
                       (tail, "selection", "C", True, 0.10)])
    across = across_kinds(table, frozen, tail)
    assert across["rule_prefers"] == frozen
    assert across["variance_driven"]["capital"] == 0.35
    assert across["variance_driven"]["capital_compared"] == 0.2
    assert across["tail_driven"]["capital_compared"] == 0.3
    from pipelines.report_extra import across_note

    note = across_note({"across_kinds": across})
    assert ("would keep `policy:d` (2/3 acceptable, capital 0.3500, 0.2000 on the assets both "
            "have) over `tail:t` (2/3, capital 0.2000, 0.3000 on the assets both have)") in note
    swapped = across_kinds(table.replace({frozen: tail, tail: frozen}), frozen, tail)
    (line,) = across_lines(swapped)
    assert "(2/3 acceptable, capital 0.3500, 0.2000 on the assets both have) above" in line


def test_the_report_says_which_frozen_policy_one_choice_would_keep():
    from pipelines.report_extra import across_note

    assert across_note({}) == ""
    t = {"policy": "tail:x@confidence=0.995", "acceptable": 12, "assets": 12, "capital": 0.2536,
         "capital_compared": 0.2536}
    v = {"policy": "policy:g@confidence=0.99", "acceptable": 12, "assets": 12,
         "capital": 0.2884, "capital_compared": 0.2884}
    note = across_note({"across_kinds": {"rule_prefers": t["policy"], "tail_driven": t,
                                         "variance_driven": v}})
    assert "would keep `tail:x@confidence=0.995` (12/12 acceptable, capital 0.2536) over " \
           "`policy:g@confidence=0.99` (12/12, capital 0.2884)" in note
    assert "`volmargin run` registers the variance-driven one unless" in note
    one = across_note({"across_kinds": {"rule_prefers": t["policy"], "tail_driven": t,
                                        "variance_driven": v}, "one_choice": True})
    assert "this run's choice spanned both kinds and registered it" in one
    assert "unless" not in one
    for flag in (False, True):
        kept = across_note({"across_kinds": {"rule_prefers": v["policy"], "tail_driven": t,
                                             "variance_driven": v}, "one_choice": flag})
        assert "would keep `policy:g@confidence=0.99`" in kept
        assert "regist" not in kept


def test_the_evaluation_ranks_its_frozen_candidate_against_run_s_frozen_policy(panel, variance):
    """With the variance-driven policy ``volmargin run`` froze as the reference (here a tail
    twice as wide, replayed as a path), the evaluation ranks the two frozen policies by the
    rule; without it, or when the variance-driven choice was made by QLIKE (the forecast
    rule), there is nothing to rank."""
    from pipelines.policy_eval.tail_driven import across_kinds

    cfg = CFG.with_overrides({"policy.confidence": 0.99, "evaluation.choose_knobs": False})
    tails = fhs_tails(panel, variance, cfg, "fhs_ewma")
    wide = tail_policy_path(panel, variance, fhs_tails(panel, variance, cfg, "evt_garch", 2.0),
                            "evt_garch", 0.99, cfg).drop(columns="tail_fallback")
    ref = {"policy:frozen": wide}
    ev = evaluate_tail_policies(panel, variance, tails, cfg, ref, "policy:frozen")
    assert ev.across == across_kinds(ev.table, "policy:frozen", ev.frozen.name)
    assert ev.across["tail_driven"]["policy"] == ev.frozen.name
    assert ev.across["variance_driven"]["capital"] > ev.across["tail_driven"]["capital"]
    ranked = rank(ev.table[(ev.table["period"] == SELECTION)
                           & ev.table["policy"].isin(["policy:frozen", ev.frozen.name])])
    assert ev.across["rule_prefers"] == ranked["policy"].iloc[0]
    assert evaluate_tail_policies(panel, variance, tails, cfg, ref).across == {}
    by_qlike = cfg.with_overrides({"selection.rule": "forecast"})
    assert evaluate_tail_policies(panel, variance, tails, by_qlike, ref,
                                  "policy:frozen").across == {}


def test_the_tail_policies_judge_sigma_as_known_at_the_freeze():
    """σ of an asset that failed after the selection period: its rows made before the
    failure come back up to the selection period's last day (and no further); one that
    failed inside the selection period stays out."""
    from models.backtest import WalkForward
    from pipelines.tail_policy import judged_sigma

    cfg = Config()
    end = pd.Timestamp(cfg.evaluation.selection_end)
    days = pd.date_range(end - pd.Timedelta(days=5), end + pd.Timedelta(days=5))
    rows = pd.DataFrame({"asset": "A", "cutoff": days, "horizon_days": 1, "variance": 1e-4})
    late = rows.assign(asset="B").assign(failed_from=end + pd.Timedelta(days=3))
    early = rows.assign(asset="C").assign(failed_from=end - pd.Timedelta(days=2))
    wf = WalkForward(rows, pd.DataFrame(), withheld=pd.concat(
        [late[late["cutoff"] < late["failed_from"]], early[early["cutoff"] < early["failed_from"]]],
        ignore_index=True))
    got = judged_sigma(wf, cfg)
    assert set(got["asset"]) == {"A", "B"}
    b = got[got["asset"] == "B"]
    assert b["cutoff"].max() == end - pd.Timedelta(days=1)  # its loss day is the period's last
    assert len(got[got["asset"] == "A"]) == len(rows)

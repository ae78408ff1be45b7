"""The honest protocol: the choice reads only selection-period rows; periods by loss day;
stress episodes and joint breaches; Aave from its launch; static recalibration."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from pipelines.policy_eval.backtest import with_outcomes
from pipelines.policy_eval.compare import aave_paths, static_schedule
from pipelines.policy_eval.episodes import joint_breach_share, joint_breaches, stress_table
from pipelines.policy_eval.protocol import SELECTION, choose, in_period, judge, period_label
from tests.paths import margin_path

CFG = Config().with_overrides({"evaluation.budget": "none"})
DATES = pd.date_range("2021-01-01", "2025-06-29")


def _path(seed: int, mmf: float, assets=("A", "B")) -> pd.DataFrame:
    """A policy path with log losses ~ |N(0, 4%)| and a constant margin."""
    return margin_path(DATES, mmf, seed, assets)


def _candidates():
    paths = {"policy:tight": _path(1, 0.09), "policy:loose": _path(1, 0.12),
             "policy:wide": _path(1, 0.20)}
    settings = {n: {"forecaster": n.split(":")[1], "policy.confidence": c}
                for n, c in zip(paths, (0.95, 0.975, 0.99), strict=True)}
    return paths, settings


def _frozen(paths, settings):
    return choose(judge(paths, CFG, SELECTION), settings)


def test_choice_is_the_cheapest_acceptable_candidate_on_the_selection_period():
    paths, settings = _candidates()
    frozen = _frozen(paths, settings)
    table = frozen.table.set_index("policy")
    # MMF 9% is breached far beyond 1% of days; 12% and 20% both pass, 12% is cheaper
    assert table.loc["policy:tight", "acceptable"] == 0
    assert table.loc["policy:loose", "acceptable"] == 2 == table.loc["policy:wide", "acceptable"]
    assert frozen.name == "policy:loose" and frozen.forecaster == "loose"
    assert frozen.overrides == {"policy.confidence": 0.975}


def _capital_fixed(path: pd.DataFrame, asset: str, ltv: float) -> pd.DataFrame:
    return path.assign(ltv=np.where(path["asset"] == asset, ltv, path["ltv"]))


def test_an_asset_without_a_path_counts_as_not_acceptable():
    """Three assets; C is the costly one. ``policy:cheap_everywhere`` is acceptable on all
    three; ``policy:no_c``'s forecaster failed on C, so it has no path there: it is counted
    over the same three assets (2/3, not 2/2), and C's capital does not decide the choice."""
    everywhere = _capital_fixed(_path(1, 0.12, ("A", "B", "C")), "C", 0.30)
    no_c = _path(1, 0.12, ("A", "B"))
    paths = {"policy:cheap_everywhere": everywhere, "policy:no_c": no_c}
    settings = {n: {"forecaster": n.split(":")[1]} for n in paths}
    table = judge(paths, CFG, SELECTION)
    assert table.groupby("policy")["acceptable"].sum().to_dict() == {
        "policy:cheap_everywhere": 3, "policy:no_c": 2}
    frozen = choose(table, settings)
    ranked = frozen.table.set_index("policy")
    assert frozen.name == "policy:cheap_everywhere"
    assert ranked.loc["policy:no_c", "assets"] == 3 == ranked.loc["policy:cheap_everywhere",
                                                                   "assets"]
    assert "acceptable on 3/3 assets" in frozen.reason and "(2/3," in frozen.reason


def test_tied_candidates_compare_capital_on_the_assets_they_share():
    """Both acceptable on A and B; ``policy:with_c`` also has C (not acceptable: MMF far
    below the losses), ``policy:no_c`` has no path on C. Tied on 2 acceptable of 3, they are
    ordered by capital over A and B, not by ``with_c``'s mean that C's capital pulls down."""
    with_c = _path(1, 0.12, ("A", "B", "C"))
    with_c = with_c.assign(mmf=np.where(with_c["asset"] == "C", 0.001, with_c["mmf"]),
                           ltv=np.where(with_c["asset"] == "C", 0.99, with_c["ltv"]))
    with_c = _capital_fixed(_capital_fixed(with_c, "A", 0.80), "B", 0.80)
    no_c = _capital_fixed(_capital_fixed(_path(1, 0.12, ("A", "B")), "A", 0.82), "B", 0.82)
    paths = {"policy:with_c": with_c, "policy:no_c": no_c}
    table = judge(paths, CFG, SELECTION)
    own = table.groupby("policy")["capital"].mean()
    assert own["policy:with_c"] < own["policy:no_c"]  # C's near-zero capital flatters with_c
    frozen = choose(table, {n: {"forecaster": n.split(":")[1]} for n in paths})
    ranked = frozen.table.set_index("policy")
    assert frozen.name == "policy:no_c"
    assert ranked.loc["policy:with_c", "capital_compared"] == pytest.approx(0.20)
    assert ranked.loc["policy:no_c", "capital_compared"] == pytest.approx(0.18)
    assert frozen.reason.endswith("next policy:with_c (2/3, capital 0.1367 (0.2000 on the "
                                  "assets the tied candidates share))")


def test_perturbing_evaluation_period_data_leaves_the_frozen_choice_unchanged():
    paths, settings = _candidates()
    before = _frozen(paths, settings)
    poisoned = {}
    for name, path in paths.items():
        p = path.copy()
        late = p["date"] + pd.Timedelta(days=1) > pd.Timestamp(CFG.evaluation.selection_end)
        p.loc[late, "loss_frac"] = 0.9 if name == "policy:loose" else 0.0
        p.loc[late, "mmf"] = 0.01 if name == "policy:wide" else p.loc[late, "mmf"]
        p.loc[late, "ltv"] = 0.99
        poisoned[name] = p
    after = _frozen(poisoned, settings)
    assert after.name == before.name
    pd.testing.assert_frame_equal(after.table, before.table)
    # the same perturbation on the selection period does move it (the test can fail)
    moved = {n: p.assign(loss_frac=np.where(n == "policy:loose", 0.9, p["loss_frac"]))
             for n, p in paths.items()}
    assert _frozen(moved, settings).name == "policy:wide"


def test_periods_are_cut_by_the_day_the_loss_happens():
    path = _path(0, 0.1, assets=("A",))
    end = CFG.evaluation.selection_end
    sel = in_period(path, CFG.evaluation.selection_start, end)
    assert sel["date"].max() == pd.Timestamp(end) - pd.Timedelta(days=1)
    ev = in_period(path, CFG.evaluation.evaluation_start, None)
    assert ev["date"].min() == pd.Timestamp(end)  # its loss happens on 2023-07-01
    # an open end stops at the last realized loss: the last update's interval has not ended
    last = path["date"].max()
    path.loc[path["date"] == last, "loss_next"] = np.nan
    open_end = in_period(path, CFG.evaluation.evaluation_start, None)
    assert open_end["date"].max() == last - pd.Timedelta(days=1)
    named = in_period(path, CFG.evaluation.evaluation_start, last.date())
    pd.testing.assert_frame_equal(open_end, named)
    # what the frozen record says: the day the open end resolved to, or the named end
    assert period_label(CFG, "evaluation", path) == [str(CFG.evaluation.evaluation_start),
                                                    str(last.date())]
    fixed = CFG.with_overrides({"evaluation.evaluation_end": "2023-12-31"})
    assert period_label(fixed, "evaluation", path)[1] == "2023-12-31"
    assert period_label(CFG, "evaluation", path.assign(loss_next=np.nan))[1] == \
        "no realized loss"


def test_no_judgeable_selection_rows_is_a_clear_error():
    paths, settings = _candidates()
    late = {n: p[p["date"] > pd.Timestamp("2024-01-01")] for n, p in paths.items()}
    with pytest.raises(ValueError, match="selection period"):
        _frozen(late, settings)


def test_stress_table_and_joint_breaches_on_a_hand_built_day():
    path = _path(3, 0.5, assets=("A", "B", "C", "D"))
    day = pd.Timestamp("2022-11-08")  # FTX: the loss of the row dated 2022-11-07
    hit = (path["date"] == day - pd.Timedelta(days=1)) & path["asset"].isin(["A", "B", "C"])
    path.loc[hit, "loss_next"] = -np.log(0.3)  # a 70% fall
    later = (path["date"] == day + pd.Timedelta(days=1)) & (path["asset"] == "D")
    path.loc[later, ["loss_next", "mmf"]] = [-np.log(0.8), 0.55]  # D's worst: the last day
    path = with_outcomes(path)
    eps = CFG.evaluation.episodes
    joint = joint_breaches(path, eps, min_assets=3)
    assert joint["loss_day"].tolist() == [day] and joint["assets"].iloc[0] == "A,B,C"
    assert joint["episode"].iloc[0] == "2022-11 FTX"
    assert joint_breach_share(path, 3) == {"breaches": 3, "on_joint_days": 3, "joint_days": 1}
    ftx = stress_table(path, eps).set_index(["episode", "asset"]).loc["2022-11 FTX"]
    assert ftx.loc["A", "breaches"] == 1 and ftx.loc["D", "breaches"] == 0
    assert ftx.loc["A", "bad_debt_lt"] == pytest.approx((0.7 - 0.5) / 1.05)
    # the margin beside the worst loss is the one in force over it, not the episode's first
    assert ftx.loc["D", "worst_loss"] == pytest.approx(0.2)
    assert ftx.loc["D", "mmf_at_worst"] == 0.55 and ftx.loc["A", "mmf_at_worst"] == 0.5


def test_aave_is_applied_from_its_launch_only_when_asked():
    tmpl = _path(0, 0.1, assets=("BTC", "ETH", "SOL"))
    full = aave_paths(tmpl)
    launched = aave_paths(tmpl, pd.Timestamp("2023-01-27"))
    assert sorted(full["asset"].unique()) == ["BTC", "ETH"]
    assert full["date"].min() == DATES[0]
    # first row kept: published 2023-01-26, its loss happens on launch day
    assert launched.groupby("asset")["date"].min().tolist() == [pd.Timestamp("2023-01-26")] * 2
    eth = launched[launched["asset"] == "ETH"].iloc[0]
    assert eth["lt"] == 0.83 and eth["lb"] == 1.05
    assert eth["mmf"] == pytest.approx(1 - 0.83 * 1.05)  # cushion 12.85%


def _frame(seed: int) -> pd.DataFrame:
    idx = pd.date_range("2019-01-01", "2023-12-31")
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"worst_loss_long": np.abs(rng.normal(0, 0.03, len(idx))),
                         "worst_loss_short": 0.0, "ret_1d": rng.normal(0, 0.03, len(idx)),
                         "log_dollar_volume": np.log(1e9)}, index=idx)


def test_static_recalibration_uses_only_data_before_each_year():
    base = _frame(0)
    table = static_schedule(base, [2020, 2021, 2022], CFG).set_index("year")
    assert table["n_obs"].tolist() == [365, 731, 1096]  # expanding window, before Jan 1
    shocked = base.copy()
    shocked.loc["2021-01-01":, ["worst_loss_long", "ret_1d"]] *= 5.0  # 2021 and later
    after = static_schedule(shocked, [2020, 2021, 2022], CFG).set_index("year")
    assert after.loc[2020, "mmf"] == table.loc[2020, "mmf"]
    assert after.loc[2021, "mmf"] == table.loc[2021, "mmf"]  # 2021's table predates 2021
    assert after.loc[2022, "mmf"] > table.loc[2022, "mmf"]   # 2022's has seen 2021
    # known answer for 2020: ES97.5 of the 2019 loss fractions; the slippage of $5M beside it
    frac = 1 - np.exp(-base.loc[:"2019-12-31", "worst_loss_long"].to_numpy())
    var = np.quantile(frac, 0.975, method="higher")
    sigma = base.loc[:"2019-12-31", "ret_1d"].std()
    assert table.loc[2020, "mmf"] == pytest.approx(frac[frac >= var].mean())
    assert table.loc[2020, "slippage"] == pytest.approx(sigma * np.sqrt(5e6 / 1e9))


def test_static_mmf_leaves_slippage_to_the_liquidation_bonus():
    # the outcomes charge no slippage to anyone (LB pays it), so a static MMF carrying it
    # would hold a cushion the policy's MMF does not: at the comparison LB both leave it to LB
    base = _frame(0)
    thin = base.assign(log_dollar_volume=np.log(1e6))  # 1,000x less volume: more slippage
    deep = static_schedule(base, [2020, 2021], CFG).set_index("year")
    shallow = static_schedule(thin, [2020, 2021], CFG).set_index("year")
    assert (shallow["slippage"] > 10 * deep["slippage"]).all()
    pd.testing.assert_series_equal(shallow["mmf"], deep["mmf"])


def test_evaluation_config_rejects_overlapping_periods():
    with pytest.raises(ValueError, match="must be after selection_end"):
        Config().with_overrides({"evaluation.evaluation_start": dt.date(2023, 6, 30)})


def _panel_and_forecasts(seed: int = 4):
    """Two assets with volatility clusters, and two forecasters: the true σ² and a constant
    (the sample mean: blind to the clusters, so its breaches cluster)."""
    dates = pd.date_range("2021-06-01", "2023-12-31")
    rng = np.random.default_rng(seed)
    frames, fcs = [], {"true": [], "flat": []}
    for asset in ("A", "B"):
        sigma = 0.03 * np.exp(np.convolve(rng.normal(0, 0.15, len(dates)), np.ones(20) / 4,
                                          mode="same"))
        ret = sigma * rng.standard_t(5, len(dates)) / np.sqrt(5 / 3)
        worst = np.abs(ret) * 0.6 + sigma * 0.3
        frames.append(pd.DataFrame({
            "date": dates, "asset": asset, "ret_1d": ret, "worst_loss_long": worst,
            "worst_loss_short": worst, "worst_loss_is_proxy": False,
            "log_dollar_volume": np.log(5e9), "rv": ret**2, "rv_is_hourly": True}))
        # forecast at cutoff t of the next day's variance
        var_next = np.r_[sigma[1:], sigma[-1]] ** 2
        for name, v in (("true", var_next), ("flat", np.full(len(dates), var_next.mean()))):
            fcs[name].append(pd.DataFrame({"asset": asset, "cutoff": dates, "horizon_days": 1,
                                           "variance": v}))
    panel = pd.concat(frames).set_index(["date", "asset"]).sort_index()
    return panel, {n: pd.concat(f, ignore_index=True) for n, f in fcs.items()}


def test_the_whole_protocol_ignores_perturbed_evaluation_period_data():
    from pipelines.policy_eval.compare import replay_candidates
    from pipelines.policy_eval.protocol import EVALUATION

    cfg = CFG.with_overrides({
        "evaluation.selection_start": "2022-01-01", "evaluation.selection_end": "2022-12-31",
        "evaluation.evaluation_start": "2023-01-01", "evaluation.evaluation_end": "2023-12-30",
        "evaluation.grid": {"policy.confidence": [0.975]}, "backtest.n_jobs": 1,
        "policy.fhs_min_obs": 60})
    panel, fcs = _panel_and_forecasts()

    def run(panel, fcs):
        paths, settings = replay_candidates(panel, fcs, cfg)
        return choose(judge(paths, cfg, SELECTION), settings), judge(paths, cfg, EVALUATION)

    frozen, evaluation = run(panel, fcs)
    late = panel.index.get_level_values("date") >= pd.Timestamp("2023-01-01")
    shocked = panel.copy()
    shocked.loc[late, ["worst_loss_long", "ret_1d"]] *= 4.0
    cut = {n: f.assign(variance=np.where(f["cutoff"] >= pd.Timestamp("2023-01-01"),
                                         f["variance"] * 0.1, f["variance"]))
           for n, f in fcs.items()}
    again, evaluation_again = run(shocked, cut)
    # the selection period decides: ``flat`` is acceptable on B (its breaches do not cluster
    # there), ``true`` on neither asset (DQ rejects both)
    assert again.name == frozen.name == "policy:flat"
    pd.testing.assert_frame_equal(again.table, frozen.table)
    assert evaluation_again["breaches"].sum() > evaluation["breaches"].sum()  # it did bite


def test_verdicts_reuse_what_they_judged_and_give_the_same_table_on_dask(monkeypatch):
    from pipelines import policy_eval
    from pipelines.engine import make_engine
    from pipelines.policy_eval.protocol import EVALUATION, Verdicts

    paths, _ = _candidates()
    fresh = pd.concat([judge(paths, CFG, k) for k in (SELECTION, EVALUATION)],
                      ignore_index=True)
    calls = []
    one = policy_eval.protocol._judge_one
    monkeypatch.setattr(policy_eval.protocol, "_judge_one",
                        lambda item, **kw: calls.append(item[0]) or one(item, **kw))
    verdicts = Verdicts(CFG)
    verdicts({n: paths[n] for n in ("policy:tight", "policy:loose")}, SELECTION)
    again = pd.concat([verdicts(paths, k) for k in (SELECTION, EVALUATION)], ignore_index=True)
    pd.testing.assert_frame_equal(again, fresh)
    # tight and loose judged once on the selection period; each path once on the evaluation
    assert sorted(calls) == sorted(["policy:tight", "policy:loose", "policy:wide", *paths])
    verdicts(paths, SELECTION, {"A": 0.5})  # other budgets: judged again
    assert len(calls) == 2 * len(paths) + len(paths)
    other = {**paths, "policy:loose": paths["policy:loose"].copy()}  # another path, same name
    with pytest.raises(ValueError, match="'policy:loose' was judged on another path"):
        verdicts(other, SELECTION)
    monkeypatch.undo()
    caps = {"A": 0.001, "B": 10.0}  # budgets: a dict bound to every task
    capped = pd.concat([judge(paths, CFG, k, caps) for k in (SELECTION, EVALUATION)],
                       ignore_index=True)
    with make_engine("dask", n_workers=2, say=lambda _: None) as dask:
        remote = pd.concat([judge(paths, CFG, k, engine=dask) for k in (SELECTION, EVALUATION)],
                           ignore_index=True)
        remote_capped = pd.concat([judge(paths, CFG, k, caps, engine=dask)
                                   for k in (SELECTION, EVALUATION)], ignore_index=True)
    pd.testing.assert_frame_equal(remote, fresh)
    pd.testing.assert_frame_equal(remote_capped, capped)


def _first(name: str, forecaster: str, confidence: float):
    from pipelines.selection.select import Selection

    return Selection(forecaster, f"{name} chosen first", pd.DataFrame(), name,
                     {"policy.confidence": confidence})


def _knob_options(first_path, low_path, high_path):
    """The candidate frozen first and two variants of its stress-floor weight."""
    key = "policy.stress_floor_weight"
    paths = {"policy:loose": first_path, "policy:loose,w=0": low_path,
             "policy:loose,w=1": high_path}
    knobs = {"policy:loose,w=0": ({key: 0.0}, ("loose:w", 0.0)),
             "policy:loose,w=1": ({key: 1.0}, ("loose:w", 1.0)),
             "policy:loose": ({}, ("loose:w", 0.5))}
    return paths, knobs


def test_the_knob_is_chosen_beside_the_first_choice_by_the_same_rule():
    from pipelines.policy_eval.pipeline import choose_knob
    from pipelines.policy_eval.protocol import Verdicts

    first = _first("policy:loose", "loose", 0.975)
    point = {"forecaster": "loose", "policy.confidence": 0.975}
    # the first choice breaches far beyond 1% (MMF 9%); both variants pass, w=0 is cheaper
    paths, knobs = _knob_options(_path(1, 0.09), _path(1, 0.12), _path(1, 0.20))
    chosen = choose_knob(first, point, knobs, paths, Verdicts(CFG), None)
    assert chosen.policy == "policy:loose,w=0" and chosen.model == "loose"
    assert chosen.overrides == {"policy.confidence": 0.975, "policy.stress_floor_weight": 0.0}
    assert chosen.reason.startswith("policy:loose chosen first; then, among it and its knob "
                                    "variants: policy:loose,w=0 frozen on the selection period")
    # acceptable and cheapest already: the configured knob stays, the first choice is kept
    paths, knobs = _knob_options(_path(1, 0.12), _path(1, 0.09), _path(1, 0.20))
    kept = choose_knob(first, point, knobs, paths, Verdicts(CFG), None)
    assert kept.policy == "policy:loose" and kept.overrides == first.overrides
    assert kept.reason.endswith("(the configured knobs kept)")
    # no knob swept (evaluation.frontier_knobs: {}): the first choice stands as it was
    # (it raised "no candidate has enough days" before)
    assert choose_knob(first, point, {}, paths, Verdicts(CFG), None) is first


def test_the_knob_step_counts_the_assets_its_forecaster_cannot_serve():
    """The first step judged A, B and C; the frozen forecaster failed on C, so none of its
    variants has a path there. The second step counts them over all three (2/3, not 2/2)."""
    from pipelines.policy_eval.pipeline import choose_knob
    from pipelines.policy_eval.protocol import Verdicts

    first = _first("policy:loose", "loose", 0.975)
    point = {"forecaster": "loose", "policy.confidence": 0.975}
    paths, knobs = _knob_options(_path(1, 0.09), _path(1, 0.12), _path(1, 0.20))
    alone = choose_knob(first, point, knobs, paths, Verdicts(CFG), None)
    counted = choose_knob(first, point, knobs, paths, Verdicts(CFG), None,
                          universe={"A", "B", "C"})
    assert "acceptable on 2/2 assets" in alone.reason
    assert "acceptable on 2/3 assets" in counted.reason
    assert counted.policy == alone.policy == "policy:loose,w=0"


def test_the_knob_choice_ignores_the_evaluation_period():
    from pipelines.policy_eval.pipeline import choose_knob
    from pipelines.policy_eval.protocol import Verdicts

    first = _first("policy:loose", "loose", 0.975)
    point = {"forecaster": "loose", "policy.confidence": 0.975}
    paths, knobs = _knob_options(_path(1, 0.09), _path(1, 0.12), _path(1, 0.20))
    before = choose_knob(first, point, knobs, paths, Verdicts(CFG), None)
    end = pd.Timestamp(CFG.evaluation.selection_end)
    poisoned = {n: p.assign(loss_frac=np.where(p["date"] + pd.Timedelta(days=1) > end,
                                               0.9 if n == before.policy else 0.0,
                                               p["loss_frac"]))
                for n, p in paths.items()}
    after = choose_knob(first, point, knobs, poisoned, Verdicts(CFG), None)
    assert (after.policy, after.overrides, after.reason) == \
        (before.policy, before.overrides, before.reason)
    # the same on the selection period moves it (the test can fail)
    moved = {n: p.assign(loss_frac=0.9 if n == before.policy else p["loss_frac"])
             for n, p in paths.items()}
    assert choose_knob(first, point, knobs, moved, Verdicts(CFG), None).policy == \
        "policy:loose,w=1"


def _knob_evaluation():
    """(config, panel, forecasts, comparison) of the end-to-end policy evaluation tests: one
    year to choose, the next to report, the stress-floor weight swept beside the choice."""
    cfg = CFG.with_overrides({
        "evaluation.selection_start": "2022-01-01", "evaluation.selection_end": "2022-12-31",
        "evaluation.evaluation_start": "2023-01-01", "evaluation.evaluation_end": "2023-12-30",
        "evaluation.grid": {"policy.confidence": [0.975]}, "backtest.n_jobs": 1,
        "policy.fhs_min_obs": 60,
        "evaluation.frontier_knobs": {"policy.stress_floor_weight": [0.0, 1.0]}})
    panel, fcs = _panel_and_forecasts()
    compared = pd.DataFrame({"model": ["true", "flat"], "asset": "A", "horizon_days": 1,
                             "qlike": [0.1, 0.2], "in_mcs": True, "var_pass": True})
    return cfg, panel, fcs, compared


def test_the_policy_evaluation_freezes_the_knob_chosen_on_the_selection_period():
    """End to end on a seeded panel: the first choice (``flat`` at 97.5%) is acceptable on one
    asset of the selection period, its variant with the full stress floor on both, so that
    variant is frozen (and registered: its settings are the choice's overrides), reported
    first with its own no-APC variant; with ``choose_knobs`` off the first choice stays."""
    from pipelines.policy_eval.pipeline import evaluate_policies, frozen_record

    cfg, panel, fcs, compared = _knob_evaluation()
    ev = evaluate_policies(panel, fcs, compared, cfg)
    name = "policy:flat@stress_floor_weight=1.0"
    assert ev.choice.policy == name and ev.choice.model == "flat"
    assert ev.choice.overrides == {"policy.confidence": 0.975,
                                   "policy.stress_floor_weight": 1.0}
    ranked = ev.table[ev.table["period"] == SELECTION].groupby("policy")["acceptable"].sum()
    assert ranked[name] > ranked["policy:flat"]  # why it moved
    assert list(ev.headline["policy"][:3]) == [name, f"{name}:no_apc", "policy:true"]
    assert frozen_record(ev, cfg)["knobs"] == {"policy.stress_floor_weight": [0.0, 1.0]}

    fixed = evaluate_policies(panel, fcs, compared,
                              cfg.with_overrides({"evaluation.choose_knobs": False}))
    assert fixed.choice.policy == "policy:flat"
    assert fixed.choice.overrides == {"policy.confidence": 0.975}
    assert fixed.headline["policy"].iloc[1] == "policy:flat:no_apc"
    pd.testing.assert_frame_equal(  # the same variants replayed: the frontier is the same
        fixed.frontier, ev.frontier)
    # the forecast rule picks by the selection period's QLIKE (the whole period's table,
    # which runs into the evaluation period, ranks them the other way round here) and keeps
    # the configured knobs, and says so
    forecast_rule = cfg.with_overrides({"selection.rule": "forecast"})
    whole = compared.assign(qlike=[0.2, 0.1])
    by_qlike = evaluate_policies(panel, fcs, whole, forecast_rule)
    assert by_qlike.choice.policy == "policy:true"
    assert ("QLIKE h=1 (selection period, over the 2 assets every model scored): true="
            in by_qlike.choice.reason)
    assert frozen_record(by_qlike, forecast_rule)["knobs"] == {}
    assert by_qlike.preferred == []  # the rule it names is not the one that chose


def test_a_failure_after_the_selection_period_does_not_move_the_choice():
    """``flat`` fails on B in the evaluation period: the walk-forward takes the triple out of
    its forecasts and withholds what it forecast before. The choice, made on the selection
    period, is the one made had it never failed; without the withheld rows the later failure
    would count B against ``flat`` there. A failure inside the selection period keeps B out
    of the choice, as before."""
    from pipelines.policy_eval.pipeline import evaluate_policies, frozen_record

    cfg, panel, fcs, compared = _knob_evaluation()

    def failing_on_b(day: str):
        f = fcs["flat"]
        on_b = f["asset"] == "B"
        kept = {**fcs, "flat": f[~on_b].reset_index(drop=True)}
        return kept, {"flat": f[on_b & (f["cutoff"] < day)].assign(
            failed_from=pd.Timestamp(day))}

    def selection(ev):
        t = ev.table[ev.table["period"] == SELECTION]
        return t.sort_values(["policy", "asset"]).reset_index(drop=True)

    def flat_on_b(table):
        return table[table["policy"].str.startswith("policy:flat") & (table["asset"] == "B")]

    never = evaluate_policies(panel, fcs, compared, cfg)
    kept, withheld = failing_on_b("2023-03-01")
    late = evaluate_policies(panel, kept, compared, cfg, withheld=withheld)
    assert late.choice.policy == never.choice.policy == "policy:flat@stress_floor_weight=1.0"
    pd.testing.assert_frame_equal(selection(late), selection(never))
    assert flat_on_b(late.table[late.table["period"] == "evaluation"]).empty  # out from then
    assert late.before_failure == ["flat B h=1 failed from 2023-03-01"]
    assert frozen_record(late, cfg)["judged_before_a_later_failure"] == late.before_failure
    # the frozen policy has no path on B from the failure on: the evaluation period's
    # comparison with the static table is pooled over A alone, not dropped
    pooled = late.as_safe.groupby("period")["pooled_assets"].agg(set)
    assert pooled.to_dict() == {"selection": {2}, "evaluation": {1}}
    blind = evaluate_policies(panel, kept, compared, cfg)
    assert flat_on_b(selection(blind)).empty and len(flat_on_b(selection(never)))
    kept, withheld = failing_on_b("2022-06-01")
    early = evaluate_policies(panel, kept, compared, cfg, withheld=withheld)
    assert flat_on_b(selection(early)).empty


def test_ewma_fhs_run_as_a_comparator_keeps_its_walk_forward_beside_its_withheld_rows():
    """EWMA-FHS walked forward for the comparison alone (not an enabled model) fails on B
    after the selection period: its rows made before the failure join the choice up to the
    selection period's end, and its whole walk-forward on A stays (not replaced by them)."""
    from pipelines.policy_eval.pipeline import EWMA, evaluate_policies

    cfg, panel, fcs, compared = _knob_evaluation()
    f = fcs["flat"]
    on_b = f["asset"] == "B"
    withheld = {EWMA: f[on_b & (f["cutoff"] < "2023-03-01")].assign(
        failed_from=pd.Timestamp("2023-03-01"))}
    ev = evaluate_policies(panel, fcs, compared, cfg, f[~on_b].reset_index(drop=True),
                           withheld=withheld)
    names = [n for n, point in ev.settings.items() if point["forecaster"] == EWMA]
    assert names
    for name in names:
        path = ev.paths[name]
        days = path.groupby("asset")["date"].agg(["min", "max"])
        assert set(days.index) == {"A", "B"}
        a = f[f["asset"] == "A"]
        assert days.loc["A", "max"] >= a["cutoff"].max() - pd.Timedelta(days=1)
        assert days.loc["B", "max"] < pd.Timestamp(cfg.evaluation.selection_end)
    assert ev.before_failure == [f"{EWMA} B h=1 failed from 2023-03-01"]


def test_the_comparators_replayed_beyond_the_grid_are_never_candidates():
    """``evaluation.comparator_levels``: EWMA-FHS and the static table replayed at 99.5% for
    the frontier and the as-safe comparison; the choice is the one made without them, and
    the as-safe table reads the frozen policy's own pooled point."""
    from pipelines.policy_eval.pipeline import EWMA, evaluate_policies, frozen_record

    cfg, panel, fcs, compared = _knob_evaluation()
    fcs = {**fcs, EWMA: fcs["flat"]}
    without = evaluate_policies(panel, fcs, compared,
                                cfg.with_overrides({"evaluation.comparator_levels": []}))
    ev = evaluate_policies(panel, fcs, compared,
                           cfg.with_overrides({"evaluation.comparator_levels": [0.995]}))
    beyond = f"policy:{EWMA}@confidence=0.995"
    assert beyond in ev.paths and beyond not in ev.settings
    assert beyond not in set(ev.choice.table["policy"])
    assert (ev.choice.policy, ev.choice.overrides) == \
        (without.choice.policy, without.choice.overrides)
    pd.testing.assert_frame_equal(ev.choice.table, without.choice.table)
    pooled = ev.frontier[ev.frontier["asset"] == "pooled"]
    for family in (EWMA, "static"):
        assert set(pooled[pooled["family"] == family]["knob"]) == {0.975, 0.995}
        assert set(without.frontier[(without.frontier["asset"] == "pooled")
                                    & (without.frontier["family"] == family)]["knob"]) == {0.975}
    # the policy's point beside each comparator is the frozen one's (knob family, weight 1)
    mine = pooled[(pooled["family"] == "flat:stress_floor_weight") & (pooled["knob"] == 1.0)]
    safe = ev.as_safe[ev.as_safe["measure"] == "bad_debt"].set_index(["period", "family"])
    for period, me in mine.set_index("period").iterrows():
        assert safe.loc[(period, EWMA), "policy_capital"] == pytest.approx(me["capital"])
        assert safe.loc[(period, EWMA), "policy_bad_debt"] == pytest.approx(me["bad_debt"])
    assert set(safe.index) == {(p, f) for p in ("selection", "evaluation")
                               for f in (EWMA, "static")}
    # the comparators the rule would have preferred are recorded, by the same ranking
    record = frozen_record(ev, cfg)["comparators_the_rule_prefers"]
    assert record == ev.preferred and all(c["policy"] not in ev.settings for c in record)
    # each row says on how many assets its level, and the frozen policy, are acceptable
    judged = ev.table.groupby(["policy", "period"])["acceptable"].sum()
    names = {(EWMA, 0.975): f"policy:{EWMA}", (EWMA, 0.995): beyond,
             ("static", 0.975): "static", ("static", 0.995): "static@confidence=0.995"}
    for (period, family), row in safe.iterrows():
        assert row["acceptable"] == judged[(names[(family, row["knob"])], period)]
        assert row["assets"] == 2
        assert row["policy_acceptable"] == judged[(ev.choice.policy, period)]


def test_the_comparators_the_rule_would_prefer_are_named():
    """By the choice's own rule on the selection period: a comparator with as many assets
    acceptable and less capital ranks above the frozen policy and is named; one with fewer
    acceptable assets, or more capital, is not; what happens in the evaluation period never
    counts."""
    from pipelines.policy_eval.pipeline import preferred_comparators

    def rows(policy, period, acceptable, capital):
        return [{"policy": policy, "period": period, "asset": a, "acceptable": ok,
                 "capital": capital, "breaches": 0, "bad_debt_lt_sum": 0.0,
                 "stress_bad_debt_lt": 0.0} for a, ok in zip("AB", acceptable, strict=True)]

    table = pd.DataFrame(
        rows("frozen", SELECTION, [True, True], 0.29)
        + rows("static@0.995", SELECTION, [True, True], 0.27)
        + rows("static@0.999", SELECTION, [True, True], 0.34)
        + rows("static@0.99", SELECTION, [True, False], 0.24)
        + rows("ewma@0.999", SELECTION, [True, True], 0.31)
        + rows("ewma@0.999", "evaluation", [True, True], 0.01)   # never read
        + rows("static@0.999", "evaluation", [True, True], 0.01))
    comparators = ["static@0.995", "static@0.999", "static@0.99", "ewma@0.999"]
    ahead = preferred_comparators(table, "frozen", comparators)
    assert ahead == [{"policy": "static@0.995", "acceptable": 2, "assets": 2,
                      "capital": 0.27}]
    cheaper = table.assign(capital=np.where(table["policy"] == "static@0.999", 0.2,
                                            table["capital"]))
    assert [c["policy"] for c in preferred_comparators(cheaper, "frozen", comparators)] == \
        ["static@0.999", "static@0.995"]
    assert preferred_comparators(table, "frozen", ["static@0.999", "static@0.99"]) == []
    assert preferred_comparators(table, "missing", comparators) == []
    # like for like: a comparator judged on A only counts B as not acceptable (1/2)
    partial = table[~((table["policy"] == "static@0.995") & (table["asset"] == "B"))]
    assert preferred_comparators(partial, "frozen", comparators) == []


def test_each_preferred_comparator_is_one_warning_line_of_the_run():
    from pipelines.policy_eval.pipeline import preferred_lines

    assert preferred_lines([]) == []
    (line,) = preferred_lines([{"policy": "static@confidence=0.995", "acceptable": 12,
                                "assets": 12, "capital": 0.267397}])
    assert "comparator static@confidence=0.995 (12/12 acceptable, capital 0.2674)" in line
    assert "above the frozen policy" in line and "comparators_the_rule_prefers" in line


def test_leaving_one_asset_out_shows_a_choice_that_rests_on_one_asset():
    """Candidate x is acceptable on A and B, y on A, B and C but with more capital on C
    where x fails: y wins with every asset (3/3 > 2/3), and without C x ties it on 2/2 with
    less capital: the leave-one-out names the asset the choice rests on."""
    from configs.schema import Config
    from pipelines.policy_eval.pipeline import leave_one_asset_out, stability_record

    def rows(policy, acceptable, capital):
        return [{"policy": policy, "period": SELECTION, "asset": a, "acceptable": ok,
                 "capital": capital, "breaches": 0, "bad_debt_lt_sum": 0.0,
                 "stress_bad_debt_lt": 0.0} for a, ok in zip("ABC", acceptable, strict=True)]

    table = pd.DataFrame(rows("policy:x", [True, True, False], 0.2)
                         + rows("policy:y", [True, True, True], 0.3))
    settings = {"policy:x": {"forecaster": "x"}, "policy:y": {"forecaster": "y"}}
    compared = pd.DataFrame({"model": ["x", "y"] * 3, "asset": list("AABBCC"),
                             "horizon_days": 1, "qlike": 0.1, "in_mcs": True,
                             "var_pass": True})
    loo = leave_one_asset_out(compared, table, settings, Config())
    assert dict(zip(loo["left_out"], loo["choice"], strict=True)) == {
        "A": "policy:y", "B": "policy:y", "C": "policy:x"}
    assert stability_record(loo, "policy:y") == {
        "first_step": "policy:y", "kept": 2, "runs": 3, "not_run": 0, "assets": 3,
        "others": {"policy:x": 1}}
    # an asset whose removal leaves nothing to choose from is noted, not fatal
    only_a = compared[compared["asset"] == "A"]
    noted = leave_one_asset_out(only_a, table, settings, Config()).set_index("left_out")
    assert pd.isna(noted.loc["A", "choice"]) and "no forecasts" in noted.loc["A", "note"]
    assert stability_record(noted.reset_index(), "policy:y")["not_run"] == 1
    # every leave-out failing is the least firm case, recorded, not "no check"
    nothing = leave_one_asset_out(compared.iloc[0:0], table, settings, Config())
    assert nothing["choice"].isna().all()
    assert stability_record(nothing, "policy:y") == {
        "first_step": "policy:y", "kept": 0, "runs": 0, "not_run": 3, "assets": 3,
        "others": {}}


def test_a_large_universe_leaves_out_at_most_the_limit_evenly_spaced():
    from configs.schema import Config
    from pipelines.policy_eval.pipeline import leave_one_asset_out

    assets = [f"A{i:02d}" for i in range(10)]
    table = pd.DataFrame([{"policy": "policy:x", "period": SELECTION, "asset": a,
                           "acceptable": True, "capital": 0.2, "breaches": 0,
                           "bad_debt_lt_sum": 0.0, "stress_bad_debt_lt": 0.0} for a in assets])
    compared = pd.DataFrame({"model": "x", "asset": assets, "horizon_days": 1, "qlike": 0.1,
                             "in_mcs": True, "var_pass": True})
    loo = leave_one_asset_out(compared, table, {"policy:x": {"forecaster": "x"}}, Config(),
                              limit=4)
    assert list(loo["left_out"]) == ["A00", "A03", "A06", "A09"]
    assert (loo["choice"] == "policy:x").all()


def test_the_comparators_are_held_on_ewma_fhs_days_at_any_grid_point():
    """A grid without the configured confidence has no ``policy:ewma94``: the comparators
    (and so every budget) still stand on EWMA-FHS's days, not on the first forecaster's."""
    from pipelines.policy_eval.pipeline import comparator_template

    first = pd.DataFrame({"asset": ["AAA"], "date": pd.to_datetime(["2022-01-01"])})
    ewma = pd.DataFrame({"asset": ["AAA", "BBB"], "date": pd.to_datetime(["2022-01-01"] * 2)})
    paths = {"policy:garch11_t@confidence=0.99": first,
             "policy:ewma94@confidence=0.99": ewma}
    settings = {"policy:garch11_t@confidence=0.99": {"forecaster": "garch11_t"},
                "policy:ewma94@confidence=0.99": {"forecaster": "ewma94"}}
    assert comparator_template(paths, settings) is ewma
    configured = ewma.assign(liquidity_addon=0.01)  # the configured settings' own path wins
    with_default = {"policy:ewma94": configured, **paths}
    assert comparator_template(with_default, {"policy:ewma94": {"forecaster": "ewma94"},
                                              **settings}) is configured
    del paths["policy:ewma94@confidence=0.99"], settings["policy:ewma94@confidence=0.99"]
    assert comparator_template(paths, settings) is first  # no EWMA-FHS: the first candidate

"""The capital-vs-bad-debt frontier: Pareto marking, pooling, LB held for every family."""

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from pipelines.policy_eval.backtest import with_outcomes
from pipelines.policy_eval.frontier import (
    POOLED,
    frontier_figure,
    frontier_markdown,
    frontier_points,
    pareto,
)

CFG = Config()


def test_pareto_keeps_the_points_nothing_beats_on_both_axes():
    pts = pd.DataFrame({"capital": [1, 2, 3, 4, 2], "bad_debt": [5, 3, 4, 1, 3]})
    # (3, 4) is beaten by (2, 3); the two (2, 3) tie and both stay
    assert list(pareto(pts)) == [0, 1, 3, 4]


def _path(mmf: float, lb: float, assets=("BTC", "SOL")) -> pd.DataFrame:
    dates = pd.date_range("2024-01-01", periods=10)
    loss = np.full(10, 0.01)
    loss[4] = -np.log(0.75)  # a 25% fall on the loss day 2024-01-06
    out = pd.concat([pd.DataFrame({"asset": a, "date": dates, "loss_next": loss,
                                   "short_loss_next": 0.0, "liquidity_addon": 0.0,
                                   "mmf": mmf, "imf": mmf + 0.05, "lb": lb}) for a in assets],
                    ignore_index=True)
    out["lt"], out["ltv"] = (1 - out["mmf"]) / lb, (1 - out["imf"]) / lb
    return with_outcomes(out)


def test_points_hold_lb_at_the_comparison_level_and_pool_over_assets():
    paths = {"p10": _path(0.10, 1.02), "p20": _path(0.20, 1.10),
             "aave": _path(0.1285, 1.05, assets=("BTC",))}
    labels = {"p10": ("fam", 0.95), "p20": ("fam", 0.99), "aave": ("aave_v3", np.nan)}
    pts = frontier_points(paths, labels, CFG).set_index(["asset", "family", "knob"])
    row = pts.loc[("BTC", "fam", 0.95)]
    # LB held at 1.05 whatever the policy's own LB: bad debt (0.25 - 0.10)/1.05
    assert row["bad_debt"] == pytest.approx(0.15 / 1.05)
    assert row["capital"] == pytest.approx(1 - 0.85 / 1.05)
    assert row["breaches"] == 1 and row["days"] == 10
    pooled = pts.loc[(POOLED, "fam", 0.99)]
    assert pooled["bad_debt"] == pytest.approx(2 * 0.05 / 1.05)
    assert (POOLED, "aave_v3") not in pts.droplevel("knob").index  # one asset: not pooled
    # on BTC: p10 (least capital) and p20 (least bad debt) are on the frontier; Aave's cushion
    # 12.85% gives less capital than p20 and less bad debt than p10: on it too
    btc = pts.loc["BTC"]
    assert btc["frontier_bad_debt"].all()


def test_figure_and_markdown():
    paths = {"p10": _path(0.10, 1.02), "p20": _path(0.20, 1.10)}
    labels = {"p10": ("fam", 0.95), "p20": ("fam", 0.99)}
    pts = frontier_points(paths, labels, CFG)
    fig = frontier_figure(pts)
    assert len([ax for ax in fig.axes if ax.has_data()]) == 3  # pooled, BTC, SOL
    md = frontier_markdown(pts)
    assert md.count("| pooled") == 2 and "frontier_bad_debt" in md


def _per_asset(rows: list[tuple[str, str, float, float, float, float]],
               assets: tuple[str, ...] = ("BTC", "SOL")) -> pd.DataFrame:
    """Per-asset points whose pooled values (mean capital, summed bad debt) are ``rows``'s,
    with the frontier's own pooled rows beside them (which the comparison must not read)."""
    out = []
    for period, family, knob, capital, bad, stress in rows:
        out += [(period, family, knob, capital, bad / len(assets), stress / len(assets), a)
                for a in assets]
        out.append((period, family, knob, 0.01, 0.0, 0.0, POOLED))  # never read
    return pd.DataFrame(out, columns=["period", "family", "knob", "capital", "bad_debt",
                                      "stress_bad_debt", "asset"])


def test_cheapest_as_safe_reads_each_comparator_at_the_policys_bad_debt():
    """Known answer: the policy (0.25 capital, bad debt 0.04) against EWMA-FHS, cheaper but
    less safe at 99% and as safe only from 99.5%, and a static table never as safe."""
    from pipelines.policy_eval.frontier import cheapest_as_safe

    pts = _per_asset([
        ("evaluation", "mine:w", 0.5, 0.20, 0.30, 0.20),
        ("evaluation", "mine:w", 1.0, 0.25, 0.04, 0.00),
        ("evaluation", "ewma", 0.99, 0.19, 0.22, 0.15),
        ("evaluation", "ewma", 0.995, 0.30, 0.04, 0.01),  # equal bad debt counts as safe
        ("evaluation", "ewma", 0.999, 0.40, 0.00, 0.00),
        ("evaluation", "static", 0.99, 0.22, 0.06, 0.04),
        ("selection", "mine:w", 1.0, 0.29, 0.25, 0.25),
        ("selection", "ewma", 0.99, 0.21, 1.20, 0.80),
    ])
    out = cheapest_as_safe(pts, ("mine:w", 1.0), ["ewma", "static"]).set_index(
        ["period", "measure", "family"])
    assert (out["pooled_assets"] == 2).all()
    row = out.loc[("evaluation", "bad_debt", "ewma")]
    assert row["knob"] == 0.995 and row["as_safe"]
    assert row["capital"] == pytest.approx(0.30)
    assert row["capital_vs"] == pytest.approx(0.25 / 0.30 - 1)
    assert row["policy_capital"] == pytest.approx(0.25)
    assert row["policy_bad_debt"] == pytest.approx(0.04)
    # on the stress days the policy has none: only 99.9% is as safe
    stress = out.loc[("evaluation", "stress_bad_debt", "ewma")]
    assert stress["knob"] == 0.999 and stress["capital_vs"] == pytest.approx(0.25 / 0.40 - 1)
    # never as safe: the row is its safest level, which the policy beats on bad debt
    never = out.loc[("evaluation", "bad_debt", "static")]
    assert not never["as_safe"] and never["knob"] == 0.99
    assert never["capital"] == pytest.approx(0.22) and never["bad_debt"] == pytest.approx(0.06)
    assert never["capital_vs"] == pytest.approx(0.25 / 0.22 - 1)
    # selection period: no EWMA level as safe (1.20 > 0.25); no static point there: no row
    sel = out.loc["selection"]
    assert not sel.loc[("bad_debt", "ewma"), "as_safe"]
    assert sel.loc[("bad_debt", "ewma"), "capital_vs"] == pytest.approx(0.29 / 0.21 - 1)
    assert ("bad_debt", "static") not in sel.index
    # a policy point missing from the frontier gives no rows
    assert cheapest_as_safe(pts, ("mine:w", 0.75), ["ewma"]).empty


def test_cheapest_as_safe_pools_over_the_assets_both_cover():
    """The policy has no point on SOL (its forecaster failed there): the comparison is
    pooled over BTC alone, on both sides, instead of being dropped."""
    from pipelines.policy_eval.frontier import cheapest_as_safe

    pts = _per_asset([("evaluation", "ewma", 0.99, 0.20, 0.20, 0.1),
                      ("evaluation", "ewma", 0.999, 0.30, 0.02, 0.0)])
    mine = pd.DataFrame({"period": "evaluation", "family": "mine", "knob": 0.99,
                         "capital": [0.24], "bad_debt": [0.05], "stress_bad_debt": [0.0],
                         "asset": ["BTC"]})
    out = cheapest_as_safe(pd.concat([pts, mine]), ("mine", 0.99), ["ewma"])
    row = out.set_index("measure").loc["bad_debt"]
    assert row["pooled_assets"] == 1 and row["knob"] == 0.999 and row["as_safe"]
    assert row["capital"] == pytest.approx(0.30) and row["bad_debt"] == pytest.approx(0.01)
    assert row["policy_capital"] == pytest.approx(0.24)
    # every level is pooled over the same assets: a level on SOL alone leaves none in common
    sol_only = pts[pts["asset"] == "SOL"].assign(knob=0.995)
    assert cheapest_as_safe(pd.concat([pts, mine, sol_only]), ("mine", 0.99), ["ewma"]).empty

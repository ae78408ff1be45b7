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

"""The evaluation period year by year: the blocks, the tail scores and the policy verdicts in
each block add up to the whole period's."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from pipelines.evaluation import tail_compare as tc
from pipelines.evaluation.years import year_blocks
from pipelines.policy_eval.protocol import EVALUATION, by_year, judge
from tests.paths import margin_path

D = dt.date


def test_blocks_are_twelve_months_from_the_start():
    blocks = year_blocks("2023-07-01", "2025-06-30")
    assert [(lo, hi) for _, lo, hi in blocks] == [(D(2023, 7, 1), D(2024, 6, 30)),
                                                  (D(2024, 7, 1), D(2025, 6, 30))]
    assert blocks[0][0] == "2023-07-01 → 2024-06-30"


def test_a_short_last_block_joins_the_one_before_and_six_months_stand_alone():
    # three months left over: joined (a block of 15 months)
    assert [(lo, hi) for _, lo, hi in year_blocks("2023-07-01", "2025-09-30")] == [
        (D(2023, 7, 1), D(2024, 6, 30)), (D(2024, 7, 1), D(2025, 9, 30))]
    # six months left over: a block of its own
    assert [(lo, hi) for _, lo, hi in year_blocks("2023-07-01", "2025-12-31")][-1] == (
        D(2025, 7, 1), D(2025, 12, 31))
    # one short period: one block, nothing to join it to
    assert [(lo, hi) for _, lo, hi in year_blocks("2023-07-01", "2023-09-30")] == [
        (D(2023, 7, 1), D(2023, 9, 30))]


def test_no_block_without_a_realized_day():
    assert year_blocks("2023-07-01", None) == []
    assert year_blocks("2023-07-01", "2023-06-30") == []


def _tail_scores(n: int = 800) -> pd.DataFrame:
    """Two tail models on two assets from 2023-01-01; ``good`` sits near the loss's true
    99% quantile, ``wide`` twice as far out."""
    rng = np.random.default_rng(3)
    dates = pd.date_range("2023-01-01", periods=n, freq="D")
    idx = pd.MultiIndex.from_product([["AAA", "BBB"], dates], names=["asset", "date"])
    loss = np.abs(rng.standard_t(5, size=len(idx))) * 0.02
    panel = pd.DataFrame({"target_worst_loss_long": loss, "target_worst_loss_short": loss,
                          "target_worst_loss_is_proxy": False}, index=idx)
    rows = []
    for model, var, es in (("good", 0.075, 0.10), ("wide", 0.15, 0.20)):
        for side in ("long", "short"):
            rows.append(pd.DataFrame({
                "model": model, "asset": idx.get_level_values("asset"),
                "cutoff": idx.get_level_values("date"),
                "target_date": idx.get_level_values("date") + pd.Timedelta(days=1),
                "side": side, "level": 0.99, "var": var, "es": es}))
    return tc.score(pd.concat(rows, ignore_index=True), panel)


def test_tail_scores_by_year_are_the_pooled_scores_of_each_block():
    s = _tail_scores()
    years = tc.fz0_by_year(s, "wide", "2023-01-01")
    # 800 loss days from 2023-01-02: 2023, then 2024 with the 70 days of 2025 joined to it
    assert list(dict.fromkeys(years["block"])) == ["2023-01-01 → 2023-12-31",
                                                   "2024-01-01 → 2025-03-11"]
    for block, lo, hi in year_blocks("2023-01-01", s["target_date"].max()):
        part = tc.period(s, lo, hi)
        mine = years[(years["block"] == block) & (years["side"] == "long")].set_index("model")
        expected = part[part.side == "long"].groupby(["model", "cutoff"])["fz0"].mean()
        assert mine.loc["good", "fz0"] == pytest.approx(expected["good"].mean())
        assert mine.loc["good", "days"] == part.loc[part.side == "long", "cutoff"].nunique()
        assert mine.loc["good", "p_better"] < 0.05      # nearer the true tail: better FZ0
        assert np.isnan(mine.loc["wide", "p_better"])   # the benchmark is not tested on itself
    good = years[years["model"] == "good"]
    assert good.groupby("side")["days"].sum().tolist() == [800, 800]  # every day, once


def _policy_path(mmf_first: float, mmf_second: float, seed: int = 1) -> pd.DataFrame:
    """Daily losses ~ |N(0, 4%)| on two assets; the margin is ``mmf_first`` until
    2024-06-30 and ``mmf_second`` after."""
    dates = pd.date_range("2023-01-01", "2025-06-29")
    return margin_path(dates, np.where(dates <= "2024-06-30", mmf_first, mmf_second), seed)


def test_policy_verdicts_by_year_catch_a_policy_that_fails_in_one_year_only():
    cfg = Config().with_overrides({"evaluation.budget": "none",
                                   "evaluation.selection_start": "2023-01-01",
                                   "evaluation.selection_end": "2023-06-30",
                                   "evaluation.evaluation_start": "2023-07-01"})
    paths = {"policy:slips": _policy_path(0.15, 0.08), "policy:ref": _policy_path(0.15, 0.15)}
    years = by_year(paths, ["policy:slips", "policy:ref", "absent"], "policy:ref", cfg)
    # the last loss day is the day after the last update
    assert list(dict.fromkeys(years["block"])) == ["2023-07-01 → 2024-06-30",
                                                   "2024-07-01 → 2025-06-30"]
    assert set(years["policy"]) == {"policy:slips", "policy:ref"}  # an absent name is skipped
    slips = years[years["policy"] == "policy:slips"].set_index("block")["acceptable"]
    assert slips.tolist() == [2, 0]   # a margin of 8% is breached far beyond 1% of days
    ref = years[years["policy"] == "policy:ref"]
    assert ref["capital_vs_reference"].tolist() == [0.0, 0.0]
    second = years[years["block"] == "2024-07-01 → 2025-06-30"].set_index("policy")
    assert second.loc["policy:slips", "capital_vs_reference"] == pytest.approx(
        second.loc["policy:slips", "capital"] / second.loc["policy:ref", "capital"] - 1)
    assert second.loc["policy:slips", "capital_vs_reference"] < 0
    # the blocks partition the evaluation period: breaches and bad debt add up to its own
    whole = judge(paths, cfg, EVALUATION).groupby("policy")[["breaches", "bad_debt_lt_sum"]].sum()
    summed = years.groupby("policy")[["breaches", "bad_debt_lt_sum"]].sum()
    assert summed.loc["policy:slips", "breaches"] == whole.loc["policy:slips", "breaches"]
    assert summed.loc["policy:slips", "bad_debt_lt_sum"] == pytest.approx(
        whole.loc["policy:slips", "bad_debt_lt_sum"])

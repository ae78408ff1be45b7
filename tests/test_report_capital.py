"""Where the capital goes: capital = mean(1 − LTV) split into the margin in force, what new
borrowing keeps on top of it, the liquidation bonus and what fail-safe days give up; the
parts sum to the capital on hand-made rows and on a replayed path of real candles."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.registry import build_forecaster
from pipelines.policy_eval.acceptance import CAPITAL_PARTS, capital, capital_parts
from pipelines.policy_eval.backtest import policy_paths
from pipelines.report_extra import (
    capital_rows,
    capital_section,
    capital_table,
    policy_name_parts,
)
from tests.conftest import MARKET

FROZEN = "policy:har_rv@confidence=0.99,stress_floor_weight=1.0"


def test_parts_of_a_trading_day_and_a_frozen_day_by_hand():
    lb = 1.05
    ltv = (1.0 - 0.12) / lb            # a published day: LTV = (1 - IMF) / LB
    rows = pd.DataFrame({"mmf": [0.10, 0.20], "imf": [0.12, 1.0], "ltv": [ltv, 0.0],
                         "lb": [lb, 1.04]})
    parts = capital_parts(rows)
    assert list(parts.columns) == list(CAPITAL_PARTS)
    np.testing.assert_allclose(parts.iloc[0], [0.10, 0.02, ltv * 0.05, 0.0], atol=1e-15)
    # a fail-safe day: no new borrowing, everything given up, 1 - MMF of it by the freeze
    np.testing.assert_allclose(parts.iloc[1], [0.20, 0.0, 0.0, 0.80], atol=1e-15)
    np.testing.assert_allclose(parts.sum(axis=1), 1.0 - rows["ltv"], atol=1e-15)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_parts_sum_to_the_capital_of_a_replayed_path(weight):
    cfg = Config().with_overrides({"policy.fhs_min_obs": 60, "backtest.n_jobs": 1,
                                   "policy.stress_floor_weight": weight})
    market = load_market(MARKET, ["BTC", "SOL"], dt.date(2025, 6, 30))
    panel = build_panel(market, cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2022-06-01"]
    fc = backtest(lambda: build_forecaster("ewma94", cfg.models, [1]), panel,
                  dt.date(2024, 1, 1), 120, [1], 300).forecasts
    path = policy_paths(panel, [(fc, cfg)])[0]
    parts = capital_parts(path)
    np.testing.assert_allclose(parts.sum(axis=1), 1.0 - path["ltv"], atol=1e-12)
    assert parts.mean().sum() == pytest.approx(capital(path["ltv"]), abs=1e-12)
    # every published day keeps a positive margin and something on top of it for new loans
    assert (parts["mmf"] > 0).all() and (parts["imf_over_mmf"] >= 0).all()
    assert (parts["lb_part"] >= 0).all()


def test_policy_names_are_read_back_into_forecaster_settings_and_suffix():
    assert policy_name_parts(FROZEN + ":no_apc") == (
        "har_rv", {"confidence": "0.99", "stress_floor_weight": "1.0"}, "no_apc")
    assert policy_name_parts("policy:ewma94") == ("ewma94", {}, "")
    assert policy_name_parts("aave_v3:from_launch") == ("aave_v3", {}, "from_launch")


def test_the_rows_are_the_frozen_policy_its_variants_and_the_comparators_in_order():
    frozen = {"policy": FROZEN, "forecaster": "har_rv",
              "knobs": {"policy.stress_floor_weight": [0.0, 0.25, 0.75, 1.0]}}
    names = sorted([
        FROZEN, f"{FROZEN}:no_apc", "policy:har_rv@confidence=0.99",   # first choice
        "policy:har_rv@confidence=0.99,stress_floor_weight=0.75",
        "policy:har_rv@confidence=0.99,stress_floor_weight=0.0",
        "policy:har_rv", "policy:har_rv@confidence=0.95",             # other confidences
        "policy:ewma94@confidence=0.99", "policy:ewma94", "policy:garch11_t@confidence=0.99",
        "static", "aave_v3", "aave_v3:from_launch"])
    assert capital_rows(frozen, names) == [
        FROZEN, "policy:har_rv@confidence=0.99",
        "policy:har_rv@confidence=0.99,stress_floor_weight=0.0",
        "policy:har_rv@confidence=0.99,stress_floor_weight=0.75",
        f"{FROZEN}:no_apc", "policy:ewma94@confidence=0.99", "static", "aave_v3"]
    # frozen at the configured settings, no knob swept: EWMA-FHS is the plain one
    plain = {"policy": "policy:har_rv", "forecaster": "har_rv"}
    assert capital_rows(plain, names) == ["policy:har_rv", "policy:ewma94", "static",
                                          "aave_v3"]
    # a comparator the rule would prefer is taken apart beside them, before Aave v3
    preferred = {**plain, "comparators_the_rule_prefers": [
        {"policy": "static@confidence=0.995", "acceptable": 12, "assets": 12,
         "capital": 0.267}]}
    assert capital_rows(preferred, [*names, "static@confidence=0.995"]) == [
        "policy:har_rv", "policy:ewma94", "static", "static@confidence=0.995", "aave_v3"]


def _rows(policy: str, asset: str, dates: pd.DatetimeIndex, ltv: float, mmf: float,
          imf: float, lb: float) -> pd.DataFrame:
    return pd.DataFrame({"policy": policy, "asset": asset, "date": dates, "mmf": mmf,
                         "imf": imf, "ltv": ltv, "lb": lb, "loss_frac": 0.01})


def _paths() -> pd.DataFrame:
    days = pd.date_range("2023-06-28", "2023-07-09")      # 12 days; losses on the next day
    a = _rows(FROZEN, "A", days, 0.70, 0.2, 0.3, 1.0)       # capital 0.30 in the period
    a.loc[:1, ["ltv", "imf"]] = [0.0, 1.0]                  # loss days 06-29, 06-30: outside
    b = _rows(FROZEN, "B", days[:6], 0.80, 0.1, 0.2, 1.0)   # capital 0.20, fewer days
    b.loc[b.index[-1], ["loss_frac", "ltv", "imf"]] = [np.nan, 0.0, 1.0]  # not realized
    e = _rows("policy:ewma94", "A", days, 0.75, 0.2, 0.25, 1.0)
    return pd.concat([a, b, e], ignore_index=True)


def test_the_table_averages_each_asset_then_the_assets_on_the_period():
    table = capital_table(_paths(), [FROZEN, "policy:ewma94"], dt.date(2023, 7, 1),
                          dt.date(2023, 7, 10)).set_index("policy")
    # loss days 2023-07-01 → 07-10: A keeps 10 of its 12 rows (its two frozen days fall
    # before), B 3 of its 6 (its last, frozen, has no realized loss): each asset counts once
    assert table.loc[FROZEN, "assets"] == 2
    assert table.loc[FROZEN, "capital"] == pytest.approx((0.30 + 0.20) / 2)
    assert table.loc[FROZEN, "freeze_part"] == 0.0
    assert table.loc[FROZEN, "mmf"] == pytest.approx(0.15)
    assert table.loc[FROZEN, "imf_over_mmf"] == pytest.approx(0.10)
    parts = table.loc[FROZEN, list(CAPITAL_PARTS)].sum()
    assert parts == pytest.approx(table.loc[FROZEN, "capital"])
    # like for like: EWMA-FHS has asset A only, so the frozen policy is read on A (0.30
    # against 0.25: +20%), not as its two-asset mean against A's (0.25 / 0.25: "no dearer")
    assert table.loc[FROZEN, "vs_ewma_fhs"] == pytest.approx(0.30 / 0.25 - 1.0)
    assert table.loc["policy:ewma94", "vs_ewma_fhs"] == 0.0


def test_the_section_reads_the_run_outputs_and_is_absent_without_them(tmp_path: Path):
    assert capital_section(tmp_path) == ""
    bt = tmp_path / "backtest"
    bt.mkdir()
    _paths().to_parquet(bt / "policy_paths.parquet")
    (bt / "frozen.json").write_text(json.dumps({
        "policy": FROZEN, "forecaster": "har_rv", "knobs": {},
        "evaluation_period": ["2023-07-01", "2023-07-10"]}))
    text = capital_section(tmp_path)
    assert text.startswith("### Where the capital goes (evaluation period)")
    assert f"| {FROZEN}" in text and "| policy:ewma94" not in text  # another setting

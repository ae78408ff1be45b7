"""Serving a tail-driven policy (:mod:`serving.tail_source`): the batch job publishes, day
after day, what the tail-driven replay judged; a missing tail forecast falls back to the FHS
tail and says so; after the fit cutoff the fitted tail model forecasts the day; the serve of
such a bundle reads the whole history."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config, FeaturesConfig
from features.window import bundle_window, serve_columns
from models.registry import build_forecaster
from models.tail.registry import build_tail_forecaster
from pipelines.policy_eval.tail_driven import tail_policy_path
from serving.apply import bundle_forecasts, policy_frame, policy_frame_per_asset
from serving.serve import tail_lines
from serving.tail_source import FALLBACK_NOTE, TailSource, entry
from tests.tail_panel import rv_sigma, tail_panel

ASSETS = ("AAA", "BBB")
CFG = Config().with_overrides({"backtest.n_jobs": 1, "policy.confidence": 0.99})
PUBLISHED = ["sigma_1d", "liquidity_addon", "mmf", "imf", "lt", "ltv", "lb"]  # the replay's


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return tail_panel(ASSETS, n_days=420, seed=9)


@pytest.fixture(scope="module")
def variance(panel: pd.DataFrame) -> pd.DataFrame:
    return rv_sigma(panel)


@pytest.fixture(scope="module")
def tails(panel: pd.DataFrame) -> pd.DataFrame:
    """An FHS-EWMA tail model's forecasts at every cutoff (long and short, 99%), as the tail
    walk-forward writes them, with a hole of 15 BBB days."""
    model = build_tail_forecaster("fhs_ewma", CFG.tail, 1).fit(panel)
    cutoffs = pd.DatetimeIndex(sorted(panel.index.get_level_values("date").unique()))[40:]
    out = model.forecast_tail(panel, [0.99], cutoffs).assign(model="fhs_ewma")
    hole = (out["asset"] == "BBB") & out["cutoff"].between(cutoffs[300], cutoffs[314])
    return out[~hole].reset_index(drop=True)


def _bundle(panel: pd.DataFrame, variance: pd.DataFrame, tails: pd.DataFrame,
            fit_cutoff: pd.Timestamp) -> tuple[object, dict]:
    sigma_model = build_forecaster("ewma94", CFG.models, [1]).fit(panel)
    tail_model = build_tail_forecaster("fhs_ewma", CFG.tail, 1).fit(
        panel[panel.index.get_level_values("date") <= fit_cutoff])
    bundle = {"forecaster": sigma_model.state(), "fit_cutoff": fit_cutoff.date().isoformat(),
              "config": CFG.resolved(), "forecasts": bundle_forecasts(variance, 1),
              "tail": entry("fhs_ewma", 0.99, tail_model.state(), tails, fit_cutoff, ASSETS)}
    return sigma_model, json.loads(json.dumps(bundle, default=str))  # as stored: JSON


def test_the_served_tail_driven_policy_is_the_replayed_one_day_after_day(
        panel, variance, tails):
    """Backfilled day by day with the stored σ and tail forecasts, each day's previous rows
    the day before's, the batch job publishes the replay's parameters; on the days without a
    tail forecast both fall back to the FHS tail and the published row says so."""
    replayed = tail_policy_path(panel, variance, tails, "fhs_ewma", 0.99, CFG)
    last = panel.index.get_level_values("date").max()
    model, bundle = _bundle(panel, variance, tails, last)
    # from the first update on, up to the day before the fit cutoff (from which the fitted
    # models forecast: the next test)
    days = pd.DatetimeIndex(sorted(replayed["date"].unique()))[:-1]
    key = replayed.set_index(["asset", "date"])
    previous, fell_back = None, set()
    for day in days:
        served = policy_frame(model, bundle, panel, day.date(), previous)
        for row in served.itertuples():
            want = key.loc[(row.asset, day)]
            for name in PUBLISHED:
                assert getattr(row, name) == want[name], \
                    (row.asset, day, name)
            assert (FALLBACK_NOTE.format(model="fhs_ewma") in row.reason) \
                == bool(want["tail_fallback"])
            if want["tail_fallback"]:
                fell_back.add((row.asset, day))
        previous = served
    have = tails.loc[(tails["side"] == "long") & tails["es"].notna(), ["asset", "cutoff"]]
    known = set(zip(have["asset"], have["cutoff"], strict=True))
    assert fell_back == {(a, d) for a in ASSETS for d in days if (a, d) not in known}
    hole = {(a, d) for a, d in fell_back if d >= pd.Timestamp("2020-06-01")}
    assert {a for a, _ in hole} == {"BBB"} and len(hole) == 15  # the hole, and the model's
    # first days (fewer standardized losses than its minimum)
    # the direct tail is what MMF's tail term reads: the published ES is the forecast's
    day = days[200]
    got = policy_frame(model, bundle, panel, day.date(), None).set_index("asset")
    aaa = tails[(tails["asset"] == "AAA") & (tails["cutoff"] == day) & (tails["side"] == "long")]
    assert got.at["AAA", "loss_es"] == pytest.approx(float(aaa["es"].iloc[0]), rel=1e-12)
    # and the test can fail: a tail 30% wider publishes a higher target margin
    wider = tails.assign(var=tails["var"] * 1.3, es=tails["es"] * 1.3)
    _, wide = _bundle(panel, variance, wider, last)
    moved = policy_frame(model, wide, panel, day.date(), None).set_index("asset")
    assert moved.at["AAA", "target_mmf"] > got.at["AAA", "target_mmf"] + 1e-4


def test_after_the_fit_cutoff_the_fitted_tail_model_forecasts_the_day(panel, variance, tails):
    """A day after the fit cutoff is forecast by the bundled model from the rows up to it,
    in one call for every asset; the batch equals the per-asset path; a model that raises
    for every asset leaves the FHS tail, said in each row, never a failed serve."""
    cutoff = pd.Timestamp("2020-11-30")
    # stored forecasts twice as wide as the model's: which one is read shows in the numbers
    doubled = tails.assign(var=tails["var"] * 2, es=tails["es"] * 2)
    sigma, bundle = _bundle(panel, variance, doubled, cutoff)
    day = pd.Timestamp("2020-12-05")
    source = TailSource.of(bundle)
    assert source is not None and source.alias == "fhs_ewma"
    visible = panel[panel.index.get_level_values("date") <= day]
    fitted = build_tail_forecaster("fhs_ewma", CFG.tail, 1).fit(
        panel[panel.index.get_level_values("date") <= cutoff])
    want = fitted.forecast_tail(visible, [0.99], pd.DatetimeIndex([day]))
    want = want[want["side"] == "long"].set_index("asset")
    got, errors = source.values(visible, day, list(ASSETS))
    assert errors == {}
    for asset in ASSETS:
        assert got[asset] == pytest.approx((want.at[asset, "var"], want.at[asset, "es"]),
                                           rel=1e-12)
    # before the fit cutoff the stored (walk-forward) forecast is read, not the model's
    before = pd.Timestamp("2020-11-20")
    early = source.values(visible, before, ["AAA"])[0]["AAA"]
    stored = doubled[(doubled["cutoff"] == before) & (doubled["side"] == "long")
                     & (doubled["asset"] == "AAA")]
    assert early == (float(stored["var"].iloc[0]), float(stored["es"].iloc[0]))
    # the whole serve: the batch (one tail call for every asset) equals the per-asset path,
    # and each published ES is the fitted model's forecast of the day
    batch = policy_frame(sigma, bundle, panel, day.date(), None)
    pd.testing.assert_frame_equal(batch, policy_frame_per_asset(sigma, bundle, panel,
                                                                day.date()), check_exact=True)
    rows = batch.set_index("asset")
    for asset in ASSETS:
        assert rows.at[asset, "loss_es"] == pytest.approx(want.at[asset, "es"], rel=1e-12)
        assert "FHS tail" not in rows.at[asset, "reason"]

    # an asset the model was not refitted on (too short at the fit cutoff) has no direct
    # tail, as in the walk-forward: the FHS tail, said in its row and in the serve's warning
    source.fitted = {"AAA"}
    partial = policy_frame(sigma, bundle, panel, day.date(), None, source).set_index("asset")
    note = FALLBACK_NOTE.format(model="fhs_ewma")
    assert note in partial.at["BBB", "reason"] and note not in partial.at["AAA", "reason"]
    assert partial.at["AAA", "loss_es"] == rows.at["AAA", "loss_es"]
    assert partial.at["BBB", "loss_es"] != pytest.approx(rows.at["BBB", "loss_es"])
    assert not partial["flag_fallback"].any()
    assert tail_lines(bundle, partial.reset_index()) == [
        "tail-driven policy: no fhs_ewma tail forecast for 1 asset(s), published on the FHS "
        "tail of the σ forecast: BBB"]

    class Broken:
        def forecast_tail(self, *args, **kwargs):
            raise FloatingPointError("overflow")

    # a model that raises was never judged so: the fail-safe freezes the asset (LTV 0)
    source.model, source.fitted = Broken(), None
    broken = policy_frame(sigma, bundle, panel, day.date(), None, source).set_index("asset")
    for asset in ASSETS:
        assert broken.at[asset, "reason"].startswith(
            f"fail-safe: tail model fhs_ewma failed for {asset}: FloatingPointError: overflow")
        assert broken.at[asset, "flag_fallback"] and broken.at[asset, "ltv"] == 0.0
        assert note not in broken.at[asset, "reason"]
    per_asset = policy_frame_per_asset(sigma, bundle, panel, day.date())  # from the bundle
    assert per_asset["reason"].tolist() == rows["reason"].tolist()  # its own model works
    (line,) = tail_lines(bundle, broken.reset_index())
    assert line == ("tail-driven policy: the fhs_ewma tail model failed for 2 asset(s), "
                    "frozen (LTV 0, LT and LB held): AAA, BBB")
    assert tail_lines({"forecaster": {}}, broken.reset_index()) == []  # variance-driven


def test_a_tail_driven_bundle_is_served_on_its_whole_history(panel, variance, tails):
    cutoff = pd.Timestamp("2020-11-30")
    _, bundle = _bundle(panel, variance, tails, cutoff)
    # FHS-EWMA's inputs are audited: the base columns, the covered losses, EWMA's returns
    columns = serve_columns(bundle)
    assert {"worst_loss_long", "worst_loss_short", "ret_1d"} <= columns
    assert not {"worst_loss_long_intrabar", "worst_loss_short_intrabar"} & columns  # close
    intrabar = {**bundle, "tail": {**bundle["tail"], "state": {
        **bundle["tail"]["state"], "config": {**bundle["tail"]["state"]["config"],
                                              "loss_variant": "intrabar"}}}}
    assert {"worst_loss_long_intrabar", "worst_loss_short_intrabar"} <= serve_columns(intrabar)
    learnt = {**bundle, "tail": {**bundle["tail"], "state": {"kind": "tail_nn"}}}
    assert serve_columns(learnt) is None  # a learnt tail model's are not: every column
    hs = {**bundle, "tail": {**bundle["tail"], "state": {"kind": "hs"}}}
    assert serve_columns(hs) == serve_columns(bundle)  # losses (and σ's returns) only
    window = bundle_window(bundle, FeaturesConfig(), cutoff.date(), {})
    assert window.days is None and window.binding == "policy.tail_model"
    plain = {k: v for k, v in bundle.items() if k != "tail"}
    assert TailSource.of(plain) is None
    assert serve_columns(plain) is not None  # ewma94 alone reads a few columns
    assert bundle_window(plain, FeaturesConfig(), cutoff.date(), {}).days is not None
    assert np.isfinite(bundle["tail"]["forecasts"]["AAA"]["es"]).all()
    assert max(bundle["tail"]["forecasts"]["AAA"]["dates"]) == "2020-11-30"

"""The policy applied to every asset in one batch (:func:`serving.apply.policy_frame`) gives
the frame of the per-asset reference (:func:`serving.apply.policy_frame_per_asset`), and one
asset's failure freezes that asset only."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from models.registry import build_forecaster
from serving.apply import bundle_forecasts, policy_frame, policy_frame_per_asset
from serving.inputs import PanelArrays
from tests.conftest import write_slice

FORECASTERS = ("har_rv", "har_rv_pooled", "ewma94", "garch11_t")
FIT_CUTOFF = dt.date(2022, 6, 5)
# one as-of before the fit cutoff (stored forecasts only), then days through the 2022-06-13
# crash, each reading the previous day's rows: notice, pending changes and freezes bite
DAYS = [dt.date(2022, 6, 3), *(dt.date(2022, 6, d) for d in range(9, 16))]


def _json_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Published rows read back as a serve reads them (JSON records)."""
    return pd.DataFrame(json.loads(json.dumps(frame.to_dict(orient="records"), default=str)))


def _bundle(alias: str, features: pd.DataFrame, fit_cutoff: dt.date, history_start: str,
            exclude: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """A forecaster fitted through ``fit_cutoff`` (without ``exclude``) and its bundle."""
    cfg = Config()
    seen = features[(features.index.get_level_values("date") <= pd.Timestamp(fit_cutoff))
                    & ~features.index.get_level_values("asset").isin(exclude)]
    model = build_forecaster(alias, cfg.models, cfg.backtest.horizons).fit(seen)
    cutoffs = pd.date_range(history_start, fit_cutoff, freq="D")
    bundle = {"forecaster": model.state(), "fit_cutoff": fit_cutoff.isoformat(),
              "config": cfg.resolved(),
              "forecasts": bundle_forecasts(model.forecast(seen, [1], cutoffs), 1)}
    return model, json.loads(json.dumps(bundle))


def _chains(model: Any, bundle: dict[str, Any], features: pd.DataFrame,
            days: list[dt.date]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """(batched, reference) frames of consecutive days, each path reading its own rows back."""
    out, prev_fast, prev_ref = [], None, None
    for day in days:
        fast = policy_frame(model, bundle, features, day, prev_fast)
        ref = policy_frame_per_asset(model, bundle, features, day, prev_ref)
        out.append((fast, ref))
        prev_fast, prev_ref = _json_rows(fast), _json_rows(ref)
    return out


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Six real assets, 2021-01 → 2022-06, with a stale asset (SOL's rows stop 2022-06-10),
    a price missing on one as-of (ETH 2022-06-12), an asset without hourly data (AAVE: proxy
    losses) and one whose realized variance is scaled down (TRX: implausible forecasts)."""
    dest = tmp_path_factory.mktemp("market")
    assets = ["AAVE", "BTC", "ETH", "LTC", "SOL", "TRX"]
    panel = build_panel(load_market(write_slice(dest, assets, "2021-01-01", "2022-06-30")),
                        Config().features)
    features = feature_view(panel).copy()
    asset = features.index.get_level_values("asset")
    date = features.index.get_level_values("date")
    features = features[~((asset == "SOL") & (date > "2022-06-10"))].copy()
    asset = features.index.get_level_values("asset")
    date = features.index.get_level_values("date")
    features.loc[(asset == "ETH") & (date == "2022-06-12"), "close"] = np.nan
    features.loc[(asset == "TRX") & (date >= "2022-05-01"), "rv"] *= 1e-6
    return features


@pytest.mark.parametrize("alias", FORECASTERS)
def test_the_batch_equals_the_per_asset_path_on_real_data(embedded, alias):
    # LTC is unknown to the forecaster: no stored and no new forecast
    model, bundle = _bundle(alias, embedded, FIT_CUTOFF, "2021-09-01", exclude=("LTC",))
    chains = _chains(model, bundle, embedded, DAYS)
    for fast, ref in chains:
        pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    rows = pd.concat([fast for fast, _ in chains], ignore_index=True)
    reason = rows.set_index(["asset", rows["as_of"].astype(str)])["reason"]
    # every path of the update is exercised, not only the healthy one
    assert "stale data: last price 2 day(s)" in reason["SOL", "2022-06-12"]
    assert "stale data: last price 1 day(s)" in reason["ETH", "2022-06-12"]
    assert "model has no forecast for LTC" in reason["LTC", "2022-06-13"]
    assert "implausible forecast for TRX" in reason["TRX", "2022-06-13"]
    assert "daily-range proxy" in reason["AAVE", "2022-06-13"]
    assert rows["pending_effective"].notna().any()  # a notice was announced and carried
    assert not rows.loc[rows["asset"].isin(["BTC", "ETH", "SOL"]), "flag_fallback"].all()


def test_a_day_before_the_fit_cutoff_is_served_from_its_stored_forecast(embedded):
    """A backfill served with a version fitted later takes the walk-forward's out-of-sample
    forecast stored for the day, never the fitted model's (its parameters saw the days after);
    an asset with no stored forecast that day is frozen, not forecast in sample."""
    model, bundle = _bundle("har_rv", embedded, FIT_CUTOFF, "2021-09-01")
    day = dt.date(2022, 6, 3)
    marked = json.loads(json.dumps(bundle))  # stored forecasts told apart from the model's
    for series in marked["forecasts"].values():
        series["variance"] = [2.0 * v for v in series["variance"]]
    del marked["forecasts"]["LTC"]
    fast = policy_frame(model, marked, embedded, day)
    pd.testing.assert_frame_equal(fast, policy_frame_per_asset(model, marked, embedded, day),
                                  check_exact=True)
    rows = fast.set_index("asset")
    btc = marked["forecasts"]["BTC"]
    assert rows.loc["BTC", "variance_1d"] == pytest.approx(
        btc["variance"][btc["dates"].index(day.isoformat())])
    assert "model has no forecast for LTC" in rows.loc["LTC", "reason"]


def test_a_shuffled_panel_and_a_later_row_change_nothing(embedded):
    """The batch sorts what it is given and reads no row after the as-of."""
    model, bundle = _bundle("har_rv", embedded, FIT_CUTOFF, "2021-09-01")
    day = dt.date(2022, 6, 13)
    expected = policy_frame_per_asset(model, bundle, embedded, day)
    shuffled = embedded.sample(frac=1.0, random_state=3)
    later = shuffled.copy()
    later.loc[later.index.get_level_values("date") > "2022-06-13", "rv"] = 1.0
    for panel in (shuffled, later):
        pd.testing.assert_frame_equal(policy_frame(model, bundle, panel, day), expected,
                                      check_exact=True)


def test_stored_forecasts_missing_or_not_plain_dates_give_the_per_asset_frame(embedded):
    """No stored forecast for any asset; or stored cutoffs written with a time of day, which
    the batch leaves to the per-asset path (it parses plain ISO dates only)."""
    model, bundle = _bundle("ewma94", embedded, FIT_CUTOFF, "2021-09-01")
    timed = json.loads(json.dumps(bundle))
    for series in timed["forecasts"].values():
        series["dates"] = [f"{d}T00:00:00" for d in series["dates"]]
    for variant in ({**bundle, "forecasts": {}}, timed):
        for fast, ref in _chains(model, variant, embedded, [dt.date(2022, 6, 3),
                                                            dt.date(2022, 6, 9)]):
            pd.testing.assert_frame_equal(fast, ref, check_exact=True)


def test_assets_without_a_visible_price_get_the_fail_safe_of_the_per_asset_path(embedded):
    """An asset listed after the as-of (rows only later) and one whose closes are all
    missing: no price data, frozen or the static set, as one asset at a time."""
    model, bundle = _bundle("ewma94", embedded, FIT_CUTOFF, "2021-09-01")
    btc = embedded.xs("BTC", level="asset", drop_level=False)
    later = btc[btc.index.get_level_values("date") > "2022-06-20"].rename(index={"BTC": "AAA"})
    blank = btc.rename(index={"BTC": "ZZZ"}).assign(close=np.nan)
    panel = pd.concat([embedded, later, blank]).sort_index()
    day1, day2 = dt.date(2022, 6, 12), dt.date(2022, 6, 13)
    previous = _json_rows(policy_frame_per_asset(model, bundle, panel, day1))
    fast = policy_frame(model, bundle, panel, day2, previous)
    pd.testing.assert_frame_equal(
        fast, policy_frame_per_asset(model, bundle, panel, day2, previous), check_exact=True)
    rows = fast.set_index("asset")
    assert rows.loc["AAA", "reason"].startswith("fail-safe: no price data")
    assert rows.loc["ZZZ", "reason"].startswith("fail-safe: no price data")
    assert rows.loc[["AAA", "ZZZ"], "flag_stale"].all()


class _BrokenOn:
    """A per-asset forecaster that raises on one asset."""

    per_asset = True

    def __init__(self, model: Any, broken: str) -> None:
        self.model, self.broken, self.alias = model, broken, model.alias

    def forecast(self, panel: pd.DataFrame, horizons: Any, cutoffs: Any = None) -> pd.DataFrame:
        if self.broken in set(panel.index.get_level_values("asset")):
            raise FloatingPointError(f"diverged on {self.broken}")
        return self.model.forecast(panel, horizons, cutoffs)


class _Pooled:
    """A forecaster that does not say its forecasts are per asset (like the learnt ones)."""

    def __init__(self, model: Any) -> None:
        self.model, self.alias, self.calls = model, model.alias, 0

    def forecast(self, panel: pd.DataFrame, horizons: Any, cutoffs: Any = None) -> pd.DataFrame:
        self.calls += 1
        return self.model.forecast(panel, horizons, cutoffs)


def test_a_forecaster_not_known_to_be_per_asset_is_called_asset_by_asset(embedded):
    model, bundle = _bundle("har_rv", embedded, FIT_CUTOFF, "2021-09-01", exclude=("LTC",))
    pooled = _Pooled(model)
    for fast, ref in _chains(pooled, bundle, embedded, DAYS[:3]):
        pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    # each path calls it once per asset priced on the as-of (SOL is stale from 2022-06-11),
    # except on the day before the fit cutoff, served from the stored forecasts
    assert DAYS[0] < FIT_CUTOFF <= DAYS[1]
    assert pooled.calls == 2 * (0 + 6 + 6)


def test_an_asset_whose_forecast_raises_is_frozen_and_the_others_are_published(embedded):
    model, bundle = _bundle("ewma94", embedded, FIT_CUTOFF, "2021-09-01")
    day1, day2 = dt.date(2022, 6, 9), dt.date(2022, 6, 10)
    previous = _json_rows(policy_frame(model, bundle, embedded, day1))
    broken = policy_frame(_BrokenOn(model, "BTC"), bundle, embedded, day2, previous)
    healthy = policy_frame(model, bundle, embedded, day2, previous)
    btc = broken.set_index("asset").loc["BTC"]
    assert bool(btc["flag_fallback"]) and btc["ltv"] == 0.0
    assert "policy failed for BTC at 2022-06-10: FloatingPointError: diverged on BTC" \
        in btc["reason"]
    assert btc["lt"] == previous.set_index("asset").loc["BTC", "lt"]  # LT held, not reset
    others = broken["asset"] != "BTC"
    pd.testing.assert_frame_equal(broken[others], healthy[others], check_exact=True)


def test_previous_rows_naming_an_asset_twice_are_refused(embedded):
    model, bundle = _bundle("ewma94", embedded, FIT_CUTOFF, "2021-09-01")
    rows = _json_rows(policy_frame(model, bundle, embedded, dt.date(2022, 6, 9)))
    twice = pd.concat([rows, rows[rows["asset"] == "BTC"]], ignore_index=True)
    with pytest.raises(ValueError, match=r"more than one row for \['BTC'\]"):
        policy_frame(model, bundle, embedded, dt.date(2022, 6, 10), twice)


def test_rolling_means_of_all_assets_in_one_pass_are_each_assets_own():
    """Bit for bit, across a gap longer than the window and missing values."""
    rng = np.random.default_rng(5)
    days = {"A": pd.date_range("2024-01-01", periods=90, freq="D"),
            "B": pd.date_range("2024-01-01", periods=40, freq="D").append(
                pd.date_range("2024-04-01", periods=50, freq="D")),  # a 50-day gap
            "C": pd.date_range("2024-02-10", periods=3, freq="D")}
    index = pd.MultiIndex.from_tuples([(a, d) for a, ds in days.items() for d in ds],
                                      names=["asset", "date"])
    values = np.exp(rng.normal(size=len(index)) * 3.0)
    values[rng.random(len(index)) < 0.2] = np.nan
    arrays = PanelArrays.from_panel(pd.DataFrame({"v": values}, index=index))
    mean = arrays.rolling_mean(values, 30)
    count = arrays.window_count(values, np.arange(len(values)), 30)
    for k, asset in enumerate(arrays.assets):
        s, e = arrays.start[k], arrays.end[k]
        own = pd.Series(values[s:e], index=days[asset]).rolling("30D", min_periods=1)
        np.testing.assert_array_equal(mean[s:e], own.mean().to_numpy())
        # pandas counts an empty window as NaN (min_periods=1): 0 here, the same for >= n
        np.testing.assert_array_equal(count[s:e], own.count().fillna(0.0).to_numpy())
    before = arrays.rolling_mean(values, 30, closed="left")  # the window ending the day before
    for k, asset in enumerate(arrays.assets):
        s, e = arrays.start[k], arrays.end[k]
        own = pd.Series(values[s:e], index=days[asset]).rolling("30D", min_periods=1,
                                                                 closed="left")
        np.testing.assert_array_equal(before[s:e], own.mean().to_numpy())


@pytest.mark.parametrize("alias", FORECASTERS)
def test_the_batch_equals_the_per_asset_path_on_a_synthetic_universe(tmp_path, alias):
    from benchmarks.synthetic_universe import write_universe

    market = load_market(write_universe(tmp_path / "u", 5, start="2024-01-01", seed=11))
    features = feature_view(build_panel(market, Config().features))
    last = features.index.get_level_values("date").max().date()
    model, bundle = _bundle(alias, features, last - dt.timedelta(days=3), "2024-10-01")
    days = [last - dt.timedelta(days=k) for k in (2, 1, 0)]
    for fast, ref in _chains(model, bundle, features, days):
        pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    assert len(fast) == 5 and (~fast["flag_fallback"]).any()


def test_panel_arrays_of_an_empty_panel():
    index = pd.MultiIndex.from_arrays([pd.Index([], dtype=object), pd.DatetimeIndex([])],
                                      names=["asset", "date"])
    arrays = PanelArrays.from_panel(pd.DataFrame({"v": []}, index=index))
    assert arrays.assets == [] and len(arrays.start) == 0


def test_an_asset_whose_policy_update_raises_is_frozen_and_the_others_are_published(
        embedded, monkeypatch):
    """The trusted assets update in one call (:func:`serving.decide.decide_all`); when it
    raises, each asset updates on its own, so that only the one at fault is frozen."""
    import serving.update

    model, bundle = _bundle("ewma94", embedded, FIT_CUTOFF, "2021-09-01")
    day1, day2 = dt.date(2022, 6, 9), dt.date(2022, 6, 10)
    previous = _json_rows(policy_frame(model, bundle, embedded, day1))
    healthy = policy_frame(model, bundle, embedded, day2, previous)
    bad = float(healthy.set_index("asset").loc["ETH", "variance_1d"])
    real = serving.update.targets

    def targets(x, cfg, prev_imf):
        if bad in x.variance.tolist():
            raise FloatingPointError("update diverged")
        return real(x, cfg, prev_imf)

    monkeypatch.setattr(serving.update, "targets", targets)
    broken = policy_frame(model, bundle, embedded, day2, previous)
    eth = broken.set_index("asset").loc["ETH"]
    assert bool(eth["flag_fallback"]) and eth["ltv"] == 0.0
    assert "policy failed for ETH at 2022-06-10: FloatingPointError: update diverged" \
        in eth["reason"]
    others = broken["asset"] != "ETH"
    assert others.sum() >= 5
    pd.testing.assert_frame_equal(broken[others], healthy[others], check_exact=True)


def test_a_missing_row_the_day_before_keeps_the_adv_of_the_other_days(embedded):
    """BTC without its 2022-06-11 row: the ADV of 2022-06-12 is the mean over the window
    closing before the as-of, as the per-asset path has it (the batch read the rolling mean
    of the row of t - 1, absent: the add-on went to its cap, the LB target to its ceiling)."""
    asset = embedded.index.get_level_values("asset")
    date = embedded.index.get_level_values("date")
    holed = embedded[~((asset == "BTC") & (date == "2022-06-11"))]
    model, bundle = _bundle("ewma94", holed, FIT_CUTOFF, "2021-09-01", exclude=("LTC",))
    (fast, ref), = _chains(model, bundle, holed, [dt.date(2022, 6, 12)])
    pd.testing.assert_frame_equal(fast, ref, check_exact=True)
    btc = fast.set_index("asset").loc["BTC"]
    cfg = Config()
    assert not btc["flag_fallback"]
    assert btc["liquidity_addon"] < cfg.policy.liquidity.max_addon

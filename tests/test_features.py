"""Feature panel: point-in-time, estimators against known answers, schema coverage."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.build import build_panel
from features.loaders import MarketData
from features.macro import as_of_daily, session_aligned_returns
from features.realized import garman_klass, har_terms, hourly_realized_variance
from features.schema import COLUMNS, feature_view, undocumented_columns
from features.targets import forward_sum
from pipelines.config import FeaturesConfig

CFG = FeaturesConfig()


def _truncate(market: MarketData, as_of: pd.Timestamp) -> MarketData:
    end = as_of + pd.Timedelta(days=1)
    return MarketData(
        daily={a: f[f.index <= as_of] for a, f in market.daily.items()},
        hourly={a: f[f.index < end] for a, f in market.hourly.items()},
        dvol={a: f[f.index <= as_of] for a, f in market.dvol.items()},
        macro={a: f[f.index <= as_of] for a, f in market.macro.items()},
        gaps=market.gaps, data_dir=market.data_dir, files=market.files,
    )


@pytest.fixture(scope="module")
def small_market(embedded_market: MarketData) -> MarketData:
    keep = ("BTC", "SOL", "MATIC")
    return MarketData(
        daily={a: embedded_market.daily[a] for a in keep},
        hourly={"BTC": embedded_market.hourly["BTC"]},
        dvol=dict(embedded_market.dvol), macro={"SPX": embedded_market.macro["SPX"]},
        gaps=embedded_market.gaps, data_dir=embedded_market.data_dir, files=[],
    )


@pytest.fixture(scope="module")
def full_panel(small_market: MarketData) -> pd.DataFrame:
    return build_panel(small_market, CFG)


def test_every_feature_is_point_in_time(small_market, full_panel):
    """Building on data truncated at t gives exactly the full build's feature rows up to t."""
    rng = np.random.default_rng(11)
    dates = full_panel.index.get_level_values("date").unique()
    # Random days plus the ones that stress the joins: DVOL launch, a weekend, MATIC's end,
    # the day before an hourly outage.
    picks = list(rng.choice(dates[40:], size=10, replace=False)) + [
        pd.Timestamp(d) for d in ("2021-03-24", "2022-11-12", "2024-09-10", "2018-02-07")]
    features = feature_view(full_panel)
    for t in picks:
        t = pd.Timestamp(t)
        cut = feature_view(build_panel(_truncate(small_market, t), CFG))
        expected = features[features.index.get_level_values("date") <= t]
        pd.testing.assert_frame_equal(cut, expected.loc[cut.index], check_freq=False)
        assert len(cut) == len(expected), f"rows differ at {t.date()}"


def test_targets_are_the_next_days_realized_variance(full_panel):
    btc = full_panel.xs("BTC")
    assert btc["target_variance_1d"].iloc[:-1].to_numpy() == pytest.approx(
        btc["rv"].iloc[1:].to_numpy())
    expected_7d = btc["rv"].iloc[1:8].sum()
    assert btc["target_variance_7d"].iloc[0] == pytest.approx(expected_7d)
    assert btc["target_return_1d"].iloc[10] == btc["ret_1d"].iloc[11]
    assert np.isnan(btc["target_variance_7d"].iloc[-1])


def test_garman_klass_matches_hand_computed_value():
    # H/L = e^{0.1}, C/O = e^{0.05}: 0.5·0.01 − (2 ln2 − 1)·0.0025
    o, c = pd.Series([100.0]), pd.Series([100 * np.exp(0.05)])
    h, low = pd.Series([100 * np.exp(0.07)]), pd.Series([100 * np.exp(-0.03)])
    expected = 0.5 * 0.1**2 - (2 * np.log(2) - 1) * 0.05**2
    assert garman_klass(o, h, low, c).iloc[0] == pytest.approx(expected, rel=1e-12)


def test_range_and_intraday_estimators_recover_known_gbm_variance():
    """Simulated Brownian paths with daily σ = 3%: RV from hourly closes and GK from the
    daily OHLC of a finely sampled path are both unbiased within sampling error."""
    rng = np.random.default_rng(3)
    sigma, days, steps = 0.03, 2000, 24 * 12  # 5-minute path, hourly candles
    incr = rng.normal(0, sigma / np.sqrt(steps), size=(days, steps))
    path = np.log(100) + np.concatenate([[0.0], incr.ravel().cumsum()])
    closes_5m = path[1:].reshape(days, steps)
    opens = path[:-1].reshape(days, steps)[:, 0]
    daily = pd.DataFrame({"open": np.exp(opens), "high": np.exp(closes_5m.max(1)),
                          "low": np.exp(closes_5m.min(1)), "close": np.exp(closes_5m[:, -1])})
    gk = garman_klass(daily["open"], daily["high"], daily["low"], daily["close"])
    hourly_close = np.exp(closes_5m[:, 11::12].ravel())
    stamps = pd.date_range("2020-01-01", periods=days * 24, freq="h")
    rv = hourly_realized_variance(pd.DataFrame({"close": hourly_close}, index=stamps), 20)
    assert rv["rv_hourly"].iloc[1:].mean() == pytest.approx(sigma**2, rel=0.03)
    # GK on a 5-minute path is biased low by discrete sampling (Garman-Klass 1980), ~10%.
    assert 0.80 * sigma**2 < gk.mean() < 1.0 * sigma**2


def test_hourly_rv_sums_squared_returns_and_ignores_cross_midnight_gaps():
    stamps = pd.DatetimeIndex(["2024-01-01 22:00", "2024-01-01 23:00", "2024-01-02 00:00",
                               "2024-01-02 01:00", "2024-01-02 05:00", "2024-01-03 03:00"])
    close = pd.Series([100, 101, 99, 100, 102, 90.0], index=stamps)
    out = hourly_realized_variance(close.to_frame("close"), min_hours=1)
    r = np.log(close).diff()
    # Jan 2: 00:00 (from 23:00), 01:00, 05:00 (spans a 4h gap inside the day) are counted
    assert out.loc["2024-01-02", "rv_hourly"] == pytest.approx((r.iloc[2:5] ** 2).sum())
    assert out.loc["2024-01-02", "n_hours"] == 3
    # the 2024-01-03 03:00 return starts on Jan 2: not counted, so Jan 3 has no RV row
    assert pd.Timestamp("2024-01-03") not in out.index


def test_too_few_hours_gives_nan_not_a_partial_rv():
    stamps = pd.date_range("2024-01-01", periods=12, freq="h")
    out = hourly_realized_variance(pd.DataFrame({"close": np.arange(1.0, 13.0)}, stamps), 20)
    assert out["n_hours"].iloc[0] == 11 and np.isnan(out["rv_hourly"].iloc[0])


def test_har_terms_are_trailing_means_with_full_windows_only():
    rv = pd.Series(np.arange(1.0, 11.0), index=pd.date_range("2024-01-01", periods=10))
    har = har_terms(rv, [1, 7])
    assert har["har_rv_7d"].iloc[6] == pytest.approx(4.0)
    assert har["har_rv_7d"].iloc[:6].isna().all()
    assert har["har_rv_1d"].equals(rv)


def test_forward_sum_never_returns_a_partial_sum():
    x = pd.Series([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    out = forward_sum(x, 2)
    assert np.isnan(out.iloc[0]) and np.isnan(out.iloc[1])
    assert out.iloc[2] == 9.0 and out.iloc[3] == 11.0
    assert out.iloc[4:].isna().all()


def test_macro_pairs_cover_the_same_calendar_span():
    days = pd.date_range("2024-01-01", "2024-01-10")  # Mon..Wed next week
    crypto = pd.Series(np.arange(10) / 100.0, index=days)
    sessions = pd.DatetimeIndex(["2024-01-03", "2024-01-05", "2024-01-08"])
    macro = pd.Series([100.0, 101.0, 99.0], index=sessions)
    pairs = session_aligned_returns(crypto, macro)
    # Fri 5th pairs with crypto of Thu 4th + Fri 5th; Mon 8th with Sat+Sun+Mon
    assert pairs.loc["2024-01-05", "crypto"] == pytest.approx(0.03 + 0.04)
    assert pairs.loc["2024-01-08", "crypto"] == pytest.approx(0.05 + 0.06 + 0.07)
    assert pairs.loc["2024-01-08", "macro"] == pytest.approx(np.log(99 / 101))


def test_macro_values_are_used_only_after_the_lag_and_go_stale():
    values = pd.Series([0.5], index=pd.DatetimeIndex(["2024-01-05"]))
    cal = pd.date_range("2024-01-04", "2024-01-20")
    out = as_of_daily(values, cal, lag_days=1, max_carry_days=7)
    assert out.loc[:"2024-01-05"].isna().all()  # the Friday close is not known on Friday
    assert (out.loc["2024-01-06":"2024-01-13"] == 0.5).all()
    assert out.loc["2024-01-14":].isna().all()


def test_assets_without_own_dvol_get_market_dvol_with_mask(full_panel):
    sol = full_panel.xs("SOL")
    before = sol.loc[:"2021-03-23"]
    assert not before["dvol_available"].any() and before["dvol_var_1d"].isna().all()
    after = sol.loc["2021-03-24":]
    assert after["dvol_available"].all() and not after["dvol_is_own"].any()
    btc = full_panel.xs("BTC").loc["2021-03-24":]
    assert btc["dvol_is_own"].all()
    assert sol.loc["2022-01-03", "dvol_var_1d"] == btc.loc["2022-01-03", "dvol_var_1d"]


def test_rv_uses_hourly_where_available_else_garman_klass(full_panel):
    btc, sol = full_panel.xs("BTC"), full_panel.xs("SOL")
    assert not sol["rv_is_hourly"].any()
    assert sol["rv"].equals(sol["gk_var"])
    assert btc["rv_is_hourly"].mean() > 0.99
    # the 2018-02-08..11 Binance outage: those days fall back to the range estimator
    outage = btc.loc["2018-02-09"]
    assert not outage["rv_is_hourly"] and outage["rv"] == outage["gk_var"]


def test_every_panel_column_is_documented(full_panel):
    assert undocumented_columns(full_panel) == []
    assert set(full_panel.columns) == set(COLUMNS)


def test_feature_view_hides_every_target(full_panel):
    view = feature_view(full_panel)
    assert not [c for c in view.columns if c.startswith("target_")]
    assert {"target_variance_1d", "target_variance_7d"} <= set(full_panel.columns)


def test_panel_is_one_row_per_asset_day(full_panel):
    assert full_panel.index.is_unique
    matic = full_panel.xs("MATIC")
    assert matic.index.max() == pd.Timestamp(dt.date(2024, 9, 10))

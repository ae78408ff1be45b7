"""Co-movement features: rolling correlation/beta, macro alignment across calendars, VIX regime,
beta to BTC and the basket's contagion indicator — against known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.schema import FeaturesConfig
from features.crossasset import basket_correlation, beta_to_benchmark, wide_returns
from features.macro import (
    as_of_daily,
    macro_features,
    rolling_session_stats,
    session_aligned_returns,
    vix_regime,
)
from features.rolling import calendar_starts, rolling_corr_beta, trailing_starts


def test_rolling_corr_beta_matches_numpy_on_every_window():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    x = 1.7 * y + rng.normal(scale=0.5, size=200)
    x[[5, 50, 51]] = np.nan  # skipped pairs
    corr, beta = rolling_corr_beta(x, y, trailing_starts(200, 30), min_obs=20)
    for i in (40, 52, 120, 199):
        ok = np.isfinite(x[i - 29 : i + 1])
        xs, ys = x[i - 29 : i + 1][ok], y[i - 29 : i + 1][ok]
        assert corr[i] == pytest.approx(np.corrcoef(xs, ys)[0, 1], rel=1e-9)
        assert beta[i] == pytest.approx(np.polyfit(ys, xs, 1)[0], rel=1e-9)
    assert np.isnan(corr[:20]).all() and np.isfinite(corr[20])  # row 5 missing: 20th pair at 20


def test_constant_series_has_no_correlation():
    corr, beta = rolling_corr_beta(np.full(40, 0.01), np.linspace(0, 1, 40),
                                   trailing_starts(40, 30), 10)
    assert np.isnan(corr).all() and np.isnan(beta).all()


def test_calendar_window_is_the_trailing_days_inclusive():
    dates = pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-10", "2024-01-31"]).to_numpy()
    # 30-day window of Jan 31 = Jan 2 .. Jan 31
    assert list(calendar_starts(dates, 30)) == [0, 0, 0, 1]


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


def test_yields_enter_as_level_changes_even_through_zero():
    days = pd.date_range("2020-03-01", periods=4)
    macro = pd.Series([0.10, -0.05, 0.02], index=days[1:])
    pairs = session_aligned_returns(pd.Series(0.01, index=days), macro, transform="diff")
    assert pairs["macro"].iloc[1:].to_numpy() == pytest.approx([-0.15, 0.07])


def test_crypto_span_with_a_missing_day_is_not_a_partial_sum():
    days = pd.date_range("2024-01-01", periods=5)
    crypto = pd.Series([0.01, 0.02, np.nan, 0.04, 0.05], index=days)
    macro = pd.Series([1.0, 1.1, 1.2], index=days[[0, 3, 4]])
    pairs = session_aligned_returns(crypto, macro)
    assert np.isnan(pairs["crypto"].iloc[1]) and pairs["crypto"].iloc[2] == pytest.approx(0.05)


def test_session_correlation_keeps_the_previous_definition():
    """corr_spx_30d keeps its meaning: pandas' 30D rolling correlation on the valid pairs."""
    rng = np.random.default_rng(1)
    sessions = pd.bdate_range("2023-01-02", periods=150)
    pairs = pd.DataFrame({"crypto": rng.normal(size=150), "macro": rng.normal(size=150)},
                         index=sessions)
    pairs.iloc[[10, 70], 0] = np.nan
    ours = rolling_session_stats(pairs, 30, 15)["corr"]
    valid = pairs.dropna()
    ref = valid["crypto"].rolling("30D", min_periods=15).corr(valid["macro"])
    pd.testing.assert_series_equal(ours.dropna(), ref.dropna(), check_names=False, rtol=1e-9)


def test_beta_recovers_a_known_sensitivity():
    rng = np.random.default_rng(2)
    days = pd.date_range("2023-01-01", periods=400, name="date")
    macro_ret = rng.normal(0, 0.01, 400)
    crypto = pd.Series(2.5 * macro_ret + rng.normal(0, 0.002, 400), index=days)
    macro = {"SPX": pd.DataFrame({"value": 4000 * np.exp(np.cumsum(macro_ret))}, index=days)}
    out = macro_features(crypto, macro, FeaturesConfig())
    assert out["beta_spx_90d"].iloc[200:].mean() == pytest.approx(2.5, rel=0.02)
    assert out["corr_spx_30d"].iloc[200:].min() > 0.9
    assert out["corr_ndx_30d"].isna().all()  # factor not in the data: NaN, not invented


def test_macro_values_are_used_only_after_the_lag_and_go_stale():
    values = pd.Series([0.5], index=pd.DatetimeIndex(["2024-01-05"]))
    cal = pd.date_range("2024-01-04", "2024-01-20")
    out = as_of_daily(values, cal, lag_days=1, max_carry_days=7)
    assert out.loc[:"2024-01-05"].isna().all()  # the Friday close is not known on Friday
    assert (out.loc["2024-01-06":"2024-01-13"] == 0.5).all()
    assert out.loc["2024-01-14":].isna().all()


def test_vix_regime_is_lagged_and_unknown_is_not_calm():
    cal = pd.date_range("2024-08-01", "2024-08-20", name="date")
    vix = pd.DataFrame({"value": [16.0, 38.6, 27.0]},
                       index=pd.DatetimeIndex(["2024-08-02", "2024-08-05", "2024-08-06"]))
    out = macro_features(pd.Series(0.0, index=cal), {"VIX": vix}, FeaturesConfig())
    regime = out["vix_regime"]
    assert regime.dtype == "boolean"
    assert regime.loc[:"2024-08-02"].isna().all()  # nothing known yet
    assert not regime.loc["2024-08-03"] and not regime.loc["2024-08-05"]  # Friday's 16
    assert regime.loc["2024-08-06"] and regime.loc["2024-08-07"]  # Monday's 38.6, Tuesday's 27
    assert regime.loc["2024-08-14"]  # Tuesday's close, known Wednesday, carried 7 days ...
    assert regime.loc["2024-08-15":].isna().all()  # ... then stale
    assert vix_regime(pd.Series([25.0, 25.01]), 25.0).tolist() == [False, True]


def test_beta_to_btc_is_one_for_btc_and_exact_for_a_levered_copy():
    rng = np.random.default_rng(4)
    days = pd.date_range("2024-01-01", periods=60, name="date")
    btc = pd.Series(rng.normal(0, 0.03, 60), index=days)
    wide = wide_returns({"BTC": btc, "LEV": 1.5 * btc, "NEW": (2 * btc).iloc[40:]})
    beta = beta_to_benchmark(wide, 30, 15)
    assert (beta["BTC"].dropna() == 1.0).all() and beta["BTC"].notna().sum() == 60 - 14
    assert beta["LEV"].dropna().to_numpy() == pytest.approx(1.5)
    assert beta["NEW"].iloc[:54].isna().all()  # 15 pairs needed after its listing
    assert beta_to_benchmark(wide.drop(columns="BTC"), 30, 15).isna().all().all()


def test_basket_correlation_uses_only_assets_trading_that_day():
    rng = np.random.default_rng(5)
    days = pd.date_range("2024-01-01", periods=80, name="date")
    common = rng.normal(0, 0.03, 80)
    a = pd.Series(common, index=days)
    b = pd.Series(common + rng.normal(0, 1e-4, 80), index=days)  # ~perfectly correlated
    c = pd.Series(rng.normal(0, 0.03, 80), index=days).iloc[:50]  # delisted after day 50
    out = basket_correlation(wide_returns({"A": a, "B": b, "C": c}), 30, 15)
    assert out["basket_n_assets"].iloc[40] == 3 and out["basket_n_assets"].iloc[60] == 2
    # after C's last day only the A-B pair counts, even while C's window still has data
    assert out["basket_corr"].iloc[55] == pytest.approx(1.0, abs=1e-3)
    assert out["basket_corr"].iloc[40] < 0.8  # with C (independent) the mean is diluted
    assert out["basket_corr"].iloc[:14].isna().all()

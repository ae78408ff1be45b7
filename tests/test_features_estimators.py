"""Each estimator against a known answer: hand-computed small examples and simulated Brownian
paths with a known variance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.implied import dvol_change, dvol_to_daily_variance, implied_features
from features.liquidity import amihud, liquidity_features, volume_zscore
from features.ranges import garman_klass, parkinson, rogers_satchell, yang_zhang, yang_zhang_k
from features.realized import hourly_realized_measures

SIGMA = 0.03  # daily vol of the simulated paths
DAYS, STEPS = 1500, 24 * 12  # 5-minute path, hourly candles


@pytest.fixture(scope="module")
def gbm() -> dict[str, pd.DataFrame]:
    """A driftless Brownian log price observed every 5 minutes: daily OHLC and hourly closes."""
    rng = np.random.default_rng(3)
    incr = rng.normal(0, SIGMA / np.sqrt(STEPS), size=(DAYS, STEPS))
    path = np.log(100) + np.concatenate([[0.0], incr.ravel().cumsum()])
    closes = path[1:].reshape(DAYS, STEPS)
    opens = path[:-1].reshape(DAYS, STEPS)[:, 0]
    days = pd.date_range("2020-01-01", periods=DAYS, freq="D")
    daily = pd.DataFrame({"open": np.exp(opens), "high": np.exp(np.maximum(closes.max(1), opens)),
                          "low": np.exp(np.minimum(closes.min(1), opens)),
                          "close": np.exp(closes[:, -1])}, index=days)
    stamps = pd.date_range("2020-01-01", periods=DAYS * 24, freq="h")
    hourly = pd.DataFrame({"close": np.exp(closes[:, 11::12].ravel())}, index=stamps)
    return {"daily": daily, "hourly": hourly}


# ---------------------------------------------------------------- realized (hourly)


def test_realized_measures_recover_known_gbm_variance(gbm):
    m = hourly_realized_measures(gbm["hourly"], 20).iloc[1:]
    var = SIGMA**2
    assert m["rv_hourly"].mean() == pytest.approx(var, rel=0.03)
    assert m["bpv"].mean() == pytest.approx(var, rel=0.04)  # no jumps: BPV estimates RV too
    assert m["rv_down"].mean() == pytest.approx(var / 2, rel=0.05)
    assert m["rv_up"].mean() == pytest.approx(var / 2, rel=0.05)
    assert (m["rv_down"] + m["rv_up"]).to_numpy() == pytest.approx(m["rv_hourly"].to_numpy())
    assert m["jump_var"].mean() < 0.15 * var  # only the truncation noise of max(RV-BPV, 0)
    assert abs(m["rskew"].mean()) < 0.05
    # E[n Σr⁴ / RV²] ≈ 3n/(n+2) = 2.77 for n = 24 Gaussian returns
    assert m["rkurt"].mean() == pytest.approx(3 * 24 / 26, rel=0.03)


def test_bipower_variation_separates_a_jump(gbm):
    hourly = gbm["hourly"].copy()
    jump_at = pd.Timestamp("2020-06-01 12:00")
    hourly.loc[hourly.index >= jump_at, "close"] *= np.exp(-0.20)  # one -20% print
    m = hourly_realized_measures(hourly, 20)
    day = m.loc["2020-06-01"]
    assert day["jump_var"] == pytest.approx(0.04, rel=0.15)
    # the jump enters BPV only through its two neighbours' products (finite-n bias, ~4σ²)
    assert day["bpv"] < 0.1 * day["rv_hourly"]
    assert day["rskew"] < -3 and day["rkurt"] > 15


def test_realized_measures_match_hand_computation():
    stamps = pd.date_range("2024-01-01 23:00", periods=5, freq="h")  # 23:00 .. 03:00
    close = pd.Series([100.0, 102.0, 101.0, 99.0, 100.0], index=stamps)
    m = hourly_realized_measures(close.to_frame("close"), min_hours=1).loc["2024-01-02"]
    r = np.log(close).diff().iloc[1:].to_numpy()  # 4 returns, all ending on Jan 2
    assert m["n_hours"] == 4
    assert m["rv_hourly"] == pytest.approx((r**2).sum())
    assert m["rv_up"] == pytest.approx(r[0] ** 2 + r[3] ** 2)
    assert m["rv_down"] == pytest.approx(r[1] ** 2 + r[2] ** 2)
    pairs = np.abs(r[1:] * r[:-1]).sum()
    assert m["bpv"] == pytest.approx(np.pi / 2 * 4 / 3 * pairs)
    assert m["rskew"] == pytest.approx(2 * (r**3).sum() / (r**2).sum() ** 1.5)
    assert m["rkurt"] == pytest.approx(4 * (r**4).sum() / (r**2).sum() ** 2)


def test_hourly_rv_ignores_cross_midnight_gaps():
    stamps = pd.DatetimeIndex(["2024-01-01 22:00", "2024-01-01 23:00", "2024-01-02 00:00",
                               "2024-01-02 01:00", "2024-01-02 05:00", "2024-01-03 03:00"])
    close = pd.Series([100, 101, 99, 100, 102, 90.0], index=stamps)
    out = hourly_realized_measures(close.to_frame("close"), min_hours=1)
    r = np.log(close).diff()
    # Jan 2: 00:00 (from 23:00), 01:00, 05:00 (spans a 4h gap inside the day) are counted
    assert out.loc["2024-01-02", "rv_hourly"] == pytest.approx((r.iloc[2:5] ** 2).sum())
    assert out.loc["2024-01-02", "n_hours"] == 3
    # the 2024-01-03 03:00 return starts on Jan 2: not counted, so Jan 3 has no row
    assert pd.Timestamp("2024-01-03") not in out.index


def test_too_few_hours_gives_nan_in_every_measure():
    stamps = pd.date_range("2024-01-01", periods=12, freq="h")
    out = hourly_realized_measures(pd.DataFrame({"close": np.arange(1.0, 13.0)}, stamps), 20)
    assert out["n_hours"].iloc[0] == 11
    assert out.drop(columns="n_hours").iloc[0].isna().all()


def test_flat_day_has_zero_rv_and_no_skewness():
    stamps = pd.date_range("2024-01-01", periods=25, freq="h")
    out = hourly_realized_measures(pd.DataFrame({"close": np.full(25, 5.0)}, stamps), 20)
    assert out["rv_hourly"].iloc[0] == 0.0 and np.isnan(out["rskew"].iloc[0])


# ---------------------------------------------------------------- range estimators


def test_range_estimators_match_hand_computed_values():
    # ln(H/O) = 0.07, ln(L/O) = -0.03, ln(C/O) = 0.05
    o, h = pd.Series([100.0]), pd.Series([100 * np.exp(0.07)])
    lo, c = pd.Series([100 * np.exp(-0.03)]), pd.Series([100 * np.exp(0.05)])
    gk = 0.5 * 0.1**2 - (2 * np.log(2) - 1) * 0.05**2
    assert garman_klass(o, h, lo, c).iloc[0] == pytest.approx(gk, rel=1e-12)
    assert parkinson(h, lo).iloc[0] == pytest.approx(0.1**2 / (4 * np.log(2)), rel=1e-12)
    rs = 0.07 * (0.07 - 0.05) + (-0.03) * (-0.03 - 0.05)
    assert rogers_satchell(o, h, lo, c).iloc[0] == pytest.approx(rs, rel=1e-12)


def test_yang_zhang_matches_its_formula_on_three_days():
    o = pd.Series([100.0, 101.0, 99.0, 102.0])
    h = pd.Series([103.0, 104.0, 101.0, 105.0])
    lo = pd.Series([99.0, 100.0, 97.0, 101.0])
    c = pd.Series([101.5, 99.5, 100.5, 104.0])
    yz = yang_zhang(o, h, lo, c, window=3)
    assert yz.iloc[:3].isna().all()  # the first day has no previous close
    on = np.log(o / c.shift(1)).iloc[1:]
    oc = np.log(c / o).iloc[1:]
    rs = rogers_satchell(o, h, lo, c).iloc[1:]
    k = 0.34 / (1.34 + 4 / 2)
    assert yang_zhang_k(3) == pytest.approx(k)
    expected = np.var(on, ddof=1) + k * np.var(oc, ddof=1) + (1 - k) * rs.mean()
    assert yz.iloc[3] == pytest.approx(expected, rel=1e-12)


def test_range_estimators_recover_known_gbm_variance(gbm):
    """On a 5-minute path every range estimator is biased low by discrete sampling (the true
    extremes fall between prints, Garman-Klass 1980): within 20% and never above."""
    d = gbm["daily"]
    var = SIGMA**2
    for est in (garman_klass(d["open"], d["high"], d["low"], d["close"]),
                parkinson(d["high"], d["low"]),
                rogers_satchell(d["open"], d["high"], d["low"], d["close"]),
                yang_zhang(d["open"], d["high"], d["low"], d["close"], 30)):
        assert 0.80 * var < est.mean() < 1.0 * var


# ---------------------------------------------------------------- implied


def test_dvol_converts_to_daily_variance_and_log_changes():
    level = pd.Series([50.0, 55.0, np.nan, 60.5],
                      index=pd.date_range("2024-01-01", periods=4, name="date"))
    assert dvol_to_daily_variance(level).iloc[0] == pytest.approx(0.25 / 365)
    change = dvol_change(level, 1)
    assert change.iloc[1] == pytest.approx(np.log(1.1))
    assert np.isnan(change.iloc[2]) and np.isnan(change.iloc[3])  # a gap is not bridged
    assert dvol_change(level, 3).iloc[3] == pytest.approx(np.log(1.21))


def test_variance_risk_premium_and_ratio_against_trailing_realized():
    cal = pd.date_range("2024-01-01", periods=3, name="date")
    dvol = pd.DataFrame({"value": [73.0, 73.0]}, index=cal[1:])  # from day 2
    rv30 = pd.Series([0.001, 0.0036, 0.0], index=cal)
    out = implied_features(dvol, own=False, trailing_rv=rv30)
    iv2 = 0.73**2 / 365
    assert not out["dvol_available"].iloc[0] and np.isnan(out["vrp"].iloc[0])
    assert out["vrp"].iloc[1] == pytest.approx(iv2 - 0.0036)
    assert out["iv_rv_ratio"].iloc[1] == pytest.approx(np.sqrt(iv2 / 0.0036))
    assert np.isnan(out["iv_rv_ratio"].iloc[2])  # zero realized variance: no ratio
    assert out["dvol_available"].iloc[1] and not out["dvol_is_own"].any()


# ---------------------------------------------------------------- liquidity


def test_volume_zscore_compares_with_the_previous_days_only():
    ldv = pd.Series([1.0, 2.0, 3.0, 10.0])
    z = volume_zscore(ldv, window=3, min_obs=3)
    assert z.iloc[:3].isna().all()
    assert z.iloc[3] == pytest.approx((10.0 - 2.0) / 1.0)


def test_amihud_is_basis_points_per_million_and_skips_zero_volume():
    cal = pd.date_range("2024-01-01", periods=3, name="date")
    close = pd.Series([100.0, 101.0, 99.0], index=cal)
    volume = pd.Series([20_000.0, 0.0, 10_000.0], index=cal)  # $2M, nothing, $0.99M
    ret = pd.Series([np.nan, 0.01, -0.02], index=cal)
    out = liquidity_features(close, volume, ret, min_obs=1)
    assert np.isnan(out["log_dollar_volume"].iloc[1])  # log(0) is not a volume
    assert out["amihud_30d"].iloc[2] == pytest.approx(1e4 * 0.02 / 0.99)
    assert amihud(ret, close * volume, 3, 1).iloc[2] == pytest.approx(1e4 * 0.02 / 0.99)

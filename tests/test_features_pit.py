"""Point-in-time: a panel built on data truncated at day t has exactly the full build's feature
rows up to t — for every feature column, including the cross-asset ones (beta to BTC, basket
correlation), on real data and on random synthetic markets with gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.schema import FeaturesConfig
from features.build import build_panel
from features.loaders import MarketData
from features.macro import MACRO_FACTORS
from features.schema import COLUMNS, TARGET_PREFIX, feature_view

CFG = FeaturesConfig()
FEATURES = [c for c in COLUMNS if not c.startswith(TARGET_PREFIX)]
PIT_ASSETS = ("BTC", "ETH", "SOL", "MATIC", "LINK")


def truncate(market: MarketData, as_of: pd.Timestamp) -> MarketData:
    """What was known at the end of UTC day ``as_of`` (independent of the loader's cut)."""
    end = as_of + pd.Timedelta(days=1)
    return MarketData(
        daily={a: f[f.index <= as_of] for a, f in market.daily.items()},
        hourly={a: f[f.index < end] for a, f in market.hourly.items()},
        dvol={a: f[f.index <= as_of] for a, f in market.dvol.items()},
        macro={a: f[f.index <= as_of] for a, f in market.macro.items()},
        gaps=market.gaps, data_dir=market.data_dir, files=[],
    )


def assert_point_in_time(market: MarketData, full: pd.DataFrame, t: pd.Timestamp,
                         cfg: FeaturesConfig) -> None:
    known = truncate(market, t)
    cut = feature_view(build_panel(known, cfg))
    features = feature_view(full)
    expected = features[features.index.get_level_values("date") <= t]
    # The one allowed difference: a missing daily candle at the end of the cut becomes a gap
    # row only once a later candle exists; at time t the asset's calendar ends at its last one.
    assert cut.index.difference(expected.index).empty, f"extra rows at {t.date()}"
    for asset, date in expected.index.difference(cut.index):
        assert date > known.daily[asset].index.max(), f"{asset} {date.date()} missing at {t}"
    expected = expected.loc[cut.index]
    try:
        pd.testing.assert_frame_equal(cut, expected, check_freq=False)
    except AssertionError:  # name every leaking feature, not only the first difference
        leaking = [c for c in expected.columns if not cut[c].equals(expected[c])]
        raise AssertionError(f"not point-in-time at {t.date()}: {leaking}") from None


@pytest.fixture(scope="module")
def pit_market(embedded_market: MarketData) -> MarketData:
    keep = PIT_ASSETS
    return MarketData(
        daily={a: embedded_market.daily[a] for a in keep},
        hourly={a: embedded_market.hourly[a] for a in keep if a in embedded_market.hourly},
        dvol=dict(embedded_market.dvol), macro=dict(embedded_market.macro),
        gaps=embedded_market.gaps, data_dir=embedded_market.data_dir, files=[],
    )


@pytest.fixture(scope="module")
def pit_panel(pit_market: MarketData) -> pd.DataFrame:
    return build_panel(pit_market, CFG)


def test_pit_panel_covers_every_feature_column(pit_panel):
    """The real-data PIT test below exercises every schema feature, with values present."""
    assert [c for c in FEATURES if c not in pit_panel.columns] == []
    empty = [c for c in FEATURES if pit_panel[c].isna().all()]
    assert empty == []


def test_every_feature_is_point_in_time(pit_market, pit_panel):
    """Real data: random days plus the ones that stress the joins — DVOL launch, a weekend,
    MATIC's last day (it leaves the basket), the day before an hourly outage, LINK's listing,
    a US holiday, the 2020-03-12 crash."""
    rng = np.random.default_rng(11)
    dates = pit_panel.index.get_level_values("date").unique()
    picks = list(rng.choice(dates[40:], size=8, replace=False)) + [
        pd.Timestamp(d) for d in ("2021-03-24", "2022-11-12", "2024-09-10", "2018-02-07",
                                  "2019-01-16", "2023-07-04", "2020-03-12")]
    for t in picks:
        assert_point_in_time(pit_market, pit_panel, pd.Timestamp(t), CFG)


def test_point_in_time_with_multi_hour_delay_and_multi_day_interval(pit_market):
    """H = 4 hours, U = 3 days: windows attributed to the interval they complete in stay
    point-in-time (a liquidation triggered at 22:00 completes tomorrow, counted tomorrow)."""
    cfg = FeaturesConfig(liquidation_delay_hours=4, update_interval_days=3)
    market = MarketData(daily={a: pit_market.daily[a] for a in ("BTC", "SOL")},
                        hourly={"BTC": pit_market.hourly["BTC"]}, dvol=pit_market.dvol,
                        macro=pit_market.macro, gaps=pit_market.gaps,
                        data_dir=pit_market.data_dir)
    full = build_panel(market, cfg)
    for t in ("2018-02-09", "2021-05-19", "2024-01-07"):
        assert_point_in_time(market, full, pd.Timestamp(t), cfg)


# ---------------------------------------------------------------- synthetic markets


def _candles(rng: np.random.Generator, stamps: pd.DatetimeIndex, sigma: float) -> pd.DataFrame:
    close = 100 * np.exp(np.cumsum(rng.normal(0, sigma, len(stamps))))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.exp(np.abs(rng.normal(0, sigma / 2, (2, len(stamps)))))
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * wick[0],
                         "low": np.minimum(open_, close) / wick[1], "close": close,
                         "volume": rng.uniform(0, 1e4, len(stamps)).round(0)},
                        index=stamps)


def _drop(rng: np.random.Generator, frame: pd.DataFrame, share: float) -> pd.DataFrame:
    return frame[rng.random(len(frame)) >= share]


def synthetic_market(seed: int, n_days: int = 75) -> MarketData:
    """Three assets with staggered listings, gappy hourly data, DVOL from mid-sample, macro on a
    weekday calendar with holidays — every join the real data has, in 75 days."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2024-01-01", periods=n_days, freq="D", name="date").as_unit("ns")
    hours = pd.date_range(days[0], periods=n_days * 24, freq="h").as_unit("ns")
    hourly_btc = _drop(rng, _candles(rng, hours, 0.006), 0.05)
    daily = {"BTC": _drop(rng, _candles(rng, days, 0.03), 0.02),
             "AAA": _candles(rng, days[int(rng.integers(5, 30)):], 0.05),
             "BBB": _candles(rng, days[: n_days - int(rng.integers(1, 20))], 0.04)}
    dvol_days = days[int(rng.integers(10, 40)):]
    dvol = {"BTC": pd.DataFrame({"value": rng.uniform(30, 90, len(dvol_days))},
                                index=dvol_days)}
    sessions = _drop(rng, pd.DataFrame(index=days[days.dayofweek < 5]), 0.05).index
    macro = {}
    for name, transform in MACRO_FACTORS.values():
        level = np.cumsum(rng.normal(0, 1, len(sessions))) + (0 if transform == "diff" else 500)
        macro[name] = pd.DataFrame({"value": level + (20 if name == "VIX" else 0)},
                                   index=sessions)
    return MarketData(daily=daily, hourly={"BTC": hourly_btc}, dvol=dvol, macro=macro,
                      gaps=pd.DataFrame(), data_dir=None)  # type: ignore[arg-type]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cut=st.integers(0, 74),
       delay=st.sampled_from([1, 3]), interval=st.sampled_from([1, 2]))
def test_point_in_time_on_random_synthetic_markets(seed, cut, delay, interval):
    cfg = FeaturesConfig(liquidation_delay_hours=delay, update_interval_days=interval,
                         corr_min_obs=5, liquidity_min_obs=5)
    market = synthetic_market(seed)
    full = build_panel(market, cfg)
    t = pd.Timestamp("2024-01-01") + pd.Timedelta(days=cut)
    if not (truncate(market, t).daily["BTC"].empty):
        assert_point_in_time(market, full, t, cfg)


def test_an_own_dvol_that_starts_later_leaves_earlier_rows_as_they_were(
        pit_market: MarketData) -> None:
    """ETH's own index cut to start on 2021-06-01, two months after BTC's (the market's):
    a build cut before that day reads BTC's index for ETH, and a later build must read it
    for the same rows too (never NaN), switching to ETH's own from its first day."""
    dvol = dict(pit_market.dvol)
    dvol["ETH"] = dvol["ETH"][dvol["ETH"].index >= "2021-06-01"]
    market = MarketData(daily={a: pit_market.daily[a] for a in ("BTC", "ETH")},
                        hourly={a: pit_market.hourly[a] for a in ("BTC", "ETH")},
                        dvol=dvol, macro=dict(pit_market.macro), gaps=pit_market.gaps,
                        data_dir=pit_market.data_dir, files=[])
    full = build_panel(truncate(market, pd.Timestamp("2021-08-31")), CFG)
    for t in ("2021-05-01", "2021-06-01", "2021-07-01"):
        assert_point_in_time(market, full, pd.Timestamp(t), CFG)
    eth, btc = full.xs("ETH", level="asset"), full.xs("BTC", level="asset")
    before = eth.loc["2021-04-15"]
    assert before["dvol_available"] and not before["dvol_is_own"]
    assert before["dvol_var_1d"] == btc.loc["2021-04-15", "dvol_var_1d"]
    after = eth.loc["2021-06-15"]
    own = dvol["ETH"].loc["2021-06-15", "value"]
    assert after["dvol_is_own"] and after["dvol_var_1d"] == pytest.approx((own / 100) ** 2 / 365)
    # the first own day's change is not a jump from BTC's index to ETH's
    assert np.isnan(eth.loc["2021-06-01", "dvol_change_1d"])

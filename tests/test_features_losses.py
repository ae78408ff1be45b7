"""The worst liquidation-delay loss within the update interval: a hand-made hourly path with
known answers, the window rule, the daily-range proxy and its flag, and the targets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from configs.schema import FeaturesConfig
from features.losses import LOSS_COLUMNS, hourly_worst_losses, worst_loss_features
from features.summary import worst_loss_proxy_comparison
from features.targets import target_frame

DAY1, DAY2 = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-02")


def hourly_path(closes: dict[str, float], lows: dict[str, float] | None = None,
                highs: dict[str, float] | None = None) -> pd.DataFrame:
    """48 hourly candles (Jan 1-2) at 100, with the given closes (carried to the next candle's
    open) and extra wicks; keys are candle open times "Dhh" (D = 1 or 2)."""
    stamps = pd.date_range(DAY1, periods=48, freq="h").as_unit("ns")
    close = pd.Series(100.0, index=stamps)
    for key, value in closes.items():
        close[DAY1 + pd.Timedelta(days=int(key[0]) - 1, hours=int(key[1:]))] = value
    close = close.where(close.index.isin([DAY1 + pd.Timedelta(days=int(k[0]) - 1,
                                                              hours=int(k[1:])) for k in closes]))
    close = close.ffill().fillna(100.0)
    open_ = close.shift(1).fillna(100.0)
    frame = pd.DataFrame({"open": open_, "high": np.maximum(open_, close),
                          "low": np.minimum(open_, close), "close": close})
    for key, value in (lows or {}).items():
        frame.loc[DAY1 + pd.Timedelta(days=int(key[0]) - 1, hours=int(key[1:])), "low"] = value
    for key, value in (highs or {}).items():
        frame.loc[DAY1 + pd.Timedelta(days=int(key[0]) - 1, hours=int(key[1:])), "high"] = value
    return frame


def daily_from(hourly: pd.DataFrame) -> pd.DataFrame:
    g = hourly.groupby(hourly.index.floor("D"))
    out = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(),
                        "low": g["low"].min(), "close": g["close"].last()})
    out.index = pd.DatetimeIndex(out.index, name="date").as_unit("ns")
    return out


# Day 2: 00h closes 95, 01h 97, 02h 90, 03h 99 (then flat); 10h wicks to 89, 12h to 110.
PATH = hourly_path({"200": 95.0, "201": 97.0, "202": 90.0, "203": 99.0},
                   lows={"210": 89.0}, highs={"212": 110.0})


def test_worst_hourly_losses_on_a_hand_made_path():
    out = hourly_worst_losses(PATH, delay_hours=1, interval_days=1).loc[DAY2]
    assert out["worst_loss_long"] == pytest.approx(np.log(97 / 90))  # 02h candle
    assert out["worst_loss_short"] == pytest.approx(np.log(99 / 90))  # 03h candle
    assert out["worst_loss_long_intrabar"] == pytest.approx(np.log(99 / 89))  # 10h wick
    assert out["worst_loss_short_intrabar"] == pytest.approx(np.log(110 / 99))  # 12h wick
    assert out["n_windows"] == 24
    flat = hourly_worst_losses(PATH, 1, 1).loc[DAY1]
    assert flat[list(LOSS_COLUMNS)].to_numpy() == pytest.approx(0.0)  # a flat day loses nothing


def test_first_window_starts_at_the_close_before_the_interval():
    path = hourly_path({"123": 100.0, "200": 80.0})  # crash in the first hour of day 2
    out = hourly_worst_losses(path, 1, 1)
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(100 / 80))
    assert out.loc[DAY1, "worst_loss_long"] == pytest.approx(0.0)


def test_multi_hour_windows_are_attributed_to_the_interval_they_complete_in():
    out = hourly_worst_losses(PATH, delay_hours=2, interval_days=1)
    # 2-hour windows ending in day 2: the worst long is 00h close 95 → 02h close 90; the window
    # from Jan 1 22h's close (100) to 00h's close (95) also completes on day 2 and counts.
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(95 / 90))
    assert out.loc[DAY2, "worst_loss_short"] == pytest.approx(np.log(99 / 90))
    assert out.loc[DAY2, "worst_loss_long_intrabar"] == pytest.approx(np.log(99 / 89))
    late = hourly_path({"123": 90.0})  # a drop in the last hour of day 1 ...
    late_out = hourly_worst_losses(late, delay_hours=2, interval_days=1)
    assert late_out.loc[DAY1, "worst_loss_long"] == pytest.approx(np.log(100 / 90))
    # ... is also inside the 2h window (22h close → 00h close) that completes on day 2
    assert late_out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(100 / 90))


def test_interval_of_several_days_takes_the_worst_window_of_all_of_them():
    out = hourly_worst_losses(PATH, delay_hours=1, interval_days=2)
    assert np.isnan(out.loc[DAY1, "worst_loss_long"])  # no complete 2-day interval yet
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(97 / 90))
    assert out.loc[DAY2, "n_windows"] == 47  # day 1's first window has no previous close


def _without(frame: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    """``frame`` without day 2's candles opening at hours ``start`` .. ``stop - 1``."""
    return frame.drop(frame.index[(frame.index >= DAY2 + pd.Timedelta(hours=start))
                                  & (frame.index < DAY2 + pd.Timedelta(hours=stop))])


def test_missing_hours_leave_too_few_windows_and_the_range_decides_hourly_or_proxy():
    cfg = FeaturesConfig()
    gappy = _without(PATH, 5, 8)
    exact = hourly_worst_losses(gappy, 1, 1, cfg.outage_bridge_hours)
    assert exact.loc[DAY2, "n_windows"] == 24 - 4  # 3 candles gone, and the 8h has no start
    out = worst_loss_features(daily_from(PATH), gappy, cfg)
    assert not out.loc[DAY2, "worst_loss_is_proxy"]  # 20 windows >= min_hours_for_rv
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(97 / 90))
    thin = _without(gappy, 13, 14)
    assert hourly_worst_losses(thin, 1, 1).loc[DAY2, "n_windows"] == 18
    # 18 windows < 20, but the hours there are hold the day's high (110, 12h) and low (89,
    # 10h): nothing can hide in the missing ones, so the loss is the hourly one
    out = worst_loss_features(daily_from(PATH), thin, cfg)
    assert not out.loc[DAY2, "worst_loss_is_proxy"]
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(97 / 90))
    assert out.loc[DAY2, "worst_loss_long_intrabar"] == pytest.approx(np.log(99 / 89))
    # without the 10h candle the day's low (89) is in no hour: the daily range stands in
    blind = _without(thin, 10, 11)
    out = worst_loss_features(daily_from(PATH), blind, cfg)
    assert out.loc[DAY2, "worst_loss_is_proxy"]
    # proxy: long ln(max(prev close 100, high 110) / low 89), short ln(110 / min(100, 89))
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(110 / 89))
    assert out.loc[DAY2, "worst_loss_short_intrabar"] == pytest.approx(np.log(110 / 89))
    # a low 0.2% under the hours' lowest is beyond the tolerance (0.1%): proxy; 0.05%: hourly
    daily = daily_from(PATH)
    for low, proxy in ((89 * 0.998, True), (89 * 0.9995, False)):
        daily.loc[DAY2, "low"] = low
        assert worst_loss_features(daily, thin, cfg).loc[DAY2, "worst_loss_is_proxy"] == proxy
    # day 1 has 23 windows (its 00h candle has no close before it): still hourly
    out = worst_loss_features(daily_from(PATH), thin, cfg)
    assert not out.loc[DAY1, "worst_loss_is_proxy"] and out.loc[DAY1, "worst_loss_long"] == 0


def test_enough_windows_that_miss_the_daily_range_take_the_proxy():
    """20 windows are enough only when their hours reach the day's range: an extreme in the
    missing hours (an outage), or hours a feed delivered only up to 19:00 with the crash at
    21:00, would be a loss measured without its worst move."""
    cfg = FeaturesConfig()
    dipped = hourly_path({"200": 95.0, "201": 97.0, "202": 90.0, "203": 99.0},
                         lows={"206": 80.0, "210": 89.0}, highs={"212": 110.0})
    gappy = _without(dipped, 5, 8)  # the 06h low (80) is gone with its hours
    assert hourly_worst_losses(gappy, 1, 1, cfg.outage_bridge_hours).loc[
        DAY2, "n_windows"] == 20
    out = worst_loss_features(daily_from(dipped), gappy, cfg)
    assert out.loc[DAY2, "worst_loss_is_proxy"]
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(110 / 80))
    # the same hours against a daily candle they account for: hourly, as before
    out = worst_loss_features(daily_from(gappy), gappy, cfg)
    assert not out.loc[DAY2, "worst_loss_is_proxy"]
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(97 / 90))
    crash = hourly_path({"200": 95.0, "201": 97.0, "202": 90.0, "203": 99.0, "221": 70.0})
    cut = crash[crash.index <= DAY2 + pd.Timedelta(hours=19)]
    assert hourly_worst_losses(cut, 1, 1).loc[DAY2, "n_windows"] == 20
    out = worst_loss_features(daily_from(crash), cut, cfg)
    assert out.loc[DAY2, "worst_loss_is_proxy"]
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(100 / 70))
    # the listing interval has no proxy to fall back on: with enough windows its hours are
    # kept even where its daily candle reaches further
    listed = daily_from(crash).iloc[1:].copy()
    listed.loc[DAY2, "low"] = 60.0
    first = worst_loss_features(listed, crash[crash.index >= DAY2], cfg)
    assert not first.loc[DAY2, "worst_loss_is_proxy"]  # its hours: 99 → 70
    assert first.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(99 / 70))


def test_a_window_spans_an_outage_up_to_the_bridge_and_no_further():
    # day 2: 04h closes at 100, no candles 05h-07h (an outage), 08h closes at 80
    path = _without(hourly_path({"204": 100.0, "208": 80.0}), 5, 8)
    across = np.log(100 / 80)  # the move a position open at 04h could not escape
    bridged = hourly_worst_losses(path, 1, 1, bridge_hours=3).loc[DAY2]
    assert bridged["worst_loss_long"] == pytest.approx(across)
    assert bridged["worst_loss_short"] == pytest.approx(0.0)  # 80 → 80 afterwards, flat
    assert bridged["n_windows"] == 24 - 4  # the grid count is the strict one
    # a gap longer than the bridge: the 08h window has no start, the move is not measured
    assert hourly_worst_losses(path, 1, 1, bridge_hours=2).loc[DAY2, "worst_loss_long"] \
        == pytest.approx(0.0)
    assert hourly_worst_losses(path, 1, 1).loc[DAY2, "worst_loss_long"] == pytest.approx(0.0)
    # H = 2: two traded candles and the close before them: 03h close (100) → 08h close (80)
    two = hourly_worst_losses(path, 2, 1, bridge_hours=3).loc[DAY2]
    assert two["worst_loss_long"] == pytest.approx(across)
    # the extremes the range check reads: log of day 2's highest high and lowest low
    assert bridged["hour_high"] == pytest.approx(np.log(100.0))
    assert bridged["hour_low"] == pytest.approx(np.log(80.0))
    # with the default bridge (24 h) the features take the bridged loss: 20 windows, hourly
    out = worst_loss_features(daily_from(path), path, FeaturesConfig())
    assert not out.loc[DAY2, "worst_loss_is_proxy"]
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(across)


def test_a_thin_day_after_a_gap_longer_than_the_bridge_takes_the_proxy():
    """Day 1 trades at 100 to its 19h candle and closes at 105 (23h) in its daily candle;
    the hours from 20h to day 2's 08h are missing; day 2 trades at 80 from 09h on. Day 2's
    15 candles (14 windows) reach its daily high (105, the 09h candle's open) and low (80),
    but the move into the 09h candle is measured only when a window spans the 14-hour gap."""
    full = hourly_path({"120": 101.0, "121": 102.0, "122": 104.0, "123": 105.0, "209": 80.0})
    path = full.drop(full.index[(full.index >= DAY1 + pd.Timedelta(hours=20))
                                & (full.index < DAY2 + pd.Timedelta(hours=9))])
    daily = daily_from(full)
    assert daily.loc[DAY2, "high"] == 105.0 and daily.loc[DAY2, "low"] == 80.0
    across = np.log(100 / 80)  # 19h close → 09h close: the move across the outage
    bridged = worst_loss_features(daily, path, FeaturesConfig(outage_bridge_hours=24))
    assert not bridged.loc[DAY2, "worst_loss_is_proxy"]
    assert bridged.loc[DAY2, "worst_loss_long"] == pytest.approx(across)
    # a 12-hour bridge: no window spans the gap, so the hours alone would say 0 (flat at 80
    # after 09h); the day takes the range proxy, ln(max(close before 105, high 105) / 80)
    exact = hourly_worst_losses(path, 1, 1, bridge_hours=12).loc[DAY2]
    assert exact["worst_loss_long"] == pytest.approx(0.0) and exact["hour_gap"]
    unbridged = worst_loss_features(daily, path, FeaturesConfig(outage_bridge_hours=12))
    assert unbridged.loc[DAY2, "worst_loss_is_proxy"]
    assert unbridged.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(105 / 80))
    assert not unbridged.loc[DAY1, "worst_loss_is_proxy"]  # day 1's hours: no move missed
    # bridge 0 (no window spans missing hours): any thin day with a gap takes the proxy
    thin = _without(_without(PATH, 5, 8), 13, 14)  # 18 windows, the range reached
    none = worst_loss_features(daily_from(PATH), thin, FeaturesConfig(outage_bridge_hours=0))
    assert none.loc[DAY2, "worst_loss_is_proxy"]
    assert not worst_loss_features(daily_from(PATH), thin, FeaturesConfig()).loc[
        DAY2, "worst_loss_is_proxy"]


def test_an_hourly_file_that_starts_after_the_daily_one_measures_no_move_into_its_first_hour():
    """Hours from day 2's 10h on (14 candles, 13 windows) reach day 2's range, but the move
    from day 1's close into the first of them is in no window: the proxy, flagged."""
    late = PATH[PATH.index >= DAY2 + pd.Timedelta(hours=10)]
    daily = daily_from(PATH[PATH.index >= DAY2 + pd.Timedelta(hours=3)])  # range of 03h on
    daily = pd.concat([daily_from(PATH).loc[[DAY1]], daily])
    exact = hourly_worst_losses(late, 1, 1, 24).loc[DAY2]
    assert exact["hour_gap"] and exact["n_windows"] == 13
    out = worst_loss_features(daily, late, FeaturesConfig())
    assert out.loc[DAY2, "worst_loss_is_proxy"]
    assert out.loc[DAY2, "worst_loss_long"] == pytest.approx(np.log(110 / 89))


def test_assets_without_hourly_data_get_the_proxy_everywhere_but_the_listing_day():
    out = worst_loss_features(daily_from(PATH), None, FeaturesConfig())
    assert out["worst_loss_is_proxy"].tolist() == [False, True]
    assert out.loc[DAY2, "worst_loss_short"] == pytest.approx(np.log(110 / 89))
    # the first day has no close before it: no proxy (NaN, not flagged), never the range
    assert out.loc[DAY1, list(LOSS_COLUMNS)].isna().all()


def test_a_listing_candle_is_not_a_loss_but_a_later_gap_keeps_its_proxy():
    """The AVAX listing day of the embedded data: the first candle opens (and bottoms) at the
    listing reference price 0.85 and trades up to 7.0; the range proxy would call that a 2.1
    log loss. After a missing day the candle's open stands in for the close before it."""
    days = pd.date_range("2020-09-22", periods=4, name="date")
    daily = pd.DataFrame({"open": [0.85, 5.33, np.nan, 4.64], "high": [7.0, 5.36, np.nan, 4.9],
                          "low": [0.85, 3.4, np.nan, 4.5], "close": [5.32, 3.54, np.nan, 4.8]},
                         index=days)
    out = worst_loss_features(daily, None, FeaturesConfig())
    assert np.isnan(out["worst_loss_long"].iloc[0]) and not out["worst_loss_is_proxy"].iloc[0]
    assert out["worst_loss_long"].iloc[1] == pytest.approx(np.log(5.36 / 3.4))
    assert np.isnan(out["worst_loss_long"].iloc[2])  # the missing day
    assert out["worst_loss_long"].iloc[3] == pytest.approx(np.log(4.9 / 4.5))  # ref = open
    assert out["worst_loss_is_proxy"].tolist() == [False, True, False, True]


def test_targets_are_the_next_interval_exactly():
    days = pd.date_range("2024-01-01", periods=6, name="date")
    feats = pd.DataFrame({"rv": np.arange(1.0, 7.0), "ret_1d": np.full(6, 0.01)}, index=days)
    for col in LOSS_COLUMNS:
        feats[col] = np.arange(6) / 100.0
    feats["worst_loss_is_proxy"] = [False, True, False, False, True, False]
    targets = target_frame(feats, interval_days=2)
    assert targets["target_worst_loss_long"].iloc[:4].tolist() == pytest.approx(
        feats["worst_loss_long"].iloc[2:].tolist())
    assert targets["target_worst_loss_long"].iloc[4:].isna().all()
    flag = targets["target_worst_loss_is_proxy"]
    assert flag.dtype == "boolean" and flag.iloc[2] and flag.iloc[4:].isna().all()
    assert targets["target_return_7d"].isna().all()  # only 5 days ahead exist
    assert targets["target_variance_1d"].iloc[0] == 2.0


def test_daily_range_proxy_bounds_the_hourly_truth_on_real_data(embedded_market):
    """H = 1: the proxy is an upper bound by construction (modulo data-source mismatches
    between Binance's daily and hourly files)."""
    cfg = FeaturesConfig()
    table = worst_loss_proxy_comparison(embedded_market.daily, embedded_market.hourly, cfg)
    assert set(table["asset"]) == set(embedded_market.hourly) and len(set(table["asset"])) >= 11
    assert (table["n"] > 1700).all()           # every hourly asset has years of valid days
    assert (table["coverage"] >= 0.999).all()
    assert (table["median_ratio"] > 2).all()  # the whole day's range vs one hour: 2.5-3.9x
    # In logs the proxy ranks days well everywhere; in levels a few wick days (LINK's 0.0001
    # low of 2020-03-12) weigh so much that only BTC/ETH are held to a level correlation.
    assert (table["corr_log"] > 0.7).all()
    assert (table.loc[table["asset"].isin(["BTC", "ETH"]), "corr"] > 0.6).all()

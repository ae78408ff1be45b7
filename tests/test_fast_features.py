"""The serving columns built for all assets at once (features/fast.py) are those of the
per-asset build (features.build.build_with_tail / build_panel): same index, dtypes, NaN and
values (bit for bit except the multi-day HAR means: a window sum against pandas' running sum)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config, FeaturesConfig
from features.build import build_panel, build_with_tail
from features.fast import fast_columns, fast_panel
from features.loaders import MarketData, load_market
from features.losses import LOSS_COLUMNS, PROXY_FLAG
from features.schema import feature_view
from features.window import (
    TrailingWindow,
    bundle_window,
    serve_columns,
    serve_panel,
    trailing_market,
)
from models.backtest import walk_forward
from models.panel_inputs import INPUT_COLUMNS, INPUTS
from models.registry import build_forecaster, forecaster_from_state
from serving.apply import BUNDLE_FORMAT, bundle_forecasts, policy_frame
from tests.conftest import MARKET

# BTC hourly + own DVOL, SOL hourly (BTC's DVOL), AAVE daily only (range proxy, no hourly RV),
# MATIC hourly, delisted 2024-09-10 (stale at later as-ofs)
ASSETS = ["AAVE", "BTC", "MATIC", "SOL"]
HAR_MEANS = ("har_rv_7d", "har_rv_30d")  # summed in another order: ~1e-15 relative
RTOL = 1e-12


def reference(market: MarketData, cfg: FeaturesConfig, as_of: dt.date, days: int | None,
              tail_days: int | None) -> pd.DataFrame:
    """What :func:`features.window.serve_panel` builds asset by asset for these spans."""
    short = trailing_market(market, as_of, days)
    if days is None or tail_days == days:
        return build_panel(short, cfg)
    return build_with_tail(short, trailing_market(market, as_of, tail_days), cfg)


def assert_same(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same index, columns, dtypes and missing cells; values exactly equal except the HAR
    means (1e-12 relative)."""
    expected = expected[list(got.columns)]
    assert got.index.equals(expected.index)
    assert list(got.index.names) == ["asset", "date"]
    pd.testing.assert_series_equal(got.dtypes, expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=RTOL, atol=0.0)
    exact = [c for c in got.columns if c not in HAR_MEANS]
    pd.testing.assert_frame_equal(got[exact], expected[exact], check_exact=True)
    for col in got.columns:
        assert got[col].isna().equals(expected[col].isna()), col


def _with_holes(market: MarketData) -> MarketData:
    """BTC without its 2025-06-10 candles (a gap: a NaN row, never filled), without the
    2025-06-05 daily candle only (its hours remain), and without 12 hours of 2025-06-20 (too
    few for hourly RV: ``rv`` falls back to Garman-Klass)."""
    daily = dict(market.daily)
    daily["BTC"] = daily["BTC"].drop([pd.Timestamp("2025-06-05"), pd.Timestamp("2025-06-10")])
    hourly = dict(market.hourly)
    lost = pd.date_range("2025-06-20 06:00", periods=12, freq="h").union(
        pd.date_range("2025-06-10", periods=24, freq="h"))
    hourly["BTC"] = hourly["BTC"].drop(lost)
    return replace(market, daily=daily, hourly=hourly)


@pytest.mark.parametrize(("as_of", "days", "tail_days"), [
    (dt.date(2025, 6, 30), 132, 3652),   # the default serve: MATIC stale, tail = all history
    (dt.date(2025, 6, 30), 40, 600),     # a shorter tail than the data
    (dt.date(2020, 3, 31), 60, 200),     # 2020-02-19: hours missing, rv falls back (BTC)
    (dt.date(2024, 3, 31), 45, None),    # tail over the whole history (a GARCH serve)
    (dt.date(2024, 3, 31), 45, 45),      # one span: build_panel, plain bool/int dtypes
    (dt.date(2021, 6, 30), None, None),  # every row (a learnt model's serve)
])
def test_embedded_data_matches_the_per_asset_build(as_of: dt.date, days: int | None,
                                                   tail_days: int | None) -> None:
    market = load_market(MARKET, ASSETS, as_of)
    cfg = Config().features
    expected = reference(market, cfg, as_of, days, tail_days)
    got = fast_panel(market, cfg, as_of, days, tail_days, fast_columns(cfg))
    assert_same(got, expected)
    one_span = days is None or days == tail_days
    assert str(got["rv_is_hourly"].dtype) == ("bool" if one_span else "boolean")
    assert str(got["n_hours"].dtype) == ("int64" if one_span else "Int64")
    if "AAVE" in got.index.get_level_values("asset"):  # listed 2020-10-15
        aave = got.xs("AAVE", level="asset")
        assert aave[PROXY_FLAG].iloc[-1] and not aave["rv_is_hourly"].iloc[-1]  # daily only
    if as_of == dt.date(2020, 3, 31):
        btc = got.xs("BTC", level="asset").loc["2020-02-19"]
        assert 0 < btc["n_hours"] < cfg.min_hours_for_rv and not btc["rv_is_hourly"]
        assert btc["rv"] == btc["gk_var"]
    if days == 132:  # MATIC keeps its last rows, dated 2024-09-10
        assert got.xs("MATIC", level="asset").index.max() == pd.Timestamp("2024-09-10")


def test_an_own_dvol_that_starts_later_matches_the_per_asset_build() -> None:
    """SOL given an own DVOL series starting 2024-06-01 (ETH's values, a stand-in): the
    fast build takes BTC's index before that day and SOL's from it, as the per-asset build."""
    as_of = dt.date(2024, 7, 31)
    market = load_market(MARKET, ["BTC", "SOL", "ETH"], as_of)
    own = market.dvol["ETH"]
    dvol = {**market.dvol, "SOL": own[own.index >= "2024-06-01"]}
    market = replace(market, dvol=dvol)
    cfg = Config().features
    got = fast_panel(market, cfg, as_of, 120, 400, fast_columns(cfg))
    assert_same(got, reference(market, cfg, as_of, 120, 400))
    sol, btc = got.xs("SOL", level="asset"), got.xs("BTC", level="asset")
    assert sol.loc["2024-05-20", "dvol_var_1d"] == btc.loc["2024-05-20", "dvol_var_1d"]
    assert sol.loc["2024-06-20", "dvol_var_1d"] != btc.loc["2024-06-20", "dvol_var_1d"]


def test_a_gap_and_missing_hours_stay_missing() -> None:
    as_of = dt.date(2025, 6, 30)
    market = _with_holes(load_market(MARKET, ["AAVE", "BTC"], as_of))
    cfg = Config().features
    got = fast_panel(market, cfg, as_of, 60, 400, fast_columns(cfg))
    assert_same(got, reference(market, cfg, as_of, 60, 400))
    btc = got.xs("BTC", level="asset")
    assert btc.loc["2025-06-10", ["close", "rv", "log_dollar_volume", "gk_var"]].isna().all()
    assert np.isnan(btc.loc["2025-06-11", "ret_1d"])  # no previous close: not filled
    assert btc.loc["2025-06-10":"2025-06-16", "har_rv_7d"].isna().all()
    assert btc.loc["2025-06-10", "n_hours"] == 0 and btc.loc["2025-06-10", PROXY_FLAG] == False  # noqa: E712
    no_candle = btc.loc["2025-06-05"]  # hours without a daily candle: hourly RV and losses
    assert np.isnan(no_candle["close"]) and no_candle["rv_is_hourly"]
    assert not no_candle[PROXY_FLAG] and np.isfinite(no_candle["worst_loss_long"])
    day = btc.loc["2025-06-20"]  # 12 returns left (one spans the 13 missing hours)
    assert day["n_hours"] == 12 and not day["rv_is_hourly"] and day["rv"] == day["gk_var"]
    assert day[PROXY_FLAG]  # 11 complete 1-hour windows < 20: the daily-range proxy


def _simulated_market(seed: int) -> MarketData:
    """Four assets on random walks with seeded holes: different first days, a daily gap,
    missing hours (some whole days), one asset without hourly data, one with its own DVOL."""
    rng = np.random.default_rng(seed)
    daily, hourly = {}, {}
    for k, name in enumerate(["AAA", "BBB", "CCC", "DDD"]):
        hours = pd.date_range(f"2024-0{k + 1}-0{k + 1} {3 * k:02d}:00", "2024-09-30 23:00",
                              freq="h", name="timestamp")
        close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(hours))))
        open_ = np.r_[close[0], close[:-1]] * np.exp(rng.normal(0.0, 0.001, len(hours)))
        wick = np.exp(np.abs(rng.normal(0.0, 0.004, (2, len(hours)))))
        frame = pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * wick[0],
                              "low": np.minimum(open_, close) / wick[1], "close": close,
                              "volume": rng.lognormal(5.0, 1.0, len(hours))}, index=hours)
        days = frame.groupby(frame.index.floor("D")).agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        days.index.name = "date"
        keep = rng.random(len(days)) > 0.03  # daily gaps
        daily[name] = days[keep]
        if name != "DDD":  # DDD: daily candles only
            drop = rng.random(len(frame)) < 0.05  # scattered missing hours
            drop |= frame.index.floor("D").isin(days.index[rng.random(len(days)) < 0.03])
            hourly[name] = frame[~drop]
    dvol_days = pd.date_range("2024-03-15", "2024-09-30", freq="D", name="date")
    dvol = {name: pd.DataFrame({"value": rng.uniform(30.0, 90.0, len(dvol_days))},
                               index=dvol_days).drop(dvol_days[::17])
            for name in ("BTC", "BBB")}
    return MarketData(daily=daily, hourly=hourly, dvol=dvol, macro={}, gaps=pd.DataFrame(),
                      data_dir=MARKET)


@pytest.mark.parametrize(("delay", "interval", "min_hours"), [(1, 1, 20), (3, 2, 18), (5, 3, 22)])
def test_seeded_simulation_matches_for_other_delays_and_intervals(
        delay: int, interval: int, min_hours: int) -> None:
    market = _simulated_market(seed=11 + delay)
    cfg = FeaturesConfig(liquidation_delay_hours=delay, update_interval_days=interval,
                         min_hours_for_rv=min_hours)
    as_of = dt.date(2024, 9, 30)
    for days, tail_days in [(50, 150), (50, 50), (70, None)]:
        got = fast_panel(market, cfg, as_of, days, tail_days, fast_columns(cfg))
        assert_same(got, reference(market, cfg, as_of, days, tail_days))
        assert got[PROXY_FLAG].any() and not got[PROXY_FLAG].all()
        assert got[list(LOSS_COLUMNS)].notna().any().all()
        assert got["dvol_available"].any()


def test_only_the_columns_asked_for_and_clear_errors() -> None:
    as_of = dt.date(2025, 6, 30)
    market = load_market(MARKET, ["BTC", "SOL"], as_of)
    cfg = Config().features
    wanted = ["worst_loss_short", "close", "har_rv_7d"]
    got = fast_panel(market, cfg, as_of, 40, 100, wanted)
    assert list(got.columns) == ["close", "har_rv_7d", "worst_loss_short"]  # schema order
    assert_same(got, reference(market, cfg, as_of, 40, 100))
    flag_only = fast_panel(market, cfg, as_of, 40, 100, [PROXY_FLAG, "ret_1d"])  # close_to_close
    assert_same(flag_only, reference(market, cfg, as_of, 40, 100))
    with pytest.raises(ValueError, match="vrp"):
        fast_panel(market, cfg, as_of, 40, 100, ["close", "vrp"])
    bad = dict(market.hourly)
    bad["SOL"] = bad["SOL"].set_axis(bad["SOL"].index + pd.Timedelta(minutes=30))
    with pytest.raises(ValueError, match=r"hourly candles of SOL.*on the hour"):
        fast_panel(replace(market, hourly=bad), cfg, as_of, 40, 100, wanted)


def _bundle(kind: str = "har_rv", **overrides: object) -> dict:
    cfg = Config().with_overrides(dict(overrides)) if overrides else Config()
    alias = {"har": "har_rv", "harx": "harx_iv"}.get(kind, kind)
    state = ({"kind": "garch"} if kind == "garch" else {"kind": "gbm"} if kind == "gbm"
             else build_forecaster(alias, cfg.models, cfg.backtest.horizons).state())
    return {"forecaster": state, "config": cfg.resolved()}


def test_serve_columns_follow_the_forecaster_and_the_covered_loss() -> None:
    base = {"close", "ret_1d", "rv", "log_dollar_volume", PROXY_FLAG,
            "worst_loss_long", "worst_loss_short"}
    har = {"har_rv_1d", "har_rv_7d", "har_rv_30d"}
    assert serve_columns(_bundle("har")) == base | har
    assert serve_columns(_bundle("harx")) == base | har | {"dvol_var_1d", "dvol_available"}
    assert serve_columns(_bundle("garch")) == base
    close = serve_columns(_bundle("har", **{"policy.loss": "close_to_close"}))
    assert close == base - {"worst_loss_long", "worst_loss_short"} | har
    assert serve_columns(_bundle("gbm")) is None  # a tree model's state without its columns
    listed = {"forecaster": {"kind": "gbm", "columns": ["corr_spx_30d", "har_rv_1d"]},
              "config": Config().resolved()}
    assert serve_columns(listed) == base | {"corr_spx_30d", "har_rv_1d"}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_each_input_reads_only_the_columns_it_lists(name: str) -> None:
    """INPUT_COLUMNS is what a served tree model's panel is built from: an input that read
    another column would fail on a panel of its listed columns alone."""
    market = load_market(MARKET, ["BTC"], dt.date(2025, 6, 30))
    panel = build_panel(market, Config().features).tail(60)
    alone = panel[list(INPUT_COLUMNS[name])]
    np.testing.assert_array_equal(INPUTS[name](alone), INPUTS[name](panel))


def _registered(cfg: Config, alias: str, oos_start: dt.date, refit_every: int
                ) -> tuple[MarketData, dict, dt.date]:
    """(market, bundle, as-of): ``alias`` walked forward from ``oos_start`` and fitted
    through 2025-06-20 on the embedded ASSETS, bundled as registration bundles it, served on
    2025-06-30."""
    as_of, fit_cutoff = dt.date(2025, 6, 30), dt.date(2025, 6, 20)
    market = load_market(MARKET, ASSETS, as_of)
    panel = build_panel(market, cfg.features)
    bt = cfg.backtest
    forecasts = walk_forward(lambda: build_forecaster(alias, cfg.models, bt.horizons),
                             panel, oos_start, refit_every, bt.horizons, bt.min_train_days)
    fitted = panel[panel.index.get_level_values("date") <= pd.Timestamp(fit_cutoff)]
    model = build_forecaster(alias, cfg.models, bt.horizons).fit(feature_view(fitted))
    bundle = {"format": BUNDLE_FORMAT, "forecaster": model.state(),
              "fit_cutoff": fit_cutoff.isoformat(), "config": cfg.resolved(),
              "forecasts": bundle_forecasts(forecasts, cfg.features.update_interval_days)}
    return market, bundle, as_of


def test_a_served_tree_model_reads_the_same_parameters_from_the_fast_panel() -> None:
    """gbm_sklearn's state lists its inputs' columns, the fast builder makes them (the macro
    correlation too), and the registered model's parameters on that panel equal those on the
    full per-asset build: a tree champion no longer builds every column of every asset."""
    cfg = Config().with_overrides({"models.gbm_sklearn.max_iter": 30})
    market, bundle, as_of = _registered(cfg, "gbm_sklearn", dt.date(2024, 6, 1), 400)
    columns = serve_columns(bundle)
    assert columns is not None and "corr_spx_30d" in columns and columns <= fast_columns(
        cfg.features)
    window = bundle_window(bundle, cfg.features, as_of, market.macro)
    narrow, _ = serve_panel(market, cfg.features, as_of, window, columns)
    wide, _ = serve_panel(market, cfg.features, as_of, window)
    assert set(narrow.columns) == columns
    assert_same(narrow, wide)
    forecaster = forecaster_from_state(bundle["forecaster"])
    got = policy_frame(forecaster, bundle, feature_view(narrow), as_of)
    expected = policy_frame(forecaster, bundle, feature_view(wide), as_of)
    assert got["sigma_1d"].notna().sum() == 3  # AAVE, BTC, SOL forecast; MATIC stale
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_a_serve_reads_the_same_parameters_from_the_fast_panel() -> None:
    """policy_frame (what the registered model computes) on the fast panel of
    serve_columns equals policy_frame on the full per-asset build: nothing it reads is
    missing."""
    cfg = Config()
    market, bundle, as_of = _registered(cfg, "har_rv", dt.date(2023, 6, 1), 180)
    window = bundle_window(bundle, cfg.features, as_of, market.macro)
    assert window.days is not None and window.tail_days not in (None, window.days)
    narrow, fp_narrow = serve_panel(market, cfg.features, as_of, window, serve_columns(bundle))
    wide, fp_wide = serve_panel(market, cfg.features, as_of, window)
    # the fingerprint is the lineage of what was read: the same for the same build, not the
    # same for a panel with other columns
    assert serve_panel(market, cfg.features, as_of, window, serve_columns(bundle))[1] == fp_narrow
    assert fp_narrow != fp_wide
    assert set(narrow.columns) == serve_columns(bundle)
    assert_same(narrow, wide)
    forecaster = forecaster_from_state(bundle["forecaster"])
    got = policy_frame(forecaster, bundle, feature_view(narrow), as_of)
    expected = policy_frame(forecaster, bundle, feature_view(wide), as_of)
    assert got["sigma_1d"].notna().sum() == 3  # AAVE, BTC, SOL forecast; MATIC stale
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, atol=0.0)


def test_serve_panel_keeps_the_full_build_for_other_columns() -> None:
    as_of = dt.date(2025, 6, 30)
    market = load_market(MARKET, ["BTC"], as_of)
    cfg = Config().features
    window = TrailingWindow(40, 100, {})
    full, fp = serve_panel(market, cfg, as_of, window, ["close", "vrp"])
    assert "corr_spx_30d" in full.columns  # every column, asset by asset
    assert fp == serve_panel(market, cfg, as_of, window)[1]


def test_point_in_time_rows_do_not_change_when_later_data_arrives() -> None:
    """A row dated t reads candles dated up to t only: built from data through 2025-05-31 or
    through 2025-06-30, the rows up to 2025-05-31 are the same bits."""
    cfg = Config().features
    early, late = dt.date(2025, 5, 31), dt.date(2025, 6, 30)
    before = fast_panel(load_market(MARKET, ["AAVE", "BTC"], early), cfg, early, None, None,
                        fast_columns(cfg))
    after = fast_panel(load_market(MARKET, ["AAVE", "BTC"], late), cfg, late, None, None,
                       fast_columns(cfg))
    seen = after[after.index.get_level_values("date") <= pd.Timestamp(early)]
    pd.testing.assert_frame_equal(seen, before, check_exact=True)
    assert len(after) - len(before) == 2 * 30

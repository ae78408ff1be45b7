"""The walk-forwards of every model share one trailing realized variance of the panel: the
same reasons, row for row, as each asset's own window computed per frame."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config, PlausibilityConfig
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.plausibility import (
    TrailingVariance,
    forecast_implausibility,
    implausibility,
    trailing_realized_variance,
)
from models.registry import build_forecaster
from tests.conftest import MARKET


@pytest.fixture(scope="module")
def checked() -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = Config()
    panel = build_panel(load_market(MARKET, ["BTC", "SOL", "TRX"], dt.date(2025, 6, 30)),
                        cfg.features)
    panel = panel[panel.index.get_level_values("date") >= "2023-06-01"]
    fc = backtest(lambda: build_forecaster("ewma94", cfg.models, [1, 7]), panel,
                  dt.date(2024, 1, 1), 120, [1, 7], 200).forecasts
    # an asset the panel lacks and a cutoff past its last row: nothing to check against
    odd = fc.iloc[:2].assign(asset=["NOPE", "SOL"],
                             cutoff=[fc["cutoff"].iloc[0], pd.Timestamp("2031-01-01")])
    return panel, pd.concat([fc, odd], ignore_index=True)


def per_asset_reasons(fc: pd.DataFrame, panel: pd.DataFrame, b: PlausibilityConfig
                      ) -> np.ndarray:
    """The reference: each asset's window from its own rows, looked up at each cutoff."""
    at = np.full(len(fc), np.nan)
    assets = set(panel.index.get_level_values("asset"))
    for asset, rows in fc.groupby("asset"):
        if asset in assets:
            rv = panel.xs(asset, level="asset")["rv"]
            mean, _ = trailing_realized_variance(rv, b.window_days, b.min_obs)
            at[fc.index.get_indexer(rows.index)] = mean.reindex(
                pd.DatetimeIndex(rows["cutoff"])).to_numpy()
    return implausibility(fc["variance"], fc["horizon_days"], at, b)


@pytest.mark.parametrize("bounds", [
    PlausibilityConfig(),
    PlausibilityConfig(min_ratio=0.5, max_ratio=2.0),     # flags many rows of every kind
    PlausibilityConfig(window_days=10, min_obs=8),
])
def test_the_shared_trailing_variance_gives_each_assets_own_reasons(checked, bounds):
    panel, fc = checked
    shared = TrailingVariance(panel, bounds)
    got = forecast_implausibility(fc, panel, bounds, shared)
    want = per_asset_reasons(fc, panel, bounds)
    assert list(got) == list(want)
    assert got.iloc[-2].startswith("fewer than") and got.iloc[-1].startswith("fewer than")
    assert (got != "").sum() >= 2
    if bounds.max_ratio == 2.0:
        assert (got.str.startswith("forecast is")).sum() > 50
    # a second frame against the same panel reuses the one computed
    flat = shared.flat()
    forecast_implausibility(fc.iloc[::2], panel, bounds, shared)
    assert shared.flat() is flat and len(flat) == len(panel)


def test_a_trailing_variance_of_other_windows_is_refused(checked):
    panel, fc = checked
    shared = TrailingVariance(panel, PlausibilityConfig(window_days=10, min_obs=8))
    with pytest.raises(ValueError, match="computed for"):
        forecast_implausibility(fc, panel, PlausibilityConfig(), shared)
    # the band may differ (only the window and its count shape the trailing mean)
    narrow = PlausibilityConfig(window_days=10, min_obs=8, max_ratio=2.0)
    assert list(forecast_implausibility(fc, panel, narrow, shared)) == list(
        per_asset_reasons(fc, panel, narrow))


def test_the_grouped_window_is_each_assets_own_bit_for_bit_on_a_shuffled_gappy_panel(checked):
    panel, _ = checked
    bounds = PlausibilityConfig(window_days=10, min_obs=4)
    # a gap of 9 days in SOL (the window keeps fewer values, never older ones), rows shuffled
    dates = panel.index.get_level_values("date")
    gap = (panel.index.get_level_values("asset") == "SOL") & (dates >= "2024-03-01") & (
        dates < "2024-03-10")
    odd = panel[~gap].sample(frac=1.0, random_state=7)
    flat = TrailingVariance(odd, bounds).flat()
    for asset in ("BTC", "SOL", "TRX"):
        rv = odd.xs(asset, level="asset")["rv"]
        want, _ = trailing_realized_variance(rv, bounds.window_days, bounds.min_obs)
        got = flat.xs(asset, level="asset")
        assert got.index.equals(want.index)
        assert np.array_equal(got.to_numpy().view(np.int64), want.to_numpy().view(np.int64))
    assert len(flat) == len(odd) and flat.notna().sum() > 0.9 * len(odd)


def test_the_day_keys_and_the_timestamp_index_find_the_same_rows(checked):
    panel, fc = checked
    shared = TrailingVariance(panel, PlausibilityConfig())
    keyed = shared.at(fc["asset"], fc["cutoff"])
    flat = shared.flat()
    index = pd.MultiIndex.from_arrays([fc["asset"].astype(str), pd.DatetimeIndex(fc["cutoff"])])
    pos = flat.index.get_indexer(index)
    want = np.where(pos >= 0, flat.to_numpy()[pos], np.nan)
    assert np.array_equal(keyed, want, equal_nan=True) and np.isfinite(keyed).sum() > 100
    # categorical asset names, a missing name, a cutoff before the panel: found or NaN alike
    cats = fc["asset"].astype("category")
    assert np.array_equal(shared.at(cats, fc["cutoff"]), want, equal_nan=True)
    names = pd.Series([None, "BTC", "BTC"], dtype=object)
    early = pd.Series(pd.to_datetime(["2024-02-01", "1999-01-01", "2024-02-01"]))
    got = shared.at(names, early)
    assert np.isnan(got[:2]).all() and got[2] == flat.loc[("BTC", pd.Timestamp("2024-02-01"))]
    # a cutoff off midnight matches no panel row, on either path
    noon = fc["cutoff"] + pd.Timedelta(hours=12)
    assert np.isnan(shared.at(fc["asset"], noon)).all()

"""The benchmarks' synthetic universe: seeded, loadable, and daily = aggregated hourly."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from benchmarks.synthetic_universe import write_universe
from features.loaders import load_market


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("S*.csv.gz")):
        h.update(p.name.encode())
        h.update(pd.read_csv(p).to_csv(index=False).encode())
    return h.hexdigest()


def test_universe_is_seeded_and_daily_candles_aggregate_the_hours(tmp_path):
    a = write_universe(tmp_path / "a", 2, start="2025-03-01", seed=3)
    b = write_universe(tmp_path / "b", 2, start="2025-03-01", seed=3)
    assert _digest(a) == _digest(b)
    market = load_market(a)
    assert sorted(market.daily) == ["S0000", "S0001"]
    hourly, daily = market.hourly["S0000"], market.daily["S0000"]
    days = hourly.index.floor("D")
    agg = hourly.groupby(days).agg({"open": "first", "high": "max", "low": "min",
                                    "close": "last", "volume": "sum"})
    assert len(daily) == pd.Timestamp("2025-06-30").dayofyear - 59
    np.testing.assert_allclose(agg[["open", "high", "low", "close"]].to_numpy(),
                               daily[["open", "high", "low", "close"]].to_numpy(), rtol=1e-7)


def test_scale_factors_spread_volatility_across_assets(tmp_path):
    root = write_universe(tmp_path / "u", 6, start="2024-07-01", seed=11, hourly=False)
    vols = [np.log(pd.read_csv(p)["close"]).diff().std()
            for p in sorted((root / "crypto" / "daily").glob("*.csv.gz"))]
    assert min(vols) > 0 and max(vols) / min(vols) > 1.3

"""The benchmarks' synthetic universe: seeded, byte-identical, loadable, daily = aggregated
hourly, and the daily-feed helpers that hold rows back and append them again."""

from __future__ import annotations

import datetime as dt
import gzip

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic_universe import (
    append_through,
    hold_back,
    round_significant,
    write_universe,
)
from features.loaders import load_market


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / "crypto").rglob("S*"))}


@pytest.mark.parametrize("compress", [False, True])
def test_seeded_universe_is_byte_identical_across_writes_and_loads_cleanly(tmp_path, compress):
    a = write_universe(tmp_path / "a", 2, start="2025-03-01", seed=3, compress=compress)
    b = write_universe(tmp_path / "b", 2, start="2025-03-01", seed=3, compress=compress,
                       threads=1)
    files = _files(a)
    suffix = ".csv.gz" if compress else ".csv"
    assert sorted(files) == [f"crypto/{k}/S000{i}{suffix}" for k in ("daily", "hourly")
                             for i in (0, 1)]
    assert files == _files(b)
    assert _files(write_universe(tmp_path / "c", 2, start="2025-03-01", seed=4,
                                 compress=compress)) != files
    market = load_market(a)          # validation and the hourly/daily check included
    assert sorted(market.daily) == ["S0000", "S0001"]
    assert sorted(market.hourly) == ["S0000", "S0001"]
    assert market.warnings == []
    hourly, daily = market.hourly["S0000"], market.daily["S0000"]
    assert len(daily) == pd.Timestamp("2025-06-30").dayofyear - 59
    agg = hourly.groupby(hourly.index.floor("D")).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    # the daily candles are the rounded hours aggregated: equal, not merely close
    np.testing.assert_array_equal(agg[["open", "high", "low", "close"]].to_numpy(),
                                  daily[["open", "high", "low", "close"]].to_numpy())
    np.testing.assert_allclose(agg["volume"].to_numpy(), daily["volume"].to_numpy(), rtol=1e-7)


def test_an_asset_does_not_depend_on_the_universe_size(tmp_path):
    small = write_universe(tmp_path / "s", 2, start="2025-05-01", seed=5, hourly=False)
    large = write_universe(tmp_path / "l", 11, start="2025-05-01", seed=5, hourly=False)
    for name in ("S0000.csv", "S0001.csv"):
        path = ("crypto", "daily", name)
        assert small.joinpath(*path).read_bytes() == large.joinpath(*path).read_bytes()


def test_scale_factors_spread_volatility_across_assets(tmp_path):
    root = write_universe(tmp_path / "u", 6, start="2024-07-01", seed=11, hourly=False)
    vols = [np.log(pd.read_csv(p)["close"]).diff().std()
            for p in sorted((root / "crypto" / "daily").glob("*.csv"))]
    assert min(vols) > 0 and max(vols) / min(vols) > 1.3


def test_round_significant_known_answers_and_monotone():
    x = np.array([123.456789123, 0.000123456789123, 98765.4321987, 0.0, np.nan, 7.0])
    out = round_significant(x, 8)
    assert [repr(float(v)) for v in out[[0, 1, 2, 3, 5]]] == [
        "123.45679", "0.00012345679", "98765.432", "0.0", "7.0"]
    assert np.isnan(out[4])
    grid = np.sort(np.exp(np.random.default_rng(0).normal(0.0, 4.0, 100_000)))
    assert (np.diff(round_significant(grid)) >= 0).all()
    assert np.abs(round_significant(grid) / grid - 1).max() < 5e-8


@pytest.mark.parametrize("compress", [False, True])
def test_held_back_rows_append_to_the_same_bytes(tmp_path, compress):
    root = write_universe(tmp_path / "u", 2, start="2025-06-01", seed=2, compress=compress)
    before = _files(root)
    macro = root / "macro" / "VIX.csv.gz"
    macro_before = gzip.decompress(macro.read_bytes())
    held = hold_back(root, dt.date(2025, 6, 28))
    market = load_market(root)
    assert market.daily["S0000"].index[-1] == pd.Timestamp("2025-06-28")
    assert market.hourly["S0001"].index[-1] <= pd.Timestamp("2025-06-28 23:00")
    assert market.macro["VIX"].index[-1] <= pd.Timestamp("2025-06-28")
    assert len(held) == 4 + 1 + 9                   # candles, DVOL, macro
    # 2025-06-29 is a Sunday: only the crypto files and DVOL have a row to append
    assert append_through(held, dt.date(2025, 6, 29)) == 4 + 1
    assert load_market(root).daily["S0000"].index[-1] == pd.Timestamp("2025-06-29")
    append_through(held, dt.date(2025, 6, 30))
    assert all(not rows for rows in held.values())
    after = _files(root)
    if compress:  # a gzip file grows by members; its content is what it was
        after = {k: gzip.decompress(v) for k, v in after.items()}
        before = {k: gzip.decompress(v) for k, v in before.items()}
    assert after == before
    assert gzip.decompress(macro.read_bytes()) == macro_before

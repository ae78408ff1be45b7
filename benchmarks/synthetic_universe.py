"""A synthetic universe of N assets, daily and hourly, block-bootstrapped from the real candles.

Used by the scale benchmarks (serve, retrain, stress). Asset *i* draws 20-day blocks of whole
UTC days from one real asset with hourly data (round robin over the sources, MATIC excluded:
delisted), so intraday shape, weekly seasonality, volatility clustering and crash days come
along with the block. Its log moves are scaled by a factor drawn from U[0.6, 1.6] (so
volatilities spread like a real cross-section), and its dollar volume by a lognormal factor.

Hourly candles are rebuilt from each source hour's own moves (open gap, close-to-close return,
upper and lower wicks relative to the body), and the **daily candles are aggregated from the
synthetic hours** (first open, max high, min low, last close, summed volume), so the two files
agree exactly — as the loaders' hourly-vs-daily check expects of real data. Days whose source
day has missing hours keep them missing (gaps stay gaps). DVOL (BTC's) and the macro files are
copied from the embedded data.

    python -m benchmarks.synthetic_universe --assets 1000 --out /tmp/universe [--start 2022-07-01]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
MARKET = REPO / "data" / "market"
LAST = "2025-06-30"
BLOCK_DAYS = 20


def _source_hours(path: Path) -> pd.DataFrame:
    """Hourly log moves of one real asset, indexed by (day, hour)."""
    f = pd.read_csv(path)
    ts = pd.to_datetime(f["timestamp"], utc=True)
    prev_close = f["close"].shift(1)
    top, bottom = f[["open", "close"]].max(axis=1), f[["open", "close"]].min(axis=1)
    out = pd.DataFrame({
        "day": ts.dt.floor("D"), "hour": ts.dt.hour,
        "gap": np.log(f["open"] / prev_close), "body": np.log(f["close"] / f["open"]),
        "wick_up": np.log(f["high"] / top), "wick_down": np.log(f["low"] / bottom),
        "dollar_volume": f["close"] * f["volume"]}).iloc[1:]
    return out.dropna()


def load_sources(market: Path = MARKET) -> dict[str, pd.DataFrame]:
    sources = {}
    for path in sorted((market / "crypto" / "hourly").glob("*.csv.gz")):
        name = path.name.split(".")[0]
        if name != "MATIC":
            sources[name] = _source_hours(path)
    return sources


def synthetic_asset(src: pd.DataFrame, days: pd.DatetimeIndex, rng: np.random.Generator
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hourly, daily) candles of one synthetic asset over ``days``."""
    src_days = src["day"].drop_duplicates().to_numpy()
    n_blocks = len(days) // BLOCK_DAYS + 1
    starts = rng.integers(0, len(src_days) - BLOCK_DAYS, size=n_blocks)
    picked = np.concatenate([src_days[s:s + BLOCK_DAYS] for s in starts])[:len(days)]
    by_day = src.set_index("day")
    rows = by_day.loc[picked]                       # source hours of the picked days, in order
    counts = by_day.groupby(level=0).size().reindex(picked).to_numpy()
    new_day = np.repeat(days.to_numpy(), counts)    # the synthetic day each source hour lands on
    scale = rng.uniform(0.6, 1.6)
    step = scale * (rows["gap"].to_numpy() + rows["body"].to_numpy())
    close = 100.0 * np.exp(np.cumsum(step))
    open_ = close * np.exp(-scale * rows["body"].to_numpy())
    high = np.maximum(open_, close) * np.exp(scale * rows["wick_up"].to_numpy())
    low = np.minimum(open_, close) * np.exp(scale * rows["wick_down"].to_numpy())
    volume = rows["dollar_volume"].to_numpy() * rng.lognormal(0.0, 1.0) / close
    stamps = pd.DatetimeIndex(new_day) + pd.to_timedelta(rows["hour"].to_numpy(), unit="h")
    hourly = pd.DataFrame({"timestamp": stamps, "open": open_, "high": high, "low": low,
                           "close": close, "volume": volume})
    daily = (hourly.groupby(pd.DatetimeIndex(new_day))
             .agg(open=("open", "first"), high=("high", "max"), low=("low", "min"),
                  close=("close", "last"), volume=("volume", "sum"))
             .rename_axis("timestamp").reset_index())
    return hourly, daily


def _write(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.copy()
    frame["timestamp"] = pd.DatetimeIndex(frame["timestamp"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", compresslevel=1) as fh:
        frame.round(8).to_csv(fh, index=False)


def write_universe(dest: Path, n_assets: int, start: str = "2022-07-01", end: str = LAST,
                   seed: int = 7, hourly: bool = True, market: Path = MARKET) -> Path:
    """Write ``n_assets`` synthetic assets (``S0000`` …) in the embedded layout under ``dest``."""
    rng = np.random.default_rng(seed)
    sources = load_sources(market)
    names = sorted(sources)
    days = pd.date_range(start, end, freq="D", tz="UTC")
    for i in range(n_assets):
        hours, daily = synthetic_asset(sources[names[i % len(names)]], days, rng)
        _write(daily, dest / "crypto" / "daily" / f"S{i:04d}.csv.gz")
        if hourly:
            _write(hours, dest / "crypto" / "hourly" / f"S{i:04d}.csv.gz")
    (dest / "iv").mkdir(parents=True, exist_ok=True)
    shutil.copy(market / "iv" / "DVOL_BTC.csv.gz", dest / "iv")
    shutil.copytree(market / "macro", dest / "macro", dirs_exist_ok=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--start", default="2022-07-01")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--daily-only", action="store_true")
    args = parser.parse_args(argv)
    write_universe(args.out, args.assets, args.start, seed=args.seed, hourly=not args.daily_only)
    print(f"{args.assets} synthetic assets from {args.start} to {LAST} under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

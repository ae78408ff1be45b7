"""The embedded data plus two assets of the kind a lender lists and a pipeline has not seen.

* ``CRSH``: LINK's candles until 2024-05-08, then a collapse of 99.999% over five days (each
  hour's candle scaled by a factor falling exponentially from 1 to 1e-5 over 120 hours, the
  volume ×20), trading on at that level until it is delisted (its files end 2024-06-30): a
  2022 LUNA in the evaluation period.
* ``STBL``: a stablecoin from 2019-01-01, an AR(1) around 1 (hourly shocks of 2 bp,
  persistence 0.9; daily volatility ~0.1%) at a 4-decimal tick, with a USDC-like depeg to
  0.88 on 2023-03-10..13.

Daily candles are aggregated from the hours (first open, max high, min low, last close, summed
volume) wherever the hours were made or changed, so the loaders' hourly-vs-daily check holds.
Seeded: the same files on every run. The README's "A pegged asset in the pooled trees" and
"An asset the model never validated" figures come from ``volmargin run`` on this universe::

    python -m benchmarks.hostile_universe --out DIR
    VOLMARGIN__PATHS__OUTPUTS_DIR=DIR/out VOLMARGIN__PATHS__MLRUNS_DIR=DIR/mlruns \\
        .venv/bin/volmargin run --data-dir DIR/data --quiet
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

EMBEDDED = Path(__file__).resolve().parents[1] / "data" / "market"
COLLAPSE_START = pd.Timestamp("2024-05-09T00:00:00Z")
DELISTED = pd.Timestamp("2024-06-30T23:00:00Z")
DEPEG = (pd.Timestamp("2023-03-10 18:00", tz="UTC"), pd.Timestamp("2023-03-13 12:00", tz="UTC"))


def daily_from(hourly: pd.DataFrame) -> pd.DataFrame:
    """Daily candles of hourly ones (UTC days)."""
    g = hourly.groupby(hourly["timestamp"].dt.floor("D"))
    out = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(),
                        "low": g["low"].min(), "close": g["close"].last(),
                        "volume": g["volume"].sum()})
    return out.rename_axis("timestamp").reset_index()


def write(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.copy()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})


def collapse(source: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hourly, daily) of ``CRSH`` from LINK's files."""
    hourly = pd.read_csv(source / "crypto" / "hourly" / "LINK.csv.gz", parse_dates=["timestamp"])
    daily = pd.read_csv(source / "crypto" / "daily" / "LINK.csv.gz", parse_dates=["timestamp"])
    hourly = hourly[hourly["timestamp"] <= DELISTED].copy()
    hours = (hourly["timestamp"] - COLLAPSE_START).dt.total_seconds() / 3600
    factor = np.where(hours < 0, 1.0, np.exp(np.log(1e-5) * np.clip(hours / 120.0, 0, 1)))
    for col in ("open", "high", "low", "close"):
        hourly[col] = (hourly[col] * factor).round(8)
    hourly["volume"] = np.where(hours >= 0, hourly["volume"] * 20, hourly["volume"])
    first = COLLAPSE_START.floor("D")
    before = daily[daily["timestamp"] < first]
    after = daily_from(hourly[hourly["timestamp"] >= first])
    return hourly, pd.concat([before, after], ignore_index=True)


def stablecoin(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(hourly, daily) of ``STBL``."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2019-01-01", "2025-06-30 23:00", freq="h", tz="UTC")
    shocks = rng.normal(0, 0.0002, len(stamps) - 1)
    x = np.zeros(len(stamps))
    for i in range(1, len(stamps)):
        x[i] = 0.9 * x[i - 1] + shocks[i - 1]
    price = 1.0 + x
    k = np.flatnonzero((stamps >= DEPEG[0]) & (stamps < DEPEG[1]))
    price[k] += np.interp(np.arange(len(k)), [0, 14, 40, len(k) - 1], [0, -0.12, -0.05, 0])
    close = np.round(price, 4)
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(rng.normal(0, 0.0001, len(stamps)))
    hourly = pd.DataFrame({
        "timestamp": stamps, "open": open_, "close": close,
        "high": np.round(np.maximum(open_, close) + wick, 4),
        "low": np.round(np.minimum(open_, close) - wick, 4),
        "volume": np.round(rng.uniform(5e6, 2e7, len(stamps)), 2),
    })[["timestamp", "open", "high", "low", "close", "volume"]]
    return hourly, daily_from(hourly)


def build(out: Path, source: Path = EMBEDDED) -> Path:
    """Write the universe under ``out/data`` (replacing it) and return that directory."""
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(source, data)
    for name, (hourly, daily) in (("CRSH", collapse(source)), ("STBL", stablecoin())):
        write(hourly, data / "crypto" / "hourly" / f"{name}.csv.gz")
        write(daily, data / "crypto" / "daily" / f"{name}.csv.gz")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/data")
    parser.add_argument("--data", type=Path, default=EMBEDDED, help="the embedded data")
    args = parser.parse_args()
    print(build(args.out, args.data))


if __name__ == "__main__":
    main()

"""Feature figures on the embedded data: build time, store size, and how close the daily
proxies come to the intraday truth on BTC/ETH (``python -m benchmarks.features_bench``).

Prints Markdown tables for ``benchmarks/README.md`` (copied by hand with date and machine) and
the raw figures as JSON. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.machine import describe
from benchmarks.run_all import DATA, timed
from configs.schema import FeaturesConfig
from features.build import build_panel
from features.loaders import load_market
from features.store import load_or_build
from features.summary import proxy_comparison, worst_loss_proxy_comparison


def pooled(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per-asset rows as printed, rounded for the README."""
    cols = [*by, "n", "corr", "corr_log", "bias", "median_ratio", "coverage"]
    return table[cols].round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cfg = FeaturesConfig()
    market = load_market(DATA)
    panel = build_panel(market, cfg)
    results: dict[str, object] = {
        "machine": describe(),
        "assets": len(market.daily), "panel_rows": len(panel), "columns": len(panel.columns),
        "load_market": timed(lambda: load_market(DATA), args.repeat),
        "build_panel": timed(lambda: build_panel(market, cfg), args.repeat),
    }
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        load_or_build(market, cfg, Path(tmp))
        results["store_first_run_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        _, _, reused = load_or_build(market, cfg, Path(tmp))
        results["store_rerun_s"] = round(time.perf_counter() - start, 3)
        results["store_reused"] = reused
        results["store_parquet_bytes"] = sum(p.stat().st_size for p in Path(tmp).glob("*.parquet"))
    variance = proxy_comparison(panel)
    losses = {f"H={h}h U={u}d": worst_loss_proxy_comparison(
        market.daily, market.hourly, FeaturesConfig(liquidation_delay_hours=h,
                                                    update_interval_days=u))
        for h, u in ((1, 1), (4, 1), (1, 3))}
    print(json.dumps(results, indent=2))
    print("\n### Range estimators vs hourly RV\n")
    print(pooled(variance, ["asset", "estimator", "horizon"]).to_markdown(index=False))
    for label, table in losses.items():
        print(f"\n### Worst-loss proxy vs hourly truth, {label}\n")
        print(pooled(table, ["asset", "variant"]).to_markdown(index=False))


if __name__ == "__main__":
    main()

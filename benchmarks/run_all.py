"""Speed figures for the pipeline's stages on the embedded data (``make bench``).

The data load and the feature build are timed ``--repeat`` times (best and median reported);
each walk-forward, the ``mlp_har`` fit and its forecast once (minutes each); the figures
go to ``benchmarks/README.md`` by hand, with the date and machine. Timings are never asserted in
tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from benchmarks.machine import describe
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from models.backtest import backtest
from models.registry import build_forecaster

DATA = Path(__file__).resolve().parents[1] / "data" / "market"


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"best_s": round(min(runs), 3), "median_s": round(statistics.median(runs), 3)}


def walk_failures(cfg: Config, alias: str, panel: pd.DataFrame) -> int:
    """Walk ``alias`` forward over ``panel`` as ``volmargin run`` does; its failed
    (model, asset, horizon) triples."""
    bt = cfg.backtest
    out = backtest(lambda: build_forecaster(alias, cfg.models, bt.horizons), panel,
                   bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                   plausibility=bt.plausibility, chunk_assets=bt.chunk_assets)
    return len(out.failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cfg = Config()
    bt = cfg.backtest
    market = load_market(DATA)
    panel = build_panel(market, cfg.features)
    features = feature_view(panel)
    results: dict[str, object] = {
        "machine": f"{describe()}, "
                   f"{torch.get_num_threads()} torch threads, cuda={torch.cuda.is_available()}",
        "assets": len(market.daily), "panel_rows": len(panel),
    }
    results["load_market"] = timed(lambda: load_market(DATA), args.repeat)
    results["build_panel"] = timed(lambda: build_panel(market, cfg.features), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "panel.parquet"
        panel.to_parquet(path)
        results["panel_parquet_bytes"] = path.stat().st_size
    # Each model walked forward as the run does (the config's plausibility band and asset
    # chunks): a failed (model, asset, horizon) is counted beside the time, never fatal — on
    # the embedded data egarch_t's TRX forecasts of 2024-12-03..05 are failed (README).
    for alias in cfg.models.enabled:
        failed: list[int] = []
        results[f"walk_forward_{alias}"] = timed(
            lambda a=alias, out=failed: out.append(walk_failures(cfg, a, panel)), 1)
        results[f"walk_forward_{alias}"]["failed"] = failed[-1]
    # Neural training throughput: one full fit on all history, samples seen per second.
    model = build_forecaster("mlp_har", cfg.models, bt.horizons)
    start = time.perf_counter()
    model.fit(features)
    elapsed = time.perf_counter() - start
    epochs, rows = model.epochs_trained, model.train_rows
    results["mlp_har_fit_all_history"] = {"seconds": round(elapsed, 3), "train_rows": rows,
                                          "epochs": epochs}
    results["mlp_har_train_samples_per_s"] = round(rows * epochs / elapsed)
    start = time.perf_counter()
    fc = model.forecast(features, bt.horizons)
    results["mlp_har_forecast_all"] = {"seconds": round(time.perf_counter() - start, 3),
                                       "rows": len(fc)}
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

"""Retrain at scale: the walk-forward of every enabled forecaster on N synthetic assets, on the
local engine and on a Dask ``LocalCluster`` of 1 and 2 workers, with per-task times and a
projection to larger universes and clusters.

The universe comes from :mod:`benchmarks.synthetic_universe` (daily and hourly candles,
block-bootstrapped from the real ones). For each enabled forecaster the walk-forward's tasks
(asset × refit for per-asset models, refit for pooled ones) run through
:class:`pipelines.engine.Engine`; the wall time per engine and the mean task time are
recorded. The projection assumes what the measurement shows: per-asset tasks scale linearly
in assets and spread evenly over workers; pooled tasks scale linearly in rows (assets) and
run one refit per worker, so their fan-out is bounded by the refit count.

    python -m benchmarks.retrain_bench --assets 24 --workers 1 2
    python -m benchmarks.retrain_bench --assets 100 --models har_rv garch11_t --workers 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.synthetic_universe import write_universe
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest, plan
from models.registry import build_forecaster
from pipelines.engine import make_engine


def one_model(alias: str, cfg: Config, panel: pd.DataFrame, engine) -> dict[str, float]:
    bt = cfg.backtest
    probe = build_forecaster(alias, cfg.models, bt.horizons)
    per_asset = bool(getattr(probe, "per_asset", False))
    tasks = plan(panel, bt.oos_start, bt.refit_every, bt.min_train_days, per_asset)
    start = time.perf_counter()
    out = backtest(lambda: build_forecaster(alias, cfg.models, bt.horizons), panel,
                   bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                   mapper=engine.mapper, plausibility=bt.plausibility)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "tasks": len(tasks), "per_asset": per_asset,
            "rows": len(out.forecasts), "failed": len(out.failures)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=24)
    parser.add_argument("--start", default="2022-07-01")
    parser.add_argument("--oos-start", default="2024-07-01")
    parser.add_argument("--models", nargs="*", default=None, help="default: models.enabled")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--target-assets", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--target-workers", type=int, default=16)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = write_universe(Path(tmp) / "universe", args.assets, args.start)
        cfg = Config().with_overrides({"backtest.oos_start": args.oos_start,
                                       "paths.data_dir": str(root)})
        t0 = time.perf_counter()
        market = load_market(root, None, dt.date(2025, 6, 30))
        panel = build_panel(market, cfg.features)
        features_s = time.perf_counter() - t0
        models = args.models or list(cfg.models.enabled)
        rows = []
        for n_workers in args.workers:
            kind = "local" if n_workers == 0 else "dask"
            with make_engine(kind, n_jobs=1, n_workers=n_workers or None,
                             say=lambda s: print(s, flush=True)) as engine:
                for alias in models:
                    r = one_model(alias, cfg, panel, engine)
                    rows.append({"model": alias, "engine": kind, "workers": n_workers, **r})
                    print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    table["task_s"] = table["wall_s"] * table["workers"].clip(lower=1) / table["tasks"]
    print(f"\n{args.assets} assets, {args.start} → 2025-06-30, out of sample from "
          f"{args.oos_start}; load + features {features_s:.1f} s; {platform.processor() or ''}")
    print(table.to_markdown(index=False, floatfmt=".2f"))
    total = table.groupby("workers")["wall_s"].sum()
    print("\nall models, wall seconds by workers:", total.round(1).to_dict())
    # Projection: per-asset work grows with assets and spreads over workers; pooled work
    # grows with rows and spreads over at most `tasks` (refits) workers.
    best = table[table["workers"] == max(args.workers)]
    for n in args.target_assets:
        scale = n / args.assets
        est = 0.0
        for r in best.itertuples():
            work = r.task_s * r.tasks * scale          # seconds of one worker
            lanes = args.target_workers if r.per_asset else min(args.target_workers, r.tasks)
            est += work / lanes
        print(f"projection: {n} assets on {args.target_workers} workers ≈ {est / 60:.1f} min "
              f"(walk-forward of {len(best)} models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Policy replays, timed per candidate-asset-day: what the retrain's candidates cost.

A replay (:func:`pipelines.policy_eval.backtest.policy_paths`) runs the served policy update
once per asset and day, threading each asset's state, with every asset of every candidate
that shares a policy config updated in one call a day (:mod:`serving.update`), so its cost is
days × that call plus, per candidate-asset-day, the fail-safe and the standardized tail. This
times the replays of ``ewma94`` walk-forward forecasts (quarterly refits from
``--oos-start``) at each ``--confidence`` (one candidate by default; ``0.95 0.975 0.99`` is a
forecaster's grid, replayed together as a retrain's chunk does) over the first ``--assets``
assets of a synthetic universe (:mod:`benchmarks.synthetic_universe`), in process, best of
``--repeat``, and writes the first candidate's path so that two versions of the code can be
compared row for row (``--path``).

The panel is the retrain harness's (``DIR.panel.parquet`` beside the universe, built and kept
on the first run).

    python -m benchmarks.replay_bench --data DIR --assets 200 --path out.parquet
    python -m benchmarks.replay_bench --data DIR --assets 50 --confidence 0.95 0.975 0.99
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from benchmarks.retrain_bench import LAST, bench_config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.registry import build_forecaster
from pipelines.policy_eval.backtest import policy_paths


def universe_panel(root: Path, cfg_root: Path) -> pd.DataFrame:
    """The universe's feature panel, read from the retrain harness's copy when there is one."""
    stored = root.with_name(root.name + ".panel.parquet")
    if stored.is_file():
        return pd.read_parquet(stored)
    cfg = bench_config(cfg_root, "2024-07-01")
    panel = build_panel(load_market(root, None, LAST), cfg.features)
    panel.to_parquet(stored)
    return panel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a synthetic universe")
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--oos-start", default="2024-07-01")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--path", type=Path, default=None, help="write the replayed path here")
    parser.add_argument("--confidence", type=float, nargs="*", default=None,
                        help="one candidate per level (default: the config's)")
    args = parser.parse_args(argv)

    panel = universe_panel(args.data, args.data)
    names = sorted(panel.index.get_level_values("asset").unique())[: args.assets]
    panel = panel[panel.index.get_level_values("asset").isin(names)]
    cfg = bench_config(args.data, args.oos_start)
    bt = cfg.backtest
    forecasts = backtest(lambda: build_forecaster("ewma94", cfg.models, bt.horizons), panel,
                         bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days).forecasts
    levels = args.confidence or [cfg.policy.confidence]
    items = [(forecasts, cfg.with_overrides({"policy.confidence": q})) for q in levels]
    times, paths = [], []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        paths = policy_paths(panel, items)
        times.append(time.perf_counter() - start)
    path = paths[0]
    if args.path is not None:
        path.to_parquet(args.path)
    best = min(times)
    rows = sum(len(p) for p in paths)
    print(json.dumps({"assets": len(names), "candidates": len(items), "asset_days": len(path),
                      "seconds": round(best, 2),
                      "us_per_candidate_asset_day": round(best / rows * 1e6, 1),
                      "runs": [round(t, 2) for t in times],
                      "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

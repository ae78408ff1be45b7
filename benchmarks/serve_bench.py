"""How long ``volmargin serve`` takes: the embedded 12 assets, and a synthetic 1,000-asset
universe.

For each universe a ``garch11_t`` policy is registered quickly: features, a short walk-forward
(one refit) for the out-of-sample FHS history, a fit on all data, bundle, register, @champion,
with the same building blocks as ``pipelines.steps.step_register`` but without the model
comparison and policy backtest (registration is not what is timed). Then two consecutive
days are served, each timed

* in process (``serving.serve.serve``), step by step (resolve model, load data, features,
  load model, apply policy, publish), and
* as the timer runs it: ``volmargin serve --as-of D`` in a fresh interpreter (imports
  included), for a third day.

The synthetic universe resamples the real daily candles: asset *i* takes the 20-day blocks of
one real asset's days (MATIC excluded: delisted), scales its log moves by a random factor in
[0.6, 1.6] (so volatilities spread like a real cross-section), rebuilds open/high/low/close
from the resampled day's own gap and wick ratios, and keeps the source day's dollar volume
times a random factor. Only daily candles: every synthetic asset uses the range proxy.

Usage::

    .venv/bin/python -m benchmarks.serve_bench                 # both universes
    .venv/bin/python -m benchmarks.serve_bench --assets 1000 --skip-embedded
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from configs.schema import Config
from features.loaders import load_market
from features.schema import feature_view
from features.store import load_or_build
from models.backtest import walk_forward
from models.registry import build_forecaster
from serving.apply import BUNDLE_FORMAT, bundle_forecasts
from serving.ops import registry
from serving.ops.tracking import setup
from serving.serve import serve

REPO = Path(__file__).resolve().parents[1]
MARKET = REPO / "data" / "market"
LAST = dt.date(2025, 6, 30)
DAYS = [LAST - dt.timedelta(days=2), LAST - dt.timedelta(days=1), LAST]


def synthetic_market(dest: Path, n_assets: int, start: str = "2022-07-01", seed: int = 7) -> Path:
    """Write ``n_assets`` resampled daily files (+ BTC's DVOL and the macro files) to ``dest``."""
    rng = np.random.default_rng(seed)
    sources = {}
    for path in sorted((MARKET / "crypto" / "daily").glob("*.csv.gz")):
        if path.name.startswith("MATIC"):
            continue
        f = pd.read_csv(path)
        prev_close = f["close"].shift(1)
        top, bottom = f[["open", "close"]].max(axis=1), f[["open", "close"]].min(axis=1)
        sources[path.name.split(".")[0]] = pd.DataFrame({
            "ret": np.log(f["close"] / prev_close), "gap": np.log(f["open"] / prev_close),
            "wick_up": np.log(f["high"] / top), "wick_down": np.log(f["low"] / bottom),
            "dollar_volume": f["close"] * f["volume"]}).dropna().reset_index(drop=True)
    stamps = pd.date_range(start, LAST, freq="D")
    names = sorted(sources)
    out = dest / "crypto" / "daily"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n_assets):
        src = sources[names[i % len(names)]]
        blocks = rng.integers(0, len(src) - 20, size=len(stamps) // 20 + 1)
        rows = src.iloc[np.concatenate([np.arange(b, b + 20) for b in blocks])[:len(stamps)]]
        scale = rng.uniform(0.6, 1.6)
        close = 100.0 * np.exp(np.cumsum(scale * rows["ret"].to_numpy()))
        prev = np.concatenate([[100.0], close[:-1]])
        open_ = prev * np.exp(scale * rows["gap"].to_numpy())
        high = np.maximum(open_, close) * np.exp(scale * rows["wick_up"].to_numpy())
        low = np.minimum(open_, close) * np.exp(scale * rows["wick_down"].to_numpy())
        volume = rows["dollar_volume"].to_numpy() * rng.lognormal(0, 1) / close
        frame = pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "open": open_, "high": high, "low": low, "close": close,
                              "volume": volume}).round(8)
        with gzip.open(out / f"S{i:04d}.csv.gz", "wt") as fh:
            frame.to_csv(fh, index=False)
    (dest / "iv").mkdir(exist_ok=True)
    shutil.copy(MARKET / "iv" / "DVOL_BTC.csv.gz", dest / "iv")
    shutil.copytree(MARKET / "macro", dest / "macro")
    return dest


def bench_config(work: Path, data_dir: Path, oos_start: str) -> Config:
    """Default config, outputs under ``work``, short backtest: registration is not what is
    timed here, serving is."""
    return Config().with_overrides({
        "paths.data_dir": str(data_dir), "paths.outputs_dir": str(work / "outputs"),
        "paths.mlruns_dir": str(work / "mlruns"), "models.enabled": ["garch11_t"],
        "backtest.oos_start": oos_start, "backtest.refit_every": 365,
        "backtest.min_train_days": 365, "policy.fhs_min_obs": 60,
    })


def register_quickly(cfg: Config) -> str:
    """Register a garch11_t policy as @champion; returns its version."""
    setup(cfg)
    bt = cfg.backtest
    market = load_market(cfg.paths.data_dir, cfg.data.assets)
    panel, _, _ = load_or_build(market, cfg.features, Path(cfg.paths.outputs_dir) / "features")
    forecasts = walk_forward(lambda: build_forecaster("garch11_t", cfg.models, bt.horizons),
                             panel, bt.oos_start, bt.refit_every, bt.horizons,
                             bt.min_train_days)
    features = feature_view(panel)
    model = build_forecaster("garch11_t", cfg.models, bt.horizons).fit(features)
    bundle = {"format": BUNDLE_FORMAT, "forecaster": model.state(),
              "fit_cutoff": features.index.get_level_values("date").max().date().isoformat(),
              "config": cfg.resolved(),
              "forecasts": bundle_forecasts(forecasts, cfg.features.update_interval_days)}
    with mlflow.start_run(run_name="register-bench"):
        info = registry.log_policy_model(bundle)
    name = cfg.registry.model_name
    version = registry.register(info.model_uri, name, {"forecaster": "garch11_t"})
    registry.set_alias(name, registry.CHAMPION, version, "serve benchmark")
    return version


def timed_serve(cfg: Config, as_of: dt.date) -> dict[str, float]:
    """One in-process serve, seconds per step and in total."""
    marks: list[tuple[str, float]] = []
    start = time.perf_counter()
    result = serve(cfg, as_of, progress=lambda step, d, t: marks.append((step,
                                                                         time.perf_counter())))
    end = time.perf_counter()
    steps = {name: round(nxt - at, 3)
             for (name, at), (_, nxt) in zip(marks, [*marks[1:], ("end", end)], strict=True)}
    return {"total_s": round(end - start, 3), "assets": len(result.parameters),
            "fallbacks": len(result.fallback_assets), "updates": len(result.updates), **steps}


def timed_cli(work: Path, cfg: Config, as_of: dt.date) -> float:
    """``volmargin serve`` in a fresh interpreter, wall seconds (what the timer runs)."""
    env = {**os.environ, "VOLMARGIN__PATHS__DATA_DIR": str(cfg.paths.data_dir),
           "VOLMARGIN__PATHS__OUTPUTS_DIR": str(cfg.paths.outputs_dir),
           "VOLMARGIN__PATHS__MLRUNS_DIR": str(cfg.paths.mlruns_dir)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.cli", "serve", "--as-of", as_of.isoformat(),
                    "--quiet", "--config", str(REPO / "configs" / "default.yaml")],
                   cwd=work, env=env, check=True)
    return round(time.perf_counter() - start, 3)


def bench_universe(name: str, work: Path, data_dir: Path, oos_start: str) -> dict[str, object]:
    cfg = bench_config(work, data_dir, oos_start)
    start = time.perf_counter()
    version = register_quickly(cfg)
    out: dict[str, object] = {"universe": name,
                              "register_s": round(time.perf_counter() - start, 1),
                              "model_version": version}
    out["serve_first_day"] = timed_serve(cfg, DAYS[0])
    out["serve_next_day"] = timed_serve(cfg, DAYS[1])
    out["cli_serve_wall_s"] = timed_cli(work, cfg, DAYS[2])
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="keep outputs here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="volmargin-serve-bench-"))
    results: list[dict[str, object]] = []
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; work dir {work}", flush=True)
    if not args.skip_embedded:
        results.append(bench_universe("embedded 12 assets", work / "embedded", MARKET,
                                      "2024-07-01"))
    if not args.skip_synthetic:
        start = time.perf_counter()
        data = synthetic_market(work / "synthetic" / "market", args.assets)
        print(f"synthetic data: {args.assets} assets in {time.perf_counter() - start:.1f} s",
              flush=True)
        results.append(bench_universe(f"synthetic {args.assets} assets", work / "synthetic",
                                      data, "2025-01-01"))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

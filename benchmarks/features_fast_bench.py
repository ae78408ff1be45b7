"""Serving features for every asset at once (``features/fast.py``) against the per-asset build.

    python -m benchmarks.features_fast_bench --assets 12                     # embedded data
    python -m benchmarks.features_fast_bench --assets 200 [--data-dir DIR]   # synthetic

``--assets 12`` reads the embedded data; any other N the first N assets of a synthetic
universe (:mod:`benchmarks.synthetic_universe`, daily and hourly, 2022-07-01 → 2025-06-30)
under ``--data-dir``, written to a temporary directory first when none is given. The spans are
those of a ``har_rv`` serve of 2025-06-30 fitted through 2025-06-26 (``serve_bench``'s): every
column over 132 days, close, return and covered loss over 3,652 days; the columns are
:func:`features.window.serve_columns` of that bundle. Loading the CSVs is not timed.

Prints one JSON object: the fast build (best and every one of ``--repeat``), the fingerprint
that :func:`features.window.serve_panel` records (of the built panel), the whole
``serve_panel`` call, the per-asset build of the same spans (once; ``--no-reference`` skips
it) and the largest relative difference between the two over the served columns; peak
resident memory (``VmHWM``) after loading, after the fast builds and at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.machine import describe
from benchmarks.run_all import DATA
from benchmarks.synthetic_universe import write_universe
from configs.schema import Config
from features.fast import fast_panel
from features.loaders import load_market
from features.store import panel_fingerprint
from features.window import (
    max_session_gap_days,
    serve_columns,
    serve_panel,
    serve_window,
)
from models.registry import build_forecaster

AS_OF = dt.date(2025, 6, 30)
FIT_CUTOFF = dt.date(2025, 6, 26)


def _peak_mib() -> float:
    """Peak resident memory of this process so far (``VmHWM``, MiB; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return float("nan")


def _max_rel_diff(got: pd.DataFrame, expected: pd.DataFrame) -> float:
    """Largest relative difference over the float columns; inf where NaN or others differ."""
    worst = 0.0
    for col in got.columns:
        if got[col].dtype.kind != "f":
            if not got[col].equals(expected[col]):
                return float("inf")
            continue
        a, b = got[col].to_numpy(), expected[col].to_numpy(dtype=float)
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        both = ~np.isnan(b) & (b != 0)
        if both.any():
            worst = max(worst, float(np.max(np.abs(a[both] - b[both]) / np.abs(b[both]))))
    return worst


def run(data_dir: Path, n_assets: int | None, repeat: int, reference: bool) -> dict[str, object]:
    cfg = Config()
    assets = None
    if n_assets is not None:
        names = sorted(p.name.split(".")[0] for p in (data_dir / "crypto" / "daily").iterdir())
        if len(names) < n_assets:  # a figure for N assets is measured on N, never fewer
            raise SystemExit(f"{data_dir} holds {len(names)} assets, fewer than --assets "
                             f"{n_assets}")
        assets = names[:n_assets]
    market = load_market(data_dir, assets, AS_OF)
    loaded_mib = _peak_mib()
    state = build_forecaster("har_rv", cfg.models, cfg.backtest.horizons).state()
    columns = serve_columns({"forecaster": state, "config": cfg.resolved()})
    assert columns is not None
    window = serve_window(cfg.features, cfg.policy, cfg.features.update_interval_days, "har",
                          AS_OF, FIT_CUTOFF, max_session_gap_days(market.macro),
                          plausibility_days=cfg.backtest.plausibility.window_days)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        panel = fast_panel(market, cfg.features, AS_OF, window.days, window.tail_days, columns)
        times.append(round(time.perf_counter() - start, 3))
    start = time.perf_counter()
    panel_fingerprint(panel, cfg.features, AS_OF, f"days={window.days}:tail={window.tail_days}")
    fp_s = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    serve_panel(market, cfg.features, AS_OF, window, columns)
    serve_s = round(time.perf_counter() - start, 3)
    out: dict[str, object] = {
        "machine": describe(),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "assets": len(market.daily), "hourly_assets": len(market.hourly),
        "hourly_candles": int(sum(len(f) for f in market.hourly.values())),
        "days": window.days, "tail_days": window.tail_days, "rows": len(panel),
        "columns": sorted(columns), "fast_s": min(times), "fast_runs_s": times,
        "fingerprint_s": fp_s, "serve_panel_fast_s": serve_s,
        "loaded_peak_mib": loaded_mib, "fast_peak_mib": _peak_mib()}
    if reference:
        start = time.perf_counter()
        full, _ = serve_panel(market, cfg.features, AS_OF, window)
        out["per_asset_build_s"] = round(time.perf_counter() - start, 3)
        out["max_rel_diff"] = _max_rel_diff(panel, full[list(panel.columns)])
        out["end_peak_mib"] = _peak_mib()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=12)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args(argv)
    if args.assets == 12 and args.data_dir is None:
        result = run(DATA, None, args.repeat, not args.no_reference)
    elif args.data_dir is not None:
        result = run(args.data_dir, args.assets, args.repeat, not args.no_reference)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            write_universe(Path(tmp), args.assets)
            result = run(Path(tmp), args.assets, args.repeat, not args.no_reference)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

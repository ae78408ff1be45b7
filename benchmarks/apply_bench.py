"""How long the policy step of a serve takes (:func:`serving.apply.policy_frame`): all assets
in one batch against the per-asset reference (:func:`serving.apply.policy_frame_per_asset`).

A case is a feature panel (the embedded 12 assets, or a synthetic universe of N assets written
by :func:`benchmarks.synthetic_universe.write_universe`), a forecaster fitted on it through
``fit_cutoff`` and a bundle whose stored forecasts are that forecaster's own forecasts of the
update interval from ``--history-start`` to ``fit_cutoff`` (a stand-in for the walk-forward's:
what is timed is applying the policy, not the forecasts' provenance). Then ``policy_frame`` is
timed on consecutive as-of dates after ``fit_cutoff``, each day reading the previous day's
rows, and the two frames are compared.

Usage::

    .venv/bin/python -m benchmarks.apply_bench --assets 12 --forecaster har_rv
    .venv/bin/python -m benchmarks.apply_bench --assets 1000 --universe /tmp/u1000 \
        --forecaster har_rv_pooled --days 2
    .venv/bin/python -m benchmarks.apply_bench --assets 200 --universe /tmp/u200 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import time
from pathlib import Path
from typing import Any

import pandas as pd

from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from models.registry import build_forecaster
from serving.apply import BUNDLE_FORMAT, bundle_forecasts, policy_frame, policy_frame_per_asset

REPO = Path(__file__).resolve().parents[1]
MARKET = REPO / "data" / "market"
LAST = dt.date(2025, 6, 30)


def make_case(data_dir: Path, forecaster: str, fit_cutoff: dt.date, history_start: str,
              cache: Path | None = None) -> tuple[Any, dict[str, Any], pd.DataFrame]:
    """(forecaster, bundle, feature panel) for the market under ``data_dir``.

    ``cache``: a parquet file holding the panel (built and written when absent).
    """
    cfg = Config().with_overrides({"models.enabled": [forecaster]})
    if cache is not None and cache.is_file():
        panel = pd.read_parquet(cache)
    else:
        panel = build_panel(load_market(data_dir), cfg.features)
        if cache is not None:
            panel.to_parquet(cache)
    features = feature_view(panel)
    horizons = cfg.backtest.horizons
    seen = features[features.index.get_level_values("date") <= pd.Timestamp(fit_cutoff)]
    model = build_forecaster(forecaster, cfg.models, horizons).fit(seen)
    u = cfg.features.update_interval_days
    cutoffs = pd.date_range(history_start, fit_cutoff, freq="D")
    bundle = {"format": BUNDLE_FORMAT, "forecaster": model.state(),
              "fit_cutoff": fit_cutoff.isoformat(), "config": cfg.resolved(),
              "forecasts": bundle_forecasts(model.forecast(seen, [u], cutoffs), u)}
    return model, json.loads(json.dumps(bundle)), features


def serve_days(apply: Any, model: Any, bundle: dict[str, Any], features: pd.DataFrame,
               days: list[dt.date]) -> tuple[list[pd.DataFrame], list[float]]:
    """Apply the policy on consecutive ``days``, each reading the previous day's rows back
    (as JSON, as a serve does), on the panel up to that day; the frames and the seconds
    each took."""
    previous, frames, seconds = None, [], []
    dates = features.index.get_level_values("date")
    for day in days:
        panel = features[dates <= pd.Timestamp(day)]  # a serve's panel ends at its as-of
        start = time.perf_counter()
        frame = apply(model, bundle, panel, day, previous)
        seconds.append(time.perf_counter() - start)
        frames.append(frame)
        previous = pd.DataFrame(json.loads(json.dumps(frame.to_dict(orient="records"),
                                                      default=str)))
    return frames, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=12, help="12: the embedded data")
    parser.add_argument("--universe", type=Path, help="synthetic universe dir (written if "
                        "absent) for --assets other than 12")
    parser.add_argument("--forecaster", default="har_rv")
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--history-start", default="2024-01-01")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the batched call")
    parser.add_argument("--sort", default="cumulative", help="cProfile sort key")
    args = parser.parse_args(argv)
    days = [LAST - dt.timedelta(days=k) for k in range(args.days - 1, -1, -1)]
    fit_cutoff = days[0] - dt.timedelta(days=1)
    if args.assets == 12:
        data_dir, cache = MARKET, None
    else:
        from benchmarks.synthetic_universe import write_universe

        if args.universe is None:
            parser.error("--assets other than 12 needs --universe DIR (written if absent)")
        data_dir = args.universe
        if not (data_dir / "crypto").is_dir():
            write_universe(data_dir, args.assets)
        held = len(list((data_dir / "crypto" / "daily").glob("*.csv*")))
        if held != args.assets:  # a figure for N assets is measured on N, never fewer
            parser.error(f"{data_dir} holds {held} assets, not --assets {args.assets}")
        cache = data_dir / "panel.parquet"
    start = time.perf_counter()
    model, bundle, features = make_case(data_dir, args.forecaster, fit_cutoff,
                                        args.history_start, cache)
    n = features.index.get_level_values("asset").nunique()
    print(f"{n} assets, {args.forecaster}: case built in {time.perf_counter() - start:.1f} s",
          flush=True)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
    batched, fast = serve_days(policy_frame, model, bundle, features, days)
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats(args.sort).print_stats(35)
    print("batched  s/day:", [round(s, 3) for s in fast], flush=True)
    if not args.skip_reference:
        reference, slow = serve_days(policy_frame_per_asset, model, bundle, features, days)
        print("per-asset s/day:", [round(s, 3) for s in slow])
        for a, b in zip(batched, reference, strict=True):
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        print("frames exactly equal")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

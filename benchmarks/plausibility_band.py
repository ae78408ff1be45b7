"""Where healthy forecasts lie against the plausibility band, period by period
(``python -m benchmarks.plausibility_band``).

The band of :mod:`models.plausibility` (``backtest.plausibility``: a forecast between 0.01 and
50 times ``h`` times the trailing 30-day realized variance) is a guard against forecasts
orders of magnitude out, not a tuned setting, but it decides which (model, asset, horizon)
triples are left out, so its margin must hold on data it was not set on. This reads a run's
walk-forward forecasts (``backtest/forecasts_*.parquet``, the forecasts the band kept) and
prints, for the selection period, the evaluation period and both, the smallest and the
largest ratio with the model, asset and cutoff where it occurs:

    python -m benchmarks.plausibility_band --backtest outputs/backtest

Nothing here is chosen; the band is the config's.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from configs.schema import Config, load_config
from features.build import build_panel
from features.loaders import load_market
from models.plausibility import trailing_realized_variance


def ratios(backtest: Path, panel: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Each kept forecast's ratio to ``h`` times the trailing mean realized variance."""
    bounds = cfg.backtest.plausibility
    trailing = {str(a): trailing_realized_variance(g["rv"].droplevel("asset"),
                                                   bounds.window_days, bounds.min_obs)[0]
                for a, g in panel.groupby(level="asset")}
    parts = []
    for path in sorted(backtest.glob("forecasts_*.parquet")):
        fc = pd.read_parquet(path)
        ref = np.array([trailing[str(a)].get(c, np.nan) if str(a) in trailing else np.nan
                        for a, c in zip(fc["asset"], fc["cutoff"], strict=True)])
        parts.append(pd.DataFrame({
            "model": path.stem.removeprefix("forecasts_"), "asset": fc["asset"],
            "cutoff": pd.to_datetime(fc["cutoff"]), "h": fc["horizon_days"],
            "ratio": fc["variance"].to_numpy(float) / (fc["horizon_days"].to_numpy() * ref)}))
    out = pd.concat(parts, ignore_index=True)
    return out[np.isfinite(out["ratio"])].reset_index(drop=True)


def extremes(r: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    ev = cfg.evaluation
    periods = {"selection": (ev.selection_start, ev.selection_end),
               "evaluation": (ev.evaluation_start, ev.evaluation_end),
               "both": (ev.selection_start, ev.evaluation_end)}
    rows = []
    for name, (lo, hi) in periods.items():
        day = r["cutoff"].dt.date
        part = r[(day >= lo) & (day <= (hi or dt.date.max))]
        if part.empty:
            continue
        low, high = part.loc[part["ratio"].idxmin()], part.loc[part["ratio"].idxmax()]
        rows.append({"period": name, "forecasts": len(part), "min": low["ratio"],
                     "min_at": f"{low['model']} {low['asset']} {low['cutoff'].date()} "
                               f"h={low['h']}",
                     "max": high["ratio"],
                     "max_at": f"{high['model']} {high['asset']} {high['cutoff'].date()} "
                               f"h={high['h']}"})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backtest", type=Path, default=Path("outputs/backtest"))
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    cfg = load_config(args.config) if args.config else Config()
    panel = build_panel(load_market(cfg.paths.data_dir, cfg.data.assets,
                                    cfg.evaluation.evaluation_end), cfg.features)
    table = extremes(ratios(args.backtest, panel, cfg), cfg)
    b = cfg.backtest.plausibility
    print(f"band [{b.min_ratio:g}, {b.max_ratio:g}]")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()

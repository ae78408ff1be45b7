"""Tail-forecast figures on the embedded data (``python -m benchmarks.tail_bench``).

Walks every ``tail.enabled`` model forward over the selection and evaluation periods
(:func:`pipelines.evaluation.tail_compare.run_tail_backtest`, per model so each is timed),
then prints Markdown tables for ``benchmarks/README.md``: pooled FZ0 at 99 % on both periods,
DM on FZ0 against the best classical model (chosen on the selection period) and the two FHS,
the MCS, VaR/ES backtest pass counts on the evaluation period, and the CPU training
throughput of ``tail_nn`` (one fit on the data up to the end of the selection period). Raw
figures follow as JSON. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from benchmarks.machine import describe
from benchmarks.run_all import DATA
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from features.schema import feature_view
from models.tail.registry import TAIL_REGISTRY, build_tail_forecaster
from pipelines.evaluation import tail_compare as tc


def nn_throughput(panel: pd.DataFrame, cfg: Config) -> dict[str, float]:
    """Seconds and training rows·epochs per second of one ``tail_nn`` fit (CPU)."""
    features = feature_view(panel)
    upto = features[features.index.get_level_values("date")
                    <= pd.Timestamp(cfg.evaluation.selection_end)]
    model = build_tail_forecaster("tail_nn", cfg.tail, cfg.features.update_interval_days,
                                  cfg.models)
    start = time.perf_counter()
    model.fit(upto)
    seconds = time.perf_counter() - start
    rows, epochs = model.fit_stats["train_rows"], model.fit_stats["epochs"]
    return {"fit_s": round(seconds, 2), "train_rows": rows, "epochs_all_candidates": epochs,
            "rows_epochs_per_s": round(rows * epochs / seconds), **model.chosen}


def coverage_counts(backtests: pd.DataFrame, side: str = "long") -> pd.DataFrame:
    """Per model: assets passing each test at 5 % (hourly assets / all assets)."""
    b = backtests[backtests["side"] == side]
    rows = []
    for model, g in b.groupby("model"):
        h = g[g["hourly"]]
        rows.append({"model": model, "breach_rate": round(g.breaches.sum() / g.n.sum(), 4),
                     "coverage+independence (hourly)": f"{int(h.passes.sum())}/{len(h)}",
                     "DQ": f"{int((g.p_dq >= 0.05).sum())}/{len(g)}",
                     "McNeil-Frey": f"{int((g.p_mcneil_frey.fillna(1.0) >= 0.05).sum())}/{len(g)}",
                     "Z2": f"{int((g.p_z2 >= 0.05).sum())}/{len(g)}"})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=None, help="comma-separated aliases (default: all)")
    parser.add_argument("--refit-every", type=int, default=None)
    parser.add_argument("--loss-variant", choices=["close", "intrabar"], default=None,
                        help="score and train every model on this covered-loss variant")
    args = parser.parse_args()
    cfg = Config()
    update: dict[str, object] = {"enabled": args.models.split(",")} if args.models else {}
    if args.refit_every:
        update["refit_every"] = args.refit_every
    if args.loss_variant:
        for alias in TAIL_REGISTRY:  # every model, so all score one loss variant
            section = getattr(cfg.tail, alias)
            update[alias] = section.model_copy(update={"loss_variant": args.loss_variant})
    cfg = cfg.model_copy(update={"tail": cfg.tail.model_copy(update=update)})
    market = load_market(DATA)
    panel = build_panel(market, cfg.features)
    hourly = sorted(a for a, h in market.hourly.items() if h is not None and len(h))
    results: dict[str, object] = {
        "machine": describe(),
        "data": f"{len(market.daily)} assets, hourly candles for {len(hourly)}: {hourly}",
        "refit_every_days": cfg.tail.refit_every, "walk_forward_s": {},
        "loss_variant": cfg.tail.tail_nn.loss_variant,
    }
    blocks = []
    for alias in cfg.tail.enabled:
        one = cfg.model_copy(update={"tail": cfg.tail.model_copy(update={"enabled": [alias]})})
        start = time.perf_counter()
        blocks.append(tc.walk_forward_all(panel, one))
        results["walk_forward_s"][alias] = round(time.perf_counter() - start, 1)
    forecasts = pd.concat(blocks, ignore_index=True)
    tables = tc.score_tables(forecasts, panel, cfg)
    for name in ("fz0_selection", "fz0_evaluation"):
        t = tables[name]
        t = t[np.isclose(t["level"], tc.HEADLINE_LEVEL)]
        wide = t.pivot(index="model", columns="side", values="fz0").round(4)
        print(f"\n### Pooled FZ0 at 99 % ({name.split('_')[1]} period; lower is better)\n")
        print(wide.to_markdown())
    print(f"\nBest classical model on the selection period: "
          f"{tables['choice']['best_classical'].iloc[0]}\n")
    print("### DM on daily pooled FZ0, long side, 99 %, evaluation period\n")
    print(tables["dm"].round(4).to_markdown(index=False))
    print("\n### MCS (90 %) on daily pooled FZ0, long side, 99 %, evaluation period\n")
    print(tables["mcs"].round(3).to_markdown(index=False))
    cov = coverage_counts(tables["backtests"])
    print("\n### 99 % VaR/ES backtests, long side, evaluation period (assets passing at 5 %)\n")
    print(cov.to_markdown(index=False))
    best = tables["choice"]["best_classical"].iloc[0]
    b = tables["backtests"]
    per_asset = b[(b["side"] == "long") & b["model"].isin([best, "tail_nn"])]
    print(f"\n### Per asset, long side, 99 %, evaluation period ({best} and tail_nn)\n")
    print(per_asset[["model", "asset", "hourly", "n", "breaches", "p_coverage",
                     "p_independence", "p_dq", "p_mcneil_frey", "p_z2", "passes"]]
          .round(3).to_markdown(index=False))
    if "tail_nn" in cfg.tail.enabled:
        results["tail_nn_training"] = nn_throughput(panel, cfg)
    results["tables"] = {k: v.to_dict(orient="records") for k, v in tables.items()
                         if k != "backtests"}
    results["coverage"] = cov.to_dict(orient="records")
    print("\n" + json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

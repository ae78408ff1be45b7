"""``tail_nn`` settings on the selection period (``python -m benchmarks.tail_variants``).

Each variant is the configured ``tail.tail_nn`` with some settings changed (a JSON object per
``--variant``; the configured one first, unless ``--no-configured``), walked forward over the
selection period on the embedded data's panel cut at its end — the evaluation period is never read,
the rule of :func:`pipelines.evaluation.tail_compare.select_scale_model` — and scored by
pooled FZ0 at 99 %, long and short (lower is better). Prints a Markdown table.

    python -m benchmarks.tail_variants --variant '{"hidden": 8}' --variant '{"lr": 0.01}'
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pandas as pd

from benchmarks.run_all import DATA
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.tail.backtest import tail_walk_forward
from models.tail.registry import build_tail_forecaster
from pipelines.evaluation import tail_compare as tc


def selection_fz0(panel: pd.DataFrame, cfg: Config, update: dict[str, Any]) -> dict[str, Any]:
    """Pooled FZ0 at 99 % of ``tail_nn`` with ``update`` on the selection period."""
    ev, u = cfg.evaluation, cfg.features.update_interval_days
    upto = panel[panel.index.get_level_values("date") <= pd.Timestamp(ev.selection_end)]
    tail = cfg.tail.model_copy(update={"tail_nn": cfg.tail.tail_nn.model_copy(update=update)})
    start = time.perf_counter()
    fc = tail_walk_forward(lambda: build_tail_forecaster("tail_nn", tail, u, cfg.models), upto,
                           ev.selection_start, ev.selection_end, tail.refit_every,
                           tail.levels, tail.min_train_days)
    fc.insert(0, "model", "tail_nn")
    scores = tc.score(fc, upto, tail.tail_nn.loss_variant)
    row: dict[str, Any] = {"variant": json.dumps(update) if update else "configured"}
    for side in ("long", "short"):
        row[side] = round(float(tc.daily_fz0(scores, side, tc.HEADLINE_LEVEL)["tail_nn"].mean()),
                          4)
    row["walk_forward_s"] = round(time.perf_counter() - start, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], type=json.loads,
                        help="a JSON object of tail.tail_nn settings (repeatable)")
    parser.add_argument("--no-configured", action="store_true",
                        help="run the variants only (the configured row is known)")
    args = parser.parse_args(argv)
    cfg = Config()
    panel = build_panel(load_market(DATA), cfg.features)
    rows = []
    for update in ([] if args.no_configured else [{}]) + args.variant:
        rows.append(selection_fz0(panel, cfg, update))
        print(json.dumps(rows[-1]), flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A smoothed tail term for the tail-driven policy (``python -m benchmarks.tail_smoothing``).

The learned tail's ES jitters about three times as much from one day to the next as
``fhs_ewma``'s, and the parameter roles (tighten at once, loosen by announced steps) turn that
jitter into margin in force (``outputs/tail/policy_capital.csv``). This experiment replays the
tail-driven candidates of one model with its VaR/ES smoothed by a causal exponential moving
average of each (asset, side, level) series, half-life ``h`` days (``h = 0``: as forecast),
and prints the headline (capital and bad debt, selection and evaluation periods, against
EWMA-FHS at 99 %) and which candidate the tail-driven rule would freeze. An average of tails
monotone in the level with ES >= VaR is one too. It reads the walk-forward tail forecasts a
``volmargin tail`` run wrote; nothing here is served or chosen: a smoothing setting would
have to be frozen on the selection period by the protocol's rule before it could be.

    python -m benchmarks.tail_smoothing --forecasts outputs/tail/forecasts.parquet \\
        --model tail_nn --half-lives 0 3 7
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from benchmarks.run_all import DATA
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from pipelines.policy_eval.tail_driven import evaluate_tail_policies
from pipelines.tail_policy import sigma_forecasts

COLUMNS = ["acceptable_sel", "capital_sel", "bad_debt_lt_sum_sel", "acceptable_eva",
           "capital_eva", "capital_saving_eva", "bad_debt_lt_sum_eva", "stress_bad_debt_eva"]


def smoothed(tails: pd.DataFrame, half_life: float) -> pd.DataFrame:
    """``tails`` with VaR and ES replaced by their causal EMA per (asset, side, level)."""
    if half_life <= 0:
        return tails
    out = tails.sort_values("cutoff").copy()
    groups = out.groupby(["asset", "side", "level"], sort=False)
    for col in ("var", "es"):
        out[col] = groups[col].transform(lambda x: x.ewm(halflife=half_life).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forecasts", required=True, help="a volmargin tail forecasts.parquet")
    parser.add_argument("--model", default="tail_nn")
    parser.add_argument("--half-lives", type=float, nargs="+", default=[0.0, 3.0, 7.0])
    args = parser.parse_args(argv)
    cfg = Config().with_overrides({"evaluation.choose_knobs": False})
    panel = build_panel(load_market(DATA), cfg.features)
    sigma = sigma_forecasts(cfg, panel).forecasts
    forecasts = pd.read_parquet(args.forecasts)
    mine = forecasts[forecasts["model"] == args.model]
    rows = []
    for half_life in args.half_lives:
        start = time.perf_counter()
        ev = evaluate_tail_policies(panel, sigma, smoothed(mine, half_life), cfg)
        head = ev.headline.set_index("policy")
        for name in head.index:
            if name.startswith("tail:"):
                rows.append({"half_life": half_life, "policy": name,
                             **{c: head.loc[name, c] for c in COLUMNS if c in head.columns},
                             "frozen": name == ev.frozen.name,
                             "seconds": round(time.perf_counter() - start, 1)})
        ewma = head.loc[ev.ewma]
    table = pd.DataFrame(rows)
    print(table.round(4).to_markdown(index=False))
    print(f"\nEWMA-FHS ({ev.ewma}): capital_eva {ewma['capital_eva']:.4f}, bad debt "
          f"{ewma['bad_debt_lt_sum_eva']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

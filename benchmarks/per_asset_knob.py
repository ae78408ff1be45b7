"""A knob chosen per asset, not once for all (``python -m benchmarks.per_asset_knob``).

The choice freezes one stress-floor weight for every asset (``choose_knob``: most assets
acceptable on the selection period, then least capital). A lender might ask why BTC should
carry the weight that ETH needs. This experiment answers it from a run's own tables, with no
replay: for every asset it takes the *cheapest* variant of the frozen candidate's knob family
(the first step's candidate and its knob variants) that was acceptable on that asset over the
selection period (the universe's choice where none was), and reads how those per-asset
settings did on the evaluation period, beside the universe-wide choice. Capital is the mean
over assets of each asset's mean ``1 - LTV``, as in ``policy_headline.csv``.

Nothing here is chosen or served; it reads ``policy_acceptance.csv`` and ``frozen.json`` of a
``volmargin run``'s outputs (``backtest/``):

    python -m benchmarks.per_asset_knob --backtest outputs/backtest
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pipelines.policy_eval.protocol import EVALUATION, SELECTION
from pipelines.report_extra import knob_variants, policy_name_parts


def family(acceptance: pd.DataFrame, frozen: dict) -> pd.DataFrame:
    """The rows of the frozen policy's knob family (the frozen policy, its first choice and
    its knob variants: :func:`pipelines.report_extra.knob_variants`), with ``variant``: the
    knob settings of each (none: the first choice, at the configured values)."""
    names = list(dict.fromkeys(acceptance["policy"]))
    members = [frozen["policy"], *knob_variants(frozen, names)]
    if len(members) < 2:
        raise SystemExit(f"{frozen['policy']}: no knob variants in the table "
                         "(evaluation.frontier_knobs is empty?)")
    knobs = {k.split(".")[-1] for k in frozen.get("knobs") or {}}
    mine = acceptance[acceptance["policy"].isin(members)].copy()
    label = {n: ",".join(f"{k}={v}" for k, v in policy_name_parts(n)[1].items() if k in knobs)
             or "(first choice)" for n in members}
    mine["variant"] = mine["policy"].map(label)
    return mine


def per_asset_choice(rows: pd.DataFrame, frozen_policy: str) -> pd.Series:
    """asset → the cheapest variant acceptable on the selection period (else the frozen one)."""
    sel = rows[rows["period"] == SELECTION]
    ok = sel[sel["acceptable"].astype(bool)].sort_values(["asset", "capital"])
    picked = ok.groupby("asset")["policy"].first()
    every = pd.Index(sorted(sel["asset"].unique()), name="asset")
    return picked.reindex(every).fillna(frozen_policy)


def outcome(rows: pd.DataFrame, choice: pd.Series, period: str) -> dict[str, float]:
    """Pooled figures of one setting per asset on ``period``."""
    at = rows[rows["period"] == period].set_index(["asset", "policy"])
    got = at.loc[list(choice.items())]
    return {"acceptable": int(got["acceptable"].astype(bool).sum()), "assets": len(got),
            "capital": float(got["capital"].mean()),
            "bad_debt_lt": float(got["bad_debt_lt_sum"].sum()),
            "stress_bad_debt": float(got["stress_bad_debt"].sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backtest", type=Path, default=Path("outputs/backtest"),
                        help="a volmargin run's backtest outputs folder")
    args = parser.parse_args(argv)
    acceptance = pd.read_csv(args.backtest / "policy_acceptance.csv")
    frozen = json.loads((args.backtest / "frozen.json").read_text())
    rows = family(acceptance, frozen)
    mine = per_asset_choice(rows, frozen["policy"])
    universe = pd.Series(frozen["policy"], index=mine.index)
    variant = rows.drop_duplicates("policy").set_index("policy")["variant"]
    print("per-asset choice (selection period):",
          ", ".join(f"{a} {variant[p]}" for a, p in mine.items()))
    table = pd.DataFrame({f"{who} {period}": outcome(rows, choice, period)
                          for who, choice in (("per asset", mine), ("universe", universe))
                          for period in (SELECTION, EVALUATION)}).T
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    at = rows[rows["period"] == EVALUATION].set_index(["asset", "policy"])
    failed = at.loc[list(mine.items())]
    failed = failed[~failed["acceptable"].astype(bool)]
    for (asset, policy), why in failed["why_not"].items():
        print(f"not acceptable on the evaluation period: {asset} {variant[policy]}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

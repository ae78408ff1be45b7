r"""Variance-model study: choose ``harx_mlp``'s variant on the selection period, freeze it,
report the evaluation period (``python -m benchmarks.variance_study``).

Candidates (:data:`CANDIDATES`) are ``harx_mlp`` with every input in its OLS part or only
``harx_iv``'s (``linear_inputs``: HAR cascade, log DVOL, flags); with or without the own-DVOL
head (``own_dvol_slopes``: BTC/ETH rows with their own DVOL get their own slopes on the HAR
terms and the implied inputs); with DVOL inputs from the first refit or only once
``dvol_min_days`` = 250 training dates have DVOL (harx_iv's ``min_obs``); and with recency
weights of half-life ``half_life_days`` (``None``: every row weighs the same); and with or
without the weekday of day t+1 (``weekday_terms``). Each is walked
forward (expanding window, refits every ``backtest.refit_every`` days) over the selection
period 2021-01-01 → 2023-06-30 on a panel cut at the period's end, so no fit, input or
realized value reaches past it. The rule, code
not judgement: the candidate with the lowest

.. math:: S = \tfrac12 \sum_{h \in \{1, 7\}} \frac{\overline{QLIKE}_{h}(\text{cand})}
    {\overline{QLIKE}_{h}(\texttt{har\_rv\_pooled})}

on BTC/ETH (hourly RV) wins; the first in :data:`CANDIDATES` (``harx_mlp`` before this study,
DVOL from the first refit, no head, no weights) wins ties. Then the frozen winner, that first
candidate, ``har_rv_pooled`` and ``harx_iv`` are walked
over the evaluation period 2023-07-01 → 2025-06-30 (fits use every row up to each refit).
Losses are on the common support of the models compared (:func:`evaluate.scored`); the DM
test (HLN) is on the daily cross-sectional mean loss of the group, one-sided p that the
model beats the reference. The evaluation table is then repeated for BTC/ETH on each
twelve-month block of the evaluation period (:func:`summary_by_year`: does the gain hold in each
year, or come from one). Prints Markdown tables and the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from benchmarks.run_all import DATA
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import backtest
from models.base import Forecaster
from models.harx_mlp import HarxMlpForecaster
from models.registry import build_forecaster
from pipelines.evaluation import evaluate
from pipelines.evaluation.stats import diebold_mariano
from pipelines.evaluation.years import year_blocks

HORIZONS = (1, 7)
MAJORS = ("BTC", "ETH")  # own DVOL and hourly RV over the whole study
REFERENCE = "har_rv_pooled"
# name → harx_mlp config overrides; the first is harx_mlp before this study (it wins ties)
CANDIDATES: dict[str, dict[str, object]] = {
    f"harx_mlp[{lin}/{'own' if own else 'pooled'}_dvol/min={days}/hl={hl}"
    f"{'/weekday' if wd else ''}]": {
        "linear_inputs": lin, "own_dvol_slopes": own, "dvol_min_days": days,
        "half_life_days": hl, "weekday_terms": wd}
    for wd in (False, True) for days in (0, 250) for lin in ("all", "har_iv")
    for own in (False, True) for hl in (None, 365.0, 730.0, 1460.0)
}


def run_models(makers: dict[str, Callable[[], Forecaster]], panel: pd.DataFrame,
               start: pd.Timestamp, end: pd.Timestamp, cfg: Config) -> tuple[pd.DataFrame, dict]:
    """Walk every model over [start, end] on ``panel`` cut at ``end``; scored rows, seconds."""
    cut = panel[panel.index.get_level_values("date") <= end]
    forecasts, seconds = {}, {}
    for name, make in makers.items():
        t0 = time.perf_counter()
        out = backtest(make, cut, start.date(), cfg.backtest.refit_every, HORIZONS,
                       cfg.backtest.min_train_days, plausibility=cfg.backtest.plausibility)
        seconds[name] = round(time.perf_counter() - t0, 1)
        fc = out.forecasts
        forecasts[name] = fc[fc["cutoff"] >= start]
        failed = sorted({f"{r.asset} h={r.horizon_days}" for r in out.failures.itertuples()})
        print(f"  {name}: {seconds[name]} s; failed: {failed or 'none'}", flush=True)
    return evaluate.scored(forecasts, cut), seconds


def summary(scores: pd.DataFrame, references: tuple[str, ...] = (REFERENCE, "harx_iv")
            ) -> pd.DataFrame:
    """Mean QLIKE per (model, group, horizon), its ratio to ``har_rv_pooled`` and DM p-values
    (one-sided: the model beats the reference) on the daily cross-sectional mean loss."""
    rows = []
    groups = {"BTC/ETH": scores["asset"].isin(MAJORS), "all assets": scores["asset"].notna()}
    for group, in_group in groups.items():
        for h in HORIZONS:
            part = scores[in_group & (scores["horizon_days"] == h)]
            daily = part.pivot_table(index="cutoff", columns="model", values="qlike",
                                     aggfunc="mean")  # (days, models) common support
            for model in daily.columns:
                row = {"model": model, "group": group, "h": h, "n": int((part.model == model)
                       .sum()), "qlike": float(part.loc[part.model == model, "qlike"].mean())}
                for ref in references:
                    if ref in daily.columns and ref != model:
                        dm = diebold_mariano(daily[model], daily[ref], horizon=h)
                        row[f"p_better_than_{ref}"] = round(float(dm.p_value_a_better), 4)
                        # the DM's size holds near white noise (pipelines.evaluation.stats)
                        row[f"ac1_vs_{ref}"] = round(float(dm.lag1_autocorr), 3)
                rows.append(row)
    out = pd.DataFrame(rows)
    ref = out[out.model == REFERENCE].set_index(["group", "h"])["qlike"]
    out["vs_pooled_%"] = 100 * (out["qlike"].to_numpy()
                                / ref.loc[list(zip(out.group, out.h, strict=True))].to_numpy() - 1)
    return out.round({"qlike": 4, "vs_pooled_%": 2})


def summary_by_year(scores: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """:func:`summary` on BTC/ETH for each twelve-month block of the evaluation period from
    ``start`` (:func:`pipelines.evaluation.years.year_blocks`; a row belongs to the block of
    its cutoff, as the walk-forward's rows belong to the period of theirs)."""
    frames = []
    for label, lo, hi in year_blocks(start.date(), scores["cutoff"].max()):
        cut = pd.to_datetime(scores["cutoff"])
        part = scores[(cut >= pd.Timestamp(lo)) & (cut <= pd.Timestamp(hi))]
        if part.empty:
            continue
        table = summary(part)
        frames.append(table[table["group"] == "BTC/ETH"].assign(block=label))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["block", *[c for c in out.columns if c != "block"]]]


def selection_score(table: pd.DataFrame) -> pd.Series:
    """S per model: mean over h of its BTC/ETH QLIKE over ``har_rv_pooled``'s (lower wins)."""
    majors = table[table.group == "BTC/ETH"]
    return (1 + majors["vs_pooled_%"] / 100).groupby(majors["model"]).mean()


def makers_for(cfg: Config, names: list[str]) -> dict[str, Callable[[], Forecaster]]:
    out: dict[str, Callable[[], Forecaster]] = {}
    for name in names:
        if name in CANDIDATES:
            variant = cfg.models.harx_mlp.model_copy(update=CANDIDATES[name])
            out[name] = lambda v=variant: HarxMlpForecaster(v, horizons=HORIZONS)
        else:
            out[name] = lambda a=name: build_forecaster(a, cfg.models, HORIZONS)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", default=None,
                        help="comma-separated subset of CANDIDATES names (default: all)")
    parser.add_argument("--json", default=None, help="also write the raw figures here")
    args = parser.parse_args()
    cfg = Config()
    ev = cfg.evaluation
    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    panel = build_panel(load_market(DATA), cfg.features)
    last = panel.index.get_level_values("date").max()
    sel_start, sel_end = pd.Timestamp(ev.selection_start), pd.Timestamp(ev.selection_end)
    ev_start = pd.Timestamp(ev.evaluation_start)
    ev_end = pd.Timestamp(ev.evaluation_end) if ev.evaluation_end else last

    print(f"selection period {sel_start.date()} → {sel_end.date()}", flush=True)
    sel_scores, sel_s = run_models(makers_for(cfg, [REFERENCE, "harx_iv", *names]), panel,
                                   sel_start, sel_end, cfg)
    sel = summary(sel_scores)
    score = selection_score(sel).loc[names]
    chosen = str(score.index[int(np.argmin(score.to_numpy()))])  # first wins ties
    print(sel.to_markdown(index=False))
    print("\nselection score S (lower wins):\n" + score.round(4).to_string())
    print(f"\nfrozen: {chosen} = {CANDIDATES[chosen]}", flush=True)

    before = next(iter(CANDIDATES))  # harx_mlp as it was before this study
    print(f"\nevaluation period {ev_start.date()} → {ev_end.date()}", flush=True)
    ev_names = [REFERENCE, "harx_iv", before] + ([chosen] if chosen != before else [])
    ev_scores, ev_s = run_models(makers_for(cfg, ev_names), panel, ev_start, ev_end, cfg)
    table = summary(ev_scores)
    print(table.to_markdown(index=False))
    years = summary_by_year(ev_scores, ev_start)
    print("\nBTC/ETH, each twelve-month block of the evaluation period (rows by cutoff):\n"
          + years.to_markdown(index=False))
    raw = {"selection": sel.to_dict("records"), "selection_score": score.round(6).to_dict(),
           "chosen": chosen, "chosen_config": CANDIDATES[chosen],
           "evaluation": table.to_dict("records"),
           "evaluation_by_year": years.to_dict("records"),
           "seconds": {"selection": sel_s, "evaluation": ev_s},
           "refit_every": cfg.backtest.refit_every}
    if not args.json:
        print(json.dumps(raw, default=str))
    else:
        with open(args.json, "w") as fh:
            json.dump(raw, fh, indent=1, default=str)


if __name__ == "__main__":
    main()

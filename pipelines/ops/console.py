"""Rich rendering of a pipeline run's results for the terminal (the CLI's final tables)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from rich.console import Console
from rich.table import Table

from configs.schema import Config
from pipelines.selection.select import reads_forecast_quality

if TYPE_CHECKING:
    from pipelines.run import RunResult


def _flags(r: object) -> str:
    pairs = (("fallback", "flag_fallback"), ("stale", "flag_stale"), ("clamped", "flag_clamped"),
             ("proxy", "flag_proxy"), ("young", "flag_young"),
             ("held", "flag_held"))
    return ",".join(name for name, col in pairs if bool(getattr(r, col)))


def forecast_table(cfg: Config, result: RunResult) -> Table:
    t = Table(title="Out-of-sample QLIKE, mean over assets (lower is better)")
    t.add_column("model")
    horizons = sorted(result.table["horizon_days"].unique())
    for h in horizons:
        t.add_column(f"h={h}d", justify="right")
    # the shares the choice read: the selection period's when it screens (or ranks) on them
    where = ", selection period" if reads_forecast_quality(cfg.selection) else ""
    t.add_column(f"in MCS (h={cfg.selection.horizon}{where})", justify="right")
    t.add_column(f"VaR99 tests pass{where}", justify="right")
    t.add_column("policy acceptable", justify="right")
    t.add_column("policy capital", justify="right")
    means = result.table.groupby(["model", "horizon_days"])["qlike"].mean().unstack()
    sel = result.selection.set_index("model")
    n_assets = result.table["asset"].nunique()
    for model in means[horizons[0]].sort_values().index:
        s = sel.loc[model]
        mark = " (selected)" if model == result.selected else ""
        # a model the screen removed has no policy verdict (nor has any under rule=forecast)
        judged = pd.notna(s.get("acceptable"))
        unjudged = "screened out" if not bool(s.get("screened", True)) else "-"
        t.add_row(model + mark, *[f"{means.loc[model, h]:.4f}" for h in horizons],
                  f"{s['mcs_share']:.0%}", f"{s['var_share']:.0%}",
                  f"{int(s['acceptable'])}/{n_assets}" if judged else unjudged,
                  f"{s['capital']:.2%}" if judged and pd.notna(s.get("capital")) else "-")
    return t


def policy_table(result: RunResult) -> Table:
    t = Table(title="Policy backtest, evaluation period (worst liquidation-delay loss)")
    for col in ("policy", "acceptable", "breaches", "capital", "mean LT", "bad debt Σ",
                "IMF peak/trough"):
        # a policy's name is folded, never cut: knob variants differ only at its end
        t.add_column(col, justify="left" if col == "policy" else "right",
                     overflow="fold" if col == "policy" else "ellipsis")
    g = result.policy_summary.groupby("policy", sort=False)
    for name, rows in g:
        t.add_row(name, f"{int(rows['acceptable'].sum())}/{len(rows)}",
                  f"{int(rows['breaches'].sum())}", f"{rows['capital'].mean():.2%}",
                  f"{rows['mean_lt'].mean():.2%}", f"{rows['bad_debt_lt_sum'].sum():.3f}",
                  f"{rows['peak_to_trough'].mean():.2f}")
    return t


def parameters_table(cfg: Config, result: RunResult) -> Table:
    params = result.served.parameters
    t = Table(title=f"Parameters as of {params['as_of'].iloc[0]} "
              f"({cfg.registry.model_name} v{result.served.model_version}, @champion)")
    for col in ("asset", "σ 1d", "ES loss", "MMF", "IMF", "LT", "max LTV", "LB", "max lev",
                "flags"):
        t.add_column(col, justify="left" if col in ("asset", "flags") else "right")
    for r in params.itertuples():
        t.add_row(r.asset, f"{r.sigma_1d:.2%}", f"{r.loss_es:.2%}", f"{r.mmf:.2%}",
                  f"{r.imf:.2%}", f"{r.lt:.2%}", f"{r.ltv:.2%}", f"{r.lb:.4f}",
                  f"{r.max_leverage:.1f}x", _flags(r))
    return t


def print_run(console: Console, cfg: Config, result: RunResult) -> None:
    console.print(forecast_table(cfg, result))
    console.print(f"Selection: {result.selection_reason}", markup=False, highlight=False)
    if result.registered_policy.startswith("tail:"):  # one choice over both kinds
        console.print(f"Registered instead: {result.registered_policy}, the tail-driven policy "
                      "the same rule ranks first on the selection period (tail.in_run; "
                      "outputs/tail/policy_frozen.json)", markup=False, highlight=False)
    console.print(policy_table(result))
    state = ("promoted to @champion" if result.gate_passed
             else "promoted to @champion as the first version, its gate refused"
             if result.promoted else "NOT promoted")
    policy = f" ({result.registered_policy})" if result.registered_policy else ""
    console.print(f"{cfg.registry.model_name} v{result.model_version}{policy}: {state} — "
                  f"{result.gate_reason}", markup=False, highlight=False)
    if result.served is not None:
        console.print(parameters_table(cfg, result))
        console.print(f"Published: {result.served.published.path}")
    console.print(f"MLflow:    sqlite:///{Path(cfg.paths.mlruns_dir).as_posix()}/mlflow.db — "
                  "open with `volmargin ui` (http://127.0.0.1:5000)")
    for message in getattr(result, "warnings", []):  # file names and values: no markup
        console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)
    for line in result.not_judged_lines():  # young assets: too few days, not failures
        console.print(f"note: {line}", markup=False, highlight=False)
    lines = result.failure_lines()
    if lines:  # last, so that a person reading the end of the log sees what was left out
        console.print(f"Completed with failures ({len(lines)}), left out of selection and "
                      "publishing:", style="bold yellow")
        for line in lines:  # reasons hold brackets: no markup
            console.print(f"  {line}", style="yellow", markup=False, highlight=False)

"""The ``stress`` MLflow run: headline metrics, the tables and two plots.

Plots: the Monte Carlo distribution of protocol bad debt (VaR/ES 99% marked) and the
liquidation cascade of the worst historical scenario (collateral seized and bad debt per hour,
cumulated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np

from configs.schema import Config
from pipelines.stress.liquidation import Outcome
from serving.ops.tracking import log_context, metric_key, setup

if TYPE_CHECKING:
    from pipelines.stress.job import StressResult


def bad_debt_figure(out: Outcome, var99: float, es99: float) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    x = out.bad_debt / 1e6
    ax.hist(x, bins=60, color="0.6")
    ax.axvline(var99 / 1e6, color="C1", label=f"VaR99 {var99 / 1e6:,.2f}M")
    ax.axvline(es99 / 1e6, color="C3", label=f"ES99 {es99 / 1e6:,.2f}M")
    ax.set_yscale("log")
    ax.set_xlabel("protocol bad debt per path (USD million)")
    ax.set_ylabel("paths")
    ax.set_title(f"Joint FHS, {len(x):,} paths: P(bad debt > 0) = {(x > 0).mean():.2%}")
    ax.legend()
    fig.tight_layout()
    return fig


def cascade_figure(name: str, out: Outcome) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(len(out.seized_by_step))
    ax.plot(steps, np.cumsum(out.seized_by_step) / 1e6, label="collateral seized")
    ax.plot(steps, np.cumsum(out.bad_debt_by_step) / 1e6, label="bad debt")
    ax.set_xlabel("hours into the scenario (execution time)")
    ax.set_ylabel("cumulative USD million")
    ax.set_title(f"Liquidation cascade: {name}")
    ax.legend()
    fig.tight_layout()
    return fig


def log_stress(cfg: Config, result: StressResult) -> str:
    """Log one ``stress`` run; returns its run id."""
    setup(cfg)
    doc = result.summary
    with mlflow.start_run(run_name="stress") as run:
        log_context(cfg, "stress", {"stress.as_of": doc["as_of"],
                                    "stress.book": doc["book"]["source"]})
        mlflow.log_params({"accounts": doc["book"]["accounts"],
                           "scenarios": len(doc["scenarios"]),
                           "mc_paths": cfg.stress.mc_paths,
                           "parameters": doc["parameters"]["path"]})
        for item in doc["scenarios"]:
            mlflow.log_metric(metric_key(f"bad_debt_usd.{item['scenario']}"),
                              item["bad_debt_usd"])
        mc = doc["monte_carlo"]
        if mc:
            mlflow.log_metrics({k: v for k, v in mc.items() if k != "paths"})
        mlflow.log_metric("worst_standard_bad_debt_share", doc["worst_standard_bad_debt_share"])
        frame = result.table.to_pandas()
        mlflow.log_text(frame.to_csv(index=False), "stress/stress.csv")
        mlflow.log_text(frame.to_markdown(index=False, floatfmt=",.0f"), "stress/stress.md")
        mlflow.log_dict(doc, "stress/stress_summary.json")
        if result.path is not None:
            mlflow.set_tag("stress.path", str(result.path))
        fhs = next((s for s in result.scenarios if s.kind == "monte_carlo"), None)
        if fhs is not None and mc:
            fig = bad_debt_figure(result.outcomes[fhs.name], mc["bad_debt_var99"],
                                  mc["bad_debt_es99"])
            mlflow.log_figure(fig, "stress/bad_debt_distribution.png")
            plt.close(fig)
        worst = doc.get("worst_historical")
        if worst:
            fig = cascade_figure(worst, result.outcomes[worst])
            mlflow.log_figure(fig, "stress/worst_cascade.png")
            plt.close(fig)
        return run.info.run_id

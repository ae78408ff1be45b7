"""Plots of the forecast comparison (matplotlib, Agg; figures returned, nothing written)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def forecast_vs_realized(scores: pd.DataFrame, asset: str, horizon: int = 1) -> Figure:
    """Each model's forecast volatility against the realized proxy (annualised %)."""
    g = scores[(scores["asset"] == asset) & (scores["horizon_days"] == horizon)]
    fig, ax = plt.subplots(figsize=(10, 3.6))
    scale = 100 * (365 / horizon) ** 0.5
    first = g[g["model"] == g["model"].iloc[0]].sort_values("cutoff")
    ax.plot(first["cutoff"], first["realized"] ** 0.5 * scale, lw=0.5, color="0.6",
            label="realized (proxy)")
    for model, m in g.groupby("model"):
        m = m.sort_values("cutoff")
        ax.plot(m["cutoff"], m["variance"] ** 0.5 * scale, lw=1.0, label=model)
    ax.set_ylabel("volatility, annualised %")
    ax.set_title(f"{asset}: {horizon}-day forecast vs realized")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    plt.close(fig)
    return fig


def loss_over_time(scores: pd.DataFrame, horizon: int = 1, window: int = 90) -> Figure:
    """Rolling mean QLIKE per model (averaged over assets) — where each model wins or loses."""
    g = scores[scores["horizon_days"] == horizon]
    daily = g.groupby(["model", "cutoff"])["qlike"].mean().unstack(0).sort_index()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    daily.rolling(window, min_periods=window // 2).mean().plot(ax=ax, lw=1.0)
    ax.set_ylabel(f"QLIKE, {window}-day mean")
    ax.set_title(f"Out-of-sample loss over time, h={horizon}")
    fig.tight_layout()
    plt.close(fig)
    return fig

"""Plots of the policy backtest (matplotlib, Agg; figures returned, nothing written here)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def margin_path_figures(path: pd.DataFrame) -> dict[str, Figure]:
    """Per asset: MMF and IMF over time, the realized covered loss, breaches marked."""
    figures = {}
    for asset, g in path.groupby("asset", sort=True):
        g = g.sort_values("date")
        fig, ax = plt.subplots(figsize=(10, 3.6))
        ax.plot(g["date"], g["loss_frac"], lw=0.6, color="0.6", label="realized worst loss")
        ax.plot(g["date"], g["mmf"], lw=1.2, color="tab:blue", label="MMF")
        ax.plot(g["date"], g["imf"], lw=1.0, color="tab:green", label="IMF")
        hits = g[g["breach"].fillna(False).astype(bool)]
        ax.scatter(hits["date"], hits["loss_frac"], color="tab:red", s=14, zorder=3,
                   label=f"breach ({len(hits)})")
        ax.set_title(f"{asset}: margin vs the worst liquidation-delay loss of the next interval")
        ax.set_ylabel("fraction of collateral value")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        figures[str(asset)] = fig
        plt.close(fig)
    return figures

"""Figures of the feature panel, for MLflow artifacts. Pure: each function returns a
:class:`matplotlib.figure.Figure` drawn on the Agg canvas — no pyplot state, no file I/O; the
caller saves or logs it (``mlflow.log_figure(fig, "features/rv_vs_dvol_BTC.png")``).

Volatilities are shown annualised in percent, :math:`100\\sqrt{365\\,v}` for a daily variance
:math:`v` (DVOL's own convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from features.macro import MACRO_FACTORS


def _figure(height: float = 4.0) -> tuple[Figure, object]:
    fig = Figure(figsize=(10, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas: savefig works without pyplot
    return fig, fig.add_subplot()


def _asset(panel: pd.DataFrame, asset: str) -> pd.DataFrame:
    if asset not in panel.index.get_level_values("asset"):
        raise KeyError(f"asset {asset!r} not in the panel")
    return panel.xs(asset, level="asset")


def vol_ann_pct(variance: pd.Series) -> pd.Series:
    """Daily decimal² variance → annualised volatility in percent."""
    return 100.0 * np.sqrt(365.0 * variance)


def rv_vs_dvol(panel: pd.DataFrame, asset: str) -> Figure:
    """Trailing 30-day realized vol against the DVOL implied vol of ``asset``.

    The gap between the lines is the variance risk premium (``vrp``); the DVOL line is absent
    before 2021-03-24 and marked as the market's index where the asset has none.
    """
    f = _asset(panel, asset)
    fig, ax = _figure()
    ax.plot(f.index, vol_ann_pct(f["har_rv_30d"]), lw=0.9, label="realized, 30-day mean")
    own = bool(f["dvol_is_own"].any())
    label = "DVOL (own)" if own else "DVOL (market: BTC)"
    ax.plot(f.index, vol_ann_pct(f["dvol_var_1d"]), lw=0.9, label=label)
    proxy = ~f["rv_is_hourly"].astype(bool)
    if proxy.all():
        ax.set_title(f"{asset}: realized (Garman-Klass proxy) vs implied volatility")
    else:
        ax.set_title(f"{asset}: realized (hourly RV) vs implied volatility")
    ax.set_ylabel("annualised vol, %")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return fig


def rolling_correlations(
    panel: pd.DataFrame, asset: str, window_days: int = 30,
    factors: Sequence[str] = tuple(MACRO_FACTORS),
) -> Figure:
    """Rolling macro correlations of ``asset`` (``corr_{factor}_{window}d``) and, when present,
    the basket's average correlation."""
    f = _asset(panel, asset)
    fig, ax = _figure()
    for stem in factors:
        col = f"corr_{stem}_{window_days}d"
        if col in f.columns:
            ax.plot(f.index, f[col], lw=0.8, label=stem.upper())
    basket = f"basket_corr_{window_days}d"
    if basket in f.columns:
        ax.plot(f.index, f[basket], lw=1.2, color="black", label="crypto basket")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_ylim(-1, 1)
    ax.set_title(f"{asset}: {window_days}-day rolling correlations (macro lagged to publication)")
    ax.set_ylabel("correlation")
    ax.legend(loc="lower left", ncol=4, fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def worst_losses(panel: pd.DataFrame, asset: str) -> Figure:
    """The worst liquidation-delay loss per interval (long and short), proxy days marked."""
    f = _asset(panel, asset)
    fig, ax = _figure()
    ax.plot(f.index, 100 * f["worst_loss_long"], lw=0.7, label="long")
    ax.plot(f.index, -100 * f["worst_loss_short"], lw=0.7, label="short (negated)")
    proxy = f["worst_loss_is_proxy"].astype(bool)
    if proxy.any():
        ax.scatter(f.index[proxy], 100 * f.loc[proxy, "worst_loss_long"], s=4, color="red",
                   label="daily-range proxy", zorder=3)
    ax.set_title(f"{asset}: worst liquidation-delay loss per update interval")
    ax.set_ylabel("log loss, %")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return fig

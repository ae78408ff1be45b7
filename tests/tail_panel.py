"""A simulated panel with covered-loss columns, for the tail-model tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import feature_view
from tests.simulate import simulate_panel


def tail_panel(assets: tuple[str, ...] = ("AAA", "BBB"), n_days: int = 900,
               seed: int = 5) -> pd.DataFrame:
    """``simulate_panel`` + worst-loss columns: a day's worst 1-hour loss is its adverse
    close-to-close move plus a heavy-tailed intraday excursion scaled by the day's σ."""
    panel = feature_view(simulate_panel(assets, n_days=n_days, seed=seed))
    rng = np.random.default_rng(seed)
    r = panel["ret_1d"].to_numpy()
    sigma = np.sqrt(panel["gk_var"].to_numpy())
    extra = sigma * np.abs(rng.standard_t(4, size=(2, len(panel)))) * 0.4
    panel["worst_loss_long"] = np.maximum(-r, 0.0) * 0.6 + extra[0]
    panel["worst_loss_short"] = np.maximum(r, 0.0) * 0.6 + extra[1]
    panel["worst_loss_long_intrabar"] = panel["worst_loss_long"] * 1.1
    panel["worst_loss_short_intrabar"] = panel["worst_loss_short"] * 1.1
    panel["worst_loss_is_proxy"] = False
    return panel


def rv_sigma(panel: pd.DataFrame) -> pd.DataFrame:
    """A seeded σ forecast known at each cutoff: the trailing 7-day mean RV, from day 30
    (the forecast frame columns the policy replay reads)."""
    v = panel["har_rv_7d"].rename("variance").reset_index()
    v = v.rename(columns={"date": "cutoff"}).assign(horizon_days=1)
    return v[v["cutoff"] >= v["cutoff"].min() + pd.Timedelta(days=30)].reset_index(drop=True)

"""Hand-made policy paths for the protocol's tests: seeded daily losses under a given margin,
with the outcomes the backtest computes (:func:`pipelines.policy_eval.backtest.with_outcomes`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipelines.policy_eval.backtest import with_outcomes


def margin_path(dates: pd.DatetimeIndex, mmf: float | np.ndarray, seed: int = 1,
                assets: Sequence[str] = ("A", "B")) -> pd.DataFrame:
    """Log losses ~ |N(0, 4%)| per asset (one generator, assets in order) under ``mmf`` (a
    number, or one per date), IMF = 1.25 MMF, LB 1.05, LT and LTV from the lending view."""
    rng = np.random.default_rng(seed)
    blocks = []
    for asset in assets:
        n = len(dates)
        margin = np.broadcast_to(np.asarray(mmf, dtype=float), (n,))
        blocks.append(pd.DataFrame({
            "asset": asset, "date": dates, "loss_next": np.abs(rng.normal(0, 0.04, n)),
            "short_loss_next": 0.0, "liquidity_addon": 0.0, "mmf": margin,
            "imf": margin * 1.25, "lb": 1.05}))
    out = pd.concat(blocks, ignore_index=True)
    out["lt"], out["ltv"] = (1 - out["mmf"]) / 1.05, (1 - out["imf"]) / 1.05
    return with_outcomes(out)

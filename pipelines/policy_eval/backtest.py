"""Policy backtest: replay the margin policy on walk-forward forecasts over all history.

Every day ``t`` of the out-of-sample period, per asset, the policy publishes parameters from
what is known at the end of ``t`` (:func:`serving.decide.decide`, the function the batch job
runs); they are then held against the loss of the next interval, ``target_worst_loss_long``
(the worst liquidation-delay loss inside it). A **breach** is a loss beyond MMF; **bad debt**
is the part of the loss beyond the cushion ``1 - LT·LB`` (= MMF by construction here).

Pure: frames in, frames out.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from configs.schema import Config
from models.base import asset_frame
from serving.decide import PolicyState, decide
from serving.inputs import AssetHistory, asset_history, policy_inputs


def replay(h: AssetHistory, cfg: Config) -> Iterator[dict[str, object]]:
    """Published parameters and realized outcome for every cutoff of one asset."""
    u, hours = cfg.features.update_interval_days, float(cfg.features.liquidation_delay_hours)
    state: PolicyState | None = None
    for i in range(len(h.dates)):
        x = policy_inputs(h, i, u, hours, cfg.policy.fhs_window)
        params, state = decide(x, state, cfg.data.stale_after_days, cfg.policy)
        yield {"date": h.dates[i], **params.as_dict(),
               "loss_next": h.loss_next[i], "short_loss_next": h.short_loss_next[i]}


def policy_path(panel: pd.DataFrame, forecasts: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Daily published parameters and outcomes for every asset with forecasts."""
    blocks = []
    for asset in sorted(forecasts["asset"].unique()):
        h = asset_history(asset_frame(panel, asset), forecasts[forecasts["asset"] == asset], cfg)
        block = pd.DataFrame(list(replay(h, cfg)))
        block.insert(0, "asset", asset)
        blocks.append(block)
    return with_outcomes(pd.concat(blocks, ignore_index=True))


def with_outcomes(path: pd.DataFrame) -> pd.DataFrame:
    """Add realized loss fractions, breaches and bad debt (NaN where not yet realized).

    The realized loss of a liquidation is the worst price move over the delay **plus the
    slippage** of selling into the book (the liquidity add-on the policy charged), so a breach
    means the margin did not cover what a liquidation actually costs.
    """
    out = path.copy()
    slip = out["liquidity_addon"].fillna(0.0) if "liquidity_addon" in out else 0.0
    out["loss_frac"] = 1.0 - np.exp(-out["loss_next"].clip(lower=0.0)) + slip
    out["short_loss_frac"] = np.exp(out["short_loss_next"].clip(lower=0.0)) - 1.0 + slip
    known = out["loss_next"].notna()
    cushion = 1.0 - out["lt"] * out["lb"]
    out["breach"] = (out["loss_frac"] > out["mmf"]).where(known)
    out["breach_short"] = (out["short_loss_frac"] > out["mmf"]).where(
        out["short_loss_next"].notna())
    out["bad_debt"] = (out["loss_frac"] - cushion).clip(lower=0.0).where(known)
    return out


def static_path(path: pd.DataFrame, mmf: float, lt: float, lb: float, imf: float) -> pd.DataFrame:
    """A constant parameter set held against the same realized losses (same dates)."""
    out = path[["asset", "date", "loss_next", "short_loss_next"]].copy()
    out["mmf"], out["imf"], out["lt"], out["lb"] = mmf, imf, lt, lb
    out["ltv"] = (1.0 - imf) / lb
    return with_outcomes(out)

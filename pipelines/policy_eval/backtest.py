"""Policy backtest: replay the margin policy on walk-forward forecasts over all history.

Every day ``t`` of the out-of-sample period, per asset, the policy publishes parameters from
what is known at the end of ``t`` (:func:`serving.decide.decide`, the function the batch job
runs); they are then held against the loss of the next interval, ``target_worst_loss_long``
(the worst liquidation-delay loss inside it). A **breach** is a loss beyond MMF. **Bad debt**
of a position with debt ``D = k·C`` (``k`` = LT or max LTV) after a fall ``x``: the liquidator
repays debt for collateral at the bonus LB, so only ``C(1-x)/LB`` of the debt is covered and
the lender loses ``(k·LB - 1 + x)/LB = (x - cushion)/LB`` with ``cushion = 1 - k·LB``
(fractions of the collateral value; ``cushion = MMF`` for a position at LT by construction).

Pure: frames in, frames out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from configs.schema import Config
from models.base import asset_frame
from serving.decide import PolicyState, decide
from serving.inputs import AssetHistory, LossTerms, asset_history, policy_inputs
from serving.policy import PARAMETER_FIELDS


def replay(h: AssetHistory, cfg: Config, tail_var: np.ndarray | None = None,
           tail_es: np.ndarray | None = None, terms: LossTerms | None = None) -> pd.DataFrame:
    """Published parameters and realized outcome for every cutoff of one asset.

    With ``tail_var``/``tail_es`` (fractions of value, one per cutoff, NaN where missing) the
    direct tail forecast replaces the FHS tail where both are finite; ``tail_fallback`` marks
    the days that fell back to FHS. ``terms`` (of this history's realized losses) shares the
    stress ES and loss memory with the asset's other replays (:func:`policy_paths`).
    """
    u, hours = cfg.features.update_interval_days, float(cfg.features.liquidation_delay_hours)
    if terms is None:
        terms = LossTerms.of(h)
    else:
        terms.check(h)
    p = cfg.policy
    # the forecast-free terms of every day at once (None where the policy does not use them)
    stress = terms.stress_at(h.days, p).tolist() if p.stress_floor_weight > 0 else None
    memory = terms.memory_at(h.days, p.memory_half_life_days).tolist() \
        if p.memory_weight > 0 else None
    sigma_stress, sigma_long = h.sigma_terms(p.apc.stress_quantile)
    state: PolicyState | None = None
    rows, fallback = [], []
    for i in range(len(h.dates)):
        x = policy_inputs(h, i, u, hours, p.fhs_window, stress[i] if stress else None,
                          memory[i] if memory else None, sigma_stress[i], sigma_long[i])
        if tail_var is not None and tail_es is not None:
            direct = bool(np.isfinite(tail_var[i]) and np.isfinite(tail_es[i]))
            if direct:
                x = dataclasses.replace(x, tail_var=float(tail_var[i]), tail_es=float(tail_es[i]))
            fallback.append(not direct)
        params, state = decide(x, state, cfg.data.stale_after_days, cfg.policy)
        rows.append(params.as_dict())
    # the dates and outcomes are columns already: set whole, not boxed into every row's dict
    block = pd.DataFrame(rows, columns=list(PARAMETER_FIELDS))
    block.insert(0, "date", h.dates)
    if tail_var is not None:
        block["tail_fallback"] = np.array(fallback, dtype=bool)
    block["loss_next"], block["short_loss_next"] = h.loss_next, h.short_loss_next
    return block


def policy_path(panel: pd.DataFrame, forecasts: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Daily published parameters and outcomes for every asset with forecasts."""
    return policy_paths(panel, [(forecasts, cfg)])[0]


def policy_paths(panel: pd.DataFrame, items: Sequence[tuple[pd.DataFrame, Config]]
                 ) -> list[pd.DataFrame]:
    """:func:`policy_path` of each (forecasts, config), replayed asset by asset so that what
    does not depend on the forecast is computed once per asset for all of them: its feature
    rows, per covered-loss variant the stress ES and loss memory (:class:`LossTerms`), and
    per forecast frame its aligned history.
    Each path is the one its own call gives, rows in asset order."""
    # one grouping pass per distinct forecast frame (a forecaster's frame is shared by its
    # grid points), not a comparison of the whole forecast column per asset (quadratic)
    grouped: dict[int, dict[str, pd.DataFrame]] = {}
    for fc, _ in items:
        if id(fc) not in grouped:
            grouped[id(fc)] = {str(a): g for a, g in
                               fc.groupby("asset", sort=True, observed=True)}
    blocks: list[list[pd.DataFrame]] = [[] for _ in items]
    for asset in sorted(set().union(*grouped.values())):
        frame = asset_frame(panel, asset)
        shared: dict[str, LossTerms] = {}  # by covered-loss variant
        # one history per forecast frame and the settings it reads (a forecaster's grid
        # points at other confidence levels replay the same history)
        histories: dict[tuple[int, int, str, int], AssetHistory] = {}
        for k, (fc, cfg) in enumerate(items):
            mine = grouped[id(fc)].get(asset)
            if mine is None:
                continue
            key = (id(fc), cfg.features.update_interval_days, cfg.policy.loss,
                   cfg.policy.liquidity.adv_window)
            h = histories.get(key)
            if h is None:
                h = histories[key] = asset_history(frame, mine, cfg)
            if not len(h.dates):  # no forecast at the update interval: nothing to publish
                continue
            terms = shared.get(cfg.policy.loss)
            if terms is None:
                terms = shared[cfg.policy.loss] = LossTerms.of(h)
            block = replay(h, cfg, terms=terms)
            block.insert(0, "asset", asset)
            blocks[k].append(block)
    return [_path(b) for b in blocks]


def _path(blocks: list[pd.DataFrame]) -> pd.DataFrame:
    if not blocks:  # no asset has a forecast at the update interval: an empty path
        columns = ["asset", "date", *PARAMETER_FIELDS, "loss_next", "short_loss_next"]
        return with_outcomes(pd.DataFrame(columns=columns))
    return with_outcomes(pd.concat(blocks, ignore_index=True))


def with_outcomes(path: pd.DataFrame) -> pd.DataFrame:
    """Add realized loss fractions, breaches and bad debt (NaN where not yet realized).

    The realized loss ``x`` is the worst price move over the liquidation delay inside the next
    interval. The slippage of selling into the book is the liquidator's cost and is paid out
    of the liquidation bonus (LB prices it: :func:`serving.policy.liquidity_addon`), so it is
    not added to ``x`` again — charging it in both places is the double count the policy
    removed. A liquidator repays D and takes D·LB of collateral, so the lender loses once
    ``x > 1 − LT·LB`` (the cushion, equal to MMF when LT = (1 − MMF)/LB), by
    ``(x − cushion)/LB`` per unit of collateral.
    """
    out = path.copy()
    out["loss_frac"] = 1.0 - np.exp(-out["loss_next"].clip(lower=0.0))
    out["short_loss_frac"] = np.exp(out["short_loss_next"].clip(lower=0.0)) - 1.0
    known = out["loss_next"].notna()
    cushion = 1.0 - out["lt"] * out["lb"]
    out["breach"] = (out["loss_frac"] > out["mmf"]).where(known)
    out["breach_short"] = (out["short_loss_frac"] > out["mmf"]).where(
        out["short_loss_next"].notna())
    out["bad_debt_lt"] = ((out["loss_frac"] - cushion) / out["lb"]).clip(lower=0.0).where(known)
    cushion_ltv = 1.0 - out["ltv"] * out["lb"]
    out["bad_debt_ltv"] = ((out["loss_frac"] - cushion_ltv) / out["lb"]).clip(
        lower=0.0).where(known)
    out["capital"] = 1.0 - out["ltv"]  # what a borrower at max LTV gives up
    return out


def static_path(path: pd.DataFrame, mmf: float | np.ndarray, lt: float | np.ndarray,
                lb: float | np.ndarray, imf: float | np.ndarray,
                slippage: float | np.ndarray = 0.0) -> pd.DataFrame:
    """A given parameter set (constant or one value per row) held against the same realized
    losses (same dates); ``slippage`` is the liquidity add-on its liquidations pay."""
    out = path[["asset", "date", "loss_next", "short_loss_next"]].copy()
    out["mmf"], out["imf"], out["lt"], out["lb"] = mmf, imf, lt, lb
    out["ltv"] = (1.0 - out["imf"]) / out["lb"]
    out["liquidity_addon"] = slippage
    return with_outcomes(out)


def at_lb(path: pd.DataFrame, lb: float) -> pd.DataFrame:
    """The same margins with the liquidation bonus held at ``lb`` (for comparisons with a
    venue whose LB is fixed): LT = (1 - MMF)/LB, LTV = (1 - IMF)/LB, outcomes recomputed."""
    out = path.copy()
    out["lb"] = lb
    out["lt"], out["ltv"] = (1.0 - out["mmf"]) / lb, (1.0 - out["imf"]) / lb
    return with_outcomes(out)

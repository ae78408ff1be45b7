"""One policy update for one asset: fail-safes → risk-based targets → parameter roles.

Pure: the same function runs in the batch job (one as-of) and in the policy backtest (every
day of history, in a loop that threads the returned state into the next call), so the
backtest measures exactly what is served.

Order of decisions, each recorded in ``reason``:

1. **Fail-safe** on the inputs: stale data, a non-finite or non-positive forecast, an invalid
   direct tail forecast, or an implausible jump (σ up ``jump_ratio``-fold in a day while the
   close moved less than ``jump_price_z`` previous σ: a bad print, not a market move).
   Action: **freeze** (:func:`serving.roles.freeze`): LTV 0, LT and LB held, flagged.
2. **Risk-based targets** (:func:`risk_parameters`, :mod:`serving.policy`): MMF* = max(tail,
   stress floor, loss memory) within [floor, cap], IMF* with anti-procyclicality, LB* pricing
   the liquidation, LT* = (1 - MMF*)/LB*, LTV* = (1 - IMF*)/LB*.
3. **Parameter roles** (:func:`serving.roles.apply_roles`): LTV/IMF follow the target; LT/LB
   (and MMF) move only by announced, rate-limited changes after a notice.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np

from configs.schema import PolicyConfig
from serving.policy import (
    Parameters,
    check_invariants,
    fraction_lost,
    initial_margin,
    lending_view,
    liquidation_bonus,
    liquidity_addon,
    loss_memory,
    mmf_for,
    sigma_terms,
    standardized_tail,
    stress_es,
)
from serving.roles import (  # re-exported: callers import the policy from here
    STATE_COLUMNS,
    PendingChange,
    PolicyState,
    apply_roles,
    freeze,
    state_columns,
    state_from_row,
)

__all__ = ["STATE_COLUMNS", "PendingChange", "PolicyInputs", "PolicyState", "apply_roles",
           "decide", "failsafe_reason", "freeze", "risk_parameters", "state_columns",
           "state_from_row"]


@dataclass(frozen=True)
class PolicyInputs:
    """Everything one update needs, all known at the end of ``as_of``."""

    as_of: dt.date
    variance: float                 # forecast variance of the interval (daily decimal²)
    variance_prev: float            # yesterday's forecast, for the jump check (NaN if none)
    ret_today: float                # log return of day ``as_of``
    z_window: np.ndarray            # standardized covered losses known by ``as_of``
    sigma_history: np.ndarray       # past σ forecasts (stress and long-run terms)
    adv_usd: float                  # average daily dollar volume, window ending ``as_of - 1``
    loss_is_proxy: bool = False     # covered loss measured by the daily-range proxy
    data_age_days: int = 0          # days since the last price
    hours: float = 1.0              # liquidation delay H
    # realized covered log losses known by ``as_of`` (oldest first) and their age in days at
    # ``as_of`` (0: the interval that ended on ``as_of``): stress floor and loss memory
    loss_history: np.ndarray = field(default_factory=lambda: np.empty(0))
    loss_age_days: np.ndarray = field(default_factory=lambda: np.empty(0))
    # optional direct tail forecast of the covered loss at ``confidence`` (fractions of value,
    # both or neither): replaces the FHS tail, e.g. from an EVT or quantile model
    tail_var: float | None = None
    tail_es: float | None = None
    # the unweighted stress ES and loss memory of ``loss_history`` at ``as_of`` when the caller
    # has them already (a replay computes them once per asset and day for all its candidates:
    # :class:`serving.inputs.LossTerms`); None: computed here from ``loss_history``
    stress_es: float | None = None
    loss_memory: float | None = None
    # likewise the σ_stress and σ_long of ``sigma_history`` (:func:`serving.policy.sigma_terms`
    # at ``apc.stress_quantile``; a forecaster's replays at every confidence share them)
    sigma_stress: float | None = None
    sigma_long: float | None = None


def failsafe_reason(x: PolicyInputs, stale_after_days: int, cfg: PolicyConfig) -> str | None:
    """Why the inputs cannot be trusted, or None."""
    if x.data_age_days > stale_after_days:
        return f"stale data: last price {x.data_age_days} days old"
    if not (math.isfinite(x.variance) and x.variance > 0):
        return f"invalid variance forecast {x.variance!r}"
    if (x.tail_var is None) != (x.tail_es is None):
        return "direct tail forecast needs both VaR and ES"
    if x.tail_var is not None and x.tail_es is not None \
            and not 0.0 <= x.tail_var <= x.tail_es < 1.0:
        return f"invalid tail forecast VaR {x.tail_var!r} ES {x.tail_es!r}"
    prev = x.variance_prev
    if math.isfinite(prev) and prev > 0:
        jump = math.sqrt(x.variance / prev)
        moved = abs(x.ret_today) if math.isfinite(x.ret_today) else math.inf
        if jump > cfg.failsafe.jump_ratio and moved < cfg.failsafe.jump_price_z * math.sqrt(prev):
            return (f"implausible jump: σ ×{jump:.1f} in a day with |return| {moved:.4f} "
                    f"< {cfg.failsafe.jump_price_z}·σ_prev")
    return None


def _tail_z(x: PolicyInputs, sigma: float, cfg: PolicyConfig) -> tuple[float, float, str]:
    """Standardized (VaR, ES) of the covered loss: the direct forecast when given, expressed
    as ``-log(1 - tail)/σ`` so that it scales with σ like the FHS tail, else FHS."""
    if x.tail_var is not None and x.tail_es is not None:
        return (-math.log1p(-x.tail_var) / sigma, -math.log1p(-x.tail_es) / sigma,
                "direct tail forecast")
    return standardized_tail(x.z_window, cfg)


def risk_parameters(
    x: PolicyInputs, cfg: PolicyConfig, prev_imf: float = math.nan
) -> Parameters:
    """Risk-based targets (no fail-safe, no roles); ``prev_imf`` is the last published IMF,
    which the exhaustible APC buffer needs.

    .. math:: \\mathrm{MMF}^* = \\mathrm{clip}(\\max(\\mathrm{tail},\\ w_s\\,\\mathrm{stress},
              \\ w_m\\,\\mathrm{memory}),\\ \\text{floor},\\ \\text{cap})
    """
    sigma = math.sqrt(x.variance)
    var_z, es_z, note = _tail_z(x, sigma, cfg)
    addon = liquidity_addon(sigma, x.adv_usd, cfg)
    tail = mmf_for(sigma, es_z, var_z, cfg)
    stress = memory = math.nan
    if cfg.stress_floor_weight > 0:
        es = x.stress_es if x.stress_es is not None else stress_es(
            x.loss_history, x.loss_age_days, cfg)
        stress = cfg.stress_floor_weight * es
    if cfg.memory_weight > 0:
        mem = x.loss_memory if x.loss_memory is not None else loss_memory(
            x.loss_history, x.loss_age_days, cfg.memory_half_life_days)
        memory = cfg.memory_weight * mem
    raw = max([tail] + [v for v in (stress, memory) if math.isfinite(v)])
    mmf = min(max(raw, cfg.mmf_floor), cfg.mmf_cap)
    if x.sigma_stress is not None and x.sigma_long is not None:
        sigma_stress, sigma_long = x.sigma_stress, x.sigma_long
    else:
        sigma_stress, sigma_long = sigma_terms(x.sigma_history, cfg.apc.stress_quantile)
    if math.isfinite(sigma_stress):
        mmf_stress = min(mmf_for(sigma_stress, es_z, var_z, cfg), cfg.mmf_cap)
        mmf_long = min(mmf_for(sigma_long, es_z, var_z, cfg), cfg.mmf_cap)
    else:
        mmf_stress = mmf_long = math.nan
    imf = initial_margin(mmf, mmf_stress, mmf_long, cfg, prev_imf)
    lb = liquidation_bonus(sigma, addon, x.hours, cfg)
    view = lending_view(mmf, imf, lb)
    notes = [note]
    if raw > tail and math.isfinite(stress) and raw == stress:
        notes.append(f"stress floor {stress:.4f} binds")
    elif raw > tail:
        notes.append(f"loss memory {memory:.4f} binds")
    clamped = not math.isclose(mmf, raw, abs_tol=1e-15)
    if clamped:
        notes.append(f"MMF {raw:.4f} clamped to {'floor' if raw < mmf else 'cap'} {mmf:.4f}")
    if x.loss_is_proxy:
        notes.append("covered loss from the daily-range proxy")
    p = Parameters(sigma_1d=sigma, variance_1d=x.variance,
                   loss_var=fraction_lost(var_z * sigma), loss_es=fraction_lost(es_z * sigma),
                   loss_level=cfg.confidence, stress_floor=stress, loss_memory=memory,
                   target_mmf=mmf, liquidity_addon=addon, mmf=mmf, **view,
                   flag_clamped=clamped, flag_proxy=x.loss_is_proxy,
                   reason="; ".join(filter(None, notes)))
    check_invariants(p, cfg)
    return p


def decide(
    x: PolicyInputs, state: PolicyState | None, stale_after_days: int, cfg: PolicyConfig
) -> tuple[Parameters, PolicyState]:
    """The published parameters for one asset and update, and the state to carry forward.

    Call it in a loop over history, passing each returned state to the next call; ``None``
    means nothing was published before.
    """
    why = failsafe_reason(x, stale_after_days, cfg)
    if why is not None:
        return freeze(state, f"fail-safe: {why}", cfg, stale=why.startswith("stale"),
                      hours=x.hours)
    prev_imf = state.published.imf if state is not None and not state.conservative else math.nan
    return apply_roles(risk_parameters(x, cfg, prev_imf), state, x.as_of, cfg)

"""One policy update for one asset: risk parameters → fail-safes → guardrails → published.

Pure: the same function runs in the batch job (one as-of) and in the policy backtest (every
day of history), so the backtest measures exactly what is served.

Order of decisions, each recorded in ``reason``:

1. **Fail-safe** on the inputs: stale data, a non-finite or non-positive forecast, a missing
   forecast, or an implausible jump (σ up ``jump_ratio``-fold in a day while the close moved
   less than ``jump_price_z`` previous σ: a bad print, not a market move). Action: keep the
   previous parameters, or the conservative static set when there are none (or by config).
2. **Risk parameters** from the forecast (:mod:`serving.policy`).
3. **Guardrails** against the previous published set: tightening applies at once; loosening
   is limited to ``min(abs_step, rel_step × previous)`` per update and to one loosening every
   ``loosen_min_days``; changes smaller than ``deadband`` are not published.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace

import numpy as np

from configs.schema import PolicyConfig
from serving.policy import (
    Parameters,
    check_invariants,
    conservative_parameters,
    fraction_lost,
    initial_margin,
    lending_view,
    liquidity_addon,
    mmf_for,
    quantile_higher,
    standardized_tail,
)


@dataclass(frozen=True)
class PolicyInputs:
    """Everything one update needs, all known at the end of ``as_of``."""

    as_of: dt.date
    variance: float                 # forecast variance of the interval (daily decimal²)
    variance_prev: float            # yesterday's forecast, for the jump check (NaN if none)
    ret_today: float                # log return of day ``as_of``
    z_window: np.ndarray            # standardized covered losses known by ``as_of``
    sigma_history: np.ndarray       # past σ forecasts (stress and long-run terms)
    adv_usd: float                  # average daily dollar volume
    loss_is_proxy: bool = False     # covered loss measured by the daily-range proxy
    data_age_days: int = 0          # days since the last price
    hours: float = 1.0              # liquidation delay H
    recent_losses: np.ndarray = field(default_factory=lambda: np.empty(0))  # realized covered
    #                                 log losses of the last intervals, oldest first


@dataclass(frozen=True)
class PolicyState:
    """What an update remembers: the published set and when it last loosened."""

    published: Parameters
    last_loosened: dt.date | None = None
    conservative: bool = False  # the published set is the static fail-safe one



def failsafe_reason(x: PolicyInputs, stale_after_days: int, cfg: PolicyConfig) -> str | None:
    """Why the inputs cannot be trusted, or None."""
    if x.data_age_days > stale_after_days:
        return f"stale data: last price {x.data_age_days} days old"
    if not (math.isfinite(x.variance) and x.variance > 0):
        return f"invalid variance forecast {x.variance!r}"
    prev = x.variance_prev
    if math.isfinite(prev) and prev > 0:
        jump = math.sqrt(x.variance / prev)
        moved = abs(x.ret_today) if math.isfinite(x.ret_today) else math.inf
        if jump > cfg.failsafe.jump_ratio and moved < cfg.failsafe.jump_price_z * math.sqrt(prev):
            return (f"implausible jump: σ ×{jump:.1f} in a day with |return| {moved:.4f} "
                    f"< {cfg.failsafe.jump_price_z}·σ_prev")
    return None


def risk_parameters(
    x: PolicyInputs, cfg: PolicyConfig, prev_imf: float = math.nan
) -> Parameters:
    """Parameters from the forecast (no fail-safe, no guardrail); ``prev_imf`` is the last
    published IMF, which the exhaustible APC buffer needs."""
    sigma = math.sqrt(x.variance)
    var_z, es_z, note = standardized_tail(x.z_window, cfg)
    addon = liquidity_addon(sigma, x.adv_usd, cfg)
    raw = mmf_for(sigma, es_z, var_z, addon, cfg)
    recent = np.asarray(x.recent_losses, float)
    recent = recent[np.isfinite(recent)][-cfg.recent_loss_days:] if cfg.recent_loss_days else []
    if len(recent):
        # CCP-style floor: after a crash day the next margin covers at least that loss
        raw = max(raw, cfg.recent_loss_weight * fraction_lost(float(np.max(recent))) + addon)
    mmf = min(max(raw, cfg.mmf_floor), cfg.mmf_cap)
    hist = np.asarray(x.sigma_history, float)
    hist = hist[np.isfinite(hist) & (hist > 0)]
    if len(hist):
        sigma_stress = quantile_higher(hist, cfg.apc.stress_quantile)
        sigma_long = float(np.sqrt(np.mean(hist**2)))
        mmf_stress = min(mmf_for(sigma_stress, es_z, var_z, addon, cfg), cfg.mmf_cap)
        mmf_long = min(mmf_for(sigma_long, es_z, var_z, addon, cfg), cfg.mmf_cap)
    else:
        mmf_stress = mmf_long = math.nan
    imf = initial_margin(mmf, mmf_stress, mmf_long, cfg, prev_imf)
    view = lending_view(mmf, imf, sigma, addon, x.hours, cfg)
    notes = [note]
    clamped = not math.isclose(mmf, raw, abs_tol=1e-15)
    if clamped:
        notes.append(f"MMF {raw:.4f} clamped to {'floor' if raw < mmf else 'cap'} {mmf:.4f}")
    if x.loss_is_proxy:
        notes.append("covered loss from the daily-range proxy")
    p = Parameters(sigma_1d=sigma, variance_1d=x.variance, var_99=fraction_lost(var_z * sigma),
                   es_99=fraction_lost(es_z * sigma), liquidity_addon=addon, mmf=mmf, **view,
                   flag_clamped=clamped, flag_proxy=x.loss_is_proxy,
                   reason="; ".join(filter(None, notes)))
    check_invariants(p, cfg)
    return p


def _limited(new: float, old: float, cfg: PolicyConfig) -> float:
    g = cfg.guardrails
    return max(new, old - min(g.loosen_abs_step, g.loosen_rel_step * old))


def apply_guardrails(
    proposed: Parameters, state: PolicyState | None, as_of: dt.date, cfg: PolicyConfig,
    hours: float = 1.0,
) -> tuple[Parameters, PolicyState]:
    """Limit loosening, drop sub-deadband changes; tightening passes at once."""
    g = cfg.guardrails
    if state is None or not g.enabled or state.conservative:
        # Coming back from the static fail-safe set is not "loosening" a risk-based margin:
        # rate-limiting it would pin a recovered asset at 50% for months.
        return proposed, PolicyState(proposed, None)
    prev = state.published
    d_mmf, d_imf = proposed.mmf - prev.mmf, proposed.imf - prev.imf
    if abs(d_mmf) < g.deadband and abs(d_imf) < g.deadband:
        held = replace(prev, flag_held=True, flag_fallback=False, flag_stale=False,
                       reason=f"change below deadband {g.deadband}: previous kept")
        return held, state
    loosening = d_mmf < 0 or d_imf < 0
    if not loosening:
        return proposed, PolicyState(proposed, state.last_loosened)
    waited = state.last_loosened is None or (as_of - state.last_loosened).days >= g.loosen_min_days
    if not waited:
        mmf, imf = max(proposed.mmf, prev.mmf), max(proposed.imf, prev.imf)
        why = f"loosening held: last loosening {state.last_loosened}, min {g.loosen_min_days}d"
    else:
        mmf = max(_limited(proposed.mmf, prev.mmf, cfg), proposed.mmf)
        imf = max(_limited(proposed.imf, prev.imf, cfg), proposed.imf)
        why = "loosening rate-limited" if (mmf, imf) != (proposed.mmf, proposed.imf) else ""
    imf = max(imf, mmf * (1 + 1e-9))
    view = lending_view(mmf, imf, proposed.sigma_1d, proposed.liquidity_addon, hours, cfg)
    out = proposed.with_reason(why, mmf=mmf, **view, flag_held=bool(why))
    check_invariants(out, cfg)
    loosened = out.mmf < prev.mmf or out.imf < prev.imf
    return out, PolicyState(out, as_of if loosened else state.last_loosened)


def decide(
    x: PolicyInputs, state: PolicyState | None, stale_after_days: int, cfg: PolicyConfig
) -> tuple[Parameters, PolicyState]:
    """The published parameters for one asset and update, and the state to carry forward."""
    why = failsafe_reason(x, stale_after_days, cfg)
    if why is not None:
        stale = why.startswith("stale")
        if state is not None and cfg.failsafe.action == "keep_previous" and not stale:
            kept = replace(state.published, flag_fallback=True, flag_held=False,
                           reason=f"fail-safe, previous kept: {why}")
            return kept, state
        fallback = conservative_parameters(cfg, f"fail-safe: {why}", stale=stale, hours=x.hours)
        return fallback, PolicyState(fallback, None, conservative=True)
    prev_imf = state.published.imf if state is not None and not state.conservative else math.nan
    return apply_guardrails(risk_parameters(x, cfg, prev_imf), state, x.as_of, cfg, x.hours)

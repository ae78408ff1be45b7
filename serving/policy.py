"""The margin policy: forecast volatility → maintenance/initial margin and lending parameters.

Pure functions of (forecast σ, trailing standardized losses, config). First cut: the loss to
cover is the **one-day** log loss of a long collateral position; its distribution is obtained
by filtered historical simulation (Barone-Adesi et al., 1999; Hull & White, 1998): past losses
are divided by the σ that was forecast for them *out of sample*, and the empirical tail of those
standardized losses is rescaled by today's σ.

.. math::
    z_s = -r_{s+1} / \\hat\\sigma_s, \\qquad
    \\mathrm{ES}_q = \\hat\\sigma_T \\, \\mathrm{E}[z \\mid z \\ge \\mathrm{VaR}_q(z)], \\qquad
    \\mathrm{MMF} = 1 - e^{-\\mathrm{ES}_q}

The log loss is mapped to a fraction of collateral value (``1 - e^{-L}``) because a margin is a
fraction of value, and the map is exact for a price drop of ``L`` in log terms.

Lending view: liquidation threshold ``LT = 1 - MMF``, max loan-to-value ``LTV = 1 - IMF``,
liquidation bonus ``LB``; invariants ``LTV < LT`` and ``LT · LB <= 1`` (a liquidator's bonus can
never exceed the collateral left) are enforced and checked. Perp view: ``max_leverage = 1/IMF``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipelines.config import PolicyConfig

STUDENT_T_DOF = 4.0  # heavy tail used when the FHS window is too short to trust its tail


@dataclass(frozen=True)
class Parameters:
    """One asset's published parameters for one update (fractions of collateral value)."""

    sigma_1d: float
    variance_1d: float
    var_99: float
    es_99: float
    mmf: float
    imf: float
    lt: float
    ltv: float
    lb: float
    max_leverage: float
    flag_fallback: bool = False
    flag_clamped: bool = False
    flag_stale: bool = False
    reason: str = ""

    def as_dict(self) -> dict[str, float | bool | str]:
        return asdict(self)


def standardized_losses(sigma: pd.Series, returns: pd.Series) -> pd.Series:
    """``z_s = -r_{s+1} / σ_s`` for every cutoff ``s`` whose next-day return is known.

    ``sigma`` is indexed by cutoff date, ``returns`` by date (the day the return happened).
    """
    nxt = returns.shift(-1, freq="D").reindex(sigma.index)
    z = -nxt / sigma
    return z[np.isfinite(z)]


def tail_measures(z: np.ndarray, confidence: float) -> tuple[float, float]:
    """Empirical VaR and ES of standardized losses at ``confidence``."""
    var = float(np.quantile(z, confidence, method="higher"))
    es = float(z[z >= var].mean())
    return var, es


def student_t_measures(confidence: float, dof: float = STUDENT_T_DOF) -> tuple[float, float]:
    """VaR and ES of a unit-variance Student-t (closed form for ES)."""
    scale = math.sqrt((dof - 2.0) / dof)
    q = stats.t.ppf(confidence, dof)
    es = stats.t.pdf(q, dof) / (1 - confidence) * (dof + q**2) / (dof - 1)
    return float(q * scale), float(es * scale)


def fraction_lost(log_loss: float) -> float:
    return 1.0 - math.exp(-max(log_loss, 0.0))


def lending_view(mmf: float, sigma_1d: float, cfg: PolicyConfig) -> dict[str, float]:
    """IMF, LT, LTV, LB and max leverage from a (bounded) MMF; invariants hold by construction."""
    imf = min(mmf * (1.0 + cfg.im_buffer), 0.99)
    lt = 1.0 - mmf
    ltv = 1.0 - imf
    lb_raw = 1.0 + min(max(cfg.lb_k * sigma_1d, cfg.lb_min - 1.0), cfg.lb_max - 1.0)
    lb = min(lb_raw, 1.0 / lt)  # LT · LB <= 1: the bonus cannot exceed remaining collateral
    return {"imf": imf, "lt": lt, "ltv": ltv, "lb": lb, "max_leverage": 1.0 / imf}


def check_invariants(p: Parameters, cfg: PolicyConfig) -> None:
    """Raise if a published parameter set could ever be inconsistent."""
    problems = []
    if not p.ltv < p.lt:
        problems.append(f"LTV {p.ltv:.4f} must be < LT {p.lt:.4f}")
    if p.lt * p.lb > 1.0 + 1e-12:
        problems.append(f"LT·LB = {p.lt * p.lb:.6f} must be <= 1")
    if not cfg.mmf_floor - 1e-12 <= p.mmf <= max(cfg.mmf_cap, cfg.fallback_mmf) + 1e-12:
        problems.append(f"MMF {p.mmf:.4f} outside [{cfg.mmf_floor}, {cfg.mmf_cap}]")
    values = [p.mmf, p.imf, p.lt, p.ltv, p.lb, p.max_leverage]
    if not all(math.isfinite(v) for v in values):
        problems.append("non-finite parameter")
    if problems:
        raise ValueError("policy invariant violated: " + "; ".join(problems))


def fallback_parameters(cfg: PolicyConfig, reason: str, stale: bool = False) -> Parameters:
    """Conservative static parameters for an asset whose inputs cannot be trusted."""
    view = lending_view(cfg.fallback_mmf, 0.0, cfg)
    nan = float("nan")
    p = Parameters(sigma_1d=nan, variance_1d=nan, var_99=nan, es_99=nan, mmf=cfg.fallback_mmf,
                   **view, flag_fallback=True, flag_stale=stale, reason=reason)
    check_invariants(p, cfg)
    return p


def margin_parameters(variance_1d: float, z_window: np.ndarray, cfg: PolicyConfig) -> Parameters:
    """Parameters for one asset from its 1-day variance forecast and standardized losses.

    Falls back to the conservative static set (flagged) on a non-finite or non-positive
    forecast; uses a Student-t tail (flagged in ``reason``) when fewer than ``fhs_min_obs``
    standardized losses are available.
    """
    if not (math.isfinite(variance_1d) and variance_1d > 0):
        return fallback_parameters(cfg, f"invalid variance forecast {variance_1d!r}")
    sigma = math.sqrt(variance_1d)
    z = np.asarray(z_window, float)
    z = z[np.isfinite(z)][-cfg.fhs_window :]
    reason = ""
    if len(z) >= cfg.fhs_min_obs:
        var_z, es_z = tail_measures(z, cfg.confidence)
    else:
        var_z, es_z = student_t_measures(cfg.confidence)
        reason = f"student-t tail: only {len(z)} standardized losses (< {cfg.fhs_min_obs})"
    var_frac, es_frac = fraction_lost(var_z * sigma), fraction_lost(es_z * sigma)
    raw = es_frac if cfg.measure == "es" else var_frac
    mmf = min(max(raw, cfg.mmf_floor), cfg.mmf_cap)
    clamped = mmf != raw
    if clamped:
        bound = "floor" if raw < cfg.mmf_floor else "cap"
        reason = "; ".join(filter(None, [reason, f"MMF {raw:.4f} clamped to {bound} {mmf:.4f}"]))
    p = Parameters(sigma_1d=sigma, variance_1d=variance_1d, var_99=var_frac, es_99=es_frac,
                   mmf=mmf, **lending_view(mmf, sigma, cfg), flag_clamped=clamped, reason=reason)
    check_invariants(p, cfg)
    return p

"""The margin policy: volatility forecast → margins and lending parameters for one update.

**What is covered.** Parameters are published once per update interval *U* (a day) and hold
until the next one; an unhealthy position is liquidated within a delay *H* (an hour). The loss
to cover is therefore the **worst H-hour loss anywhere in the next interval**
(``worst_loss_long`` in the feature panel; the daily range stands in where no hourly data
exists, flagged). Its distribution comes from filtered historical simulation (Barone-Adesi,
Giannopoulos & Vosper 1999): past worst losses are divided by the σ that was forecast for their
interval *out of sample*, and the tail of those standardized losses is rescaled by today's σ.

.. math::
    z_s = L_s / \\hat\\sigma_s, \\qquad
    \\mathrm{ES}_q = \\hat\\sigma_T\\, \\mathrm{E}[z \\mid z \\ge \\mathrm{VaR}_q(z)], \\qquad
    \\mathrm{MMF} = \\max\\big(1 - e^{-\\mathrm{ES}_q} + \\text{slippage},\\ \\text{floor}\\big)

**Lending view.** A liquidator repays debt ``D`` and receives ``D·LB`` of collateral, so with
the trigger at ``D = LT·C`` the protocol has bad debt once the collateral falls by more than
``1 - LT·LB`` before the liquidation completes. Setting ``LT = (1 - MMF) / LB`` makes that
cushion exactly MMF, and ``LTV = (1 - IMF) / LB``; hence ``LT·LB = 1 - MMF <= 1`` and
``LTV < LT`` whenever ``IMF > MMF``. Perp view: ``max_leverage = 1 / IMF``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from configs.schema import PolicyConfig

STUDENT_T_DOF = 4.0  # heavy tail used when the FHS window is too short to trust its tail
EPS = 1e-12


@dataclass(frozen=True)
class Parameters:
    """One asset's parameters for one update (fractions of collateral value)."""

    sigma_1d: float
    variance_1d: float
    var_99: float            # VaR of the covered loss at ``confidence`` (fraction of value)
    es_99: float             # ES of the covered loss at ``confidence``
    liquidity_addon: float   # slippage of liquidating the reference size
    mmf: float
    imf: float
    lt: float
    ltv: float
    lb: float
    max_leverage: float
    flag_fallback: bool = False
    flag_clamped: bool = False
    flag_stale: bool = False
    flag_proxy: bool = False      # covered loss measured by the daily-range proxy
    flag_held: bool = False       # a guardrail held or limited the change
    reason: str = ""

    def as_dict(self) -> dict[str, float | bool | str]:
        return dict(self.__dict__)  # flat fields: 10x faster than dataclasses.asdict

    def with_reason(self, text: str, **changes: object) -> Parameters:
        reason = "; ".join(filter(None, [self.reason, text]))
        return replace(self, reason=reason, **changes)


def quantile_higher(x: np.ndarray, q: float) -> float:
    """``np.quantile(x, q, method="higher")`` by partial sort (the replay calls it per day)."""
    k = min(int(np.ceil(q * (len(x) - 1))), len(x) - 1)
    return float(np.partition(x, k)[k])


def tail_measures(z: np.ndarray, confidence: float) -> tuple[float, float]:
    """Empirical VaR (upper ``confidence`` quantile) and ES of standardized losses."""
    var = quantile_higher(z, confidence)
    es = float(z[z >= var].mean())
    return var, es


def student_t_measures(confidence: float, dof: float = STUDENT_T_DOF) -> tuple[float, float]:
    """VaR and ES of a unit-variance Student-t (closed-form ES, McNeil-Frey-Embrechts 2015)."""
    scale = math.sqrt((dof - 2.0) / dof)
    q = stats.t.ppf(confidence, dof)
    es = stats.t.pdf(q, dof) / (1 - confidence) * (dof + q**2) / (dof - 1)
    return float(q * scale), float(es * scale)


def fitted_t_measures(z: np.ndarray, confidence: float) -> tuple[float, float]:
    """VaR and ES of a location-scale Student-t fitted by maximum likelihood to ``z``."""
    dof, loc, scale = stats.t.fit(z)
    dof = max(dof, 2.5)  # ES needs ν > 1; below 2.5 the fit is an artefact of a short window
    q = stats.t.ppf(confidence, dof)
    es_std = stats.t.pdf(q, dof) / (1 - confidence) * (dof + q**2) / (dof - 1)
    return float(loc + scale * q), float(loc + scale * es_std)


def fraction_lost(log_loss: float) -> float:
    """A log price drop ``L`` as a fraction of value, ``1 - e^{-L}`` (0 for gains)."""
    return 1.0 - math.exp(-max(log_loss, 0.0))


def standardized_tail(
    z_window: np.ndarray, cfg: PolicyConfig
) -> tuple[float, float, str]:
    """(VaR, ES, note) of the standardized loss from the trailing window."""
    z = np.asarray(z_window, float)
    z = z[np.isfinite(z)][-cfg.fhs_window :]
    if len(z) < cfg.fhs_min_obs:
        var, es = student_t_measures(cfg.confidence)
        return var, es, f"student-t(4) tail: only {len(z)} standardized losses"
    if cfg.tail == "student_t":
        return (*fitted_t_measures(z, cfg.confidence), "")
    return (*tail_measures(z, cfg.confidence), "")


def liquidity_addon(sigma_1d: float, adv_usd: float, cfg: PolicyConfig) -> float:
    r"""Square-root-law slippage of selling the reference size: :math:`c\,\sigma\sqrt{Q/ADV}`.

    A missing or non-positive ADV means the size cannot be sold: the cap applies.
    """
    liq = cfg.liquidity
    if not liq.enabled:
        return 0.0
    if not (math.isfinite(adv_usd) and adv_usd > 0):
        return liq.max_addon
    return min(liq.impact_coef * sigma_1d * math.sqrt(liq.reference_size_usd / adv_usd),
               liq.max_addon)


def mmf_for(sigma: float, tail_es: float, tail_var: float, addon: float,
            cfg: PolicyConfig) -> float:
    """Unclamped MMF for a given σ: the covered loss at the configured measure + slippage."""
    z = tail_es if cfg.measure == "es" else tail_var
    return fraction_lost(z * sigma) + addon


MIN_IM_GAP = 0.01  # IMF >= MMF × 1.01 always: LTV must stay strictly below LT


def initial_margin(
    mmf: float, mmf_stress: float, mmf_long: float, cfg: PolicyConfig,
    prev_imf: float = math.nan,
) -> float:
    """IMF = the largest enabled anti-procyclicality term (EMIR Art. 28 and RTS 153/2013 Art. 28).

    * **buffer**: a buffer of ``buffer`` × MMF that may be *exhausted* when margins rise
      (Art. 28(1)(a)): IMF stays at its previous value while that lies inside the band
      ``[MMF·1.01, MMF·(1+buffer)]`` and is pushed only by its edges, so a rising MMF first
      eats the buffer instead of raising IMF one-for-one-and-a-quarter;
    * **stress weight**: ``(1-w)·MMF + w·MMF(σ_stress)`` (Art. 28(1)(b), 25% weight on
      stressed observations);
    * **floor**: MMF at the long-run σ (Art. 28(1)(c), a ten-year look-back floor).
    """
    apc = cfg.apc
    low = mmf * (1.0 + MIN_IM_GAP)
    terms = [low]
    if apc.buffer_enabled:
        high = mmf * (1.0 + apc.buffer)
        terms.append(high if not math.isfinite(prev_imf) else min(max(prev_imf, low), high))
    if apc.stress_enabled and math.isfinite(mmf_stress):
        terms.append((1.0 - apc.stress_weight) * mmf + apc.stress_weight * mmf_stress)
    if apc.floor_enabled and math.isfinite(mmf_long):
        terms.append(mmf_long)
    return min(max(terms), 0.99)


def lending_view(
    mmf: float, imf: float, sigma_1d: float, addon: float, hours: float, cfg: PolicyConfig
) -> dict[str, float]:
    """LB, LT, LTV and max leverage; see the module docstring for why LT = (1-MMF)/LB."""
    sigma_h = sigma_1d * math.sqrt(hours / 24.0)
    lb = 1.0 + min(max(cfg.lb_k * sigma_h + addon, cfg.lb_min - 1.0), cfg.lb_max - 1.0)
    imf = max(imf, mmf + EPS)  # LTV < LT strictly
    return {"imf": imf, "lt": (1.0 - mmf) / lb, "ltv": (1.0 - imf) / lb, "lb": lb,
            "max_leverage": 1.0 / imf}


def check_invariants(p: Parameters, cfg: PolicyConfig) -> None:
    """Raise if a parameter set could ever be inconsistent."""
    problems = []
    values = [p.mmf, p.imf, p.lt, p.ltv, p.lb, p.max_leverage]
    if not all(math.isfinite(v) for v in values):
        problems.append(f"non-finite parameter in {values}")
    if not p.ltv < p.lt:
        problems.append(f"LTV {p.ltv:.6f} must be < LT {p.lt:.6f}")
    if p.lt * p.lb > 1.0 + EPS:
        problems.append(f"LT·LB = {p.lt * p.lb:.6f} must be <= 1")
    upper = max(cfg.mmf_cap, cfg.failsafe.conservative_mmf)
    if not cfg.mmf_floor - EPS <= p.mmf <= upper + EPS:
        problems.append(f"MMF {p.mmf:.6f} outside [{cfg.mmf_floor}, {upper}]")
    if not (p.mmf < p.imf < 1.0 and 1.0 <= p.lb <= cfg.lb_max + EPS):
        problems.append(f"need MMF < IMF < 1 and 1 <= LB <= {cfg.lb_max}")
    if problems:
        raise ValueError("policy invariant violated: " + "; ".join(problems))


def conservative_parameters(cfg: PolicyConfig, reason: str, stale: bool = False,
                            hours: float = 1.0) -> Parameters:
    """The static conservative set used when inputs cannot be trusted."""
    mmf = cfg.failsafe.conservative_mmf
    view = lending_view(mmf, min(mmf * (1 + cfg.apc.buffer), 0.99), 0.0, 0.0, hours, cfg)
    nan = float("nan")
    p = Parameters(sigma_1d=nan, variance_1d=nan, var_99=nan, es_99=nan, liquidity_addon=nan,
                   mmf=mmf, **view, flag_fallback=True, flag_stale=stale, reason=reason)
    check_invariants(p, cfg)
    return p

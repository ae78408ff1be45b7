"""The margin policy: tail forecast, stress floor and loss memory → risk-based parameters.

**What is covered.** Parameters are published once per update interval *U* (a day) and hold
until the next one; an unhealthy position is liquidated within a delay *H* (an hour). The loss
to cover is therefore the **worst H-hour loss anywhere in the next interval**
(``worst_loss_long`` in the feature panel; the daily range stands in where no hourly data
exists, flagged). Its tail comes from filtered historical simulation (Barone-Adesi,
Giannopoulos & Vosper 1999): past worst losses are divided by the σ that was forecast for their
interval *out of sample*, and the tail of those standardized losses is rescaled by today's σ;
a direct tail forecast (VaR/ES of the covered loss) may replace it.

.. math::
    z_s = L_s / \\hat\\sigma_s, \\qquad
    \\mathrm{ES}_q = \\hat\\sigma_T\\, \\mathrm{E}[z \\mid z \\ge \\mathrm{VaR}_q(z)]

    \\mathrm{MMF}^* = \\mathrm{clip}\\big(\\max(1 - e^{-\\mathrm{ES}_q},\\;
        w_s\\,\\mathrm{stress},\\; w_m\\,\\mathrm{memory}),\\ \\text{floor},\\ \\text{cap}\\big)

with the ex-ante **stress floor** (:func:`stress_es`, the tail of the worst stress window of a
long look-back, as Eurex Prisma and CME SPAN 2 add a stress component) and a slowly decaying
**high-water mark** of realized losses (:func:`loss_memory`). Both are anti-procyclical: the
margin of existing positions does not collapse in a calm spell nor right after a crash.

**Lending view.** A liquidator repays debt ``D`` and receives ``D·LB`` of collateral, so with
the trigger at ``D = LT·C`` the protocol has bad debt once the collateral falls by more than
``1 - LT·LB`` before the liquidation completes. ``LT = (1 - MMF) / LB`` makes that cushion
exactly MMF, and ``LTV = (1 - IMF) / LB``. **LB prices the liquidation**: the liquidator's
price risk over *H* plus the slippage of selling the liquidated size against a trailing ADV
that ends the day before the decision; slippage is charged there only, not again in MMF (MMF
is the price move the cushion must absorb). Perp view: ``max_leverage = 1 / IMF``.

These are the *targets*; :mod:`serving.decide` turns them into published values (parameter
roles, notice, rate limits, fail-safe freeze).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import PolicyConfig

STUDENT_T_DOF = 4.0  # heavy tail used when the FHS window is too short to trust its tail
EPS = 1e-12
MIN_IM_GAP = 0.01  # IMF >= MMF × 1.01 always: LTV must stay strictly below LT


@dataclass(frozen=True)
class Parameters:
    """One asset's parameters for one update (fractions of collateral value)."""

    sigma_1d: float
    variance_1d: float
    loss_var: float          # VaR of the covered loss at ``loss_level`` (fraction of value)
    loss_es: float           # ES of the covered loss at ``loss_level``
    loss_level: float        # confidence of loss_var / loss_es (policy ``confidence``)
    stress_floor: float      # weighted stress-window ES (fraction; NaN without history)
    loss_memory: float       # weighted high-water mark of realized losses (NaN: none)
    target_mmf: float        # risk-based MMF = max(tail, stress floor, memory) in [floor, cap]
    liquidity_addon: float   # slippage of liquidating the reference size (inside LB)
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
    flag_young: bool = False      # young asset: stress ES at least the seasoned universe's
    flag_held: bool = False       # published LT/LB/LTV differ from the target (roles, deadband)
    reason: str = ""

    def as_dict(self) -> dict[str, float | bool | str]:
        return dict(self.__dict__)  # flat fields: 10x faster than dataclasses.asdict

    def with_reason(self, text: str, **changes: object) -> Parameters:
        reason = "; ".join(filter(None, [self.reason, text]))
        unknown = set(changes) - PARAMETER_FIELDS.keys()
        if unknown:
            raise TypeError(f"not a parameter field: {sorted(unknown)}")
        # the fields copied and changed in place of dataclasses.replace, which re-reads the
        # dataclass's fields on every call (the replay calls this once an asset-day)
        out = object.__new__(Parameters)
        out.__dict__.update(self.__dict__, reason=reason, **changes)
        return out

    @classmethod
    def from_row(cls, row: Any) -> Parameters:
        """Rebuild from a published row (a mapping or Series); missing/null numbers → NaN."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            v = row.get(f.name) if hasattr(row, "get") else row[f.name]
            if f.type == "float":
                values[f.name] = float(v) if v is not None and pd.notna(v) else math.nan
            elif f.type == "bool":
                values[f.name] = bool(v) if v is not None and pd.notna(v) else False
            else:
                values[f.name] = "" if v is None or (isinstance(v, float) and math.isnan(v)) \
                    else str(v)
        return cls(**values)


PARAMETER_FIELDS = {f.name: None for f in fields(Parameters)}  # in order


def higher_rank(n: int, q: float) -> int:
    """The position of ``np.quantile(x, q, method="higher")`` in ``n`` sorted values."""
    return min(int(np.ceil(q * (n - 1))), n - 1)


def quantile_higher(x: np.ndarray, q: float) -> float:
    """``np.quantile(x, q, method="higher")`` by partial sort (the replay calls it per day)."""
    k = higher_rank(len(x), q)
    part = np.array(x, dtype=float)  # a copy, partitioned in place (np.partition's own copy)
    part.partition(k)
    return float(part[k])


def mean(x: np.ndarray) -> float:
    """``float(np.mean(x))`` of a 1-d float array, the same pairwise sum divided by the count,
    without ``np.mean``'s dispatch (the replay calls it several times an asset-day)."""
    return float(np.add.reduce(x) / len(x))


def sigma_terms(history: np.ndarray, stress_quantile: float) -> tuple[float, float]:
    """(σ_stress, σ_long) of the σ forecasts known so far, the anti-procyclicality terms:
    their ``stress_quantile`` quantile (higher) and root mean square, over the finite,
    positive ones; NaN when there is none."""
    hist = np.asarray(history, float)
    hist = hist[np.isfinite(hist) & (hist > 0)]
    return sigmas_of(hist, hist**2, stress_quantile)


def sigmas_of(valid: np.ndarray, square: np.ndarray, stress_quantile: float
              ) -> tuple[float, float]:
    """:func:`sigma_terms` of already filtered σ (``square`` = ``valid**2``), so that a
    replay can pass prefixes of one filtered history (:meth:`serving.inputs.AssetHistory.
    sigma_terms`) instead of filtering again every day."""
    if not len(valid):
        return math.nan, math.nan
    return quantile_higher(valid, stress_quantile), float(np.sqrt(mean(square)))


def tail_measures(z: np.ndarray, confidence: float) -> tuple[float, float]:
    """Empirical VaR (upper ``confidence`` quantile) and ES of standardized losses."""
    var = quantile_higher(z, confidence)
    es = mean(z[z >= var])
    return var, es


@lru_cache(maxsize=64)
def student_t_measures(confidence: float, dof: float = STUDENT_T_DOF) -> tuple[float, float]:
    """VaR and ES of a unit-variance Student-t (closed-form ES, McNeil-Frey-Embrechts 2015).

    Cached: a pure function of two numbers, which the replay asks for on every day of an
    asset's short-window start (scipy's ``ppf``/``pdf`` were a quarter of a replay's time).
    The quantile and density are scipy.stats' ``t.ppf``/``t.pdf`` bit for bit, computed as
    they compute them, from ``scipy.special`` (importing scipy.stats cost ~0.4 s of a fresh
    serve in which one asset's short history needs this tail).
    """
    from scipy import special  # here, not at import (~0.1 s)

    scale = math.sqrt((dof - 2.0) / dof)
    q = special.stdtrit(np.float64(dof), np.float64(confidence))  # = stats.t.ppf
    pdf = np.exp(np.log(special.poch(0.5 * dof, 0.5)) - 0.5 * (np.log(dof) + np.log(np.pi))
                 - (dof + 1) / 2 * np.log1p(q * q / dof))  # = stats.t.pdf(q, dof)
    es = pdf / (1 - confidence) * (dof + q**2) / (dof - 1)
    return float(q * scale), float(es * scale)


def fitted_t_measures(z: np.ndarray, confidence: float) -> tuple[float, float]:
    """VaR and ES of a location-scale Student-t fitted by maximum likelihood to ``z``."""
    from scipy import stats  # as in student_t_measures

    dof, loc, scale = stats.t.fit(z)
    dof = max(dof, 2.5)  # ES needs ν > 1; below 2.5 the fit is an artefact of a short window
    q = stats.t.ppf(confidence, dof)
    es_std = stats.t.pdf(q, dof) / (1 - confidence) * (dof + q**2) / (dof - 1)
    return float(loc + scale * q), float(loc + scale * es_std)


def fraction_lost(log_loss: float) -> float:
    """A log price drop ``L`` as a fraction of value, ``1 - e^{-L}`` (0 for gains)."""
    return 1.0 - math.exp(-max(log_loss, 0.0))


def fractions_lost(log_loss: np.ndarray) -> np.ndarray:
    """:func:`fraction_lost` of every element: the same operations, with ``math.exp`` element
    by element rather than numpy's own exponential, whose last bit may differ."""
    drop = -np.maximum(np.asarray(log_loss, float), 0.0)  # max(L, 0.0): NaN stays NaN
    return 1.0 - np.fromiter(map(math.exp, drop.tolist()), float, len(drop))


def standardized_tail(
    z_window: np.ndarray, cfg: PolicyConfig
) -> tuple[float, float, str]:
    """(VaR, ES, note) of the standardized loss from the trailing window."""
    z = np.asarray(z_window, float)
    return finite_tail(z[np.isfinite(z)][-cfg.fhs_window :], cfg)


def finite_tail(z: np.ndarray, cfg: PolicyConfig) -> tuple[float, float, str]:
    """:func:`standardized_tail` of a window already cut to its last ``fhs_window`` finite
    values (a replay slices them out of one filtered history instead of filtering daily)."""
    if len(z) < cfg.fhs_min_obs:
        var, es = student_t_measures(cfg.confidence)
        return var, es, f"student-t(4) tail: only {len(z)} standardized losses"
    if cfg.tail == "student_t":
        return (*fitted_t_measures(z, cfg.confidence), "")
    return (*tail_measures(z, cfg.confidence), "")


def finite_tails(z: np.ndarray, cfgs: Sequence[PolicyConfig]
                 ) -> list[tuple[float, float, str]]:
    """:func:`finite_tail` of one window under each config (configs that differ by their
    confidence): the empirical tails' order statistics from one partial sort of the window,
    each level's VaR and ES the numbers :func:`finite_tail` gives alone (an order statistic
    is exact; the ES is the same mean of the same values in the same order)."""
    empirical = [k for k, c in enumerate(cfgs)
                 if len(z) >= c.fhs_min_obs and c.tail != "student_t"]
    out: list[tuple[float, float, str] | None] = [None] * len(cfgs)
    if empirical:
        n = len(z)
        ranks = [higher_rank(n, cfgs[k].confidence) for k in empirical]
        part = np.array(z, dtype=float)
        part.partition(sorted(set(ranks)))
        for k, rank in zip(empirical, ranks, strict=True):
            var = float(part[rank])
            out[k] = (var, mean(z[z >= var]), "")
    return [t if t is not None else finite_tail(z, c) for t, c in zip(out, cfgs, strict=True)]


def stress_kept(losses: np.ndarray, ages: np.ndarray, cfg: PolicyConfig) -> np.ndarray:
    """Which realized losses the stress floor reads: finite, aged 0 to
    ``stress_lookback_days`` (:func:`stress_es`; fewer than ``stress_window_obs`` of them make
    an asset young, :mod:`serving.seasoning`)."""
    x, a = np.asarray(losses, float), np.asarray(ages, float)
    return np.isfinite(x) & np.isfinite(a) & (a >= 0) & (a <= cfg.stress_lookback_days)


def stress_es(losses: np.ndarray, ages: np.ndarray, cfg: PolicyConfig) -> float:
    r"""Ex-ante stress component: ES of the covered loss over the worst stress window.

    Among the realized covered log losses ``L_s`` with age ``<= stress_lookback_days`` (ages in
    days before the decision, so only data known *before* it can enter), the stress window is
    the run of ``w = stress_window_obs`` consecutive intervals with the highest mean loss
    (the whole history when shorter than ``w``); the result is its empirical ES at
    ``confidence``, as a fraction of value:

    .. math:: W^* = \arg\max_W \bar L_W, \qquad
              \mathrm{stress} = 1 - e^{-\mathrm{ES}_q(L_s,\ s \in W^*)}

    NaN when no loss is known (the floor is then off).
    """
    x = np.maximum(np.asarray(losses, float)[stress_kept(losses, ages, cfg)], 0.0)
    if len(x) == 0:
        return math.nan
    w = min(cfg.stress_window_obs, len(x))
    csum = np.concatenate(([0.0], np.cumsum(x)))
    sums = csum[w:] - csum[:-w]
    start = int(np.argmax(sums))  # the earliest of equally stressed windows
    _, es = tail_measures(x[start:start + w], cfg.confidence)
    return fraction_lost(es)


def loss_memory(losses: np.ndarray, ages: np.ndarray, half_life_days: float) -> float:
    r"""Slowly decaying high-water mark of realized covered losses:

    .. math:: M_t = \max_s \big(1 - e^{-L_s}\big)\, 2^{-a_s / h}

    with ``a_s`` the age in days of loss ``s`` at the decision (0 for the interval that ended
    on the decision day) and ``h`` the half-life. Equivalent to the recursion
    ``M_t = max(loss_t, M_{t-1} · 2^{-Δt/h})``. Losses older than 20 half-lives (weight below
    1e-6) are ignored; NaN when none is known.
    """
    x = np.asarray(losses, float)
    a = np.asarray(ages, float)
    keep = np.isfinite(x) & np.isfinite(a) & (a >= 0) & (a <= 20.0 * half_life_days)
    if not keep.any():
        return math.nan
    frac = -np.expm1(-np.maximum(x[keep], 0.0))
    return float(np.max(frac * np.exp2(-a[keep] / half_life_days)))


def trailing_adv(dollar_volume: pd.Series, window: int) -> pd.Series:
    """Average daily dollar volume of the ``window`` days that end the day **before** each date.

    ``adv[t] = mean(volume[t-window .. t-1])`` (calendar days, at least one observation): the
    decision at the end of ``t`` never prices liquidity with day ``t``'s own volume, which in
    a crash is the inflated crash-day volume that would make slippage look cheapest exactly
    when liquidations happen. The window is taken at ``t`` itself (``closed="left"``), so a
    missing row on ``t - 1`` leaves the other days' mean (shifting the mean of ``t - 1``
    forward left no value at ``t``, and the add-on at its cap for a day).
    """
    daily = dollar_volume.sort_index()
    return daily.rolling(f"{window}D", min_periods=1, closed="left").mean()


def liquidity_addon(sigma_1d: Any, adv_usd: Any, cfg: PolicyConfig) -> Any:
    r"""Square-root-law slippage of selling the reference size: :math:`c\,\sigma\sqrt{Q/ADV}`.

    ``Q = liquidity.reference_size_usd`` (default $5M, a large single liquidation); the ADV
    ends the day before the decision (:func:`trailing_adv`). A missing or non-positive ADV
    means the size cannot be sold: the cap applies. Elementwise on arrays (one value per
    asset), a float for floats.
    """
    liq = cfg.liquidity
    sigma, adv = np.asarray(sigma_1d, float), np.asarray(adv_usd, float)
    if not liq.enabled:
        return _like(np.zeros(np.broadcast(sigma, adv).shape), sigma_1d, adv_usd)
    with np.errstate(all="ignore"):
        cost = np.minimum(liq.impact_coef * sigma * np.sqrt(liq.reference_size_usd / adv),
                          liq.max_addon)
    sellable = np.isfinite(adv) & (adv > 0) & np.isfinite(sigma)
    return _like(np.where(sellable, cost, liq.max_addon), sigma_1d, adv_usd)


def _like(result: np.ndarray, *inputs: Any) -> Any:
    """``result`` as a float when every input was a scalar, else the array."""
    if all(np.ndim(v) == 0 for v in inputs):
        return float(result)
    return result


def mmf_for(sigma: Any, tail_es: Any, tail_var: Any, cfg: PolicyConfig) -> Any:
    """Unclamped tail MMF for a given σ: the covered loss at the configured measure."""
    z = tail_es if cfg.measure == "es" else tail_var
    if np.ndim(sigma) == 0 and np.ndim(z) == 0:
        return fraction_lost(z * sigma)
    return fractions_lost(np.asarray(z, float) * np.asarray(sigma, float))


def initial_margin(
    mmf: Any, mmf_stress: Any, mmf_long: Any, cfg: PolicyConfig, prev_imf: Any = math.nan,
) -> Any:
    """IMF = the largest enabled anti-procyclicality term (EMIR Art. 28 and RTS 153/2013 Art. 28).

    * **buffer**: a buffer of ``buffer`` × MMF that may be *exhausted* when margins rise
      (Art. 28(1)(a)): IMF stays at its previous value while that lies inside the band
      ``[MMF·1.01, MMF·(1+buffer)]`` and is pushed only by its edges, so a rising MMF first
      eats the buffer instead of raising IMF one-for-one-and-a-quarter. Temporarily: the
      parameter roles (:mod:`serving.roles`) keep IMF at least ``1 + buffer`` times the MMF
      *in force*, so the buffer is rebuilt once the announced MMF takes effect (after the
      notice), and what it absorbs is the rise while the slow MMF catches up;
    * **stress weight**: ``(1-w)·MMF + w·MMF(σ_stress)`` (Art. 28(1)(b), 25% weight on
      stressed observations);
    * **floor**: MMF at the long-run σ (Art. 28(1)(c) asks for a ten-year look-back; here
      σ_long and σ_stress read every σ forecast known so far, :func:`sigma_terms`, which is
      at most ten years on the embedded data and longer on a longer history).

    A term that is NaN (no previous IMF, no σ history) is left out. Elementwise on arrays.
    """
    apc = cfg.apc
    m, prev = np.asarray(mmf, float), np.asarray(prev_imf, float)
    stressed, long_run = np.asarray(mmf_stress, float), np.asarray(mmf_long, float)
    low = m * (1.0 + MIN_IM_GAP)
    best = low
    if apc.buffer_enabled:
        high = m * (1.0 + apc.buffer)
        best = np.maximum(best, np.where(np.isfinite(prev),
                                         np.minimum(np.maximum(prev, low), high), high))
    if apc.stress_enabled:
        term = (1.0 - apc.stress_weight) * m + apc.stress_weight * stressed
        best = np.where(np.isfinite(stressed), np.maximum(best, term), best)
    if apc.floor_enabled:
        best = np.where(np.isfinite(long_run), np.maximum(best, long_run), best)
    return _like(np.minimum(best, 0.99), mmf, mmf_stress, mmf_long, prev_imf)


def liquidation_bonus(sigma_1d: Any, addon: Any, hours: float, cfg: PolicyConfig) -> Any:
    r"""LB = 1 + clip(k·σ_H + slippage, lb_min - 1, lb_max - 1), σ_H = σ_1d·sqrt(H/24).

    What a liquidator needs to take the position: the price risk while selling over the
    delay *H* (``lb_k`` = 2.33, 99% one-sided) plus the slippage of the liquidated size.
    A non-finite σ (no forecast) gives the cap. Elementwise on arrays.
    """
    sigma = np.asarray(sigma_1d, float)
    with np.errstate(invalid="ignore"):
        cost = cfg.lb_k * sigma * math.sqrt(hours / 24.0) + np.asarray(addon, float)
        lb = 1.0 + np.minimum(np.maximum(cost, cfg.lb_min - 1.0), cfg.lb_max - 1.0)
    return _like(np.where(np.isfinite(sigma), lb, cfg.lb_max), sigma_1d, addon)


def lending_view(mmf: Any, imf: Any, lb: Any) -> dict[str, Any]:
    """IMF, LT, LTV and max leverage for a given LB; see the module docstring for LT.
    Elementwise on arrays."""
    m = np.asarray(mmf, float)
    i = np.minimum(np.maximum(np.asarray(imf, float), m + EPS), 1.0)  # LTV < LT strictly
    lb_ = np.asarray(lb, float)
    view = {"imf": i, "lt": (1.0 - m) / lb_, "ltv": (1.0 - i) / lb_, "lb": lb_,
            "max_leverage": 1.0 / i}
    return {k: _like(v, mmf, imf, lb) for k, v in view.items()}


def invariants_hold(mmf: Any, imf: Any, lt: Any, ltv: Any, lb: Any, max_leverage: Any,
                    cfg: PolicyConfig, bounds: bool = True) -> Any:
    """Whether each parameter set is consistent (:func:`check_invariants`); elementwise.
    ``bounds`` False: the solvency part only (not the config's MMF and LB bounds)."""
    # NaN fails every comparison, so a non-finite value is never consistent
    with np.errstate(invalid="ignore"):
        ok = (np.isfinite(max_leverage) & np.isfinite(mmf) & np.isfinite(imf)
              & np.isfinite(lt) & np.isfinite(ltv) & np.isfinite(lb)
              & (ltv >= 0.0) & (ltv < lt) & (lt * lb <= 1.0 + EPS)
              & (mmf < imf) & (imf <= 1.0) & (lb >= 1.0))
        if bounds:
            upper = max(cfg.mmf_cap, cfg.failsafe.conservative_mmf)
            ok = (ok & (cfg.mmf_floor - 1e-9 <= mmf) & (mmf <= upper + 1e-9)
                  & (lb <= cfg.lb_max + EPS))
        return ok


def check_invariants(p: Parameters, cfg: PolicyConfig, bounds: bool = True) -> None:
    """Raise if a parameter set could ever be inconsistent: finite, 0 <= LTV < LT,
    LT·LB <= 1, MMF < IMF <= 1 (IMF = 1, LTV = 0 is a freeze), LB >= 1 (solvency) and, with
    ``bounds``, the config's bounds: MMF in [floor, cap] (the static set may exceed the cap)
    and LB <= lb_max.

    A target, and the static set, meet both. Values *in force* (held by a freeze, or kept
    while an announced change is pending) are checked for solvency only: they were published
    under the config of their day, and when a retrain (or a rollback) moves the bounds they
    reach the new ones by announced, rate-limited changes, as any other move of LT and LB;
    raising on them would make the fail-safe itself fail (:func:`serving.update.freeze`).
    """
    if invariants_hold(p.mmf, p.imf, p.lt, p.ltv, p.lb, p.max_leverage, cfg, bounds):
        return
    upper = max(cfg.mmf_cap, cfg.failsafe.conservative_mmf)
    problems = []
    values = [p.mmf, p.imf, p.lt, p.ltv, p.lb, p.max_leverage]
    if not all(math.isfinite(v) for v in values):
        problems.append(f"non-finite parameter in {values}")
    if not 0.0 <= p.ltv < p.lt:
        problems.append(f"need 0 <= LTV {p.ltv:.6f} < LT {p.lt:.6f}")
    if p.lt * p.lb > 1.0 + EPS:
        problems.append(f"LT·LB = {p.lt * p.lb:.6f} must be <= 1")
    if bounds and not cfg.mmf_floor - 1e-9 <= p.mmf <= upper + 1e-9:
        problems.append(f"MMF {p.mmf:.6f} outside [{cfg.mmf_floor}, {upper}]")
    if not (p.mmf < p.imf <= 1.0 and p.lb >= 1.0):
        problems.append("need MMF < IMF <= 1 and LB >= 1")
    if bounds and p.lb > cfg.lb_max + EPS:
        problems.append(f"LB {p.lb:.6f} above lb_max {cfg.lb_max}")
    if problems:
        raise ValueError("policy invariant violated: " + "; ".join(problems))


def conservative_parameters(cfg: PolicyConfig, reason: str, stale: bool = False,
                            hours: float = 1.0) -> Parameters:
    """The static set used when nothing was ever published and inputs cannot be trusted:
    MMF = ``failsafe.conservative_mmf``, LB at its cap, and no new borrowing (LTV = 0,
    IMF = 1), since with no previous parameters no position exists that it could hurt."""
    del hours  # LB is at its cap whatever the delay
    mmf = cfg.failsafe.conservative_mmf
    view = lending_view(mmf, 1.0, cfg.lb_max)
    view["ltv"] = 0.0
    nan = float("nan")
    p = Parameters(sigma_1d=nan, variance_1d=nan, loss_var=nan, loss_es=nan,
                   loss_level=cfg.confidence, stress_floor=nan, loss_memory=nan,
                   target_mmf=nan, liquidity_addon=nan, mmf=mmf, **view, flag_fallback=True,
                   flag_stale=stale, reason=reason)
    check_invariants(p, cfg)
    return p

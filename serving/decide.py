"""One policy update: fail-safes → risk-based targets → parameter roles.

Pure: the batch job updates every asset of an as-of at once (:func:`decide_all`), the policy
backtest every asset of every candidate day after day threading each one's state
(:func:`pipelines.policy_eval.backtest.replay_together`), and :func:`decide` is one asset's
update; all of them run the same arithmetic on arrays (:mod:`serving.update`), so the
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
from serving import update
from serving.policy import (
    Parameters,
    loss_memory,
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
           "decide", "decide_all", "failsafe_reason", "failsafe_why", "freeze", "risk_parameters",
           "state_columns", "state_from_row", "tail_z", "target_inputs"]


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
    # what a young asset's ``stress_es`` was taken from (:mod:`serving.seasoning`); "": none
    stress_note: str = ""


def failsafe_reason(x: PolicyInputs, stale_after_days: int, cfg: PolicyConfig) -> str | None:
    """Why the inputs cannot be trusted, or None."""
    return failsafe_why(x.data_age_days, x.variance, x.variance_prev, x.ret_today, x.tail_var,
                        x.tail_es, stale_after_days, cfg)


def failsafe_why(data_age_days: int, variance: float, variance_prev: float, ret_today: float,
                 tail_var: float | None, tail_es: float | None, stale_after_days: int,
                 cfg: PolicyConfig) -> str | None:
    """:func:`failsafe_reason` of the fields it reads (a replay has them as arrays)."""
    if data_age_days > stale_after_days:
        return f"stale data: last price {data_age_days} days old"
    if not (math.isfinite(variance) and variance > 0):
        return f"invalid variance forecast {variance!r}"
    if (tail_var is None) != (tail_es is None):
        return "direct tail forecast needs both VaR and ES"
    if tail_var is not None and tail_es is not None and not 0.0 <= tail_var <= tail_es < 1.0:
        return f"invalid tail forecast VaR {tail_var!r} ES {tail_es!r}"
    prev = variance_prev
    if math.isfinite(prev) and prev > 0:
        jump = math.sqrt(variance / prev)
        if jump > cfg.failsafe.jump_ratio and not math.isfinite(ret_today):
            # the day after a missing close: no price move confirms the jump, and a gap in
            # the feed is when a bad print is likeliest
            return (f"implausible jump: σ ×{jump:.1f} in a day whose return is unknown (a "
                    "missing close): no price move confirms it")
        moved = abs(ret_today)
        if jump > cfg.failsafe.jump_ratio and moved < cfg.failsafe.jump_price_z * math.sqrt(prev):
            return (f"implausible jump: σ ×{jump:.1f} in a day with |return| {moved:.4f} "
                    f"< {cfg.failsafe.jump_price_z}·σ_prev")
    return None


def tail_z(z_window: np.ndarray, sigma: float, tail_var: float | None, tail_es: float | None,
           cfg: PolicyConfig) -> tuple[float, float, str]:
    """Standardized (VaR, ES) of the covered loss: the direct forecast when given, expressed
    as ``-log(1 - tail)/σ`` so that it scales with σ like the FHS tail, else FHS."""
    if tail_var is not None and tail_es is not None:
        return (-math.log1p(-tail_var) / sigma, -math.log1p(-tail_es) / sigma,
                "direct tail forecast")
    return standardized_tail(z_window, cfg)


def risk_parameters(
    x: PolicyInputs, cfg: PolicyConfig, prev_imf: float = math.nan
) -> Parameters:
    """Risk-based targets (no fail-safe, no roles); ``prev_imf`` is the last published IMF,
    which the exhaustible APC buffer needs.

    .. math:: \\mathrm{MMF}^* = \\mathrm{clip}(\\max(\\mathrm{tail},\\ w_s\\,\\mathrm{stress},
              \\ w_m\\,\\mathrm{memory}),\\ \\text{floor},\\ \\text{cap})

    IMF is the largest anti-procyclicality term (:func:`serving.policy.initial_margin`, with
    MMF at σ_stress and σ_long), LB prices the liquidation
    (:func:`serving.policy.liquidation_bonus`), and ``reason`` names the tail used, a binding
    stress floor or loss memory, a clamp and the range proxy. The arithmetic:
    :func:`serving.update.targets` on one row.
    """
    return update.targets(target_inputs([x], cfg), cfg, np.array([prev_imf])).parameters(0)


def target_inputs(xs: list[PolicyInputs], cfg: PolicyConfig, hours: float | None = None
                  ) -> update.TargetInputs:
    """:class:`serving.update.TargetInputs` of trusted inputs (after the fail-safe): the
    standardized tail (direct or FHS), and the stress ES, loss memory and σ terms each input
    carries or, where it has none, computed from its histories."""
    tails = [tail_z(x.z_window, math.sqrt(x.variance), x.tail_var, x.tail_es, cfg)
             for x in xs]
    stress, memory, s_stress, s_long = [], [], [], []
    for x in xs:
        es = mem = math.nan
        if cfg.stress_floor_weight > 0:
            es = x.stress_es if x.stress_es is not None else stress_es(
                x.loss_history, x.loss_age_days, cfg)
        if cfg.memory_weight > 0:
            mem = x.loss_memory if x.loss_memory is not None else loss_memory(
                x.loss_history, x.loss_age_days, cfg.memory_half_life_days)
        if x.sigma_stress is not None and x.sigma_long is not None:
            pair = x.sigma_stress, x.sigma_long
        else:
            pair = sigma_terms(x.sigma_history, cfg.apc.stress_quantile)
        stress.append(es)
        memory.append(mem)
        s_stress.append(pair[0])
        s_long.append(pair[1])
    delays = {x.hours for x in xs} | ({hours} if hours is not None else set())
    if len(delays) != 1:
        raise ValueError(f"one liquidation delay per batch of inputs, got {sorted(delays)}")
    return update.TargetInputs(
        variance=np.array([x.variance for x in xs], float),
        var_z=np.array([t[0] for t in tails], float), es_z=np.array([t[1] for t in tails], float),
        tail_note=[t[2] for t in tails], adv_usd=np.array([x.adv_usd for x in xs], float),
        loss_is_proxy=np.array([x.loss_is_proxy for x in xs], bool),
        stress_es=np.array(stress, float), loss_memory=np.array(memory, float),
        sigma_stress=np.array(s_stress, float), sigma_long=np.array(s_long, float),
        hours=delays.pop(),
        stress_note=[x.stress_note for x in xs] if any(x.stress_note for x in xs) else None)


def decide(
    x: PolicyInputs, state: PolicyState | None, stale_after_days: int, cfg: PolicyConfig
) -> tuple[Parameters, PolicyState]:
    """The published parameters for one asset and update, and the state to carry forward.

    Call it in a loop over history, passing each returned state to the next call; ``None``
    means nothing was published before. :func:`decide_all` of one asset.
    """
    return decide_all([x], [state], stale_after_days, cfg)[0]


def decide_all(
    xs: list[PolicyInputs], states: list[PolicyState | None], stale_after_days: int,
    cfg: PolicyConfig,
) -> list[tuple[Parameters, PolicyState]]:
    """:func:`decide` of many assets at once (the batch job's update of every asset): the
    fail-safe per asset, then one :func:`serving.update.update` for all of them. The trusted
    inputs share one liquidation delay (a frozen asset's is not read)."""
    if len(xs) != len(states):
        raise ValueError(f"{len(xs)} inputs for {len(states)} states")
    if not xs:
        return []
    why = [failsafe_reason(x, stale_after_days, cfg) for x in xs]
    trusted = np.array([i for i, w in enumerate(why) if w is None], np.int64)
    # the targets read only the trusted inputs (a frozen one may hold no valid σ at all);
    # target_inputs refuses a batch whose delays differ
    x_all = target_inputs([xs[i] for i in trusted.tolist()], cfg,
                          xs[0].hours).placed(trusted, len(xs))
    book = update.Book.of(states, cfg.roles.protect_days + 1)
    as_of = np.array([update.day_of(x.as_of) for x in xs], np.int64)
    rows, book = update.update(as_of, why, x_all, book, cfg)
    return [(rows.parameters(i), book.state(i))  # type: ignore[misc]
            for i in range(len(xs))]

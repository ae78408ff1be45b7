"""Parameter roles: what may move at every update and what moves only by announced changes.

* **Fast** — LTV and IMF govern *new* borrowing and leverage: they follow the risk-based target
  at every update (within a deadband).
* **Slow** — LT and LB govern *existing* positions (and MMF = 1 - LT·LB, the lending cushion):
  a change is **announced** and takes effect after a notice (``roles.notice_days`` for a
  loosening, ``roles.tighten_notice_days`` for a tightening, since the margin protects the
  lender first), is rate-limited both ways (``lt_up_step``, ``lt_down_step``, ``lb_step`` per
  change; one pending change at a time, replaced only by a tighter one), and never sets LT
  below an LTV admitted in the last ``protect_days`` (>= ``notice_days``) plus ``ltv_gap``.

**Guarantee.** With ``A(t)`` the published (maximum) LTV at update ``t`` and ``g`` the gap,

.. math:: \\mathrm{LT}_{\\mathrm{eff}}(t') \\ge A(t) + g
          \\quad \\text{for every } t \\le t' \\le t + \\text{protect\\_days},

so a position opened at the maximum LTV is never liquidated by a parameter change alone
within that window (a week by default, longer than any notice). Proof sketch: LT_eff changes
only when a pending change takes effect, at ``e <= a + notice_days <= a + protect_days`` for
one announced at ``a``; it is floored at ``max A(s) + g`` over ``s`` in ``[a - protect, a]``
(the state's admitted window), and every LTV published while it is pending is capped at
``min(LT_eff, LT_pending) - g``.

**Fail-safe = freeze** (:func:`freeze`): LTV = 0 (IMF = 1: no new borrowing or leverage), LT
and LB held at their effective values, a pending change kept but not applied until inputs are
trusted again; it never lowers LT. With nothing published before, the conservative static set
(:func:`serving.policy.conservative_parameters`), which admits no borrowing either.

The state carried from one update to the next (:class:`PolicyState`: effective values, the
pending change and its effective date, the LTVs admitted in the window) is explicit and is
written into every published row (:func:`state_columns`) and read back (:func:`state_from_row`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from configs.schema import PolicyConfig
from serving.policy import (
    EPS,
    MIN_IM_GAP,
    Parameters,
    check_invariants,
    conservative_parameters,
)


@dataclass(frozen=True)
class PendingChange:
    """An announced change of the slow parameters (MMF = 1 - lt·lb follows)."""

    lt: float
    lb: float
    announced: dt.date
    effective: dt.date  # applied at the first non-frozen update on or after this date


@dataclass(frozen=True)
class PolicyState:
    """What one update hands to the next.

    ``published.lt`` / ``published.lb`` are the *effective* slow values; ``admitted`` holds
    (date, LTV) of the updates in the last ``protect_days`` that admitted borrowing.
    """

    published: Parameters
    pending: PendingChange | None = None
    admitted: tuple[tuple[dt.date, float], ...] = ()
    conservative: bool = False  # the published set is the static fail-safe one


STATE_COLUMNS = ("pending_lt", "pending_lb", "pending_mmf", "pending_announced",
                 "pending_effective", "admitted_ltv")


def _as_date(value: Any) -> dt.date | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return pd.Timestamp(value).date()


def state_columns(state: PolicyState | None) -> dict[str, Any]:
    """The state's columns in a published row (nulls when there is no state/pending)."""
    p = state.pending if state is not None else None
    admitted = None if state is None else json.dumps(
        [[d.isoformat(), v] for d, v in state.admitted])  # repr floats: exact round trip
    return {"pending_lt": p.lt if p else None, "pending_lb": p.lb if p else None,
            "pending_mmf": 1.0 - p.lt * p.lb if p else None,
            "pending_announced": p.announced if p else None,
            "pending_effective": p.effective if p else None, "admitted_ltv": admitted}


def state_from_row(row: Any) -> PolicyState | None:
    """Rebuild the state from a previously published row (Series or dict; None → None)."""
    if row is None:
        return None
    published = Parameters.from_row(row)
    pending = None
    effective = _as_date(row.get("pending_effective"))
    if effective is not None:
        pending = PendingChange(float(row["pending_lt"]), float(row["pending_lb"]),
                                _as_date(row.get("pending_announced")) or effective, effective)
    raw = row.get("admitted_ltv")
    items = json.loads(raw) if isinstance(raw, str) and raw else []
    admitted = tuple((dt.date.fromisoformat(d), float(v)) for d, v in items)
    conservative = published.flag_fallback and math.isnan(published.target_mmf)
    return PolicyState(published, pending, admitted, conservative)


def freeze(state: PolicyState | None, reason: str, cfg: PolicyConfig, stale: bool = False,
           hours: float = 1.0) -> tuple[Parameters, PolicyState]:
    """Fail-safe: no new borrowing, LT and LB held, pending change kept; flagged with ``reason``."""
    if state is None or state.conservative:
        p = conservative_parameters(cfg, reason, stale=stale, hours=hours)
        return p, PolicyState(p, conservative=True)
    p = replace(state.published, ltv=0.0, imf=1.0, max_leverage=1.0, flag_fallback=True,
                flag_stale=stale, flag_held=True,
                reason=f"{reason}; frozen: LTV 0, LT and LB held")
    check_invariants(p, cfg)
    return p, replace(state, published=p)


def _announce(target: Parameters, lt_e: float, lb_e: float, lt_min: float,
              cfg: PolicyConfig) -> tuple[float, float] | None:
    """The next step of (LT, LB) from the effective values toward the target, or None when
    it is within the deadband. LB moves by at most ``lb_step``; LT by ``lt_up_step`` /
    ``lt_down_step`` toward ``(1 - MMF*)/LB_new``, never below ``lt_min`` (admitted LTV + gap);
    ``1 - cap <= LT·LB <= 1 - floor`` (MMF within its bounds) is kept by moving LB less than
    its step (or LT less than its up-step), never more. Needs ``lt_min <= lt_e`` and a valid
    effective set, which every published state satisfies."""
    r = cfg.roles
    lb_lo, lb_hi = max(lb_e - r.lb_step, 1.0), min(lb_e + r.lb_step, cfg.lb_max)
    lb_n = min(max(target.lb, lb_lo), lb_hi)
    lt_n = min(max((1.0 - target.mmf) / lb_n, lt_e - r.lt_down_step), lt_e + r.lt_up_step)
    lt_n = max(lt_n, lt_min)
    # MMF >= floor must stay reachable with an LB inside its step (never binds below lt_e)
    lt_n = min(lt_n, (1.0 - cfg.mmf_floor) / lb_lo)
    # MMF = 1 - LT·LB moves toward its target, never away: with LT held up by admitted LTVs,
    # a rising LB would otherwise *shrink* the cushion in a crash
    mmf_e = 1.0 - lt_e * lb_e
    if target.mmf >= mmf_e:
        lb_n = min(lb_n, (1.0 - mmf_e) / lt_n)
    else:
        lb_n = max(lb_n, (1.0 - mmf_e) / lt_n)
    # then LB fits MMF into [floor, cap]: it only moves less than its step, never more
    lb_n = min(max(lb_n, (1.0 - cfg.mmf_cap) / lt_n), (1.0 - cfg.mmf_floor) / lt_n)
    lb_n = min(max(lb_n, lb_lo), lb_hi)
    if abs(lt_n - lt_e) < max(r.deadband, EPS) and abs(lb_n - lb_e) < max(r.deadband, EPS):
        return None
    return lt_n, lb_n


def apply_roles(target: Parameters, state: PolicyState | None, as_of: dt.date,
                cfg: PolicyConfig) -> tuple[Parameters, PolicyState]:
    """Published parameters and next state from the risk-based ``target``.

    1. a pending change whose effective date has come takes effect;
    2. a new change toward the target is announced (:func:`_announce`) when none is pending,
       or when it is tighter than the pending one (an announced loosening is withdrawn if the
       market turns: withdrawing a loosening never hurts a borrower, since LTVs admitted
       meanwhile were capped by the lower of the two LTs);
    3. LTV = min((1 - max(IMF*, MMF_eff·(1 + buffer)))/LB_eff, min(LT_eff, LT_pending) - gap),
       at least 0, kept at its previous value when the change is within the deadband (and
       still below the cap); IMF = 1 - LTV·LB_eff and
       MMF = 1 - LT_eff·LB_eff, so LTV < LT and LT·LB <= 1 hold by construction.
    """
    r = cfg.roles
    notes: list[str] = []
    fresh = state is None or state.conservative or not r.enabled
    if fresh:
        lt_e, lb_e, pending, admitted = target.lt, target.lb, None, []
        prev_ltv = math.nan
    else:
        assert state is not None
        lt_e, lb_e, pending = state.published.lt, state.published.lb, state.pending
        admitted = [(d, v) for d, v in state.admitted if (as_of - d).days <= r.protect_days]
        prev_ltv = state.published.ltv
        if pending is not None and pending.effective <= as_of:
            lt_e, lb_e = pending.lt, pending.lb
            notes.append(f"LT {lt_e:.4f} / LB {lb_e:.4f} announced {pending.announced} "
                         "in effect")
            pending = None
        lt_min = max((v for _, v in admitted), default=-math.inf) + r.ltv_gap
        step = _announce(target, lt_e, lb_e, lt_min, cfg)
        if step is not None and (pending is None or step[0] < pending.lt - EPS):
            # tighter = safer for the lender: LT down, or LB up with LT not raised
            tighter = step[0] < lt_e - EPS or (step[0] <= lt_e + EPS and step[1] > lb_e)
            notice = r.tighten_notice_days if tighter else r.notice_days
            pending = PendingChange(step[0], step[1], as_of, as_of + dt.timedelta(notice))
            notes.append(f"announced LT {step[0]:.4f} / LB {step[1]:.4f} "
                         f"effective {pending.effective}")
    # IMF keeps its buffer over the MMF *in force* too: while a crash margin is being released
    # slowly, new borrowing must not sit closer to liquidation than the APC buffer allows
    ratio = 1.0 + (cfg.apc.buffer if cfg.apc.buffer_enabled else MIN_IM_GAP)
    imf_need = max(target.imf, min((1.0 - lt_e * lb_e) * ratio, 1.0))
    cap = min(lt_e, pending.lt if pending is not None else math.inf) - r.ltv_gap
    ltv = max(min((1.0 - imf_need) / lb_e, cap), 0.0)
    if 0.0 < prev_ltv <= cap and abs(ltv - prev_ltv) < r.deadband:
        ltv = prev_ltv  # a sub-deadband change of the maximum LTV is not published
    elif ltv < (1.0 - imf_need) / lb_e - EPS:
        notes.append(f"LTV capped at min(LT, pending LT) - {r.ltv_gap:g}")
    imf = 1.0 - ltv * lb_e
    out = target.with_reason(
        "; ".join(notes), mmf=1.0 - lt_e * lb_e, imf=imf, lt=lt_e, lb=lb_e, ltv=ltv,
        max_leverage=1.0 / imf,
        flag_held=abs(lt_e - target.lt) > 1e-9 or abs(lb_e - target.lb) > 1e-9
        or abs(ltv - target.ltv) > 1e-9)
    check_invariants(out, cfg)
    if ltv > 0.0:
        admitted.append((as_of, ltv))
    return out, PolicyState(out, pending, tuple(admitted))

"""Parameter roles: what may move at every update and what moves only by announced changes.

* **Fast** — LTV and IMF govern *new* borrowing and leverage: they follow the risk-based target
  at every update (within a deadband).
* **Slow** — LT and LB govern *existing* positions (and MMF = 1 - LT·LB, the lending cushion):
  a change is **announced** and takes effect after a notice (``roles.notice_days`` for a
  loosening, ``roles.tighten_notice_days`` for a tightening, since the margin protects the
  lender first), is rate-limited both ways (``lt_up_step``, ``lt_down_step``, ``lb_step`` per
  change; one pending change at a time, withdrawn, trimmed or replaced only by a tighter
  one), and never sets LT
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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import PolicyConfig
from serving import update
from serving.policy import Parameters


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


def parse_admitted(raw: Any) -> tuple[tuple[dt.date, float], ...]:
    """The published ``admitted_ltv`` column: a JSON list of [ISO date, LTV] (null or ""
    → none)."""
    items = json.loads(raw) if isinstance(raw, str) and raw else []
    return tuple((dt.date.fromisoformat(d), float(v)) for d, v in items)


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
    admitted = parse_admitted(row.get("admitted_ltv"))
    conservative = published.flag_fallback and math.isnan(published.target_mmf)
    return PolicyState(published, pending, admitted, conservative)


def freeze(state: PolicyState | None, reason: str, cfg: PolicyConfig, stale: bool = False,
           hours: float = 1.0) -> tuple[Parameters, PolicyState]:
    """Fail-safe: no new borrowing, LT and LB held, pending change kept; flagged with ``reason``.

    With a trustworthy published set: that set with LTV 0 (IMF 1, max leverage 1), LT and LB
    held, the pending change and admitted LTVs kept. With nothing published (or only the
    static set): :func:`serving.policy.conservative_parameters`, whose LB is at its cap
    whatever the delay ``hours``. The arithmetic: :func:`serving.update.freeze` on one row.
    """
    del hours
    out, book = update.freeze(_book(state, cfg), [reason], np.array([stale]), cfg)
    return out.parameters(0), book.state(0)  # type: ignore[return-value]


def apply_roles(target: Parameters, state: PolicyState | None, as_of: dt.date,
                cfg: PolicyConfig) -> tuple[Parameters, PolicyState]:
    """Published parameters and next state from the risk-based ``target``.

    1. a pending change whose effective date has come takes effect; a loosening of the values
       in force (a higher LT, or a thinner cushion) only as far as that day's target still
       supports it (trimmed to the day's step, or withdrawn): a loosening falling due on a
       crash day does not take effect; a tightening always does;
    2. a new change toward the target is announced when none is pending, or when it is
       tighter than the pending one (an announced loosening is withdrawn if the market turns:
       withdrawing a loosening never hurts a borrower, since LTVs admitted meanwhile were
       capped by the lower of the two LTs). The step: LB moves by at most ``lb_step``; LT by
       ``lt_up_step`` / ``lt_down_step`` toward ``(1 - MMF*)/LB_new``, never below the
       admitted LTVs + gap (that floor wins over the MMF floor); ``1 - cap <= LT·LB <= 1 -
       floor`` is kept by moving LB less than its step (or LT less than its up-step), never
       more; MMF = 1 - LT·LB moves toward its target, never away and never past it (with LT
       held up by admitted LTVs, a rising LB would otherwise *shrink* the cushion in a
       crash, or below the target in a calm); a step within the deadband is not announced,
       and a pending change looser than today's step (a higher LT or a thinner cushion) is
       withdrawn where the step is held (LT pinned by admitted LTVs, or the deadband),
       replaced where the step tightens (an announced tightening itself is never replaced:
       it falls due, the next step follows), and trimmed to the step, keeping its effective
       date, where the step is a smaller loosening (LT not lowered). A change that lowers LT
       without thinning the cushion MMF, or widens MMF under an LT not raised, takes
       ``tighten_notice_days``; any other (LT up, or a thinner cushion: LB up under a held
       or a lower LT) takes ``notice_days``;
    3. LTV = min((1 - max(IMF*, MMF_eff·(1 + buffer)))/LB_eff,
       min(LT_eff, LT_pending, LT*) - gap) (below the target LT* too: an LTV admitted above
       it would hold LT up every day it is re-admitted, and a tighter target would never take
       effect),
       at least 0, kept at its previous value when the change is within the deadband (and
       still below the cap and not above the risk-based LTV); IMF = 1 - LTV·LB_eff and
       MMF = 1 - LT_eff·LB_eff, so LTV < LT and LT·LB <= 1 hold by construction.

    The arithmetic: :func:`serving.update.roles` on one row (the replay runs it on every
    asset at once).
    """
    out, book = update.roles(update.Rows.of([target]), _book(state, cfg),
                             np.array([update.day_of(as_of)]), cfg)
    return out.parameters(0), book.state(0)  # type: ignore[return-value]


def _book(state: PolicyState | None, cfg: PolicyConfig) -> update.Book:
    return update.Book.of([state], cfg.roles.protect_days + 1)

"""The policy update of many assets at once: :mod:`serving.decide`'s steps on arrays.

One update (fail-safe → risk-based targets → parameter roles) is the same arithmetic for every
asset, and only the roles' state machine carries anything from one update to the next, per
asset. So the arithmetic runs here on arrays with one element per asset, and the state is
kept column-wise (:class:`Book`): the policy backtest replays every asset of a candidate in
one pass over its days, each day one call for all assets, instead of one call per asset-day.

There is one implementation: the one-asset functions the batch job and the tests call
(:func:`serving.decide.decide`, ``risk_parameters``, ``apply_roles``, ``freeze``) run these
on one row. Every operation is the one the scalar code did, elementwise (IEEE ``+ - * / sqrt``
and ``min``/``max`` give the same bits on arrays; ``exp`` goes through ``math.exp`` element by
element: :func:`serving.policy.fractions_lost`), and the ``reason`` texts are formatted per
row, so a replayed path is the served one bit for bit and word for word.

What stays per asset and day, outside this module: the fail-safe's reason
(:func:`serving.decide.failsafe_reason`) and the standardized tail of the trailing window
(:func:`serving.policy.standardized_tail`, an order statistic of a window whose length differs
by asset), which a replay computes before the pass.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np

from configs.schema import PolicyConfig
from serving.policy import (
    EPS,
    MIN_IM_GAP,
    PARAMETER_FIELDS,
    Parameters,
    check_invariants,
    conservative_parameters,
    fractions_lost,
    initial_margin,
    invariants_hold,
    lending_view,
    liquidation_bonus,
    liquidity_addon,
)

FLOAT_FIELDS = tuple(f.name for f in fields(Parameters) if f.type == "float")
BOOL_FIELDS = tuple(f.name for f in fields(Parameters) if f.type == "bool")
EPOCH = dt.date(1970, 1, 1)
NO_DAY = np.iinfo(np.int64).min // 4  # an empty admitted slot: older than any window


def day_of(date: dt.date) -> int:
    """Days since the epoch."""
    return (date - EPOCH).days


@lru_cache(maxsize=4096)
def date_of(day: int) -> dt.date:
    """The date ``day`` days after the epoch (cached: the notes of a replay's announcements
    name a few hundred distinct dates hundreds of thousands of times)."""
    return EPOCH + dt.timedelta(days=int(day))


@dataclass
class Rows:
    """Parameter sets of many assets, column-wise: every :class:`Parameters` field."""

    cols: dict[str, np.ndarray]
    reasons: list[str]

    def __len__(self) -> int:
        return len(self.reasons)

    @classmethod
    def of(cls, params: Sequence[Parameters]) -> Rows:
        cols = {k: np.array([getattr(p, k) for p in params], float) for k in FLOAT_FIELDS}
        cols.update({k: np.array([getattr(p, k) for p in params], bool) for k in BOOL_FIELDS})
        return cls(cols, [p.reason for p in params])

    def parameters(self, i: int) -> Parameters:
        """Row ``i`` as a :class:`Parameters` (floats and bools, not numpy scalars)."""
        values: dict[str, object] = {k: float(self.cols[k][i]) for k in FLOAT_FIELDS}
        values.update({k: bool(self.cols[k][i]) for k in BOOL_FIELDS}, reason=self.reasons[i])
        out = object.__new__(Parameters)  # the fields set directly, as Parameters.with_reason
        out.__dict__.update({k: values[k] for k in PARAMETER_FIELDS})  # in field order
        return out

    def take(self, idx: np.ndarray) -> Rows:
        return Rows({k: v[idx] for k, v in self.cols.items()},
                    [self.reasons[i] for i in idx.tolist()])

    def put(self, idx: np.ndarray, other: Rows) -> None:
        for k, v in other.cols.items():
            self.cols[k][idx] = v
        for i, r in zip(idx.tolist(), other.reasons, strict=True):
            self.reasons[i] = r

    def check(self, cfg: PolicyConfig, bounds: bool = True) -> None:
        """:func:`serving.policy.check_invariants` of every row (its wording for the first
        row that fails); ``bounds`` False: solvency only (values in force)."""
        c = self.cols
        ok = invariants_hold(c["mmf"], c["imf"], c["lt"], c["ltv"], c["lb"],
                             c["max_leverage"], cfg, bounds)
        for i in np.flatnonzero(~ok).tolist():
            check_invariants(self.parameters(i), cfg, bounds)


@dataclass
class Book:
    """The policy state of many assets, column-wise (one :class:`serving.roles.PolicyState`
    per element; ``has`` False: nothing published yet).

    The LTVs admitted in the protection window sit in ``capacity`` slots per asset (day,
    LTV; :data:`NO_DAY` when empty): an update adds at most one, and those older than
    ``protect_days`` are dropped, so ``protect_days + 1`` slots hold every update of
    distinct days.
    """

    has: np.ndarray
    conservative: np.ndarray
    published: Rows
    pend: np.ndarray
    pend_lt: np.ndarray
    pend_lb: np.ndarray
    pend_announced: np.ndarray
    pend_effective: np.ndarray
    adm_day: np.ndarray   # (assets, capacity)
    adm_ltv: np.ndarray

    def __len__(self) -> int:
        return len(self.has)

    @classmethod
    def empty(cls, n: int, capacity: int) -> Book:
        nan = np.full(n, np.nan)
        cols = {k: nan.copy() for k in FLOAT_FIELDS}
        cols.update({k: np.zeros(n, bool) for k in BOOL_FIELDS})
        return cls(np.zeros(n, bool), np.zeros(n, bool), Rows(cols, [""] * n),
                   np.zeros(n, bool), nan.copy(), nan.copy(), np.zeros(n, np.int64),
                   np.zeros(n, np.int64), np.full((n, capacity), NO_DAY, np.int64),
                   np.full((n, capacity), -np.inf))

    @classmethod
    def of(cls, states: Sequence[object], capacity: int) -> Book:
        """From :class:`serving.roles.PolicyState` objects (or None); ``capacity`` is raised
        to fit the longest admitted list plus one."""
        capacity = max([capacity] + [len(s.admitted) + 1 for s in states
                                     if s is not None])  # type: ignore[attr-defined]
        book = cls.empty(len(states), capacity)
        given = [i for i, s in enumerate(states) if s is not None]
        if given:
            at = np.array(given)
            book.has[at] = True
            book.conservative[at] = [states[i].conservative for i in given]  # type: ignore[attr-defined]
            book.published.put(at, Rows.of([states[i].published  # type: ignore[attr-defined]
                                            for i in given]))
        for i in given:
            s = states[i]
            p = s.pending  # type: ignore[attr-defined]
            if p is not None:
                book.pend[i], book.pend_lt[i], book.pend_lb[i] = True, p.lt, p.lb
                book.pend_announced[i] = day_of(p.announced)
                book.pend_effective[i] = day_of(p.effective)
            for j, (d, v) in enumerate(s.admitted):  # type: ignore[attr-defined]
                book.adm_day[i, j], book.adm_ltv[i, j] = day_of(d), v
        return book

    def state(self, i: int) -> object:
        """Element ``i`` as a :class:`serving.roles.PolicyState` (None: nothing published);
        the admitted LTVs oldest first."""
        from serving.roles import PendingChange, PolicyState  # roles imports this module

        if not self.has[i]:
            return None
        pending = None
        if self.pend[i]:
            pending = PendingChange(float(self.pend_lt[i]), float(self.pend_lb[i]),
                                    date_of(self.pend_announced[i]),
                                    date_of(self.pend_effective[i]))
        used = np.flatnonzero(self.adm_day[i] != NO_DAY)
        used = used[np.argsort(self.adm_day[i, used], kind="stable")]
        admitted = tuple((date_of(self.adm_day[i, j]), float(self.adm_ltv[i, j]))
                         for j in used.tolist())
        return PolicyState(self.published.parameters(i), pending, admitted,
                           bool(self.conservative[i]))

    def take(self, idx: np.ndarray) -> Book:
        return Book(self.has[idx], self.conservative[idx], self.published.take(idx),
                    self.pend[idx], self.pend_lt[idx], self.pend_lb[idx],
                    self.pend_announced[idx], self.pend_effective[idx], self.adm_day[idx],
                    self.adm_ltv[idx])

    def put(self, idx: np.ndarray, other: Book) -> None:
        self.published.put(idx, other.published)
        for name in ("has", "conservative", "pend", "pend_lt", "pend_lb", "pend_announced",
                     "pend_effective", "adm_day", "adm_ltv"):
            getattr(self, name)[idx] = getattr(other, name)


@dataclass
class TargetInputs:
    """What the risk-based targets of many assets read (one element per asset)."""

    variance: np.ndarray
    var_z: np.ndarray          # standardized VaR / ES of the covered loss (tail or FHS)
    es_z: np.ndarray
    tail_note: list[str]
    adv_usd: np.ndarray
    loss_is_proxy: np.ndarray
    stress_es: np.ndarray      # unweighted stress ES (NaN: none / not used)
    loss_memory: np.ndarray    # unweighted loss memory (NaN: none / not used)
    sigma_stress: np.ndarray   # NaN: no σ history
    sigma_long: np.ndarray
    hours: float
    # what a young asset's stress ES was taken from (serving.seasoning.season); None: no note
    stress_note: list[str] | None = None

    def placed(self, idx: np.ndarray, n: int) -> TargetInputs:
        """These rows at positions ``idx`` of ``n`` (NaN, no note, no proxy elsewhere: rows
        that :func:`update` freezes and never reads)."""
        arrays = {}
        for f in fields(self):
            if f.name in _NOT_ARRAYS:
                continue
            mine = getattr(self, f.name)
            full = np.zeros(n, bool) if mine.dtype == bool else np.full(n, np.nan)
            full[idx] = mine
            arrays[f.name] = full

        def spread(given: list[str]) -> list[str]:
            notes = [""] * n
            for i, note in zip(idx.tolist(), given, strict=True):
                notes[i] = note
            return notes

        return TargetInputs(**arrays, tail_note=spread(self.tail_note), hours=self.hours,
                            stress_note=None if self.stress_note is None
                            else spread(self.stress_note))

    def take(self, idx: np.ndarray) -> TargetInputs:
        arrays = {f.name: getattr(self, f.name)[idx] for f in fields(self)
                  if f.name not in _NOT_ARRAYS}
        rows = idx.tolist()
        return TargetInputs(**arrays, tail_note=[self.tail_note[i] for i in rows],
                            hours=self.hours, stress_note=None if self.stress_note is None
                            else [self.stress_note[i] for i in rows])


_NOT_ARRAYS = ("tail_note", "hours", "stress_note")


def targets(x: TargetInputs, cfg: PolicyConfig, prev_imf: np.ndarray) -> Rows:
    """Risk-based targets (no fail-safe, no roles) of every asset; ``prev_imf`` is each one's
    last published IMF (NaN: none), which the exhaustible APC buffer needs. The formulas:
    :func:`serving.decide.risk_parameters`."""
    sigma = np.sqrt(x.variance)
    var_z, es_z = x.var_z, x.es_z
    z = es_z if cfg.measure == "es" else var_z
    addon = liquidity_addon(sigma, x.adv_usd, cfg)
    tail = fractions_lost(z * sigma)
    nan = np.full(len(sigma), np.nan)
    stress = cfg.stress_floor_weight * x.stress_es if cfg.stress_floor_weight > 0 else nan
    memory = cfg.memory_weight * x.loss_memory if cfg.memory_weight > 0 else nan
    # max(tail, the finite ones of stress and memory), in that order
    raw = tail
    with np.errstate(invalid="ignore"):
        raw = np.where(np.isfinite(stress) & (stress > raw), stress, raw)
        raw = np.where(np.isfinite(memory) & (memory > raw), memory, raw)
    mmf = np.minimum(np.maximum(raw, cfg.mmf_floor), cfg.mmf_cap)
    known = np.isfinite(x.sigma_stress)
    mmf_stress, mmf_long = nan.copy(), nan.copy()
    if known.any():
        mmf_stress[known] = np.minimum(fractions_lost(z[known] * x.sigma_stress[known]),
                                       cfg.mmf_cap)
        mmf_long[known] = np.minimum(fractions_lost(z[known] * x.sigma_long[known]),
                                     cfg.mmf_cap)
    imf = initial_margin(mmf, mmf_stress, mmf_long, cfg, prev_imf)
    lb = liquidation_bonus(sigma, addon, x.hours, cfg)
    view = lending_view(mmf, imf, lb)
    # math.isclose(mmf, raw, abs_tol=1e-15) elementwise
    clamped = ~((mmf == raw) | (np.abs(mmf - raw) <= np.maximum(
        1e-9 * np.maximum(np.abs(mmf), np.abs(raw)), 1e-15)))
    binds_stress = (raw > tail) & np.isfinite(stress) & (raw == stress)
    binds_memory = (raw > tail) & ~binds_stress
    reasons = []
    for i in range(len(sigma)):
        notes = [x.tail_note[i]]
        if binds_stress[i]:
            notes.append(f"stress floor {stress[i]:.4f} binds")
        elif binds_memory[i]:
            notes.append(f"loss memory {memory[i]:.4f} binds")
        if x.stress_note is not None and x.stress_note[i]:
            notes.append(x.stress_note[i])
        if clamped[i]:
            notes.append(f"MMF {raw[i]:.4f} clamped to "
                         f"{'floor' if raw[i] < mmf[i] else 'cap'} {mmf[i]:.4f}")
        if x.loss_is_proxy[i]:
            notes.append("covered loss from the daily-range proxy")
        reasons.append("; ".join(filter(None, notes)))
    n = len(sigma)
    cols = {"sigma_1d": sigma, "variance_1d": np.asarray(x.variance, float),
            "loss_var": fractions_lost(var_z * sigma), "loss_es": fractions_lost(es_z * sigma),
            "loss_level": np.full(n, cfg.confidence), "stress_floor": stress,
            "loss_memory": memory, "target_mmf": mmf, "liquidity_addon": addon, "mmf": mmf,
            **view, "flag_fallback": np.zeros(n, bool), "flag_clamped": clamped,
            "flag_stale": np.zeros(n, bool), "flag_proxy": np.asarray(x.loss_is_proxy, bool),
            "flag_young": (np.array([bool(t) for t in x.stress_note], bool)
                           if x.stress_note is not None else np.zeros(n, bool)),
            "flag_held": np.zeros(n, bool)}
    out = Rows(cols, reasons)
    out.check(cfg)
    return out


def roles(target: Rows, book: Book, as_of: np.ndarray, cfg: PolicyConfig) -> tuple[Rows, Book]:
    """Published parameters and next state of every asset from its risk-based target; the
    rules: :func:`serving.roles.apply_roles`. ``as_of`` in days since the epoch, one per
    asset, after the day of its state's last update."""
    r = cfg.roles
    t = target.cols
    n = len(target)
    fresh = (~book.has | book.conservative) if r.enabled else np.ones(n, bool)
    lt_e = np.where(fresh, t["lt"], book.published.cols["lt"])
    lb_e = np.where(fresh, t["lb"], book.published.cols["lb"])
    prev_ltv = np.where(fresh, np.nan, book.published.cols["ltv"])
    pend = book.pend & ~fresh
    pend_lt, pend_lb = book.pend_lt.copy(), book.pend_lb.copy()
    pend_announced, pend_effective = book.pend_announced.copy(), book.pend_effective.copy()
    # admitted LTVs still in the protection window (none for a fresh start)
    valid = ((as_of[:, None] - book.adm_day) <= r.protect_days) & ~fresh[:, None]
    adm_day = np.where(valid, book.adm_day, NO_DAY)
    adm_ltv = np.where(valid, book.adm_ltv, -np.inf)
    notes: list[list[str]] = [[] for _ in range(n)]
    lt_min = adm_ltv.max(axis=1, initial=-np.inf) + r.ltv_gap
    due = pend & (pend_effective <= as_of)
    # a change coming due is read against today's target first: one looser than today's
    # step from the values in force (a higher LT, or a thinner cushion) would take effect on
    # a day the target lies above it (a crash the day a loosening falls due): it is trimmed
    # to the step where the step loosens within what was announced (the notice has run for
    # more), withdrawn otherwise; the tightening then starts from the values in force
    lt_s, lb_s, moves_s = _announce(t["mmf"], t["lb"], lt_e, lb_e, lt_min, cfg)
    tighter_s = _tighter(lt_s, lb_s, lt_e, lb_e)
    # only a change that loosens the values in force (a higher LT, or a thinner cushion,
    # whatever LT does: a lower LT under a larger bonus may still thin the cushion) is held to
    # the day's target: a tightening falling due takes effect whatever the target did since
    # (a further rise is the next step's)
    eases = (pend_lt > lt_e + EPS) | (pend_lt * pend_lb > lt_e * lb_e + EPS)
    late = due & eases & _looser(pend_lt, pend_lb, lt_s, lb_s)
    # trimmed only to a step that loosens (LT not lowered): a lower LT under a thinner
    # cushion is neither, and waits for its own notice
    cut = (late & moves_s & ~tighter_s & (lt_s >= lt_e - EPS)
           & _within(lt_s, lb_s, pend_lt, pend_lb))
    for i in np.flatnonzero(due & ~late).tolist():
        notes[i].append(f"LT {pend_lt[i]:.4f} / LB {pend_lb[i]:.4f} announced "
                        f"{date_of(pend_announced[i])} in effect")
    for i in np.flatnonzero(cut).tolist():
        notes[i].append(f"LT {pend_lt[i]:.4f} / LB {pend_lb[i]:.4f} announced "
                        f"{date_of(pend_announced[i])} in effect trimmed to today's target: "
                        f"LT {lt_s[i]:.4f} / LB {lb_s[i]:.4f}")
    for i in np.flatnonzero(late & ~cut).tolist():
        notes[i].append(f"LT {pend_lt[i]:.4f} / LB {pend_lb[i]:.4f} announced "
                        f"{date_of(pend_announced[i])} withdrawn on its effective day: "
                        "today's target no longer supports it")
    lt_e = np.where(due & ~late, pend_lt, np.where(cut, lt_s, lt_e))
    lb_e = np.where(due & ~late, pend_lb, np.where(cut, lb_s, lb_e))
    pend &= ~due
    # the step from the values now in force: today's step where nothing took effect
    moved = (due & ~late) | cut
    lt_n, lb_n, moves = lt_s, lb_s, moves_s
    if moved.any():
        lt_m, lb_m, moves_m = _announce(t["mmf"], t["lb"], lt_e, lb_e, lt_min, cfg)
        lt_n, lb_n = np.where(moved, lt_m, lt_s), np.where(moved, lb_m, lb_s)
        moves = np.where(moved, moves_m, moves_s)
    # the lender first: a change that lowers LT, or widens the cushion MMF = 1 - LT·LB under
    # an LT not raised, takes the short notice; any other (LT up; LB up under a held LT: a
    # larger penalty and a thinner cushion) the long one
    tighter = _tighter(lt_n, lb_n, lt_e, lb_e)
    # a pending change looser than today's step (a higher LT, or a thinner cushion) must not
    # take effect as announced on a day the target lies above it: withdrawn where the step
    # is held (LT pinned by the admitted LTVs, or within the deadband); trimmed to the step
    # where the step is a loosening within what was announced (no higher LT, no thinner
    # cushion: the notice already running covers it, and restarting it at every move of the
    # target would hold the margin up for good); otherwise replaced by the step, announced
    # with its own notice
    looser = pend & _looser(pend_lt, pend_lb, lt_n, lb_n)
    within = _within(lt_n, lb_n, pend_lt, pend_lb)
    withdraw = looser & ~moves
    trim = looser & moves & ~tighter & (lt_n >= lt_e - EPS) & within
    for i in np.flatnonzero(withdraw).tolist():
        notes[i].append(f"LT {pend_lt[i]:.4f} / LB {pend_lb[i]:.4f} announced "
                        f"{date_of(pend_announced[i])} withdrawn")
    for i in np.flatnonzero(trim).tolist():
        notes[i].append(f"LT {pend_lt[i]:.4f} / LB {pend_lb[i]:.4f} announced "
                        f"{date_of(pend_announced[i])} trimmed to LT {lt_n[i]:.4f} / LB "
                        f"{lb_n[i]:.4f}, effective {date_of(pend_effective[i])}")
    pend &= ~withdraw
    pend_lt, pend_lb = np.where(trim, lt_n, pend_lt), np.where(trim, lb_n, pend_lb)
    # an announced tightening is never replaced by a further one: replaced, it would restart
    # its notice, and a target creeping up every day would postpone it for good under a
    # notice of two days or more; it falls due as announced and the next step follows it
    kept = pend & _tighter(pend_lt, pend_lb, lt_e, lb_e) & tighter
    new = ~fresh & moves & (~pend | (looser & ~trim & ~kept))
    if new.any():
        notice = np.where(tighter, r.tighten_notice_days, r.notice_days)
        pend = pend | new
        pend_lt, pend_lb = np.where(new, lt_n, pend_lt), np.where(new, lb_n, pend_lb)
        pend_announced = np.where(new, as_of, pend_announced)
        pend_effective = np.where(new, as_of + notice, pend_effective)
        for i in np.flatnonzero(new).tolist():
            notes[i].append(f"announced LT {lt_n[i]:.4f} / LB {lb_n[i]:.4f} "
                            f"effective {date_of(pend_effective[i])}")
    # IMF keeps its buffer over the MMF *in force* too: while a crash margin is being released
    # slowly, new borrowing must not sit closer to liquidation than the APC buffer allows
    ratio = 1.0 + (cfg.apc.buffer if cfg.apc.buffer_enabled else MIN_IM_GAP)
    imf_need = np.maximum(t["imf"], np.minimum((1.0 - lt_e * lb_e) * ratio, 1.0))
    # new borrowing stays a gap below the LT in force, the pending LT and the target LT: an
    # LTV admitted above the target would hold LT up (the admitted-LTV floor) every day it is
    # re-admitted, so a target tighter than LT would never take effect (an asset whose IMF
    # buffer is under the gap, MMF under ~4·gap·LB, was pinned at its MMF for good)
    cap = np.minimum(np.minimum(lt_e, np.where(pend, pend_lt, np.inf)), t["lt"]) - r.ltv_gap
    free = (1.0 - imf_need) / lb_e
    ltv = np.maximum(np.minimum(free, cap), 0.0)
    with np.errstate(invalid="ignore"):
        # a sub-deadband change is not published, except where the previous LTV lies above
        # the risk-based one: new borrowing never sits closer to liquidation than the IMF
        # buffer over the MMF in force allows
        keep = ((prev_ltv > 0.0) & (prev_ltv <= cap) & (prev_ltv <= free + EPS)
                & (np.abs(ltv - prev_ltv) < r.deadband))
    capped = ~keep & (ltv < free - EPS)
    ltv = np.where(keep, prev_ltv, ltv)  # a sub-deadband change of the maximum LTV
    for i in np.flatnonzero(capped).tolist():
        notes[i].append(f"LTV capped at min(LT, pending LT, target LT) - {r.ltv_gap:g}")
    imf = 1.0 - ltv * lb_e
    cols = dict(t)
    cols.update(mmf=1.0 - lt_e * lb_e, imf=imf, lt=lt_e, lb=lb_e, ltv=ltv,
                max_leverage=1.0 / imf,
                flag_held=(np.abs(lt_e - t["lt"]) > 1e-9) | (np.abs(lb_e - t["lb"]) > 1e-9)
                | (np.abs(ltv - t["ltv"]) > 1e-9))
    reasons = [a if not b else "; ".join(filter(None, [a, "; ".join(b)]))
               for a, b in zip(target.reasons, notes, strict=True)]
    out = Rows(cols, reasons)
    # LT and LB in force (or a change announced under an earlier config) may lie outside this
    # config's bounds; they move there by announced changes (:func:`_announce` steps toward
    # them): solvency only (:func:`serving.policy.check_invariants`)
    out.check(cfg, bounds=False)
    # the LTV admitted today joins the window (:func:`_free_slot`)
    admit = np.flatnonzero(ltv > 0.0)
    if len(admit):
        slot = _free_slot(adm_day[admit])
        adm_day[admit, slot], adm_ltv[admit, slot] = as_of[admit], ltv[admit]
    ones = np.ones(n, bool)
    return out, Book(ones, ~ones, out, pend, pend_lt, pend_lb, pend_announced,
                     pend_effective, adm_day, adm_ltv)


def _free_slot(days: np.ndarray) -> np.ndarray:
    """Per row of admitted days, the slot a new entry takes: the one after the last used slot
    when it is free (so the slots stay in the order of the updates, wrapping around), else
    the first free one. Raises when a row has none (more updates than distinct days)."""
    free = days == NO_DAY
    if not free.any(axis=1).all():
        raise ValueError("policy state: more admitted LTVs in the window than updates on "
                         "distinct days allow (an update repeated a day)")
    width = days.shape[1]
    used = ~free
    after = np.where(used.any(axis=1), width - np.argmax(used[:, ::-1], axis=1), 0)
    rows = np.arange(len(days))
    ok = after < width
    ok[ok] = free[rows[ok], after[ok]]
    return np.where(ok, after, np.argmax(free, axis=1))


def _tighter(lt_n: np.ndarray, lb_n: np.ndarray, lt_e: np.ndarray, lb_e: np.ndarray
             ) -> np.ndarray:
    """Whether a step from the values in force is a tightening: a lower LT under a cushion
    MMF = 1 - LT·LB not thinner, or a wider cushion under an LT not raised (the lender
    first: the short notice). A lower LT under a larger bonus that thins the cushion is no
    tightening for the lender: it takes the long notice and its due day's check."""
    cushion_thinner = lt_n * lb_n > lt_e * lb_e + EPS
    return (((lt_n < lt_e - EPS) & ~cushion_thinner)
            | ((lt_n <= lt_e + EPS) & (lt_n * lb_n < lt_e * lb_e - EPS)))


def _looser(pend_lt: np.ndarray, pend_lb: np.ndarray, lt_n: np.ndarray, lb_n: np.ndarray
            ) -> np.ndarray:
    """Whether an announced change is looser than a step: a higher LT or a thinner cushion."""
    return (pend_lt > lt_n + EPS) | (pend_lt * pend_lb > lt_n * lb_n + EPS)


def _within(lt_n: np.ndarray, lb_n: np.ndarray, pend_lt: np.ndarray, pend_lb: np.ndarray
            ) -> np.ndarray:
    """Whether a step stays within an announced change: no higher LT, no thinner cushion and
    no larger LB (an LB rise needs the long notice of its own; a trim that raised it would
    take effect on the shorter notice already running)."""
    return ((lt_n <= pend_lt + EPS) & (lt_n * lb_n <= pend_lt * pend_lb + EPS)
            & (lb_n <= pend_lb + EPS))


def _announce(mmf_t: np.ndarray, lb_t: np.ndarray, lt_e: np.ndarray, lb_e: np.ndarray,
              lt_min: np.ndarray, cfg: PolicyConfig
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LT, LB, moves) of the next step from the effective values toward the target: the
    rules of :func:`serving.roles.apply_roles` (its step 2); ``moves`` False where the step
    is within the deadband."""
    r = cfg.roles
    lb_lo, lb_hi = np.maximum(lb_e - r.lb_step, 1.0), np.minimum(lb_e + r.lb_step, cfg.lb_max)
    lb_n = np.minimum(np.maximum(lb_t, lb_lo), lb_hi)
    lt_n = np.minimum(np.maximum((1.0 - mmf_t) / lb_n, lt_e - r.lt_down_step),
                      lt_e + r.lt_up_step)
    # the admitted LTVs' floor last: it is the guarantee to open positions, above the MMF
    # floor too (a floor raised by a new config waits until those LTVs leave the window).
    # It holds LT, never raises it: under one config every admitted LTV + gap is <= the LT
    # in force, and a gap widened by a new config does not push LT up (past its step, or
    # LT·LB past 1)
    lt_n = np.minimum(lt_n, (1.0 - cfg.mmf_floor) / lb_lo)
    lt_n = np.maximum(lt_n, np.minimum(lt_min, lt_e))
    mmf_e = 1.0 - lt_e * lb_e
    held = (1.0 - mmf_e) / lt_n
    # MMF moves toward its target, never away and never past it: with LT held up by the
    # admitted LTVs, a rising LB would otherwise thin the cushion below the target
    toward = np.maximum((1.0 - mmf_t) / lt_n, held)
    lb_n = np.where(mmf_t >= mmf_e, np.minimum(lb_n, held),
                    np.minimum(np.maximum(lb_n, held), toward))
    lb_n = np.minimum(np.maximum(lb_n, (1.0 - cfg.mmf_cap) / lt_n), (1.0 - cfg.mmf_floor) / lt_n)
    lb_n = np.minimum(np.maximum(lb_n, lb_lo), lb_hi)
    band = max(r.deadband, EPS)
    moves = ~((np.abs(lt_n - lt_e) < band) & (np.abs(lb_n - lb_e) < band))
    return lt_n, lb_n, moves


def freeze(book: Book, reasons: list[str], stale: np.ndarray, cfg: PolicyConfig
           ) -> tuple[Rows, Book]:
    """Fail-safe of every asset: no new borrowing, LT and LB held, pending change kept; the
    rules: :func:`serving.roles.freeze`. ``reasons`` name why, one per asset."""
    n = len(book)
    prior = book.has & ~book.conservative
    cols = {k: v.copy() for k, v in book.published.cols.items()}
    out_reasons = [f"{why}; frozen: LTV 0, LT and LB held" for why in reasons]
    cols["ltv"][:], cols["imf"][:], cols["max_leverage"][:] = 0.0, 1.0, 1.0
    cols["flag_fallback"][:], cols["flag_held"][:] = True, True
    cols["flag_stale"] = np.asarray(stale, bool).copy()
    out = Rows(cols, out_reasons)
    fallback = np.flatnonzero(~prior)
    for i in fallback.tolist():  # nothing (trustworthy) published: the static set
        p = conservative_parameters(cfg, reasons[i], stale=bool(stale[i]))
        out.put(np.array([i]), Rows.of([p]))
    # held values are checked for solvency only: a freeze must hold under any config, also
    # one whose bounds moved since they were published (a retrain, a rollback)
    out.check(cfg, bounds=False)
    state = Book(np.ones(n, bool), ~prior, out, book.pend & prior, book.pend_lt,
                 book.pend_lb, book.pend_announced, book.pend_effective,
                 np.where(prior[:, None], book.adm_day, NO_DAY),
                 np.where(prior[:, None], book.adm_ltv, -np.inf))
    return out, state


def update(as_of: np.ndarray, why: list[str | None], x: TargetInputs, book: Book,
           cfg: PolicyConfig) -> tuple[Rows, Book]:
    """One update of every asset (:func:`serving.decide.decide` on arrays): the fail-safe
    freeze where ``why`` names a reason (stale when it starts with "stale"), else the
    targets under the parameter roles. ``x`` is read only where ``why`` is None."""
    frozen = np.array([w is not None for w in why], bool)
    if not frozen.any():
        prev_imf = np.where(book.has & ~book.conservative, book.published.cols["imf"], np.nan)
        return roles(targets(x, cfg, prev_imf), book, as_of, cfg)
    n = len(book)
    out = Book.empty(n, book.adm_day.shape[1])
    rows = out.published
    ice = np.flatnonzero(frozen)
    texts = [f"fail-safe: {why[i]}" for i in ice.tolist()]
    stale = np.array([str(why[i]).startswith("stale") for i in ice.tolist()], bool)
    out.put(ice, freeze(book.take(ice), texts, stale, cfg)[1])
    live = np.flatnonzero(~frozen)
    if len(live):
        out.put(live, update(as_of[live], [None] * len(live), x.take(live), book.take(live),
                             cfg)[1])
    return rows, out


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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config
from models.base import asset_frame
from serving.decide import failsafe_why, tail_z
from serving.inputs import AssetHistory, AssetSeries, LossTerms, asset_history, asset_series
from serving.policy import PARAMETER_FIELDS, finite_tails
from serving.seasoning import Reference, season
from serving.seasoning import reference as stress_reference
from serving.update import BOOL_FIELDS, Book, TargetInputs, update


def replay(h: AssetHistory, cfg: Config, tail_var: np.ndarray | None = None,
           tail_es: np.ndarray | None = None, terms: LossTerms | None = None,
           reference: Reference | None = None) -> pd.DataFrame:
    """Published parameters and realized outcome for every cutoff of one asset
    (:func:`replay_all` of that asset alone, without its name column).

    With ``tail_var``/``tail_es`` (fractions of value, one per cutoff, NaN where missing) the
    direct tail forecast replaces the FHS tail where both are finite; ``tail_fallback`` marks
    the days that fell back to FHS. ``terms`` (of this history's realized losses) shares the
    stress ES and loss memory with the asset's other replays (:func:`policy_paths`);
    ``reference``: the universe's seasoned stress ES (:mod:`serving.seasoning`; None: the
    asset alone, so no seasoned asset lends its window on its young days).
    """
    tails = None if tail_var is None or tail_es is None else [(tail_var, tail_es)]
    return replay_all([("", h)], cfg, tails, None if terms is None else [terms],
                      reference).drop(columns="asset")


@dataclass(frozen=True)
class Replay:
    """One candidate's replay: its assets' (name, history), its config, and optionally a
    direct tail forecast per asset ((VaR, ES) arrays, as :func:`replay`), the assets'
    shared :class:`LossTerms` and the universe's stress reference for young assets
    (:class:`serving.seasoning.Reference` of the covered-loss variant of ``cfg``; None: no
    seasoned asset lends a stress window)."""

    histories: Sequence[tuple[str, AssetHistory]]
    cfg: Config
    tails: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
    terms: Sequence[LossTerms] | None = None
    reference: Reference | None = None


def replay_all(histories: Sequence[tuple[str, AssetHistory]], cfg: Config,
               tails: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
               terms: Sequence[LossTerms] | None = None,
               reference: Reference | None = None) -> pd.DataFrame:
    """Published parameters and realized outcomes of every (asset, history) for every cutoff,
    rows in the given order (:func:`replay_together` of one candidate)."""
    return replay_together([Replay(histories, cfg, tails, terms, reference)])[0]


def replay_together(replays: Sequence[Replay]) -> list[pd.DataFrame]:
    """Each candidate's :func:`replay_all` path: the served :func:`serving.decide.decide`
    called day by day per asset, threading its state, with the updates of every asset of
    every candidate that shares a policy config made at once (:func:`serving.update.update`
    on one row per (candidate, asset): the states are independent, so the k-th update of
    every row is one call, and the call's fixed cost is shared by all of them).

    Per row and day, before the pass: the fail-safe's reason and the standardized tail of the
    trailing window (an order statistic whose window differs by asset); the stress ES, loss
    memory and σ terms of every day at once (``terms`` shares the first two among an asset's
    replays). A direct tail replaces the FHS tail where its VaR and ES are both finite.
    """
    groups: dict[tuple[str, float], list[int]] = {}
    for j, r in enumerate(replays):
        key = (r.cfg.policy.model_dump_json(), float(r.cfg.features.liquidation_delay_hours))
        groups.setdefault(key, []).append(j)
    fhs = SharedFhs(replays)
    out: list[pd.DataFrame | None] = [None] * len(replays)
    for members in groups.values():
        lanes = [(j, a) for j in members for a in range(len(replays[j].histories))]
        result = _run_lanes(replays, lanes, fhs)
        for j in members:
            out[j] = _block(replays[j], [result[(j, a)] for a in
                                         range(len(replays[j].histories))])
    return [b for b in out if b is not None]


Lane = tuple[np.ndarray, dict[str, np.ndarray], list[str]]  # (fallback, columns, reasons)


def _fhs_key(cfg: Config) -> tuple[Any, ...]:
    """What the fail-safe's reasons and the FHS tail of a history read of the config, but the
    confidence level."""
    p = cfg.policy
    return (cfg.features.update_interval_days, cfg.data.stale_after_days, p.fhs_window,
            p.fhs_min_obs, p.tail, p.failsafe.model_dump_json())


class SharedFhs:
    """Each history's fail-safe reasons and FHS tails, computed once for every candidate that
    replays it without a direct tail: a forecaster's grid points (confidence levels) and
    knob variants replay the same history, and differ, in these terms, by the confidence
    only. The first lane that asks computes them at every confidence any candidate asks of
    that history (:func:`_daily_terms`): one pass over the days, one slice of the window
    and one partial sort a day for all the levels."""

    def __init__(self, replays: Sequence[Replay]) -> None:
        self._levels: dict[tuple[Any, ...], set[float]] = {}
        self._done: dict[tuple[Any, ...], tuple[list[str | None], dict[float, _Tails]]] = {}
        for r in replays:
            if r.tails is None:
                key = _fhs_key(r.cfg)
                for _, h in r.histories:
                    self._levels.setdefault((id(h), *key), set()).add(
                        float(r.cfg.policy.confidence))

    def terms(self, h: AssetHistory, cfg: Config
              ) -> tuple[list[str | None], np.ndarray, np.ndarray, list[str]]:
        """(reasons, standardized VaR, ES, notes) of ``h`` under ``cfg``, one per day."""
        key = (id(h), *_fhs_key(cfg))
        q = float(cfg.policy.confidence)
        done = self._done.get(key)
        if done is None:
            levels = sorted(self._levels.get(key, set()) | {q})
            done = self._done[key] = _daily_terms(h, cfg, levels)
        why, tails = done
        return (why, *tails[q])


_Tails = tuple[np.ndarray, np.ndarray, list[str]]  # standardized VaR, ES, notes per day


def _daily_terms(h: AssetHistory, cfg: Config, levels: list[float],
                 tail: tuple[np.ndarray, np.ndarray] | None = None,
                 direct: np.ndarray | None = None
                 ) -> tuple[list[str | None], dict[float, _Tails]]:
    """Per day of one asset: the fail-safe's reason (None: trusted) and, where trusted, the
    standardized tail and its note at each confidence of ``levels``, as
    :func:`serving.inputs.policy_inputs` and :func:`serving.decide.decide` see that day. On
    the ``direct`` days (finite VaR and ES in ``tail``) the direct tail, the same at every
    level; elsewhere FHS: each day's window sliced once and its order statistics at every
    level from one partial sort (:func:`serving.policy.finite_tails`, each level's the
    numbers :func:`serving.policy.finite_tail` gives alone)."""
    p, u = cfg.policy, cfg.features.update_interval_days
    per_level = [p.model_copy(update={"confidence": q}) for q in levels]
    known, window = h.known(u), p.fhs_window
    variance, ret = h.variance.tolist(), h.ret.tolist()
    # the finite standardized losses once, and how many precede each position: a day's
    # window z[lo:known] filtered is the slice zf[before[lo]:before[known]] of it
    finite = np.isfinite(h.z)
    zf = h.z[finite]
    before = np.concatenate(([0], np.cumsum(finite))).tolist()
    m = len(variance)
    var_z = [np.full(m, np.nan) for _ in levels]
    es_z = [np.full(m, np.nan) for _ in levels]
    notes: list[list[str]] = [[] for _ in levels]
    why: list[str | None] = []
    for i in range(m):
        tv = te = None
        if direct is not None and direct[i]:
            assert tail is not None
            tv, te = float(tail[0][i]), float(tail[1][i])
        reason = failsafe_why(0, variance[i], variance[i - 1] if i else math.nan, ret[i], tv,
                              te, cfg.data.stale_after_days, p)
        why.append(reason)
        if reason is not None:
            for n in notes:
                n.append("")
            continue
        if tv is not None:
            tails = [tail_z(np.empty(0), math.sqrt(variance[i]), tv, te, p)] * len(levels)
        else:
            lo = max(known[i] - window, 0)
            tails = finite_tails(zf[before[lo]:before[known[i]]][-window:], per_level)
        for k, (v, e, note) in enumerate(tails):
            var_z[k][i], es_z[k][i] = v, e
            notes[k].append(note)
    return why, {q: (var_z[k], es_z[k], notes[k]) for k, q in enumerate(levels)}


def _run_lanes(replays: Sequence[Replay], lanes: list[tuple[int, int]],
               fhs: SharedFhs | None = None) -> dict[tuple[int, int], Lane]:
    """Replay every lane (candidate ``j``, asset ``a``; the candidates share a policy config)
    update by update, all lanes at once; ``fhs`` shares the fail-safe's reasons and FHS tails
    of a history among the candidates that replay it."""
    first = replays[lanes[0][0]].cfg if lanes else None
    n = len(lanes)
    hist = [replays[j].histories[a][1] for j, a in lanes]
    lengths = np.array([len(h.dates) for h in hist], np.int64)
    width = int(lengths.max(initial=0))
    grid = {name: np.full((n, width), np.nan) for name in (
        "variance", "var_z", "es_z", "adv_usd", "stress_es", "loss_memory", "sigma_stress",
        "sigma_long")}  # named as the TargetInputs fields they fill
    proxy = np.zeros((n, width), bool)
    noted = np.zeros((n, width), bool)  # a young asset's day (a seasoning note)
    as_of = np.zeros((n, width), np.int64)
    why: list[list[str | None]] = []
    notes: list[list[str]] = []
    stress_notes: dict[int, list[str]] = {}  # rows with a young day: the seasoning's notes
    fallback: list[np.ndarray] = []
    for row, ((j, a), h) in enumerate(zip(lanes, hist, strict=True)):
        r = replays[j]
        cfg, p, m = r.cfg, r.cfg.policy, len(h.dates)
        t = r.terms[a] if r.terms is not None else LossTerms.of(h)
        if r.terms is not None:
            t.check(h)
        if p.stress_floor_weight > 0:
            own = t.stress_at(h.days, p)
            count = t.kept_at(h.days, p)
            young = np.flatnonzero(count < p.stress_window_obs)
            if len(young):  # borrow the universe's worst stress window (serving.seasoning)
                ref = np.full(len(young), np.nan)
                source = [""] * len(young)
                if r.reference is not None:
                    ref, source = r.reference.at(h.days[young], p, h.loss_is_proxy[young])
                own[young], young_notes = season(own[young], count[young], ref, source, p)
                stress_notes[row] = [""] * m
                for i, note in zip(young.tolist(), young_notes, strict=True):
                    stress_notes[row][i] = note
                noted[row, young] = True
            grid["stress_es"][row, :m] = own
        if p.memory_weight > 0:
            grid["loss_memory"][row, :m] = t.memory_at(h.days, p.memory_half_life_days)
        s_stress, s_long = h.sigma_terms(p.apc.stress_quantile)
        grid["sigma_stress"][row, :m], grid["sigma_long"][row, :m] = s_stress, s_long
        grid["variance"][row, :m], grid["adv_usd"][row, :m] = h.variance, h.adv_usd
        proxy[row, :m], as_of[row, :m] = h.loss_is_proxy, h.days
        tail = r.tails[a] if r.tails is not None else None
        direct = np.zeros(m, bool)
        if tail is not None:
            direct = np.isfinite(tail[0]) & np.isfinite(tail[1])
        fallback.append(~direct)
        if tail is None and fhs is not None:
            why_a, grid["var_z"][row, :m], grid["es_z"][row, :m], notes_a = fhs.terms(h, cfg)
        else:
            q = float(p.confidence)
            why_a, own = _daily_terms(h, cfg, [q], tail, direct)
            grid["var_z"][row, :m], grid["es_z"][row, :m], notes_a = own[q]
        why.append(why_a)
        notes.append(notes_a)
    out = {k: np.zeros((n, width), bool if k in BOOL_FIELDS else float)
           for k in PARAMETER_FIELDS if k != "reason"}
    reasons: list[list[str]] = [[""] * int(m) for m in lengths]
    if first is not None:
        p, hours = first.policy, float(first.features.liquidation_delay_hours)
        book = Book.empty(n, p.roles.protect_days + 1)
        for k in range(width):
            live = np.flatnonzero(lengths > k)
            whole = len(live) == n
            young_notes = None  # a list only on the days a young asset is among the rows
            if stress_notes and noted[live, k].any():
                young_notes = [stress_notes[i][k] if i in stress_notes else "" for i in live]
            x = TargetInputs(**{f: g[live, k] for f, g in grid.items()},
                             loss_is_proxy=proxy[live, k],
                             tail_note=[notes[i][k] for i in live], hours=hours,
                             stress_note=young_notes)
            state = book if whole else book.take(live)
            rows, state = update(as_of[live, k], [why[i][k] for i in live], x, state, p)
            if whole:
                book = state
            else:
                book.put(live, state)
            for name, col in rows.cols.items():
                out[name][live, k] = col
            for i, text in zip(live.tolist(), rows.reasons, strict=True):
                reasons[i][k] = text
    return {lane: (fallback[i], {k: v[i, :lengths[i]] for k, v in out.items()}, reasons[i])
            for i, lane in enumerate(lanes)}


def _block(r: Replay, lanes: list[Lane]) -> pd.DataFrame:
    """One candidate's rows, asset by asset in the given order."""
    hs = [h for _, h in r.histories]
    lengths = [len(h.dates) for h in hs]
    block = pd.DataFrame({"asset": np.repeat(np.array([name for name, _ in r.histories],
                                                      dtype=object), lengths)})
    block["date"] = (pd.DatetimeIndex(np.concatenate([h.dates.to_numpy() for h in hs]))
                     if hs else pd.DatetimeIndex([]))
    for name in PARAMETER_FIELDS:
        if name == "reason":
            block[name] = [text for lane in lanes for text in lane[2]]
        else:
            dtype = bool if name in BOOL_FIELDS else float
            block[name] = (np.concatenate([lane[1][name] for lane in lanes]) if hs
                           else np.zeros(0, dtype))
    if r.tails is not None:
        block["tail_fallback"] = (np.concatenate([lane[0] for lane in lanes]) if hs
                                  else np.zeros(0, bool))
    block["loss_next"] = np.concatenate([h.loss_next for h in hs]) if hs else np.zeros(0)
    block["short_loss_next"] = (np.concatenate([h.short_loss_next for h in hs]) if hs
                                else np.zeros(0))
    return block




def policy_path(panel: pd.DataFrame, forecasts: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Daily published parameters and outcomes for every asset with forecasts."""
    return policy_paths(panel, [(forecasts, cfg)])[0]


def policy_paths(panel: pd.DataFrame, items: Sequence[tuple[pd.DataFrame, Config]],
                 references: dict[str, Reference] | None = None) -> list[pd.DataFrame]:
    """:func:`policy_path` of each (forecasts, config), all replayed together
    (:func:`replay_together`: one update call a day for every asset of every candidate with
    the same policy config), with what does not depend on the forecast computed once per
    asset for all of them: its feature rows, per covered-loss variant the stress ES and loss
    memory (:class:`LossTerms`), and per forecast frame its aligned history.
    Each path is the one its own call gives, rows in asset order. ``references`` (by
    covered-loss variant, :func:`serving.seasoning.reference`) is the universe's stress
    reference for young assets; None: built from ``panel``, which must then hold the whole
    universe (a caller replaying a chunk of assets passes the whole panel's)."""
    # one grouping pass per distinct forecast frame (a forecaster's frame is shared by its
    # grid points), not a comparison of the whole forecast column per asset (quadratic)
    grouped: dict[int, dict[str, pd.DataFrame]] = {}
    for fc, _ in items:
        if id(fc) not in grouped:
            grouped[id(fc)] = {str(a): g for a, g in
                               fc.groupby("asset", sort=True, observed=True)}
    assets = sorted(set().union(*grouped.values()))
    frames = {asset: asset_frame(panel, asset) for asset in assets}
    # one history per forecast frame and the settings it reads (a forecaster's grid points at
    # other confidence levels replay the same history); one LossTerms per covered-loss variant
    if references is None:
        references = stress_reference(panel, [c.policy for _, c in items])
    histories: dict[tuple[str, int, int, str, int], AssetHistory] = {}
    shared: dict[tuple[str, str], LossTerms] = {}
    series: dict[tuple[str, int, str, int], AssetSeries] = {}
    replays: list[Replay] = []
    for fc, cfg in items:
        named, terms = [], []
        for asset in assets:
            mine = grouped[id(fc)].get(asset)
            if mine is None:
                continue
            key = (asset, id(fc), cfg.features.update_interval_days, cfg.policy.loss,
                   cfg.policy.liquidity.adv_window)
            h = histories.get(key)
            if h is None:
                s_key = (asset, *key[2:])
                if s_key not in series:  # the forecast-free series, once per asset
                    series[s_key] = asset_series(frames[asset], cfg)
                h = histories[key] = asset_history(frames[asset], mine, cfg, series[s_key])
            if not len(h.dates):  # no forecast at the update interval: nothing to publish
                continue
            t = shared.get((asset, cfg.policy.loss))
            if t is None:
                t = shared[(asset, cfg.policy.loss)] = LossTerms.of(h)
            named.append((asset, h))
            terms.append(t)
        replays.append(Replay(named, cfg, None, terms, references.get(cfg.policy.loss)))
    return [_path(b if len(r.histories) else None)
            for r, b in zip(replays, replay_together(replays), strict=True)]


def _path(block: pd.DataFrame | None) -> pd.DataFrame:
    if block is None:  # no asset has a forecast at the update interval: an empty path
        columns = ["asset", "date", *PARAMETER_FIELDS, "loss_next", "short_loss_next"]
        return with_outcomes(pd.DataFrame(columns=columns))
    return with_outcomes(block)


def with_outcomes(path: pd.DataFrame) -> pd.DataFrame:
    """Add realized loss fractions, breaches and bad debt (NaN where not yet realized).

    The realized loss ``x`` is the worst price move over the liquidation delay inside the next
    interval. The slippage of selling into the book is the liquidator's cost and is paid out
    of the liquidation bonus (LB prices it: :func:`serving.policy.liquidity_addon`), so it is
    not added to ``x`` again — charging it in both places is the double count the policy
    removed. A liquidator repays D and takes D·LB of collateral, so the lender loses once
    ``x > 1 − LT·LB`` (the cushion, equal to MMF when LT = (1 − MMF)/LB), by
    ``(x − cushion)/LB`` per unit of collateral. The short side (a perp short, the price's
    worst rise ``y`` over the delay) is reported, not judged: ``breach_short`` where
    ``y > MMF``, ``bad_debt_short = max(y − MMF, 0)`` per unit of notional.
    """
    out = path.copy()
    out["loss_frac"] = 1.0 - np.exp(-out["loss_next"].clip(lower=0.0))
    out["short_loss_frac"] = np.exp(out["short_loss_next"].clip(lower=0.0)) - 1.0
    known = out["loss_next"].notna()
    cushion = 1.0 - out["lt"] * out["lb"]
    out["breach"] = (out["loss_frac"] > out["mmf"]).where(known)
    out["breach_short"] = (out["short_loss_frac"] > out["mmf"]).where(
        out["short_loss_next"].notna())
    # a perp short at its maintenance margin (equity MMF per unit of notional) loses the rise
    # beyond it: the venue's loss per unit of notional, reported beside the lender's
    out["bad_debt_short"] = (out["short_loss_frac"] - out["mmf"]).clip(lower=0.0).where(
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

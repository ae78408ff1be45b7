"""Seasoning: a young asset's stress floor borrows the worst stress window of a seasoned one.

The stress floor (:func:`serving.policy.stress_es`) is the ES of the covered loss over the worst
run of ``w = stress_window_obs`` intervals in the asset's look-back. An asset listed fewer than
``w`` intervals ago has no such run, and the formula falls back on its whole short history: a
coin listed in a calm quarter was given a floor from that calm quarter (on a universe with an
asset listed four months before the as-of: stress floor 5.9%, MMF 12.7%, LT 85.5%, above
ETH's 84.7%). Clearing houses margin a newly listed product on a conservative proxy's history
until its own is long enough; volmargin does the same:

* an asset is **young** on a day when fewer than ``w`` of its realized covered losses lie in the
  stress look-back (the stress window itself is the threshold: no new setting to choose);
* a young asset's unweighted stress ES is ``max(own, reference)``, the **reference** being the
  largest stress ES among the **seasoned** assets of the universe that day: the riskiest one,
  not a correlated proxy, because a new listing's own returns are too few to pick a proxy by and
  a lender would rather over-margin a coin it does not know (new collateral is listed with
  conservative parameters, then loosened as it proves itself — here through the parameter
  roles' announced, rate-limited loosening once it seasons);
* measured like with like: among the seasoned assets whose covered loss is measured as the
  young asset's is that day (hourly candles, or the daily-range proxy, which reads about 3.6x
  the hourly measure in the median), else among all of them;
* with no seasoned asset in the universe that day it keeps its own, and the reason says so.

The reference reads realized losses only (never a forecast), so all candidates of a replay
share one, built once over the whole panel (:func:`reference`); the batch job builds the same
number for its as-of from its visible panel, so a served row equals the replayed one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from configs.schema import PolicyConfig
from serving.decide import PolicyInputs
from serving.inputs import LossTerms, PanelArrays, covered_loss_arrays
from serving.policy import stress_es, stress_kept

Key = tuple[str, float, int, int]  # (covered-loss variant, confidence, look-back, window)


def key_of(cfg: PolicyConfig) -> Key:
    """What the reference of a policy config depends on."""
    return (cfg.loss, float(cfg.confidence), int(cfg.stress_lookback_days),
            int(cfg.stress_window_obs))


def kept(losses: np.ndarray, ages: np.ndarray, cfg: PolicyConfig) -> int:
    """How many realized losses :func:`serving.policy.stress_es` keeps (finite, aged 0 to the
    look-back): an asset is young while this is below ``stress_window_obs``."""
    return int(np.count_nonzero(stress_kept(losses, ages, cfg)))


# the reference groups: any seasoned asset, those whose covered loss that day is measured from
# hourly candles, those measured by the daily-range proxy (about 3.6x the hourly measure in the
# median on the embedded data: a young asset is compared with assets measured as it is)
ANY, HOURLY, PROXY = 0, 1, 2


@dataclass(frozen=True)
class Reference:
    """Per :func:`key_of`, the days on which some asset of the universe is young and, on each,
    per group (:data:`ANY`, :data:`HOURLY`, :data:`PROXY`) the largest stress ES of a seasoned
    asset (NaN: none) and which asset it is (-1: none)."""

    names: tuple[str, ...]
    tables: Mapping[Key, tuple[np.ndarray, np.ndarray, np.ndarray]]  # days, value, source

    def at(self, days: np.ndarray, cfg: PolicyConfig, proxy: np.ndarray | None = None
           ) -> tuple[np.ndarray, list[str]]:
        """(reference, source asset or "") on each of ``days`` (days since the epoch), which
        must be days on which some asset of the universe it was built on is young, for an asset
        whose covered loss is the range proxy on the days ``proxy`` marks: the worst seasoned
        asset measured the same way, else the worst of any."""
        key = key_of(cfg)
        if key not in self.tables:
            raise ValueError(f"no stress reference built for {key}")
        table_days, value, source = self.tables[key]
        days = np.asarray(days, np.int64)
        if not len(days):
            return np.empty(0), []
        pos = np.minimum(np.searchsorted(table_days, days), max(len(table_days) - 1, 0))
        if not len(table_days) or not np.array_equal(table_days[pos], days):
            missing = days if not len(table_days) else days[table_days[pos] != days]
            raise ValueError(f"no stress reference on day {int(missing[0])} (days since the "
                             "epoch): built on another universe")
        flag = np.zeros(len(days), bool) if proxy is None else np.asarray(proxy, bool)
        group = np.where(flag, PROXY, HOURLY)
        group = np.where(np.isfinite(value[group, pos]), group, ANY)
        src = source[group, pos]
        return value[group, pos], [self.names[s] if s >= 0 else "" for s in src.tolist()]


def build(losses: Mapping[str, tuple[np.ndarray, np.ndarray]],
          asked: Mapping[str, np.ndarray], cfgs: Sequence[PolicyConfig],
          proxy: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Reference:
    """The :class:`Reference` of a universe: ``losses`` maps each asset to its realized covered
    losses and their days (days since the epoch, increasing; one variant of the covered loss
    for all ``cfgs``), ``asked`` to the days a decision may be made for it (its rows' days),
    ``proxy`` to its rows' days and whether each row's covered loss is the range proxy (an
    asset's group on a day is its last row's; none given: every asset hourly-measured).
    Only the days on which some asset is young are kept: on a seasoned universe, none."""
    names = tuple(sorted(losses))
    terms = {n: LossTerms(*losses[n]) for n in names}
    tables: dict[Key, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for cfg in cfgs:
        key = key_of(cfg)
        if key in tables:
            continue
        w = int(cfg.stress_window_obs)
        young = [np.asarray(asked.get(n, np.empty(0)), np.int64) for n in names]
        young = [d[terms[n].kept_at(d, cfg) < w] for n, d in zip(names, young, strict=True)]
        days = np.unique(np.concatenate([np.empty(0, np.int64), *young]))
        value = np.full((3, len(days)), np.nan)
        source = np.full((3, len(days)), -1, np.int64)
        for k, n in enumerate(names if len(days) else ()):
            seasoned = terms[n].kept_at(days, cfg) >= w
            if not seasoned.any():
                continue
            es = np.full(len(days), np.nan)
            es[seasoned] = terms[n].stress_at(days[seasoned], cfg)
            flag = np.zeros(len(days), bool)
            if proxy is not None and n in proxy:
                row_day, row_flag = proxy[n]
                last = np.searchsorted(np.asarray(row_day, np.int64), days, side="right") - 1
                flag = np.where(last >= 0, np.asarray(row_flag, bool)[np.maximum(last, 0)],
                                False)
            for g, member in ((ANY, np.ones(len(days), bool)), (HOURLY, ~flag), (PROXY, flag)):
                better = member & np.isfinite(es) & ~(es <= value[g])  # NaN value: none yet
                value[g, better], source[g, better] = es[better], k
        tables[key] = (days, value, source)
    return Reference(names, tables)


def reference(panel: pd.DataFrame, cfgs: Sequence[PolicyConfig],
              on: int | None = None) -> dict[str, Reference]:
    """The :class:`Reference` of every asset of ``panel`` (indexed by asset and date), one per
    covered-loss variant of ``cfgs``; ``on`` (days since the epoch): only that day is asked (the
    batch job's as-of), else every row's day. An asset's group is its rows'
    ``worst_loss_is_proxy`` (missing: proxy, as the policy's inputs read it)."""
    if list(panel.index.names) != ["asset", "date"]:  # a (date, asset) panel reads the same
        panel = panel.reorder_levels(["asset", "date"])
    if not panel.index.is_monotonic_increasing:
        panel = panel.sort_index()
    a = PanelArrays.from_panel(panel)
    flags: np.ndarray | None = None  # read only when some asset is young
    out: dict[str, Reference] = {}
    for variant in sorted({c.loss for c in cfgs}):
        mine = [c for c in cfgs if c.loss == variant]
        loss = covered_loss_arrays(panel, mine[0])
        if on is not None and len(a.start) and not _any_young_on(loss, a, on, mine):
            # the batch job's as-of on a seasoned universe: one vectorised count, nothing more
            empty = (np.empty(0, np.int64), np.empty((3, 0)), np.empty((3, 0), np.int64))
            out[variant] = Reference(tuple(sorted(a.assets)), {key_of(c): empty for c in mine})
            continue
        if flags is None:
            flags = (panel["worst_loss_is_proxy"].astype(object).fillna(True).to_numpy(bool)
                     if "worst_loss_is_proxy" in panel else np.zeros(len(panel), bool))
        losses, asked, proxy = {}, {}, {}
        for k, name in enumerate(a.assets):
            s, e = int(a.start[k]), int(a.end[k])
            finite = np.isfinite(loss[s:e])
            losses[name] = (loss[s:e][finite], a.day[s:e][finite])
            asked[name] = a.day[s:e] if on is None else np.array([on], np.int64)
            proxy[name] = (a.day[s:e], flags[s:e])
        out[variant] = build(losses, asked, mine, proxy)
    return out


def _any_young_on(loss: np.ndarray, a: PanelArrays, day: int,
                  cfgs: Sequence[PolicyConfig]) -> bool:
    """Whether some asset of the panel holds fewer than a stress window of losses on ``day``
    under any of ``cfgs`` (:meth:`serving.inputs.LossTerms.kept_at`, every asset at once)."""
    finite = np.isfinite(loss) & (a.day <= day)
    for cfg in cfgs:
        kept_rows = finite & (a.day >= day - int(cfg.stress_lookback_days))
        counts = np.add.reduceat(kept_rows.astype(np.int64), a.start)
        if (counts < int(cfg.stress_window_obs)).any():
            return True
    return False


def season(own: np.ndarray, count: np.ndarray, ref: np.ndarray, source: Sequence[str],
           cfg: PolicyConfig) -> tuple[np.ndarray, list[str]]:
    """(stress ES, note) of each row: a young one's (``count`` < window) is ``max(own, ref)``,
    its note naming what it used; a seasoned one's is its own, with no note."""
    w = int(cfg.stress_window_obs)
    own = np.asarray(own, float)
    young = np.asarray(count) < w
    ref = np.asarray(ref, float)
    with np.errstate(invalid="ignore"):
        borrow = young & np.isfinite(ref) & ~(own >= ref)
    out = np.where(borrow, ref, own)
    notes = [""] * len(own)
    for i in np.flatnonzero(young).tolist():
        head = f"young: {int(count[i])} of {w} losses in the stress look-back"
        if borrow[i]:
            notes[i] = f"{head}, stress ES of {source[i]} ({ref[i]:.4f}) used"
        elif np.isfinite(ref[i]):
            notes[i] = f"{head}, its own stress ES above every seasoned asset's"
        else:
            notes[i] = f"{head}, no seasoned asset to take a stress window from"
    return out, notes


def seasoned_inputs(x: PolicyInputs, ref: Reference | None, cfg: PolicyConfig) -> PolicyInputs:
    """``x`` with its stress ES seasoned (:func:`season`) against the universe's reference on
    its as-of (``ref``, built with that day asked; None: no seasoned asset lends a window).
    Unchanged without a stress floor."""
    if cfg.stress_floor_weight <= 0:
        return x
    own = x.stress_es if x.stress_es is not None else stress_es(
        x.loss_history, x.loss_age_days, cfg)
    count = kept(x.loss_history, x.loss_age_days, cfg)
    value, source = np.array([np.nan]), [""]
    if ref is not None and count < cfg.stress_window_obs:
        day = np.array([(x.as_of - dt.date(1970, 1, 1)).days], np.int64)
        value, source = ref.at(day, cfg, np.array([x.loss_is_proxy]))
    stress, notes = season(np.array([own]), np.array([count]), value, source, cfg)
    return replace(x, stress_es=float(stress[0]), stress_note=notes[0])

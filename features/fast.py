r"""The columns a serve reads, for every asset at once, as :func:`features.build.build_with_tail`.

A daily serve reads a handful of panel columns (:func:`features.window.serve_columns`): the
close and return, the realized variance ``rv`` (plausibility bound), the HAR terms (and DVOL
for HARX-IV), the dollar volume (ADV) and the covered losses with their proxy flag. Building
them one asset at a time in pandas costs ~0.1 s an asset; here every asset is built in one
pass of numpy operations over the candles of all assets laid **end to end**:

* **daily rows** (:mod:`features.fast_rows`): each asset's complete daily calendar (first
  to last candle of the span, missing days as NaN rows, never filled) follows the previous
  asset's, so the panel's long (asset, date) order *is* the array order. A trailing window of
  :math:`w` rows is a ``sliding_window_view`` over the whole array, masked NaN on each
  asset's first :math:`w - 1` rows (where a per-asset window is incomplete); a shift by
  :math:`k` masks the first :math:`k` rows;
* **hourly realized variance**: the hourly closes of all assets end to end; a return between
  two candles of different assets is dropped, each (asset, day) is one ``np.bincount`` bin, so
  every sum adds the same numbers in the same order as
  :func:`features.realized.hourly_realized_measures`;
* **hourly worst losses**: each asset's hourly grid (whole UTC days, 24 slots) end to end, as
  :func:`features.losses.hourly_worst_losses` builds it per asset; a window that reaches back
  into the previous asset's grid, and an interval that starts before the asset's first grid
  day, are masked exactly where the per-asset code has none. Assets are taken in batches of
  about :data:`BATCH_HOURS` grid hours so that memory stays bounded for any universe.

The formulas are those of :mod:`features.realized` (``rv``, HAR terms), :mod:`features.ranges`
(Garman-Klass, the ``rv`` fallback), :mod:`features.losses` (hourly windows, daily-range proxy,
``min_hours_for_rv`` rules, liquidation delay), :mod:`features.liquidity` and
:mod:`features.implied`, applied to the same rows with the same floating-point operations:
every column is bit-identical to the per-asset build except the HAR means of more than one
day (a window sum instead of pandas' running sum; ~1e-15 relative). Point-in-time as before:
row :math:`t` reads candles dated up to :math:`t` only.

The macro-crypto correlations and betas are the per-asset build's own function on each asset's
returns (:func:`features.macro.macro_columns`, only the factors asked for): a tree model's
state lists the columns its inputs read (``gbm_sklearn``), all built here. The learnt networks
(``harx_mlp``, ``mlp_har``) read columns not built here; a serve of such a model keeps the full
per-asset build (:func:`features.window.serve_panel`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from configs.schema import FeaturesConfig
from features.build import TAIL_COLUMNS
from features.candle_store import will_need
from features.fast_rows import (
    DAY_NS,
    HOUR_NS,
    HOURS_PER_DAY,
    Candles,
    Rows,
    candles,
    cut,
    daily_rows,
    diff,
    hourly_batches,
    hours,
    least_row,
    shift,
    stamps,
    trailing,
)
from features.implied import MARKET_DVOL
from features.loaders import MarketData
from features.loss_days import Known, LossDays, Source, due
from features.losses import LOSS_COLUMNS, PROXY_FLAG, accounts_for_range
from features.macro import CORR_COLUMNS, macro_columns
from features.schema import COLUMNS

_log = logging.getLogger(__name__)
# (first day, per-day values (stored rows, days), valid windows (days,)) of one hourly grid:
# the worst losses of the loss columns computed, then the day's EXTREMES
DayLosses = tuple[int, np.ndarray, np.ndarray]
# per-day values beside the loss columns: the log of the day's highest high and the negated
# log of its lowest low of its hourly candles (whether the hours account for the daily range,
# features.losses), and 1 where the move into one of its traded candles is in no window (a
# gap longer than the bridge, or a grid's first H candles), else -inf
EXTREMES = ("hour_high", "hour_low_negated", "hour_gap")
N_DAY_VALUES = len(LOSS_COLUMNS) + len(EXTREMES)

BATCH_HOURS = 1_000_000  # hourly grid slots per batch: ~8 MB per float array
_GK_C = 2.0 * np.log(2.0) - 1.0  # Garman-Klass's weight of ln(C/O)², as features.ranges


def fast_columns(cfg: FeaturesConfig) -> frozenset[str]:
    """The panel columns :func:`fast_panel` builds."""
    return frozenset({"close", "ret_1d", "gk_var", "rv_hourly", "n_hours", "rv_is_hourly", "rv",
                      *(f"har_rv_{w}d" for w in cfg.har_windows), "log_dollar_volume",
                      "dvol_var_1d", "dvol_available", *LOSS_COLUMNS, PROXY_FLAG,
                      *CORR_COLUMNS})


def macro_since(market: MarketData, as_of: dt.date, days: int | None
                ) -> dict[str, pd.DataFrame]:
    """The macro sessions a build over each asset's trailing ``days`` reads
    (:func:`features.window.trailing_market`): cut at the first daily row any asset keeps;
    all of them for ``days`` None."""
    if days is None:
        return dict(market.macro)
    end = pd.Timestamp(as_of)
    firsts = []
    for frame in market.daily.values():
        last = frame.index.max().normalize() if len(frame) else end
        start = min(end, last) - (days - 1) * pd.Timedelta(days=1)
        kept = frame.index[frame.index >= start]
        if len(kept):
            firsts.append(kept.min())
    if not firsts:
        return dict(market.macro)
    first = min(firsts)
    return {name: f.loc[f.index >= first] for name, f in market.macro.items()}


def _realized(spans: list[Candles], rows: Rows, min_hours: int) -> tuple[np.ndarray, np.ndarray]:
    """(rv_hourly, n_hours) on ``rows`` (:func:`features.realized.hourly_realized_measures`:
    a return counts for the UTC day in which it starts and ends; NaN under ``min_hours``)."""
    rv = np.full(rows.size, np.nan)
    n_hours = np.zeros(rows.size, dtype=np.int64)
    for batch in hourly_batches(spans, 2, BATCH_HOURS):
        hour_ns = np.concatenate([c.hour_ns for _, c in batch])
        close = np.concatenate([c.hourly[2] for _, c in batch])
        owner = np.repeat([a for a, _ in batch], [len(c.hour_ns) for _, c in batch])
        ret = np.diff(np.log(close))  # ends at candle i+1
        day_ns = hour_ns[1:] - hour_ns[1:] % DAY_NS
        counted = (owner[1:] == owner[:-1]) & (hour_ns[:-1] + HOUR_NS >= day_ns)
        r, day, who = ret[counted], day_ns[counted] // DAY_NS, owner[1:][counted]
        if len(r) == 0:
            continue
        # (asset, day) keys come sorted (assets in order, stamps sorted): bins in one pass,
        # each summing the same returns in the same order as the per-asset np.bincount
        new = np.concatenate([[True], (day[1:] != day[:-1]) | (who[1:] != who[:-1])])
        code = np.cumsum(new) - 1
        n = np.bincount(code)
        sums = np.bincount(code, weights=r**2)
        at, inside = rows.position(who[new], day[new])
        rv[at[inside]] = np.where(n < min_hours, np.nan, sums)[inside]
        n_hours[at[inside]] = n[inside]
    return rv, n_hours


def _interval(per_day: np.ndarray, counts: np.ndarray, local: np.ndarray, U: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Max and window count over the trailing ``U`` days of the same asset; -inf/0 on the
    asset's first ``U - 1`` days (:func:`features.losses._interval_max`)."""
    if U == 1:
        return per_day, counts
    top = np.full_like(per_day, -np.inf)
    total = np.zeros_like(counts)
    if len(counts) >= U:
        top[U - 1:] = sliding_window_view(per_day, U, axis=0).max(axis=-1)
        total[U - 1:] = sliding_window_view(counts, U).sum(axis=-1)
    early = local < U - 1
    top[early], total[early] = -np.inf, 0
    return top, total


def _window_loss(k: int, p0: np.ndarray, end: np.ndarray, low: np.ndarray, high: np.ndarray,
                 out: np.ndarray) -> None:
    """Each window's loss of ``LOSS_COLUMNS[k]`` into ``out``: long, short, long intrabar,
    short intrabar (log prices; :mod:`features.losses`)."""
    if k == 0:
        np.subtract(p0, end, out=out)
    elif k == 1:
        np.subtract(end, p0, out=out)
    elif k == 2:
        np.subtract(p0, low, out=out)
    else:
        np.subtract(high, p0, out=out)


def _per_day(slots: np.ndarray, how: np.ufunc) -> np.ndarray:
    """``how`` (``np.maximum``, or ``np.add`` of a bool array: a count) over each day's 24
    slots, one slot at a time (numpy's reduction over a 24-long inner axis is ~2x slower)."""
    hours = slots.reshape(-1, HOURS_PER_DAY)
    out = hours[:, 0].astype(np.int64 if hours.dtype == bool else hours.dtype)
    for h in range(1, HOURS_PER_DAY):
        how(out, hours[:, h], out=out)
    return out


@dataclass(frozen=True)
class LossPlan:
    """One asset's hourly grid in the tail span, the days taken from the stored table, and the
    hourly rows read to compute the others (:mod:`features.loss_days`)."""

    first: int        # grid's first day: the day of the span's first hourly candle
    last: int         # the day of its last candle (days before it are final)
    exact_from: int   # days from here on equal the whole history's (the cut spares them)
    known: Known | None = None
    reuse: tuple[int, int] = (0, 0)  # [lo, hi) days from ``known``
    # rows read: (first stamp, end stamp (exclusive; None: to the end), first day kept, last
    # day kept); each part is a grid of its own, its first H slots refused
    parts: tuple[tuple[int, int | None, int, int], ...] = ()


def loss_plan(hour_ns: np.ndarray, cut: bool, reach: int, known: Known | None) -> LossPlan:
    """The plan of an asset whose tail span holds the hourly stamps ``hour_ns`` (read at its
    two ends only; at least one), ``cut`` when the span left earlier candles out; ``reach``:
    the most hours a window spans (the delay H and the outage hours it may bridge)."""
    first, last = int(hour_ns[0]) // DAY_NS, int(hour_ns[-1]) // DAY_NS
    warm = -(-reach // HOURS_PER_DAY)  # days a window can reach back
    exact_from = first + warm if cut else first
    whole = LossPlan(first, last, exact_from, known, parts=((first * DAY_NS, None, first, last),))
    if known is None:
        return whole
    lo, hi = max(known.first, exact_from), min(known.end, last)
    if hi - lo < 1 or hi - warm <= first:
        return whole
    parts = [] if lo == first else [(first * DAY_NS, lo * DAY_NS, first, lo - 1)]
    parts.append(((hi - warm) * DAY_NS, None, hi, last))
    return LossPlan(first, last, exact_from, known, (lo, hi), tuple(parts))


def _day_losses(parts: list[Candles], H: int, which: list[int], bridge: int
                ) -> list[DayLosses]:
    """(first day, per-day values (6, days), valid windows per day) of each part's own hourly
    grid (whole UTC days of 24 slots, first candle's day to last candle's day). The values:
    the worst losses of the four :data:`LOSS_COLUMNS` over the windows of ``H`` traded
    candles that end in the day, spanning at most ``bridge`` missing hours, none reaching
    before the part's first candle, as :func:`features.losses.hourly_worst_losses` does at an
    asset's first candle (only the columns numbered ``which`` are computed, the others stay
    -inf); then the log of the day's highest high, the negated log of its lowest low and its
    gap mark (:data:`EXTREMES`); -inf/0 on days without a window or a candle. The count is of
    the windows complete on the grid (the ``min_hours_for_rv`` rule)."""
    out: list[DayLosses] = [(0, np.empty((N_DAY_VALUES, 0)), np.empty(0))] * len(parts)
    intrabar = bool({2, 3} & set(which))
    for batch in hourly_batches(parts, 1, BATCH_HOURS):
        first = np.array([c.hour_ns[0] // DAY_NS for _, c in batch], dtype=np.int64)
        days = Rows(first, np.array([c.hour_ns[-1] // DAY_NS for _, c in batch]) - first + 1)
        grid = Rows(first * HOURS_PER_DAY, days.length * HOURS_PER_DAY)  # hour slots
        slots = np.concatenate([c.hour_ns for _, c in batch]) // HOUR_NS
        # every candle is inside its part's grid: row = slot - first slot + offset
        at = slots + np.repeat(grid.offset - grid.first, [len(c.hour_ns) for _, c in batch])
        h = np.full((3, grid.size), np.nan)  # [close, high, low]
        for k, column in enumerate((2, 0, 1)):
            h[k, at] = np.concatenate([c.hourly[column] for _, c in batch])
        n = grid.size
        per_day = np.full((N_DAY_VALUES, n // HOURS_PER_DAY), -np.inf)
        valid = np.zeros(n, dtype=bool)
        lc = np.log(h[0])
        finite = np.isfinite(lc)
        if n > H:  # windows complete on the grid: the count
            head = np.zeros(n, dtype=bool)  # a part's first H slots: the window would
            head[(grid.offset[:, None] + np.arange(H)).ravel()] = True  # start before it
            ok = finite[H:] & ~head[H:]
            for lag in range(1, H + 1):  # every close of the window, j-H .. j
                ok &= finite[H - lag:n - lag]
            valid[H:] = ok
        traded = np.flatnonzero(finite)  # the windows: H traded candles and the close before
        covered = np.zeros(len(traded), dtype=bool)  # a window ends at the traded candle
        if len(traded) > H:
            part = np.searchsorted(grid.offset, traded, side="right") - 1
            spans = (traded[H:] - traded[:-H] <= H + bridge) & (part[H:] == part[:-H])
            covered[H:] = spans
            c = lc[traded]
            p0, end = c[:-H], c[H:]
            low = high = p0  # unused unless an intrabar column is wanted
            if intrabar:  # lows and highs of traded candles k-H+1 .. k
                lo, hi = np.log(h[2][traded]), np.log(h[1][traded])
                low = lo[1:] if H == 1 else sliding_window_view(lo, H).min(axis=-1)[1:]
                high = hi[1:] if H == 1 else sliding_window_view(hi, H).max(axis=-1)[1:]
            window = np.empty(len(traded) - H)
            slot = np.full(n, -np.inf)
            with np.errstate(invalid="ignore"):
                for k in which:
                    _window_loss(k, p0, end, low, high, out=window)
                    slot[traded[H:]] = np.where(spans, window, -np.inf)
                    per_day[k] = _per_day(slot, np.maximum)
        # the day's extremes, then their logs (features.losses: the log of the extreme)
        with np.errstate(invalid="ignore", divide="ignore"):
            top = np.log(_per_day(np.where(np.isnan(h[1]), -np.inf, h[1]), np.maximum))
            bottom = -np.log(_per_day(np.where(np.isnan(h[2]), np.inf, h[2]), np.minimum))
        e = len(LOSS_COLUMNS)
        per_day[e] = np.where(np.isfinite(top), top, -np.inf)
        per_day[e + 1] = np.where(np.isfinite(bottom), bottom, -np.inf)
        gap = np.full(n, -np.inf)
        gap[traded[~covered]] = 1.0
        per_day[e + 2] = _per_day(gap, np.maximum)
        counts = _per_day(valid, np.add).astype(float)
        for (p, _), lo_day, size, day in zip(batch, days.offset, days.length, first,
                                             strict=True):
            out[p] = (int(day), per_day[:, lo_day:lo_day + size], counts[lo_day:lo_day + size])
    return out


def _hourly_losses(plans: list[LossPlan | None], parts: list[list[Candles]], rows: Rows,
                   U: int, H: int, which: list[int], bridge: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, DayLosses]]:
    """(losses (4, N), n_windows (N,), extremes (3, N), days) on ``rows``
    (:func:`features.losses.hourly_worst_losses` then reindexed: n_windows -1 where the
    asset's hourly grid has no such day; extremes: ``hour_high``, ``hour_low`` and the gap
    mark (1, else NaN), NaN without a candle); each asset's per-day values come from its stored days
    (``plans[a].reuse``) and from its ``parts`` (:func:`loss_plan`). ``days`` holds each
    planned asset's per-day (first grid day, values of the ``which`` columns and the
    :data:`EXTREMES` (len(which) + 3, days), counts) over its whole grid."""
    losses = np.full((len(LOSS_COLUMNS), rows.size), np.nan)
    extremes = np.full((len(EXTREMES), rows.size), np.nan)
    n_windows = np.full(rows.size, -1, dtype=np.int64)
    kept = [*which, *range(len(LOSS_COLUMNS), N_DAY_VALUES)]  # the rows of a day's values
    flat = [(a, i) for a, ps in enumerate(parts) for i in range(len(ps))]
    computed = _day_losses([parts[a][i] for a, i in flat], H, which, bridge)
    by_asset: dict[int, list[DayLosses]] = {}
    for (a, _), got in zip(flat, computed, strict=True):
        by_asset.setdefault(a, []).append(got)
    grids: dict[int, DayLosses] = {}
    for a, plan in enumerate(plans):
        if plan is None:
            continue
        size = plan.last - plan.first + 1
        values = np.full((len(kept), size), -np.inf)
        counts = np.zeros(size)
        lo, hi = plan.reuse
        if hi > lo and plan.known is not None:
            values[:, lo - plan.first:hi - plan.first] = \
                plan.known.values[:, lo - plan.known.first:hi - plan.known.first]
            counts[lo - plan.first:hi - plan.first] = \
                plan.known.counts[lo - plan.known.first:hi - plan.known.first]
        for (_, _, keep_from, keep_to), (day, got, got_counts) in zip(
                plan.parts, by_asset.get(a, []), strict=True):
            a0, a1 = max(keep_from, day), min(keep_to, day + got.shape[1] - 1) + 1
            if a1 > a0:
                values[:, a0 - plan.first:a1 - plan.first] = got[kept, a0 - day:a1 - day]
                counts[a0 - plan.first:a1 - plan.first] = got_counts[a0 - day:a1 - day]
        grids[a] = (plan.first, values, counts)
    # the update interval's maximum, per asset, in batches of assets laid end to end
    planned = sorted(grids)
    batch: list[int] = []
    size = 0
    for k, a in enumerate(planned):
        batch.append(a)
        size += grids[a][1].shape[1]
        if size < BATCH_HOURS // HOURS_PER_DAY and k + 1 < len(planned):
            continue
        first = np.array([grids[b][0] for b in batch], dtype=np.int64)
        days = Rows(first, np.array([grids[b][1].shape[1] for b in batch], dtype=np.int64))
        per_day = np.concatenate([grids[b][1] for b in batch], axis=1).T
        counts = np.concatenate([grids[b][2] for b in batch]).astype(np.int64)
        top, total = _interval(per_day, counts, days.local, U)
        top[~np.isfinite(top)] = np.nan
        asset = np.array(batch)[days.owner]
        at, inside = rows.position(asset, days.unit)
        losses[np.ix_(which, at[inside])] = top[inside, :len(which)].T
        extremes[:, at[inside]] = top[inside, len(which):].T
        n_windows[at[inside]] = total[inside]
        batch, size = [], 0
    extremes[1] = -extremes[1]
    return losses, n_windows, extremes, grids


def _tail(spans: list[Candles], cfg: FeaturesConfig, wanted: set[str],
          plans: list[LossPlan | None], parts: list[list[Candles]]
          ) -> tuple[Rows, dict[str, np.ndarray], dict[int, DayLosses]]:
    """:data:`features.build.TAIL_COLUMNS` in ``wanted`` on each asset's complete calendar
    (:func:`features.build.tail_features`, :func:`features.losses.worst_loss_features`);
    the proxy flag is always computed. The hourly worst losses follow ``plans`` and read
    ``parts`` (:func:`loss_plan`); the per-day values of each planned asset are returned."""
    rows, (o, hi, lo, c, _) = daily_rows(spans)
    local = rows.local
    U = cfg.update_interval_days
    out = {"close": c, "ret_1d": diff(np.log(c), local)}
    # the daily-range proxy (features.losses.range_worst_losses)
    top, bottom = trailing(hi, U, local, "max"), trailing(lo, U, local, "min")
    ref = shift(c, U, local)
    ref = np.where(np.isnan(ref), shift(o, U - 1, local), ref)
    # none for the listing interval: no close before it (a calendar starts at the first candle)
    unknown = np.isnan(top) | (local < U)
    with np.errstate(invalid="ignore", divide="ignore"):
        long = np.where(unknown, np.nan, np.log(np.fmax(ref, top) / bottom))
        short = np.where(unknown, np.nan, np.log(top / np.fmin(ref, bottom)))
    which = loss_rows(wanted)
    exact, n_windows, (hour_high, hour_low, hour_gap), grids = _hourly_losses(
        plans, parts, rows, U, cfg.liquidation_delay_hours, which, cfg.outage_bridge_hours)
    # enough windows (-1, no hourly grid day: never) whose candles reach the daily range, or
    # no proxy to fall back on (the listing interval); or fewer that reach it (outages) and
    # leave no move unmeasured, but never the listing interval, which has no proxy either
    reached = accounts_for_range(hour_high, hour_low, top, bottom)
    has_proxy = ~np.isnan(long)
    hourly_ok = (n_windows >= cfg.min_hours_for_rv * U) & (reached | ~has_proxy)
    hourly_ok |= (reached & ~(hour_gap > 0) & np.isfinite(exact[which[0]]) & has_proxy)
    for k in (k for k in which if LOSS_COLUMNS[k] in wanted):
        out[LOSS_COLUMNS[k]] = value = (long, short)[k % 2].copy()
        np.copyto(value, exact[k], where=hourly_ok)
    out[PROXY_FLAG] = ~hourly_ok & ~np.isnan(long)
    return rows, out, grids


def _dvol(market: MarketData, assets: list[str], rows: Rows) -> np.ndarray:
    """DVOL level (percent) of each row: the asset's own index from its first day on, the
    market's (BTC's) before it and for assets without one
    (:func:`features.implied.asset_implied_features`); NaN where the series has no value
    dated that day (the per-asset build reindexes the series to the calendar: only midnight
    stamps match)."""
    level = np.full(rows.size, np.nan)
    owner, day = rows.owner, rows.unit
    uses_own = np.zeros(rows.size, dtype=bool)
    groups = []
    for i, a in enumerate(assets):
        frame = market.dvol.get(a)
        if frame is not None and len(frame) > 0:
            mine = (owner == i) & (day >= int(stamps(frame.index).min() // DAY_NS))
            uses_own |= mine
            groups.append((a, np.flatnonzero(mine)))
    groups.append((MARKET_DVOL, np.flatnonzero(~uses_own)))
    for name, mine in groups:
        frame = market.dvol.get(name)
        if frame is None or len(frame) == 0 or not len(mine):
            continue
        ns = stamps(frame.index)
        midnight = ns % DAY_NS == 0
        days, values = ns[midnight] // DAY_NS, frame["value"].to_numpy(dtype=float)[midnight]
        if len(days) == 0:
            continue
        k = np.minimum(np.searchsorted(days, day[mine]), len(days) - 1)
        hit = days[k] == day[mine]
        level[mine[hit]] = values[k[hit]]
    return level


def _rest(market: MarketData, assets: list[str], spans: list[Candles], cfg: FeaturesConfig,
          wanted: set[str], macro: Mapping[str, pd.DataFrame]
          ) -> tuple[Rows, dict[str, np.ndarray]]:
    """The other columns of :func:`features.build.asset_features` in ``wanted`` (``macro``:
    the sessions the macro columns read, :func:`macro_since`)."""
    rows, (o, hi, lo, c, volume) = daily_rows(spans)
    local = rows.local
    with np.errstate(invalid="ignore", divide="ignore"):
        gk = 0.5 * np.log(hi / lo) ** 2 - _GK_C * np.log(c / o) ** 2
        rv_hourly, n_hours = _realized(spans, rows, cfg.min_hours_for_rv)
        is_hourly = ~np.isnan(rv_hourly)
        rv = np.where(is_hourly, rv_hourly, gk)
        out = {"gk_var": gk, "rv_hourly": rv_hourly, "n_hours": n_hours,
               "rv_is_hourly": is_hourly, "rv": rv}
        for w in cfg.har_windows:
            out[f"har_rv_{w}d"] = trailing(rv, w, local, "mean")
        if "log_dollar_volume" in wanted:
            dv = c * volume
            out["log_dollar_volume"] = np.log(np.where(dv > 0, dv, np.nan))
        if wanted & {"dvol_var_1d", "dvol_available"}:
            var = (_dvol(market, assets, rows) / 100.0) ** 2 / 365.0
            out.update({"dvol_var_1d": var, "dvol_available": ~np.isnan(var)})
        macro_cols = [col for col in CORR_COLUMNS if col in wanted]
        if macro_cols:
            out.update(_macro(rows, c, macro, cfg, macro_cols))
    return rows, out


def _macro(rows: Rows, close: np.ndarray, macro: Mapping[str, pd.DataFrame],
           cfg: FeaturesConfig, columns: list[str]) -> dict[str, np.ndarray]:
    """The macro-crypto ``columns`` of every asset on ``rows``: the per-asset build's
    function (:func:`features.macro.macro_columns`) on each asset's close-to-close log
    return over its complete calendar, the same values (one call per asset, only the
    factors and windows asked for)."""
    out = {col: np.full(rows.size, np.nan) for col in columns}
    sessions = dict(macro)
    for a, (start, n) in enumerate(zip(rows.offset, rows.length, strict=True)):
        if not n:
            continue
        mine = slice(int(start), int(start + n))  # an asset's complete calendar, in order
        days = rows.first[a] + np.arange(n)
        dates = pd.DatetimeIndex((days * DAY_NS).view("datetime64[ns]"))
        ret = pd.Series(np.log(close[mine]), index=dates).diff()  # features.realized
        for col, values in macro_columns(ret, sessions, cfg, columns).items():
            out[col][mine] = values.to_numpy(dtype=float)
    return out


def _widen(values: np.ndarray, at: np.ndarray, n: int, nullable: bool
           ) -> np.ndarray | pd.api.extensions.ExtensionArray:
    """``values`` at rows ``at`` of ``n`` rows, the others missing: NaN, or ``<NA>`` in a
    nullable boolean/integer array (as :func:`features.build.build_with_tail` marks them)."""
    if values.dtype.kind == "f":
        out = np.full(n, np.nan)
        out[at] = values
        return out
    if not nullable:  # one span: every row was built
        return values
    filled = np.zeros(n, dtype=values.dtype)
    filled[at] = values
    mask = np.ones(n, dtype=bool)
    mask[at] = False
    if values.dtype == bool:
        return pd.arrays.BooleanArray(filled, mask)
    return pd.arrays.IntegerArray(filled.astype(np.int64), mask)


def _prefetch(raw: list[Candles], plans: list[LossPlan | None], as_of_ns: int,
              days: int | None) -> None:
    """Start reading, for every asset at once, the hourly rows the build reads next: from the
    first row the trailing worst-loss part (:func:`loss_plan`) or the ``days`` span
    (:func:`features.fast_rows.cut`) can need (:func:`features.fast_rows.least_row`) to the
    end (:func:`features.candle_store.will_need`; only a hint)."""
    needs: list[np.ndarray] = []
    for c, plan in zip(raw, plans, strict=True):
        if not len(c.hour_ns):
            continue
        starts = [] if days is None else [min(as_of_ns, int(c.day_ns[-1])) - (days - 1) * DAY_NS]
        starts += [] if plan is None else [p[0] for p in plan.parts if p[1] is None]
        lo = least_row(c.hour_ns, min(starts), HOUR_NS) if starts else 0
        needs += [c.hour_ns[lo:], *(v[lo:] for v in c.hourly)]
    will_need(needs)


def loss_rows(wanted: Collection[str]) -> list[int]:
    """The loss columns computed for a build of ``wanted``: those asked for, or the long
    close-to-close one alone when none is (the proxy flag, always built, reads whether an
    interval has a window: :func:`features.losses.worst_loss_features`)."""
    return [k for k, col in enumerate(LOSS_COLUMNS) if col in wanted] or [0]


def stored_names(which: list[int]) -> list[str]:
    """The rows of a stored per-day table: the ``which`` loss columns, then :data:`EXTREMES`."""
    return [*(LOSS_COLUMNS[k] for k in which), *EXTREMES]


def _lookup(losses: LossDays | None, H: int, bridge: int, names: list[str],
            sources: Mapping[int, Source]) -> dict[int, Known]:
    """The stored days of ``sources``; none when there is no store or it cannot be read (the
    days are then computed)."""
    if losses is None or not sources:
        return {}
    try:
        return losses.lookup(H, names, sources, bridge)
    except Exception as err:  # a speed-up only: never a reason to fail a serve
        _log.warning("worst-loss days not read (%s); computed instead", err)
        return {}


def _store(losses: LossDays, H: int, bridge: int, which: list[int],
           sources: Mapping[int, Source],
           known: Mapping[int, Known], plans: list[LossPlan | None],
           grids: Mapping[int, DayLosses]) -> None:
    """Store each source's final days (``exact_from`` to the day before its last candle's)
    when :func:`features.loss_days.due`; what was reused and what was computed join up."""
    ends = {a: plans[a].last for a in sources  # type: ignore[union-attr]
            if plans[a] is not None and plans[a].last > plans[a].exact_from}
    if not due(known, ends):
        return
    now: dict[int, Known] = {}
    for a in ends:
        plan, (first, values, counts) = plans[a], grids[a]
        assert plan is not None
        lo, hi = plan.exact_from, plan.last
        v, c = values[:, lo - first:hi - first], counts[lo - first:hi - first]
        k = plan.known
        if k is None or k.first > hi or k.end < lo:  # nothing to join: these days alone
            now[a] = Known(lo, v, c)
            continue
        start, end = min(k.first, lo), max(k.end, hi)
        joined_v, joined_c = np.empty((v.shape[0], end - start)), np.empty(end - start)
        joined_v[:, k.first - start:k.end - start] = k.values
        joined_c[k.first - start:k.end - start] = k.counts
        joined_v[:, lo - start:hi - start], joined_c[lo - start:hi - start] = v, c
        now[a] = Known(start, joined_v, joined_c)
    try:
        losses.update(H, stored_names(which), {a: sources[a] for a in now}, now, bridge)
    except Exception as err:  # a speed-up only
        _log.warning("worst-loss days not stored (%s)", err)


def fast_panel(market: MarketData, cfg: FeaturesConfig, as_of: dt.date, days: int | None,
               tail_days: int | None, columns: Collection[str],
               losses: LossDays | None = None) -> pd.DataFrame:
    """``columns`` of :func:`features.window.serve_panel`'s panel, for all assets at once.

    Every column over the trailing ``days`` (None: the whole history), the tail columns
    (:data:`features.build.TAIL_COLUMNS`) over ``tail_days`` (None: the whole history), both
    cut as :func:`features.window.trailing_market` cuts them. Same index, dtypes and values
    as :func:`features.build.build_with_tail` (``days`` < ``tail_days``: boolean and integer
    columns nullable, missing on the rows older than ``days``), or as
    :func:`features.build.build_panel` when there is one span (``days`` None or equal to
    ``tail_days``), restricted to ``columns`` (in schema order).

    ``losses``: the stored per-day worst losses (:mod:`features.loss_days`), read for the
    assets whose hourly frame has a cache lineage (``market.hourly_lineage``) and written
    back when due; the values are the same with or without it.

    Raises
    ------
    ValueError
        A column not in :func:`fast_columns`, no asset with data, or an index that breaks the
        loaders' rules where it is read (:func:`features.fast_rows.candles`,
        :func:`features.fast_rows.hours`).
    """
    wanted = set(columns)
    unknown = sorted(wanted - fast_columns(cfg))
    if unknown:
        raise ValueError(f"fast_panel does not build {unknown}: use features.build")
    one_span = days is None or tail_days == days
    if one_span:
        tail_days = days
    assets = [a for a in sorted(market.daily) if not market.daily[a].empty]
    if not assets:
        raise ValueError(f"no assets to build features for in {market.data_dir}")
    as_of_ns = int(pd.Timestamp(as_of).value)
    raw = [candles(market, a) for a in assets]
    spans = [cut(c, as_of_ns, tail_days) for c in raw]
    which = loss_rows(wanted)
    H = cfg.liquidation_delay_hours
    lineage = getattr(market, "hourly_lineage", {})
    # stored days hold for the same lineage read from the same first candle (a frame whose
    # start was trimmed, features.window.trailing_market, refuses other first windows)
    sources = {a: (lineage[s][0], f"{lineage[s][1]}@{int(raw[a].hour_ns[0])}")
               for a, s in enumerate(assets)
               if s in lineage and len(raw[a].hour_ns)} if losses else {}
    bridge = cfg.outage_bridge_hours
    known = _lookup(losses, H, bridge, stored_names(which), sources)
    plans = [loss_plan(c.hour_ns, len(c.hour_ns) < len(r.hour_ns), H + bridge, known.get(a))
             if len(c.hour_ns) else None for a, (c, r) in enumerate(zip(spans, raw, strict=True))]
    _prefetch(raw, plans, as_of_ns, days)
    parts = [[hours(c, asset, lo, hi) for lo, hi, _, _ in plan.parts] if plan else []
             for c, asset, plan in zip(spans, assets, plans, strict=True)]
    rows, data, grids = _tail(spans, cfg, wanted, plans, parts)
    if losses is not None:
        _store(losses, H, bridge, which, sources, known, plans, grids)
    rest = wanted - set(TAIL_COLUMNS)
    if rest:
        shorts = [cut(c, as_of_ns, days) for c in raw]
        for c, asset in zip(shorts, assets, strict=True):
            hours(c, asset)  # the hourly rows read: checked
        short, built = _rest(market, assets, shorts, cfg, rest,
                             macro_since(market, as_of, days) if rest & set(CORR_COLUMNS)
                             else {})
        at, _ = rows.position(short.owner, short.unit)  # a short row is a tail row
        data.update({col: _widen(built[col], at, rows.size, nullable=not one_span)
                     for col in rest})
    day = rows.unit
    dates = np.unique(day)
    # the per-asset calendars keep the daily index's resolution (ns from the loaders)
    units = {pd.DatetimeIndex(market.daily[a].index).unit for a in assets}
    level = pd.DatetimeIndex((dates * DAY_NS).view("datetime64[ns]"))
    index = pd.MultiIndex(
        levels=[pd.Index(assets), level.as_unit(units.pop() if len(units) == 1 else "ns")],
        codes=[rows.owner, np.searchsorted(dates, day)], names=["asset", "date"])
    return pd.DataFrame({c: data[c] for c in COLUMNS if c in wanted}, index=index)

"""Candles of many assets laid end to end, and the per-asset rolling operations on them.

The layout of :mod:`features.fast`: each asset's complete daily calendar (or hourly grid)
follows the previous asset's in one array, so a column of the long (asset, date) panel is one
contiguous numpy array. Trailing windows and shifts run over the whole array at once and are
masked on each asset's first rows, exactly where a per-asset pandas ``rolling``/``shift`` has
too few rows; nothing is ever filled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from features.loaders import MarketData

DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
PRICE = ("open", "high", "low", "close", "volume")
HOURS_PER_DAY = 24


@dataclass(frozen=True)
class Candles:
    """One asset's candles as arrays; stamps in ns since the epoch."""

    day_ns: np.ndarray          # (n,) daily stamps, UTC midnight, sorted
    daily: np.ndarray           # (5, n) open, high, low, close, volume (maybe a strided view)
    hour_ns: np.ndarray         # (m,) hourly open times, on the hour, sorted (m = 0: none;
    #                             the per-asset build treats no frame and an empty one alike)
    hourly: tuple[np.ndarray, ...]  # (m,) high, low, close: views of the frame's columns


def stamps(index: pd.Index) -> np.ndarray:
    """An index of timestamps as int64 ns since the epoch (a view for a ns index: pandas'
    ``as_unit`` would copy it)."""
    return np.asarray(index, dtype="datetime64[ns]").view(np.int64)


def _columns(frame: pd.DataFrame, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """``frame[names]`` as float arrays, column by column: views, no copy (a loaded frame
    holds one block per column; ``to_numpy`` of the whole frame would interleave them)."""
    return tuple(frame[n].to_numpy(dtype=float) for n in names)


def candles(market: MarketData, asset: str) -> Candles:
    """``asset``'s arrays: the daily candles checked, the hourly ones views of the frame's
    columns, not read here (a serve reads a few weeks of a history of years: check the rows
    read with :func:`hours`).

    Raises
    ------
    ValueError
        Where the daily index breaks the loaders' rules (:mod:`features.loaders`): stamps at
        UTC midnight, sorted and unique.
    """
    frame = market.daily[asset]
    day_ns = stamps(frame.index)
    if (day_ns % DAY_NS).any() or (np.diff(day_ns) <= 0).any():
        raise ValueError(f"daily candles of {asset}: the index must be sorted, unique UTC "
                         "midnights (features.loaders rules); cannot build features")
    # the loaders' daily frame is open..volume: one to_numpy (a small copy) beats 5 lookups
    daily = (frame.to_numpy(dtype=float).T if tuple(frame.columns) == PRICE
             else np.stack(_columns(frame, PRICE)))
    hours = market.hourly.get(asset)
    if hours is None:
        return Candles(day_ns, daily, np.empty(0, np.int64), (np.empty(0),) * 3)
    return Candles(day_ns, daily, stamps(hours.index), _columns(hours, ("high", "low", "close")))


def hours(c: Candles, asset: str, start_ns: int | None = None, end_ns: int | None = None
          ) -> Candles:
    """``c``'s hourly candles stamped in ``[start_ns, end_ns)`` (None: unbounded), without
    its daily ones, checked.

    Raises
    ------
    ValueError
        Where those stamps break the loaders' rules: on the hour, sorted and unique.
    """
    i = 0 if start_ns is None else search(c.hour_ns, start_ns, HOUR_NS)
    j = len(c.hour_ns) if end_ns is None else search(c.hour_ns, end_ns, HOUR_NS)
    hour_ns = c.hour_ns[i:j]
    if (hour_ns % HOUR_NS).any() or (np.diff(hour_ns) <= 0).any():
        raise ValueError(f"hourly candles of {asset}: the index must be sorted, unique and on "
                         "the hour (features.loaders rules); cannot build features")
    return Candles(c.day_ns[:0], c.daily[:, :0], hour_ns, tuple(v[i:j] for v in c.hourly))


def search(stamps_ns: np.ndarray, t: int, step: int) -> int:
    """``np.searchsorted(stamps_ns, t, side="left")`` for sorted, unique stamps on a grid of
    ``step`` ns, reading the array's ends and the rows from the answer on only.

    At most ``(last - t) // step + 1`` stamps lie in ``[t, last]``, so the answer is at least
    ``n - 1 - (last - t) // step``: the search runs over that tail, the rows the caller reads
    next. A binary search over the whole array reads ~7 scattered pages of a mapped
    entry; at 10,000 assets, pages that are not in the page cache cost ~0.5 ms each.
    """
    n = len(stamps_ns)
    if n == 0 or t <= stamps_ns[0]:
        return 0
    if t > stamps_ns[-1]:
        return n
    lo = least_row(stamps_ns, t, step)
    return lo + int(np.searchsorted(stamps_ns[lo:], t, side="left"))


def least_row(stamps_ns: np.ndarray, t: int, step: int) -> int:
    """A row no later than the first stamp ``>= t`` (:func:`search`), from the last stamp
    alone: ``n - 1 - (last - t) // step``, within ``[0, n]``."""
    n = len(stamps_ns)
    return 0 if n == 0 else min(n, max(0, n - 1 - (int(stamps_ns[-1]) - t) // step))


def cut(c: Candles, as_of_ns: int, days: int | None) -> Candles:
    """The trailing ``days`` as :func:`features.window.trailing_market` keeps them: rows from
    ``min(as_of, last day) - (days - 1)`` days on, daily and hourly (None: every row)."""
    if days is None:
        return c
    start = min(as_of_ns, int(c.day_ns[-1])) - (days - 1) * DAY_NS
    i = int(np.searchsorted(c.day_ns, start, side="left"))
    j = search(c.hour_ns, start, HOUR_NS)
    return Candles(c.day_ns[i:], c.daily[:, i:], c.hour_ns[j:],
                   tuple(v[j:] for v in c.hourly))


@dataclass(frozen=True)
class Rows:
    """Complete calendars of several assets end to end: asset ``a`` holds ``length[a]``
    consecutive units (days, or hour slots) from ``first[a]`` (units since the epoch)."""

    first: np.ndarray
    length: np.ndarray

    @property
    def size(self) -> int:
        return int(self.length.sum())

    @cached_property
    def offset(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.length)[:-1]]).astype(np.int64)

    @cached_property
    def owner(self) -> np.ndarray:
        """Asset number of each row."""
        return np.repeat(np.arange(len(self.length)), self.length)

    @cached_property
    def local(self) -> np.ndarray:
        """Row number within its asset's calendar."""
        return np.arange(self.size) - np.repeat(self.offset, self.length)

    @cached_property
    def unit(self) -> np.ndarray:
        """Day (or hour slot) of each row."""
        return np.repeat(self.first, self.length) + self.local

    def position(self, asset: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, inside): the row of each (asset, unit), and whether that unit is in the
        asset's calendar (the row is meaningless where it is not)."""
        rel = unit - self.first[asset]
        inside = (rel >= 0) & (rel < self.length[asset])
        return self.offset[asset] + rel, inside


def daily_rows(spans: list[Candles]) -> tuple[Rows, np.ndarray]:
    """(rows, values (5, N)): each asset's daily candles on its complete calendar, first to
    last candle, missing days NaN (pandas ``reindex``). One contiguous array per column, so
    numpy's loops run on it as on a pandas column."""
    first = np.array([c.day_ns[0] // DAY_NS for c in spans], dtype=np.int64)
    last = np.array([c.day_ns[-1] // DAY_NS for c in spans], dtype=np.int64)
    rows = Rows(first, last - first + 1)
    values = np.full((len(PRICE), rows.size), np.nan)
    owner = np.repeat(np.arange(len(spans)), [len(c.day_ns) for c in spans])
    at, _ = rows.position(owner, np.concatenate([c.day_ns for c in spans]) // DAY_NS)
    values[:, at] = np.concatenate([c.daily for c in spans], axis=1)
    return rows, values


def shift(x: np.ndarray, k: int, local: np.ndarray) -> np.ndarray:
    """``x`` of ``k`` rows earlier in the same asset (pandas ``shift(k)``); NaN before."""
    if k == 0:
        return x.copy()
    out = np.full_like(x, np.nan)
    out[k:] = x[:-k]
    out[local < k] = np.nan
    return out


def diff(x: np.ndarray, local: np.ndarray) -> np.ndarray:
    """``x[t] - x[t-1]`` in the same asset (pandas ``diff()``); NaN on each first row."""
    out = np.full_like(x, np.nan)
    out[1:] = x[1:] - x[:-1]
    out[local == 0] = np.nan
    return out


def trailing(x: np.ndarray, w: int, local: np.ndarray, how: str) -> np.ndarray:
    """``how`` (``mean``, ``max``, ``min``) over rows ``t-w+1 .. t`` of the same asset; NaN
    where the window is incomplete or holds a NaN (pandas ``rolling(w, min_periods=w)``).

    The mean is the window's sum over :math:`w` (pandas keeps a running sum: the two differ
    by round-off, ~1e-15 relative for the non-negative variances averaged here).
    """
    if w == 1:
        return x.copy()  # pandas' one-row max, min and mean return the value itself
    out = np.full_like(x, np.nan)
    if len(x) >= w:
        windows = sliding_window_view(x, w)
        out[w - 1:] = (windows.sum(axis=-1) / w if how == "mean"
                       else getattr(windows, how)(axis=-1))
    out[local < w - 1] = np.nan
    return out


def hourly_batches(spans: list[Candles], least: int, batch_hours: int
                   ) -> Iterator[list[tuple[int, Candles]]]:
    """(asset number, candles) of the assets with at least ``least`` hourly candles, in
    consecutive groups of about ``batch_hours`` hourly grid slots (bounded memory)."""
    batch: list[tuple[int, Candles]] = []
    size = 0
    for a, c in enumerate(spans):
        if len(c.hour_ns) < least:
            continue
        batch.append((a, c))
        size += int(c.hour_ns[-1] - c.hour_ns[0]) // HOUR_NS + HOURS_PER_DAY
        if size >= batch_hours:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch

"""The hourly/daily check of the validated-candle cache, one UTC day at a time.

:func:`features.consistency.mismatches` compares each UTC day on its own (its hours against
its daily candle), so a pair's result is the sum of per-day results. A *state* keeps, for days
before a boundary ``b`` that no clean append can change, the number of compared days and the
failing ones; a load then compares only the days from ``b`` on (:func:`mismatch_days`, the same
comparison in numpy) and hands the total to the same :func:`features.consistency.judge`: same
warning, same error, same counts and first day.

``b`` is the earlier of the UTC day of the last hourly candle (appended candles open later, so
only that day can still gain hours) and the day after the last daily row. A state belongs to
one *lineage* of each file (:mod:`features.candle_cache`: the rows of a lineage are a growing
prefix that never changes); with another lineage, or a cut that drops rows before ``b`` (an
earlier as-of), the days are compared in full. The last verdict is memoised by the lineages
and cut lengths, which fix the compared rows exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.consistency import FIELDS, TOLERANCE, judge
from features.validation import DataValidationError

_DAY_NS = 86_400 * 10**9
Failing = list[tuple[int, str, float, float]]  # (day in ns, field, from the hours, daily)


@dataclass
class Side:
    """One file of the pair: its lineage, whole validated frame, the checked prefix, its path."""

    lineage: str
    frame: pd.DataFrame
    cut: pd.DataFrame
    path: Path
    block: np.ndarray | None = None  # the cache entry's block ``frame`` is a view of


def check(state: dict[str, Any] | None, hourly: Side, daily: Side
          ) -> tuple[str | DataValidationError | None, dict[str, Any], str]:
    """The verdict of :func:`features.consistency.check_hourly_against_daily` on the cut frames.

    Returns
    -------
    verdict : str, DataValidationError or None
        The warning, the error to raise (rule ``hourly_daily_consistency``) or None.
    state : dict
        The pair's state to store (JSON-able).
    how : {"pair_memo", "pair_partial", "pair_full"}
        Replayed, compared from the stored boundary on, or compared in full.
    """
    memo = [hourly.lineage, len(hourly.cut), daily.lineage, len(daily.cut), str(hourly.path),
            str(daily.path)]
    bound = min(int(hourly.frame.index[-1].normalize().value),
                int(daily.frame.index[-1].value) + _DAY_NS)
    try:
        if state is not None and state["memo"] == memo:
            return _replay(state["result"], hourly.path), state, "pair_memo"
        start, compared, failing = _resume(state, hourly, daily, bound)
    except (KeyError, TypeError, ValueError, IndexError):  # a damaged state: not trusted
        state, start, compared, failing = None, None, 0, []
    how = "pair_partial" if start is not None else "pair_full"
    n, days, rows = _days(hourly, daily, start)
    if (start is None or bound >= start) and _covers(hourly, bound) and _covers(daily, bound):
        # days before ``bound`` are final: no append changes them
        state = {"lineage": [hourly.lineage, daily.lineage], "b": bound,
                 "compared": compared + int((days < bound).sum()),
                 "failing": failing + [r for r in rows if r[0] < bound]}
    state = dict(state or {"lineage": None, "b": 0, "compared": 0, "failing": []})
    try:
        # judge() answers None when no day fails: the table (~0.7 ms to build) only otherwise
        note = None if not (failing or rows) else judge(
            compared + n, pd.DataFrame([(pd.Timestamp(day), f, h, d)
                                        for day, f, h, d in failing + rows],
                                       columns=["day", "field", "hourly", "daily"]),
            hourly.cut, hourly.path, daily.path)
    except DataValidationError as err:
        state.update(memo=memo, result={"error": str(err), "line": err.row})
        return err, state, how
    state.update(memo=memo, result={"note": note})
    return note, state, how


def _resume(state: dict[str, Any] | None, hourly: Side, daily: Side, bound: int
            ) -> tuple[int | None, int, Failing]:
    """(boundary, compared days, failing rows) to go on from, or (None, 0, []) from scratch.

    The state's days must be final in *these* files too (``b <= bound``): a state stored by a
    process that saw a later version of the same lineage says nothing of days this one lacks.
    """
    if (state is None or state["lineage"] != [hourly.lineage, daily.lineage]
            or int(state["b"]) > bound
            or not (_covers(hourly, state["b"]) and _covers(daily, state["b"]))):
        return None, 0, []
    failing = [(int(day), str(f), float(h), float(d)) for day, f, h, d in state["failing"]]
    return int(state["b"]), int(state["compared"]), failing


def _covers(side: Side, bound: int) -> bool:
    """Does the checked prefix hold every row of the file stamped before ``bound``?

    The stamps are sorted, so it does when it is the whole file or the first row past it is
    stamped at or after ``bound``: one row read, not a binary search over every stamp. Over
    a mapped cache entry that the page cache no longer holds, each probe of a search is a
    page read from disk, one after the other (with the pages it compares hinted by
    :meth:`features.candle_store.Store.prefetch`, the load after a first serve at 1,000
    assets, page cache dropped, went from 2.7-3.2 s to 1.0-1.5 s)."""
    n = len(side.cut)
    if n >= len(side.frame):
        return True
    if side.block is not None:
        return int(side.block[0, n]) >= bound
    return int(side.frame.index[n].value) >= bound


# rows before the end where :func:`_from` looks first: more than the two days of hourly rows
# a daily serve compares
_TAIL = 64


def _days(hourly: Side, daily: Side, start: int | None) -> tuple[int, np.ndarray, Failing]:
    """:func:`features.consistency.mismatches` over the UTC days from ``start`` on of the
    checked prefixes: how many days were compared, which (ns) and the failing rows (see
    :func:`mismatch_days`)."""
    h, d = _side_arrays(hourly, ("open", "high", "low", "close")), _side_arrays(daily, FIELDS)
    if start is not None:
        h, d = _from(h, start), _from(d, start)
    if not len(h[0]) or not len(d[0]):
        return 0, np.empty(0, dtype="int64"), []
    days, rows = _mismatch(h, d)
    return len(days), days, rows


Arrays = tuple[np.ndarray, dict[str, np.ndarray]]  # stamps (ns), then columns by name


def _arrays(frame: pd.DataFrame, columns: tuple[str, ...]) -> Arrays:
    """``frame``'s stamps and ``columns`` as numpy arrays (views where pandas allows)."""
    stamps = frame.index.to_numpy(dtype="datetime64[ns]").view("int64")
    return stamps, {c: frame[c].to_numpy() for c in columns}


def _side_arrays(side: Side, columns: tuple[str, ...]) -> Arrays:
    """:func:`_arrays` of ``side.cut``, read from the cache entry's block when the side has
    it (the cut is a prefix of the frame, a view of the block: no pandas call per column)."""
    if side.block is None:
        return _arrays(side.cut, columns)
    n, names = len(side.cut), list(side.frame.columns)
    return side.block[0, :n], {c: side.block[1 + names.index(c), :n].view("float64")
                               for c in columns}


def _from(arrays: Arrays, start: int) -> Arrays:
    """The rows stamped at or after ``start``: searched among the last :data:`_TAIL` stamps
    when ``start`` falls there (a daily serve's days), else among all (see :func:`_covers`)."""
    stamps, columns = arrays
    lo = max(len(stamps) - _TAIL, 0)
    if lo and stamps[lo - 1] < start:
        i = lo + int(np.searchsorted(stamps[lo:], start, side="left"))
    else:
        i = int(np.searchsorted(stamps, start, side="left"))
    return stamps[i:], {c: v[i:] for c, v in columns.items()}


def mismatch_days(hourly: pd.DataFrame, daily: pd.DataFrame) -> tuple[np.ndarray, Failing]:
    """:func:`features.consistency.mismatches` in numpy: the compared days (ns) and the failing
    (day, field, from the hours, daily) rows in the same order with the same values.

    pandas' groupby costs ~10 ms a call whatever the size, which a daily append pays for every
    asset; the arithmetic here is the same element by element (a test compares the two on
    every embedded pair, shifted files included).
    """
    return _mismatch(_arrays(hourly, ("open", "high", "low", "close")),
                     _arrays(daily, FIELDS))


def _mismatch(hourly: Arrays, daily: Arrays) -> tuple[np.ndarray, Failing]:
    """:func:`mismatch_days` on the frames' arrays (a daily append compares one or two days
    of each of 1,000+ pairs: pandas' per-call costs were most of it)."""
    stamps, hours = hourly
    day = stamps - stamps % _DAY_NS
    days, slot = np.unique(day, return_inverse=True)
    hour = (stamps - day) // (_DAY_NS // 24)
    agg = {name: np.full(len(days), np.nan) for name in ("open", "close")}
    agg["open"][slot[hour == 0]] = hours["open"][hour == 0]
    agg["close"][slot[hour == 23]] = hours["close"][hour == 23]
    agg["high"] = np.full(len(days), -np.inf)
    np.maximum.at(agg["high"], slot, hours["high"])
    agg["low"] = np.full(len(days), np.inf)
    np.minimum.at(agg["low"], slot, hours["low"])
    daily_days, daily_fields = daily
    common, mine, theirs = np.intersect1d(days, daily_days, assume_unique=True,
                                          return_indices=True)
    got = {k: v[mine] for k, v in agg.items()}
    ref = {k: daily_fields[k][theirs] for k in FIELDS}
    excess = {"open": np.abs(got["open"] / ref["open"] - 1),
              "close": np.abs(got["close"] / ref["close"] - 1),
              "high": got["high"] / ref["high"] - 1,
              "low": ref["low"] / got["low"] - 1}
    rows = []
    for order, name in enumerate(FIELDS):
        for i in np.flatnonzero(excess[name] > TOLERANCE):
            rows.append((int(common[i]), order, name, float(got[name][i]), float(ref[name][i])))
    rows.sort(key=lambda r: (r[0], r[1]))
    return common, [(d, f, h, v) for d, _, f, h, v in rows]


def _replay(result: dict[str, Any], hourly_path: Path) -> str | DataValidationError | None:
    if "error" in result:
        return DataValidationError(hourly_path, result["line"], "hourly_daily_consistency",
                                   result["error"])
    return result["note"]

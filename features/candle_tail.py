"""Rows appended to a cached CSV file: parsed and checked against every validation rule.

:func:`features.validation.validate_frame` (pandera) costs ~20-40 ms a call whatever the row
count, so a daily append of one row to 2,000 files would spend a minute in it. The rules are
simple per-row or neighbour comparisons; :func:`appended_blocks` applies each of them with numpy
to the new rows, plus the boundary (the first new stamp later than the file's last cached one,
which with the cached rows sorted and unique keeps the whole file sorted and unique). pandas'
CSV and timestamp parses also cost milliseconds a call whatever the row count, so the new lines
of many files (one kind, one header) are parsed in one call and split back by file
(:func:`appended_rows` is the one-file case). It only *decides*: on any failure it returns
None for that file and the caller re-reads the whole file with the normal loader, whose error
names the file, line and rule. So it must never pass what pandera
would refuse; :data:`RULES` lists the rules it applies and a test keeps that set equal to
:data:`features.validation.RULE_ORDER`, so that a new rule cannot be forgotten here.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from features.rawfiles import FILE_ERRORS
from features.validation import SPECS, parse_timestamps, value_differs

RULES = frozenset({
    "required_columns", "numeric_values", "timestamp_format", "parseable_timestamp",
    "finite_values", "unique_timestamps", "sorted_timestamps", "day_grid", "hour_grid",
    "positive_prices", "percent_units", "non_negative_volume", "high_ge_low",
    "high_ge_open_close", "low_le_open_close", "value_equals_close",
})
_STEP_NS = {"day_grid": 86_400 * 10**9, "hour_grid": 3_600 * 10**9}


def appended_rows(header: bytes, tail: bytes, cached: pd.DataFrame, kind: str,
                  prices_positive: bool) -> pd.DataFrame | None:
    """The rows of ``tail`` (CSV lines under ``header``) as a frame like ``cached``, or None
    if any rule fails (or anything is unexpected).

    Parameters
    ----------
    header : bytes
        The file's header line, newline included.
    tail : bytes
        The lines after the cached ones.
    cached : DataFrame
        The validated rows already cached (columns and index name to follow; last stamp).
    kind : {"daily", "hourly", "dvol", "macro"}
        Selects the timestamp format and grid (:data:`features.validation.SPECS`).
    prices_positive : bool
        Whether non-volume columns must be > 0 (False for yields).
    """
    columns = [str(c) for c in cached.columns]
    block = appended_blocks(header, [tail], [int(cached.index[-1].value)], columns, kind,
                            prices_positive)[0]
    if block is None:
        return None
    index = pd.DatetimeIndex(block[0].view("datetime64[ns]"), name=cached.index.name)
    return pd.DataFrame(block[1:].view("float64").T, index=index, columns=cached.columns)


def appended_blocks(header: bytes, tails: list[bytes], lasts: list[int], columns: list[str],
                    kind: str, prices_positive: bool) -> list[np.ndarray | None]:
    """The rows of each of ``tails`` (files of one kind under one ``header``), parsed in one
    call, as int64 blocks ``(1 + len(columns), rows)``: the stamps (ns), then each column's
    float64 bits; None for a tail that fails a rule or could not be parsed apart.

    A pandas parse and a timestamp parse cost milliseconds a call whatever the row count, so
    at a daily append of thousands of files one call for all of them is what makes it fast.
    The lines of the tails are joined (each ending in a newline) and split back by line
    count, which is exact only where a line is one row: a tail holding a quote or a carriage
    return (a quoted field may span lines, ``\\r`` ends a line) is parsed alone, and so is
    every tail when the joined parse fails or its row count differs. ``lasts``: each file's
    last cached stamp (ns), which its first new stamp must follow.
    """
    out: list[np.ndarray | None] = [None] * len(tails)
    joined = [i for i, t in enumerate(tails) if t and b'"' not in t and b"\r" not in t]
    alone = [i for i in range(len(tails)) if i not in set(joined)]
    if len(joined) > 1:
        parts = [t if t.endswith(b"\n") else t + b"\n" for t in (tails[i] for i in joined)]
        counts = np.array([p.count(b"\n") for p in parts])
        got = _checked(header, b"".join(parts), counts, [lasts[i] for i in joined], columns,
                       kind, prices_positive)
        if got is None:
            alone = list(range(len(tails)))
        else:
            for i, block in zip(joined, got, strict=True):
                out[i] = block
    else:
        alone = list(range(len(tails)))
    for i in alone:
        if tails[i]:
            got = _checked(header, tails[i], None, [lasts[i]], columns, kind, prices_positive)
            out[i] = None if got is None else got[0]
    return out


def _checked(header: bytes, lines: bytes, counts: np.ndarray | None, lasts: list[int],
             columns: list[str], kind: str, prices_positive: bool
             ) -> list[np.ndarray | None] | None:
    """Parse ``lines`` once; split into ``counts`` rows per file (None: one file) and check
    each file's rows against every rule. None when the parse itself fails."""
    dtypes = {"timestamp": str, **dict.fromkeys(columns, "float64")}
    try:  # numeric_values: a non-number makes the float parse fail; csv_format: a ragged row
        raw = pd.read_csv(io.BytesIO(header + lines), dtype=dtypes, skip_blank_lines=False)
    except (*FILE_ERRORS, TypeError):
        return None
    if counts is None:
        counts = np.array([len(raw)])
    if (raw.empty or int(counts.sum()) != len(raw) or (counts < 1).any()
            or sorted(map(str, raw.columns)) != sorted(["timestamp", *columns])):
        return None  # required_columns (the header is the cached one, checked anyway)
    stamps, wrong = parse_timestamps(raw["timestamp"], kind)
    # timestamp_format, parseable_timestamp
    bad = wrong.to_numpy(dtype=bool) | stamps.isna().to_numpy(dtype=bool)
    ns = stamps.to_numpy(dtype="datetime64[ns]").view("int64")
    bad |= (ns % _STEP_NS[SPECS[kind].grid]) != 0  # day_grid / hour_grid
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # unique_timestamps, sorted_timestamps: within a file, and past its last cached stamp
    # (the cached rows are sorted and unique, so the whole file stays so)
    step = np.concatenate([[True], np.diff(ns) > 0])
    step[starts] = ns[starts] > np.asarray(lasts, dtype="int64")
    bad |= ~step
    block = np.empty((1 + len(columns), len(raw)), dtype="int64")
    block[0] = ns
    values = {}
    for i, name in enumerate(columns):
        v = raw[name].to_numpy(dtype="float64")
        block[i + 1] = v.view("int64")
        values[name] = v
        bad |= ~np.isfinite(v)  # finite_values (NaN is refused too: not nullable)
        if name == "volume":
            bad |= v < 0  # non_negative_volume
        elif prices_positive:
            bad |= ~(v > 0)  # positive_prices
        if name == "value" and SPECS[kind].percent_min is not None:  # percent_units
            bad |= (v > 0) & (v < SPECS[kind].percent_min)
    bad |= _ranges_fail(values)
    failed = np.logical_or.reduceat(bad, starts)
    return [None if failed[k] else block[:, s:s + n]
            for k, (s, n) in enumerate(zip(starts, counts, strict=True))]


def _ranges_fail(values: dict[str, np.ndarray]) -> np.ndarray | bool:
    """Rows breaking high_ge_low, high_ge_open_close, low_le_open_close or value_equals_close
    (where the columns exist)."""
    bad: np.ndarray | bool = False
    high, low = values.get("high"), values.get("low")
    if high is not None and low is not None:
        bad = bad | (high < low)
    open_close = [values[c] for c in ("open", "close") if c in values]
    if open_close and high is not None:
        bad = bad | (high < np.maximum.reduce(open_close))
    if open_close and low is not None:
        bad = bad | (low > np.minimum.reduce(open_close))
    if "value" in values and "close" in values:
        bad = bad | value_differs(values["value"], values["close"])
    return bad

"""Rows appended to a cached CSV file: parsed and checked against every validation rule.

:func:`features.validation.validate_frame` (pandera) costs ~20-40 ms a call whatever the row
count, so a daily append of one row to 2,000 files would spend a minute in it. The rules are
simple per-row or neighbour comparisons; :func:`appended_rows` applies each of them with numpy
to the new rows, plus the boundary (the first new stamp later than the last cached one, which
with the cached rows sorted and unique keeps the whole file sorted and unique). It only
*decides*: on any failure it returns None and the caller re-reads the whole file with the
normal loader, whose error names the file, line and rule. So it must never pass what pandera
would refuse; :data:`RULES` lists the rules it applies and a test keeps that set equal to
:data:`features.validation.RULE_ORDER`, so that a new rule cannot be forgotten here.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from features.rawfiles import FILE_ERRORS
from features.validation import SPECS, parse_timestamps

RULES = frozenset({
    "required_columns", "numeric_values", "timestamp_format", "parseable_timestamp",
    "finite_values", "unique_timestamps", "sorted_timestamps", "day_grid", "hour_grid",
    "positive_prices", "non_negative_volume", "high_ge_low", "high_ge_open_close",
    "low_le_open_close",
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
    dtypes = {"timestamp": str, **dict.fromkeys(columns, "float64")}
    try:  # numeric_values: a non-number makes the float parse fail; csv_format: a ragged row
        raw = pd.read_csv(io.BytesIO(header + tail), dtype=dtypes, skip_blank_lines=False)
    except (*FILE_ERRORS, TypeError):
        return None
    if raw.empty or sorted(map(str, raw.columns)) != sorted(["timestamp", *columns]):
        return None  # required_columns (the header is the cached one, checked anyway)
    stamps, wrong = parse_timestamps(raw["timestamp"], kind)
    if bool(wrong.any()) or bool(stamps.isna().any()):  # timestamp_format, parseable_timestamp
        return None
    ns = stamps.to_numpy(dtype="datetime64[ns]").view("int64")
    if (ns % _STEP_NS[SPECS[kind].grid]).any():  # day_grid / hour_grid
        return None
    last = int(cached.index[-1].value)
    if ns[0] <= last or (np.diff(ns) <= 0).any():  # unique_timestamps, sorted_timestamps
        return None
    values = {c: raw[c].to_numpy(dtype="float64") for c in columns}
    for name, v in values.items():
        if not np.isfinite(v).all():  # finite_values (NaN is refused too: not nullable)
            return None
        if name == "volume":
            if (v < 0).any():  # non_negative_volume
                return None
        elif prices_positive and (v <= 0).any():  # positive_prices
            return None
    if not _ranges_hold(values):
        return None
    index = pd.DatetimeIndex(ns.view("datetime64[ns]"), name=cached.index.name)
    return pd.DataFrame(values, index=index, columns=cached.columns)


def _ranges_hold(values: dict[str, np.ndarray]) -> bool:
    """high_ge_low, high_ge_open_close, low_le_open_close, where those columns exist."""
    high, low = values.get("high"), values.get("low")
    if high is not None and low is not None and (high < low).any():
        return False
    open_close = [values[c] for c in ("open", "close") if c in values]
    if not open_close:
        return True
    if high is not None and (high < np.maximum.reduce(open_close)).any():
        return False
    return not (low is not None and (low > np.minimum.reduce(open_close)).any())

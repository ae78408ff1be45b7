"""Gaps in a regular time grid (missing days or hours), reported and never filled."""

from __future__ import annotations

import numpy as np
import pandas as pd

GAP_COLUMNS = ["source", "gap_start", "gap_end", "missing"]


def gap_report(index: pd.DatetimeIndex, freq: str, source: str) -> pd.DataFrame:
    """Runs of missing stamps on a regular grid, one row per run.

    Parameters
    ----------
    index : DatetimeIndex
        Sorted, unique stamps on the ``freq`` grid (as returned by the loaders).
    freq : {"1D", "1h"}
        Grid step.
    source : str
        Label copied into the ``source`` column (e.g. ``crypto/hourly/BTC.csv.gz``).

    Returns
    -------
    DataFrame
        Columns ``source``, ``gap_start`` (first missing stamp), ``gap_end`` (last missing
        stamp), ``missing`` (number of missing stamps). Empty (same columns) when complete.
        Macro series follow trading calendars: callers should not report their gaps.
    """
    step = pd.Timedelta(freq).to_timedelta64()
    stamps = np.asarray(index, dtype="datetime64[ns]")
    deltas = np.diff(stamps)
    jumps = np.flatnonzero(deltas > step)
    return pd.DataFrame(
        {
            "source": pd.Series([source] * len(jumps), dtype=object),
            "gap_start": pd.Series(stamps[jumps] + step, dtype="datetime64[ns]"),
            "gap_end": pd.Series(stamps[jumps + 1] - step, dtype="datetime64[ns]"),
            "missing": pd.Series(deltas[jumps] // step - 1, dtype="int64"),
        },
        columns=GAP_COLUMNS,
    )


def gap_reports(series: list[tuple[pd.DatetimeIndex, str, str]]) -> pd.DataFrame:
    """``pd.concat([gap_report(*s) for s in series], ignore_index=True)``, built once.

    One frame for all series instead of one per series: at 1,000 assets the per-series frames
    cost more than finding the gaps.
    """
    if not series:
        return gap_report(pd.DatetimeIndex([]), "1D", "")
    sources, starts, ends, missing = [], [], [], []
    for index, freq, source in series:
        step = pd.Timedelta(freq).to_timedelta64()
        stamps = np.asarray(index, dtype="datetime64[ns]")
        deltas = np.diff(stamps)
        jumps = np.flatnonzero(deltas > step)
        sources += [source] * len(jumps)
        starts.append(stamps[jumps] + step)
        ends.append(stamps[jumps + 1] - step)
        missing.append(deltas[jumps] // step - 1)
    return pd.DataFrame(
        {
            "source": pd.Series(sources, dtype=object),
            "gap_start": pd.Series(np.concatenate(starts), dtype="datetime64[ns]"),
            "gap_end": pd.Series(np.concatenate(ends), dtype="datetime64[ns]"),
            "missing": pd.Series(np.concatenate(missing), dtype="int64"),
        },
        columns=GAP_COLUMNS,
    )

"""The evaluation period year by year: does a headline hold in each year, or in one only?

A figure pooled over two years can come from one good year. Every headline of the protocol
(the learned variance model against pooled HAR, the learned tail model against the best
classical one, the frozen policy against EWMA-FHS) is therefore also reported on consecutive
twelve-month blocks of the evaluation period, from ``evaluation.evaluation_start``. Later data
adds blocks; nothing is chosen on them (the settings stay those frozen on the selection
period), so a block is what a reader would have seen a year after the freeze.

Rule for the end: a last block shorter than :data:`MIN_MONTHS` months is joined to the block
before it (a few weeks decide no test), so a block holds 6 months to just under 18 (or less
when the whole period is shorter than 6 months: one block); its label gives its real first
and last day.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

MONTHS = 12
MIN_MONTHS = 6


def year_blocks(start: dt.date | str, last: dt.date | str | None
                ) -> list[tuple[str, dt.date, dt.date]]:
    """``(label, first day, last day)`` of the twelve-month blocks from ``start`` to ``last``
    (inclusive); empty when ``last`` is None or before ``start``."""
    if last is None:
        return []
    first, end = pd.Timestamp(start).normalize(), pd.Timestamp(last).normalize()
    if end < first:
        return []
    bounds = []
    lo = first
    while lo <= end:
        hi = min(lo + pd.DateOffset(months=MONTHS) - pd.Timedelta(days=1), end)
        bounds.append([lo, hi])
        lo = hi + pd.Timedelta(days=1)
    short = bounds[-1][1] < bounds[-1][0] + pd.DateOffset(months=MIN_MONTHS) - pd.Timedelta(days=1)
    if len(bounds) > 1 and short:
        _, last_day = bounds.pop()
        bounds[-1][1] = last_day
    return [(f"{lo.date()} → {hi.date()}", lo.date(), hi.date()) for lo, hi in bounds]

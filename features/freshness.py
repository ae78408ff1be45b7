"""Staleness: how old each series is at the as-of date, so nothing old is used as if current.

The panel itself never carries a value past its source: a DVOL day without a print is NaN
(``dvol_available`` False), a macro value is carried at most ``features.macro_max_carry_days``,
a day without enough hourly candles falls back to the range proxy (flagged), and an asset's
rows end with its last candle. What the panel cannot say is that a *whole series* stopped
updating (MATIC ends 2024-09-10; a feed that broke last week): :func:`freshness_report` does,
per file, against the as-of date, so the pipeline can print it and serving can fall back.
It also lists each asset whose hourly file was lost (:attr:`MarketData.hourly_problems`): such
an asset runs on the daily-range proxy, which serving must flag.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from features.loaders import MarketData

FRESHNESS_COLUMNS = ["kind", "name", "last_date", "days_since_update", "stale_after_days",
                     "stale", "problem"]


def freshness_report(
    market: MarketData,
    as_of: dt.date | None = None,
    stale_after_days: int = 3,
    macro_stale_after_days: int = 7,
) -> pd.DataFrame:
    """One row per loaded series with its age at ``as_of`` and whether it is stale.

    Parameters
    ----------
    market : MarketData
        As returned by :func:`features.loaders.load_market` (possibly cut at ``as_of``).
    as_of : date, optional
        Reference date; default the latest daily candle of any asset.
    stale_after_days : int
        Crypto (daily, hourly) and DVOL series older than this many days are stale
        (config ``data.stale_after_days``).
    macro_stale_after_days : int
        Macro series follow exchange calendars (weekends, holidays), so they get their own
        threshold; use ``features.macro_max_carry_days``, past which their features are NaN.

    Returns
    -------
    DataFrame
        Columns :data:`FRESHNESS_COLUMNS`; ``kind`` is daily/hourly/dvol/macro, ``last_date``
        the UTC day of the last row (NaT for an empty series, which is always stale).
        ``problem`` is empty, except for one ``hourly`` row per asset of
        ``market.hourly_problems`` (no data: ``last_date`` NaT, stale) giving the reason.
    """
    series = {"daily": market.daily, "hourly": market.hourly, "dvol": market.dvol,
              "macro": market.macro}
    if as_of is None:
        lasts = [f.index.max() for f in market.daily.values() if len(f)]
        reference = max(lasts).normalize() if lasts else pd.NaT
    else:
        reference = pd.Timestamp(as_of)
    rows = []
    for kind, frames in series.items():
        limit = macro_stale_after_days if kind == "macro" else stale_after_days
        for name, frame in sorted(frames.items()):
            last = frame.index.max().normalize() if len(frame) else pd.NaT
            age = (reference - last).days if pd.notna(last) and pd.notna(reference) else None
            rows.append({"kind": kind, "name": name, "last_date": last,
                         "days_since_update": age, "stale_after_days": limit,
                         "stale": age is None or age > limit, "problem": ""})
    for name, reason in sorted(market.hourly_problems.items()):
        rows.append({"kind": "hourly", "name": name, "last_date": pd.NaT,
                     "days_since_update": None, "stale_after_days": stale_after_days,
                     "stale": True, "problem": reason})
    out = pd.DataFrame(rows, columns=FRESHNESS_COLUMNS)
    return out.astype({"days_since_update": "Int64", "stale": bool,
                       "last_date": "datetime64[ns]"})


def stale_assets(report: pd.DataFrame) -> list[str]:
    """Assets whose daily candles are stale in ``report`` (they get fallback parameters)."""
    daily = report[(report["kind"] == "daily") & report["stale"]]
    return sorted(daily["name"])


# what a stale series means downstream, for the line a run prints about it
_CONSEQUENCE = {
    "daily": "its asset's parameters are frozen (fail-safe)",
    "hourly": "its asset's covered loss falls back to the daily-range proxy (flagged)",
    "dvol": "its implied-volatility features are NaN (dvol_available False)",
    "macro": "the features built on it are NaN past the carry limit",
}


def stale_lines(report: pd.DataFrame) -> list[str]:
    """One line per stale series of ``report`` (from :func:`freshness_report`), naming its
    last day, its age, the limit and what it means downstream: a run over data whose macro or
    DVOL feed stopped says so, instead of only leaving NaN features behind. A lost hourly file
    (a row with a ``problem``) is left out: the loader warns about it already."""
    lines = []
    for r in report[report["stale"] & (report["problem"] == "")].itertuples():
        last = "no rows" if pd.isna(r.last_date) else f"last row {r.last_date.date()}"
        age = "" if pd.isna(r.days_since_update) else \
            f", {int(r.days_since_update)} days old (stale after {r.stale_after_days})"
        lines.append(f"stale {r.kind} series {r.name}: {last}{age}; "
                     f"{_CONSEQUENCE.get(r.kind, 'not used')}")
    return lines

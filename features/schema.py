"""The feature panel's columns, in one place, with units and meaning.

The panel is a long frame indexed by (``asset``, ``date``): one row per asset and UTC day.
``date`` is a tz-naive ``datetime64[ns]`` at midnight meaning *that UTC day*; a row holds what
is known at the **end** of that day (point-in-time). Columns whose name starts with
``target_`` look into the future: they exist for evaluation only and no model may read them
(:func:`feature_view` strips them; a test enforces it).

Units: returns are log returns; variance is daily decimal² (variance of the one-day log
return) unless the name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

TARGET_PREFIX = "target_"
INDEX = ("asset", "date")


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    meaning: str


COLUMNS: dict[str, Column] = {
    c.name: c
    for c in [
        Column("close", "USDT", "daily close (Binance spot, 24:00 UTC)"),
        Column("ret_1d", "log return", "close-to-close log return of day t"),
        Column("gk_var", "daily decimal²", "Garman-Klass range variance of day t"),
        Column("rv_hourly", "daily decimal²", "sum of squared hourly log returns in day t; "
               "NaN where fewer than features.min_hours_for_rv hourly returns exist"),
        Column("n_hours", "count", "hourly returns available in day t (0 without hourly data)"),
        Column("rv", "daily decimal²", "realized-variance proxy: rv_hourly where available, "
               "else gk_var (see rv_is_hourly)"),
        Column("rv_is_hourly", "bool", "True where rv comes from intraday (hourly) returns"),
        Column("har_rv_1d", "daily decimal²", "HAR daily term: rv of day t"),
        Column("har_rv_7d", "daily decimal²", "HAR weekly term: mean rv over days t-6..t"),
        Column("har_rv_30d", "daily decimal²", "HAR monthly term: mean rv over days t-29..t"),
        Column("dvol_var_1d", "daily decimal²", "Deribit DVOL (30-day implied vol) as daily "
               "variance, (DVOL/100)²/365; own index where it exists, else BTC's (market)"),
        Column("dvol_is_own", "bool", "True where dvol_var_1d is the asset's own DVOL"),
        Column("dvol_available", "bool", "False before DVOL exists (2021-03-24); then "
               "dvol_var_1d is NaN, never invented"),
        Column("corr_spx_30d", "correlation", "30-day rolling correlation of ret_1d with the "
               "S&P 500 log return, macro lagged one day (closed sessions only)"),
        Column("log_dollar_volume", "log USDT", "log of close × base volume of day t"),
        Column("target_variance_1d", "daily decimal²", "TARGET: rv of day t+1"),
        Column("target_variance_7d", "7-day decimal²", "TARGET: sum of rv over days t+1..t+7"),
        Column("target_return_1d", "log return", "TARGET: ret_1d of day t+1"),
    ]
}


def target_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(TARGET_PREFIX)]


def feature_view(panel: pd.DataFrame) -> pd.DataFrame:
    """The panel without any ``target_*`` column: what models are allowed to see."""
    return panel.drop(columns=target_columns(panel))


def undocumented_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of ``frame`` that have no schema entry (a test keeps this empty)."""
    return [c for c in frame.columns if c not in COLUMNS]

"""The feature panel's columns, in one place, with units and meaning.

The panel is a long frame indexed by (``asset``, ``date``): one row per asset and UTC day.
``date`` is a tz-naive ``datetime64[ns]`` at midnight meaning *that UTC day*; a row holds what
is known at the **end** of that day (point-in-time). Columns whose name starts with
``target_`` look into the future: they exist for evaluation only and no model may read them
(:func:`feature_view` strips them; a test enforces it).

Units: returns are log returns; variance is daily decimal² (variance of the one-day log
return) unless the name says otherwise. Flags that can be unknown are nullable booleans
(``<NA>``), never a silent False.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.macro import CORR_WINDOWS

TARGET_PREFIX = "target_"
INDEX = ("asset", "date")


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    meaning: str
    group: str = ""


_FACTOR_TEXT = {
    "spx": ("S&P 500 log return", "log return per unit S&P 500 log return"),
    "ndx": ("Nasdaq-100 log return", "log return per unit Nasdaq-100 log return"),
    "dxy": ("US dollar index (DXY) log return", "log return per unit DXY log return"),
    "gold": ("gold futures (GC=F) log return", "log return per unit gold log return"),
    "vix": ("VIX change in index points", "log return per VIX point"),
    "us10y": ("US 10y yield change in percentage points", "log return per pp of yield"),
}
_MACRO_RULE = ("over the sessions of the trailing {w} calendar days, crypto return over the "
               "same span, macro lagged features.macro_lag_days and carried at most "
               "features.macro_max_carry_days")


def _macro_columns() -> list[Column]:
    cols = []
    for stem, (what, beta_unit) in _FACTOR_TEXT.items():
        for w in CORR_WINDOWS:
            rule = _MACRO_RULE.format(w=w)
            cols.append(Column(f"corr_{stem}_{w}d", "correlation",
                               f"correlation of the asset's log return with the {what}, {rule}",
                               "macro"))
            cols.append(Column(f"beta_{stem}_{w}d", beta_unit,
                               f"OLS beta of the asset's log return on the {what}, {rule}",
                               "macro"))
    return cols


_LOSS_WINDOWS = ("over the H-hour windows (H = features.liquidation_delay_hours) completing in "
                 "the update interval (t-U, t] (U = features.update_interval_days), from hourly "
                 "closes, a window spanning an exchange outage of up to "
                 "features.outage_bridge_hours missing hours; daily-range proxy where "
                 "worst_loss_is_proxy; NaN on an asset's listing day without enough hourly "
                 "candles (features/losses.py)")
_NEXT = "of the next interval (t, t+U], i.e. the feature at row t+U"

_COLUMNS = [
    Column("close", "USDT", "daily close (Binance spot, 24:00 UTC)", "price"),
    Column("ret_1d", "log return", "close-to-close log return of day t", "price"),
    Column("gk_var", "daily decimal²", "Garman-Klass range variance of day t", "range"),
    Column("parkinson_var", "daily decimal²", "Parkinson high-low variance of day t", "range"),
    Column("rogers_satchell_var", "daily decimal²", "Rogers-Satchell (drift-free) range "
           "variance of day t", "range"),
    Column("yang_zhang_var_30d", "daily decimal²", "Yang-Zhang variance over days t-29..t "
           "(overnight + open-close + Rogers-Satchell; NaN if a day is missing)", "range"),
    Column("rv_hourly", "daily decimal²", "sum of squared hourly log returns in day t; "
           "NaN where fewer than features.min_hours_for_rv hourly returns exist", "realized"),
    Column("n_hours", "count", "hourly returns available in day t (0 without hourly data)",
           "realized"),
    Column("rv", "daily decimal²", "realized-variance proxy: rv_hourly where available, "
           "else gk_var (see rv_is_hourly)", "realized"),
    Column("rv_is_hourly", "bool", "True where rv comes from intraday (hourly) returns",
           "realized"),
    Column("rv_down", "daily decimal²", "downside realized semivariance: sum of squared negative "
           "hourly returns in day t (NaN where rv_hourly is)", "realized"),
    Column("rv_up", "daily decimal²", "upside realized semivariance: sum of squared positive "
           "hourly returns in day t (NaN where rv_hourly is)", "realized"),
    Column("bpv", "daily decimal²", "bipower variation of day t, (π/2)·n/(n-1)·Σ|r_i||r_i-1| "
           "(jump-robust integrated variance; hourly only)", "realized"),
    Column("jump_var", "daily decimal²", "jump component max(rv_hourly - bpv, 0) of day t",
           "realized"),
    Column("rskew", "unitless", "realized skewness √n·Σr³/RV^1.5 of day t's hourly returns",
           "realized"),
    Column("rkurt", "unitless", "realized kurtosis n·Σr⁴/RV² of day t's hourly returns "
           "(3 for Gaussian returns)", "realized"),
    Column("har_rv_1d", "daily decimal²", "HAR daily term: rv of day t", "realized"),
    Column("har_rv_7d", "daily decimal²", "HAR weekly term: mean rv over days t-6..t",
           "realized"),
    Column("har_rv_30d", "daily decimal²", "HAR monthly term: mean rv over days t-29..t",
           "realized"),
    Column("dvol_var_1d", "daily decimal²", "Deribit DVOL (30-day implied vol) as daily "
           "variance, (DVOL/100)²/365; own index where it exists, else BTC's (market)",
           "implied"),
    Column("dvol_is_own", "bool", "True where dvol_var_1d is the asset's own DVOL", "implied"),
    Column("dvol_available", "bool", "False before DVOL exists (2021-03-24); then "
           "dvol_var_1d is NaN, never invented", "implied"),
    Column("dvol_change_1d", "log change", "ln(DVOL_t / DVOL_t-1) of the index used in "
           "dvol_var_1d", "implied"),
    Column("dvol_change_7d", "log change", "ln(DVOL_t / DVOL_t-7) of the index used in "
           "dvol_var_1d", "implied"),
    Column("vrp", "daily decimal²", "variance risk premium dvol_var_1d - har_rv_30d (implied "
           "minus trailing 30-day realized variance)", "implied"),
    Column("iv_rv_ratio", "ratio of vols", "sqrt(dvol_var_1d / har_rv_30d): implied over "
           "trailing 30-day realized volatility", "implied"),
    *_macro_columns(),
    Column("vix_level", "index points", "last VIX close known at the end of day t (lagged "
           "and carried like every macro series)", "macro"),
    Column("vix_regime", "nullable bool", "stress regime: vix_level > features.vix_regime_level;"
           " <NA> where VIX is unknown or stale", "macro"),
    Column("beta_btc_30d", "log return per BTC log return", "OLS beta of ret_1d on BTC's "
           "ret_1d over days t-29..t; exactly 1 for BTC; NaN without BTC in the build",
           "crossasset"),
    Column("basket_corr_30d", "correlation", "mean pairwise 30-day return correlation of the "
           "assets trading at t (contagion indicator; same for every asset on a day)",
           "crossasset"),
    Column("basket_n_assets", "count", "assets of the build trading (with a return) at t",
           "crossasset"),
    Column("log_dollar_volume", "log USDT", "log of close × base volume of day t", "liquidity"),
    Column("volume_z_30d", "z-score", "log_dollar_volume of day t against the mean and sd of "
           "days t-30..t-1", "liquidity"),
    Column("amihud_30d", "bp per 1M USDT", "Amihud illiquidity: mean over days t-29..t of "
           "1e4·|ret_1d| / (dollar volume / 1e6)", "liquidity"),
    Column("worst_loss_long", "log loss", "worst H-hour log loss of a long, max of "
           f"ln(P_start/P_end), {_LOSS_WINDOWS}", "loss"),
    Column("worst_loss_short", "log loss", "worst H-hour log loss of a short, max of "
           f"ln(P_end/P_start), {_LOSS_WINDOWS}", "loss"),
    Column("worst_loss_long_intrabar", "log loss", "as worst_loss_long but against the lowest "
           "hourly low within each window (stricter)", "loss"),
    Column("worst_loss_short_intrabar", "log loss", "as worst_loss_short but against the "
           "highest hourly high within each window (stricter)", "loss"),
    Column("worst_loss_is_proxy", "bool", "True where the worst_loss_* columns are the "
           "conservative daily-range proxy (no hourly candles in the interval, or too few "
           "windows and candles that do not reach the daily high and low or follow a gap "
           "longer than features.outage_bridge_hours)", "loss"),
    Column("target_variance_1d", "daily decimal²", "TARGET: rv of day t+1", "target"),
    Column("target_variance_7d", "7-day decimal²", "TARGET: sum of rv over days t+1..t+7",
           "target"),
    Column("target_variance_30d", "30-day decimal²", "TARGET: sum of rv over days t+1..t+30",
           "target"),
    Column("target_return_1d", "log return", "TARGET: ret_1d of day t+1", "target"),
    Column("target_return_7d", "log return", "TARGET: log return over days t+1..t+7",
           "target"),
    Column("target_worst_loss_long", "log loss", f"TARGET: worst_loss_long {_NEXT}", "target"),
    Column("target_worst_loss_short", "log loss", f"TARGET: worst_loss_short {_NEXT}",
           "target"),
    Column("target_worst_loss_long_intrabar", "log loss",
           f"TARGET: worst_loss_long_intrabar {_NEXT}", "target"),
    Column("target_worst_loss_short_intrabar", "log loss",
           f"TARGET: worst_loss_short_intrabar {_NEXT}", "target"),
    Column("target_worst_loss_is_proxy", "nullable bool",
           f"TARGET: worst_loss_is_proxy {_NEXT}; <NA> where no next interval exists", "target"),
]
COLUMNS: dict[str, Column] = {c.name: c for c in _COLUMNS}


def target_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(TARGET_PREFIX)]


def feature_view(panel: pd.DataFrame) -> pd.DataFrame:
    """The panel without any ``target_*`` column: what models are allowed to see."""
    return panel.drop(columns=target_columns(panel))


def undocumented_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of ``frame`` that have no schema entry (a test keeps this empty)."""
    return [c for c in frame.columns if c not in COLUMNS]

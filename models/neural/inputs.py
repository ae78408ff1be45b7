r"""Inputs of ``harx_mlp``: the HAR cascade plus what a log-HAR cannot see, from row ``t`` only.

Every input is a function of one panel row (point-in-time like the panel itself). Variances
and scale-like quantities enter in logs. An input that does not exist on a row is NaN — DVOL
before 2021-03-24, the hourly-only semivariance and jump terms on range-proxy assets, a stale
macro series — and is imputed at its training mean after standardization; the flags
``dvol_available`` and ``rv_is_hourly`` say which regime a row is in, so a missing value is
never a pretend number the model cannot tell apart.

:data:`REQUIRED` columns must exist and be finite (no forecast otherwise). The other inputs
are *optional columns*: a panel without them (the seeded test panel) gives NaN inputs, but a
model fitted where an input existed refuses a panel that lacks it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from models.preprocessing import REQUIRED, dvol_mask, flag, log_variance

LOG_FLOOR = 1e-8  # jump variance and liquidity measures are often exactly 0


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return frame[name].to_numpy(dtype=float)


def _log(frame: pd.DataFrame, name: str) -> np.ndarray:
    return np.log(np.maximum(_col(frame, name), LOG_FLOOR))


def _hourly_only(frame: pd.DataFrame, values: np.ndarray) -> np.ndarray:
    return np.where(flag(frame, "rv_is_hourly"), values, np.nan)


def _dvol_only(frame: pd.DataFrame, values: np.ndarray) -> np.ndarray:
    return np.where(dvol_mask(frame), values, np.nan)


def _down_share(frame: pd.DataFrame) -> np.ndarray:
    """Downside semivariance share RV⁻/RV (Patton and Sheppard, 2015): bad volatility."""
    rv = np.maximum(_col(frame, "rv"), 1e-10)
    return _hourly_only(frame, _col(frame, "rv_down") / rv)


INPUTS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    # the HAR cascade (Corsi, 2009), as in har_rv_pooled
    "log_har_rv_1d": lambda f: log_variance(f["har_rv_1d"]),
    "log_har_rv_7d": lambda f: log_variance(f["har_rv_7d"]),
    "log_har_rv_30d": lambda f: log_variance(f["har_rv_30d"]),
    # other estimators of the same day's / month's variance
    "log_gk_var": lambda f: log_variance(f["gk_var"]),
    "log_parkinson_var": lambda f: _log(f, "parkinson_var"),
    "log_rogers_satchell_var": lambda f: _log(f, "rogers_satchell_var"),
    "log_yang_zhang_var_30d": lambda f: _log(f, "yang_zhang_var_30d"),
    # leverage effect: sign and size of the day's return
    "ret_1d": lambda f: f["ret_1d"].to_numpy(dtype=float),
    "abs_ret_1d": lambda f: np.abs(f["ret_1d"].to_numpy(dtype=float)),
    # intraday decomposition (hourly assets only)
    "rv_down_share": _down_share,
    "log_jump_var": lambda f: _hourly_only(f, _log(f, "jump_var")),
    # worst liquidation-delay loss of the day (tail of the intraday path)
    "log_worst_loss_long": lambda f: _log(f, "worst_loss_long"),
    "log_worst_loss_short": lambda f: _log(f, "worst_loss_short"),
    # implied variance and the variance risk premium (masked before DVOL exists)
    "log_dvol_var_1d": lambda f: _dvol_only(f, log_variance(f["dvol_var_1d"])),
    "log_iv_rv_ratio": lambda f: _dvol_only(f, _log(f, "iv_rv_ratio")),
    "dvol_change_7d": lambda f: _dvol_only(f, _col(f, "dvol_change_7d")),
    # market state: contagion, beta, macro, liquidity
    "basket_corr_30d": lambda f: _col(f, "basket_corr_30d"),
    "beta_btc_30d": lambda f: _col(f, "beta_btc_30d"),
    "corr_spx_30d": lambda f: _col(f, "corr_spx_30d"),
    "log_vix_level": lambda f: _log(f, "vix_level"),
    "volume_z_30d": lambda f: _col(f, "volume_z_30d"),
    "log_amihud_30d": lambda f: _log(f, "amihud_30d"),
    # regime flags
    "dvol_available": lambda f: dvol_mask(f).astype(float),
    "rv_is_hourly": lambda f: flag(f, "rv_is_hourly").astype(float),
}
INPUT_NAMES = tuple(INPUTS)
OPTIONAL_COLUMNS = (
    "parkinson_var", "rogers_satchell_var", "yang_zhang_var_30d", "rv_down", "jump_var",
    "worst_loss_long", "worst_loss_short", "iv_rv_ratio", "dvol_change_7d", "basket_corr_30d",
    "beta_btc_30d", "corr_spx_30d", "vix_level", "volume_z_30d", "amihud_30d",
)
PANEL_COLUMNS = (*REQUIRED, "rv", "rv_is_hourly", "dvol_var_1d", "dvol_available")


# Inputs that exist only with DVOL (harx_mlp's dvol_min_days gate)
DVOL_TERMS = ("log_dvol_var_1d", "log_iv_rv_ratio", "dvol_change_7d", "dvol_available")
# The parsimonious input set of harx_iv (HAR cascade, log DVOL) with the regime flags.
HAR_IV_TERMS = ("log_har_rv_1d", "log_har_rv_7d", "log_har_rv_30d", "log_dvol_var_1d",
                "dvol_available", "rv_is_hourly")
# Inputs that get their own slopes on rows with the asset's own DVOL (the own-DVOL head of
# harx_mlp): the HAR cascade and the implied terms, as in harx_iv's IV regime.
OWN_DVOL_TERMS = ("log_har_rv_1d", "log_har_rv_7d", "log_har_rv_30d", "log_dvol_var_1d",
                  "log_iv_rv_ratio", "dvol_change_7d")


def own_dvol(frame: pd.DataFrame) -> np.ndarray:
    """(N,) True where row ``t`` has a real DVOL value that is the asset's own index.

    BTC's index lent to other assets (``dvol_is_own`` False) and rows before DVOL exists
    (``dvol_available`` False, value NaN) are False; a panel without ``dvol_is_own`` has no
    own-DVOL row at all.
    """
    if "dvol_is_own" not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return dvol_mask(frame) & flag(frame, "dvol_is_own")


def weekday_columns(dates: pd.DatetimeIndex | np.ndarray) -> np.ndarray:
    """(N, 6) one-hot weekday of day t+1, Tuesday..Sunday (Monday is the asset intercept).

    Crypto trades all week but weekend days are quiet: BTC's mean log RV is about 1.2 lower
    on Saturdays and 0.7 on Sundays than on weekdays (2021-2025). The calendar of day t+1
    is known at t, so this is point-in-time; day t's weekday is the day before, so it says
    what a weekend ``har_rv_1d`` means as well.
    """
    weekday = (pd.DatetimeIndex(dates) + pd.Timedelta(days=1)).day_of_week.to_numpy()  # (N,)
    return (weekday[:, None] == np.arange(1, 7)[None, :]).astype(float)


def raw_inputs(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (N, F) with NaN where missing, valid (N,): required columns finite)."""
    missing = [c for c in PANEL_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"harx_mlp: panel lacks column(s) {missing}; build it with features/")
    x = np.column_stack([INPUTS[name](frame) for name in INPUT_NAMES])  # (N, F)
    x[~np.isfinite(x)] = np.nan
    valid = np.isfinite(frame[list(REQUIRED)].to_numpy(dtype=float)).all(axis=1)
    return x, valid


def present_columns(frame: pd.DataFrame) -> list[str]:
    """Optional columns ``frame`` has (a model fitted with them needs them to forecast)."""
    return [c for c in OPTIONAL_COLUMNS if c in frame.columns]

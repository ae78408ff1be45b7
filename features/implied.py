r"""Implied-volatility features from Deribit's DVOL index.

DVOL is a 30-day forward-looking implied volatility, annualised over 365 calendar days, in
percent, observed at the end of each UTC day. It exists for BTC and ETH from its launch on
2021-03-24 only. Assets without their own index get the market's (BTC's) with
``dvol_is_own`` False; before the launch ``dvol_available`` is False and every DVOL-derived
column is NaN — nothing is extrapolated backwards, and a missing day is never carried forward.
An asset whose own index starts later than the market's takes the market's on the days before
its own first day and its own from then on (:func:`asset_implied_features`): a row's value
never depends on how much later data the build saw.

With :math:`IV^2_t = (\mathrm{DVOL}_t/100)^2/365` (daily decimal²) and
:math:`\overline{RV}^{(30)}_t` the trailing 30-day mean realized variance (``har_rv_30d``):

.. math::

    \mathrm{VRP}_t = IV^2_t - \overline{RV}^{(30)}_t, \qquad
    \frac{IV}{RV}_t = \sqrt{IV^2_t \,/\, \overline{RV}^{(30)}_t}

The variance risk premium follows Bollerslev, Tauchen & Zhou (2009), Rev. Financ. Stud. 22(11)
(implied minus trailing realized variance over the option horizon); both sides cover 30
calendar days, so they are commensurate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["MARKET_DVOL", "asset_implied_features", "dvol_change", "dvol_to_daily_variance",
           "implied_features", "iv_rv_ratio", "own_dvol_start", "variance_risk_premium"]

MARKET_DVOL = "BTC"  # Deribit's flagship index stands in for assets without their own DVOL


def dvol_to_daily_variance(dvol_pct: pd.Series) -> pd.Series:
    r"""Annualised implied vol in percent → daily variance: :math:`(\mathrm{DVOL}/100)^2/365`.

    Deribit annualises DVOL over 365 calendar days (crypto trades every day).
    """
    return (dvol_pct / 100.0) ** 2 / 365.0


def dvol_change(dvol_pct: pd.Series, days: int) -> pd.Series:
    r"""Log change of the DVOL level over ``days`` days: :math:`\ln(\mathrm{DVOL}_t /
    \mathrm{DVOL}_{t-k})`; NaN where either end is missing.

    ``dvol_pct`` must be on a complete daily calendar. A log change is scale-free, so a move
    from 40 to 44 and one from 80 to 88 read the same (+0.095).
    """
    return np.log(dvol_pct / dvol_pct.shift(days))


def variance_risk_premium(implied_var: pd.Series, trailing_rv: pd.Series) -> pd.Series:
    r"""Implied minus trailing realized variance, :math:`IV^2_t - \overline{RV}_t` (decimal²)."""
    return implied_var - trailing_rv


def iv_rv_ratio(implied_var: pd.Series, trailing_rv: pd.Series) -> pd.Series:
    r"""Ratio of implied to trailing realized *volatility*, :math:`\sqrt{IV^2_t/\overline{RV}_t}`.

    NaN where the realized variance is not positive (a flat window says nothing).
    """
    ratio = implied_var / trailing_rv.where(trailing_rv > 0)
    return np.sqrt(ratio)


def implied_features(
    dvol_source: pd.DataFrame | None, own: bool, trailing_rv: pd.Series
) -> pd.DataFrame:
    """Every implied-vol column of one asset on the calendar of ``trailing_rv``.

    Parameters
    ----------
    dvol_source : DataFrame or None
        The DVOL series used for the asset (its own, else the market's), ``value`` column.
    own : bool
        Whether ``dvol_source`` is the asset's own index.
    trailing_rv : Series
        ``har_rv_30d`` of the asset on its complete daily calendar.

    Returns
    -------
    DataFrame
        ``dvol_var_1d, dvol_is_own, dvol_available, dvol_change_1d, dvol_change_7d, vrp,
        iv_rv_ratio``.
    """
    calendar = trailing_rv.index
    if dvol_source is not None and len(dvol_source) > 0:
        level = dvol_source["value"].reindex(calendar)  # no fill: a missing day stays missing
    else:
        level = pd.Series(np.nan, index=calendar)
    out = pd.DataFrame(index=calendar)
    out["dvol_var_1d"] = dvol_to_daily_variance(level)
    out["dvol_available"] = out["dvol_var_1d"].notna()
    out["dvol_is_own"] = out["dvol_available"] & own
    out["dvol_change_1d"] = dvol_change(level, 1)
    out["dvol_change_7d"] = dvol_change(level, 7)
    out["vrp"] = variance_risk_premium(out["dvol_var_1d"], trailing_rv)
    out["iv_rv_ratio"] = iv_rv_ratio(out["dvol_var_1d"], trailing_rv)
    return out


def own_dvol_start(dvol_own: pd.DataFrame | None) -> pd.Timestamp | None:
    """The first day of an asset's own DVOL series (None: it has none)."""
    if dvol_own is None or not len(dvol_own):
        return None
    return pd.Timestamp(dvol_own.index.min()).normalize()


def asset_implied_features(dvol_own: pd.DataFrame | None, dvol_market: pd.DataFrame | None,
                           trailing_rv: pd.Series) -> pd.DataFrame:
    """:func:`implied_features` of one asset, row by row point in time: the asset's own
    index from its first day on, the market's before it (``dvol_is_own`` False there).

    Deciding once per asset would make a past row depend on the build's as-of: cut before
    the own series starts, the asset borrows the market's index on every row; cut after, the
    same rows would read the own series, which has no value there. Each part's changes are
    computed on its own series, so the switch day shows no jump between two indices."""
    start = own_dvol_start(dvol_own)
    market = implied_features(dvol_market, False, trailing_rv)
    if start is None:
        return market
    out = implied_features(dvol_own, True, trailing_rv)
    before = out.index < start
    out.loc[before] = market.loc[before]
    return out

"""Build the daily feature panel (asset, date) from validated market data. Pure: no I/O.

Point-in-time by construction: every feature at row ``t`` is a function of candles that closed
by the end of UTC day ``t`` (and macro sessions dated ``<= t - lag``). Forward-looking columns
are named ``target_*`` and come from :mod:`features.targets`. A test rebuilds the panel on data
truncated at many ``t`` and checks the rows up to ``t`` are identical.

Where each group of columns is defined (formulas and references in each module):

=======================  =================================================================
:mod:`features.realized`  hourly RV, semivariances, bipower variation, jumps, skew/kurtosis,
                          HAR terms
:mod:`features.ranges`    Parkinson, Garman-Klass, Rogers-Satchell, Yang-Zhang
:mod:`features.implied`   DVOL as variance, its changes, variance risk premium, IV/RV
:mod:`features.macro`     macro correlations and betas across calendars, VIX regime
:mod:`features.crossasset` beta to BTC, basket correlation (contagion)
:mod:`features.liquidity` dollar volume, volume z-score, Amihud illiquidity
:mod:`features.losses`    worst liquidation-delay loss within the update interval
:mod:`features.targets`   every ``target_*`` column
=======================  =================================================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from configs.schema import FeaturesConfig
from features.crossasset import cross_asset_features
from features.implied import MARKET_DVOL, asset_implied_features
from features.liquidity import liquidity_features
from features.loaders import MarketData
from features.losses import LOSS_COLUMNS, PROXY_FLAG, worst_loss_features
from features.macro import macro_features
from features.ranges import garman_klass, parkinson, rogers_satchell, yang_zhang
from features.realized import (
    HOURLY_MEASURES,
    complete_calendar,
    har_terms,
    hourly_realized_measures,
    log_returns,
)
from features.schema import COLUMNS, undocumented_columns
from features.targets import target_frame

YANG_ZHANG_WINDOW = 30  # days; part of the column name


def _range_columns(d: pd.DataFrame) -> pd.DataFrame:
    o, h, lo, c = d["open"], d["high"], d["low"], d["close"]
    return pd.DataFrame({
        "gk_var": garman_klass(o, h, lo, c),
        "parkinson_var": parkinson(h, lo),
        "rogers_satchell_var": rogers_satchell(o, h, lo, c),
        f"yang_zhang_var_{YANG_ZHANG_WINDOW}d": yang_zhang(o, h, lo, c, YANG_ZHANG_WINDOW),
    }, index=d.index)


def _realized_columns(
    hourly: pd.DataFrame | None, calendar: pd.DatetimeIndex, min_hours: int
) -> pd.DataFrame:
    if hourly is not None and len(hourly) > 1:
        measures = hourly_realized_measures(hourly, min_hours).reindex(calendar)
        measures["n_hours"] = measures["n_hours"].fillna(0).astype("int64")  # a count: 0 exact
        return measures
    out = pd.DataFrame(np.nan, index=calendar, columns=list(HOURLY_MEASURES))
    out["n_hours"] = np.int64(0)
    return out


def asset_features(
    daily: pd.DataFrame,
    hourly: pd.DataFrame | None,
    dvol_own: pd.DataFrame | None,
    dvol_market: pd.DataFrame | None,
    macro: dict[str, pd.DataFrame],
    cfg: FeaturesConfig,
) -> pd.DataFrame:
    """Single-asset feature and target columns, indexed by a complete daily calendar.

    Cross-asset columns (beta to BTC, basket correlation) need every asset and are added by
    :func:`build_panel`.
    """
    calendar = complete_calendar(pd.DatetimeIndex(daily.index))
    d = daily.reindex(calendar)  # missing days become NaN rows: visible, never filled
    out = pd.DataFrame(index=calendar)
    out["close"] = d["close"]
    out["ret_1d"] = log_returns(d["close"])
    out = out.join(_range_columns(d))
    out = out.join(_realized_columns(hourly, calendar, cfg.min_hours_for_rv))
    out["rv_is_hourly"] = out["rv_hourly"].notna()
    out["rv"] = out["rv_hourly"].where(out["rv_is_hourly"], out["gk_var"])
    out = out.join(har_terms(out["rv"], cfg.har_windows))

    out = out.join(asset_implied_features(dvol_own, dvol_market, out["har_rv_30d"]))
    out = out.join(macro_features(out["ret_1d"], macro, cfg))
    out = out.join(liquidity_features(d["close"], d["volume"], out["ret_1d"],
                                      cfg.liquidity_min_obs))
    out = out.join(worst_loss_features(d, hourly, cfg))
    return out.join(target_frame(out, cfg.update_interval_days))


# The columns a serve reads in rows older than its full-feature window (serving/inputs.py,
# serving/apply.py, models/garch.py, models/ewma.py): the covered loss (stress floor, loss
# memory, FHS losses), the return (close-to-close loss, recursive forecasters) and the close
# (the data's age). See features/window.py.
TAIL_COLUMNS = ("close", "ret_1d", *LOSS_COLUMNS, PROXY_FLAG)


def tail_features(daily: pd.DataFrame, hourly: pd.DataFrame | None,
                  cfg: FeaturesConfig) -> pd.DataFrame:
    """:data:`TAIL_COLUMNS` of one asset on its complete daily calendar, computed exactly as
    :func:`asset_features` does (same functions, same inputs)."""
    calendar = complete_calendar(pd.DatetimeIndex(daily.index))
    d = daily.reindex(calendar)
    out = pd.DataFrame({"close": d["close"], "ret_1d": log_returns(d["close"])}, index=calendar)
    return out.join(worst_loss_features(d, hourly, cfg))


def build_with_tail(market: MarketData, tail: MarketData, cfg: FeaturesConfig) -> pd.DataFrame:
    """Every column over ``market``, and :data:`TAIL_COLUMNS` over the longer ``tail``.

    ``tail`` holds the same assets over a longer span ending at the same rows. The result is
    indexed like a panel of ``tail``: its :data:`TAIL_COLUMNS` come from ``tail`` on every
    row; the other columns from :func:`build_panel` of ``market``, missing (``NaN``/``<NA>``)
    on the older rows, which were not built. Boolean and integer columns become nullable
    (``boolean``, ``Int64``) so that a row not built is never read as False or 0.
    """
    panel = build_panel(market, cfg)
    blocks = {a: tail_features(tail.daily[a], tail.hourly.get(a), cfg)
              for a in sorted(tail.daily) if not tail.daily[a].empty}
    long = pd.concat(blocks, names=["asset", "date"])
    rest = panel.drop(columns=list(TAIL_COLUMNS))
    nullable = {c: "boolean" if pd.api.types.is_bool_dtype(t) else "Int64"
                for c, t in rest.dtypes.items()
                if pd.api.types.is_bool_dtype(t) or pd.api.types.is_integer_dtype(t)}
    out = long.join(rest.astype(nullable), how="left").sort_index()
    return out[list(panel.columns)]


def build_panel(market: MarketData, cfg: FeaturesConfig) -> pd.DataFrame:
    """The long (asset, date) panel for every asset in ``market.daily``; columns in schema order.

    Raises
    ------
    ValueError
        When no asset has data, or a column lacks a schema entry (e.g. ``har_windows`` changed
        without documenting the new ``har_rv_*`` columns in :mod:`features.schema`).
    """
    blocks: dict[str, pd.DataFrame] = {}
    for asset in sorted(market.daily):
        if market.daily[asset].empty:
            continue  # listed after the as-of date: it does not exist yet at that time
        blocks[asset] = asset_features(
            market.daily[asset],
            market.hourly.get(asset),
            market.dvol.get(asset),
            market.dvol.get(MARKET_DVOL),
            market.macro,
            cfg,
        )
    if not blocks:
        raise ValueError(f"no assets to build features for in {market.data_dir}")
    cross = cross_asset_features({a: b["ret_1d"] for a, b in blocks.items()}, cfg.corr_min_obs)
    frames = [b.join(cross[a]) for a, b in blocks.items()]
    panel = pd.concat(frames, keys=list(blocks), names=["asset", "date"]).sort_index()
    missing = undocumented_columns(panel)
    if missing:
        raise ValueError(f"feature columns without a schema entry in features/schema.py: "
                         f"{missing}; document them (name, unit, meaning) before building")
    return panel[[c for c in COLUMNS if c in panel.columns]]

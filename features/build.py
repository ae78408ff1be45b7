"""Build the daily feature panel (asset, date) from validated market data. Pure: no I/O.

Point-in-time by construction: every feature at row ``t`` is a function of candles that closed
by the end of UTC day ``t`` (and macro sessions dated ``<= t - lag``). Forward-looking columns
are named ``target_*`` and come from :mod:`features.targets`. A test rebuilds the panel on data
truncated at many ``t`` and checks the rows up to ``t`` are identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.loaders import MarketData
from features.macro import as_of_daily, rolling_correlation, session_aligned_returns
from features.realized import (
    complete_calendar,
    dvol_to_daily_variance,
    garman_klass,
    har_terms,
    hourly_realized_variance,
    log_returns,
)
from features.schema import COLUMNS
from features.targets import forward_variance
from pipelines.config import FeaturesConfig

MARKET_DVOL = "BTC"  # Deribit's flagship index stands in for assets without their own DVOL
BENCHMARK_EQUITY = "SPX"


def asset_features(
    daily: pd.DataFrame,
    hourly: pd.DataFrame | None,
    dvol_own: pd.DataFrame | None,
    dvol_market: pd.DataFrame | None,
    spx: pd.DataFrame | None,
    cfg: FeaturesConfig,
) -> pd.DataFrame:
    """Feature and target columns of one asset, indexed by a complete daily calendar."""
    calendar = complete_calendar(pd.DatetimeIndex(daily.index))
    d = daily.reindex(calendar)  # missing days become NaN rows: visible, never filled
    out = pd.DataFrame(index=calendar)
    out["close"] = d["close"]
    out["ret_1d"] = log_returns(d["close"])
    out["gk_var"] = garman_klass(d["open"], d["high"], d["low"], d["close"])

    if hourly is not None and len(hourly) > 1:
        rv_h = hourly_realized_variance(hourly, cfg.min_hours_for_rv).reindex(calendar)
        out["rv_hourly"] = rv_h["rv_hourly"]
        out["n_hours"] = rv_h["n_hours"].fillna(0).astype("int64")  # a count: 0 is exact
    else:
        out["rv_hourly"] = np.nan
        out["n_hours"] = np.int64(0)
    out["rv_is_hourly"] = out["rv_hourly"].notna()
    out["rv"] = out["rv_hourly"].where(out["rv_is_hourly"], out["gk_var"])
    out = out.join(har_terms(out["rv"], cfg.har_windows))

    own = dvol_own is not None and len(dvol_own) > 0
    source = dvol_own if own else dvol_market
    if source is not None and len(source) > 0:
        level = source["value"].reindex(calendar)
        out["dvol_var_1d"] = dvol_to_daily_variance(level)
    else:
        out["dvol_var_1d"] = np.nan
    out["dvol_available"] = out["dvol_var_1d"].notna()
    out["dvol_is_own"] = out["dvol_available"] & own

    if spx is not None and len(spx) > 2:
        pairs = session_aligned_returns(out["ret_1d"], spx["value"])
        corr = rolling_correlation(pairs, cfg.corr_window, cfg.corr_min_obs)
        out["corr_spx_30d"] = as_of_daily(corr, calendar, cfg.macro_lag_days)
    else:
        out["corr_spx_30d"] = np.nan
    out["log_dollar_volume"] = np.log(d["close"] * d["volume"]).replace(-np.inf, np.nan)

    out["target_variance_1d"] = forward_variance(out["rv"], 1)
    out["target_variance_7d"] = forward_variance(out["rv"], 7)
    out["target_return_1d"] = out["ret_1d"].shift(-1)
    return out


def build_panel(market: MarketData, cfg: FeaturesConfig) -> pd.DataFrame:
    """The long (asset, date) panel for every asset in ``market.daily``; columns in schema order."""
    blocks = []
    for asset in sorted(market.daily):
        if market.daily[asset].empty:
            continue  # listed after the as-of date: it does not exist yet at that time
        block = asset_features(
            market.daily[asset],
            market.hourly.get(asset),
            market.dvol.get(asset),
            market.dvol.get(MARKET_DVOL),
            market.macro.get(BENCHMARK_EQUITY),
            cfg,
        )
        block.insert(0, "asset", asset)
        blocks.append(block)
    if not blocks:
        raise ValueError(f"no assets to build features for in {market.data_dir}")
    panel = pd.concat(blocks).rename_axis("date").reset_index()
    panel = panel.set_index(["asset", "date"]).sort_index()
    ordered = [c for c in COLUMNS if c in panel.columns]
    return panel[ordered]

"""Apply the margin policy to a feature panel as of one date: one row of parameters per asset.

This is what the registered ``volmargin-policy`` model computes (see
:mod:`serving.policy_model`). The **policy bundle** is a JSON-able dict:

``forecaster``      the selected forecaster's state (``state()``), fitted through ``fit_cutoff``
``fit_cutoff``      last date the forecaster's parameters saw (ISO date)
``policy``          the :class:`~pipelines.config.PolicyConfig` as a dict
``stale_after_days`` data older than this at the as-of date → conservative fallback
``std_losses``      per asset ``{"dates": [...], "z": [...]}``: out-of-sample standardized
                    losses from the walk-forward backtest, the FHS history up to ``fit_cutoff``

Standardized losses after ``fit_cutoff`` are computed here from the forecaster's own forecasts,
which are out of sample by construction, so the FHS window stays out of sample as days pass.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from models.base import Forecaster, asset_frame
from pipelines.config import PolicyConfig
from serving.policy import Parameters, fallback_parameters, margin_parameters, standardized_losses

BUNDLE_FORMAT = 1


def std_losses_from_forecasts(forecasts: pd.DataFrame, panel: pd.DataFrame) -> dict[str, Any]:
    """Bundle-ready standardized losses of each asset's 1-day forecasts (``{asset: {...}}``)."""
    out: dict[str, Any] = {}
    one_day = forecasts[forecasts["horizon_days"] == 1]
    for asset, fc in one_day.groupby("asset"):
        sigma = np.sqrt(fc.set_index("cutoff")["variance"].sort_index())
        z = standardized_losses(sigma, asset_frame(panel, asset)["ret_1d"])
        out[str(asset)] = {"dates": [d.date().isoformat() for d in z.index],
                           "z": [float(v) for v in z.to_numpy()]}
    return out


def _bundled_z(bundle: dict[str, Any], asset: str) -> pd.Series:
    entry = bundle["std_losses"].get(asset, {"dates": [], "z": []})
    return pd.Series(entry["z"], index=pd.DatetimeIndex(entry["dates"]), dtype=float)


def asset_parameters(
    forecaster: Forecaster,
    bundle: dict[str, Any],
    frame: pd.DataFrame,
    asset: str,
    as_of: pd.Timestamp,
    cfg: PolicyConfig,
) -> Parameters:
    """Parameters for one asset; ``frame`` is that asset's feature rows dated ``<= as_of``."""
    observed = frame["close"].dropna()
    if observed.empty:
        return fallback_parameters(cfg, "no price data up to the as-of date", stale=True)
    last = observed.index.max()
    age = (as_of - last).days
    if age > int(bundle["stale_after_days"]):
        return fallback_parameters(
            cfg, f"stale data: last price {last.date()} is {age} days before {as_of.date()}",
            stale=True)
    fit_cutoff = pd.Timestamp(bundle["fit_cutoff"])
    new_cutoffs = pd.date_range(min(fit_cutoff, as_of) + pd.Timedelta(days=1), as_of, freq="D")
    panel = pd.concat({asset: frame}, names=["asset", "date"])
    cutoffs = new_cutoffs.union(pd.DatetimeIndex([as_of]))
    fc = forecaster.forecast(panel, [1], cutoffs)
    if fc.empty or as_of not in set(fc["cutoff"]):
        return fallback_parameters(cfg, f"model has no forecast for {asset} at {as_of.date()}")
    sigma = np.sqrt(fc.set_index("cutoff")["variance"])
    z_new = standardized_losses(sigma, frame["ret_1d"])
    z_old = _bundled_z(bundle, asset)
    z_old = z_old[z_old.index < (z_new.index.min() if len(z_new) else as_of)]
    z = pd.concat([z_old, z_new]).sort_index()
    z = z[z.index < as_of]  # the loss of cutoff s is known at s+1 <= as_of
    return margin_parameters(float(sigma.loc[as_of] ** 2), z.to_numpy(), cfg)


def policy_frame(
    forecaster: Forecaster, bundle: dict[str, Any], features: pd.DataFrame, as_of: dt.date
) -> pd.DataFrame:
    """One row per asset in ``features`` with the policy's parameters as of ``as_of``."""
    cfg = PolicyConfig(**bundle["policy"])
    stamp = pd.Timestamp(as_of)
    visible = features[features.index.get_level_values("date") <= stamp]
    rows = []
    for asset in sorted(features.index.get_level_values("asset").unique()):
        frame = asset_frame(visible, asset) if asset in visible.index.get_level_values(
            "asset") else features.iloc[0:0].droplevel("asset")
        params = asset_parameters(forecaster, bundle, frame, asset, stamp, cfg)
        rows.append({"as_of": as_of, "asset": asset, "horizon_days": 1, **params.as_dict()})
    return pd.DataFrame(rows)

"""Apply the margin policy to a feature panel as of one date: one row of parameters per asset.

This is what the registered ``volmargin-policy`` model computes (see
:mod:`serving.policy_model`), with the same :func:`serving.decide.decide` the policy backtest
replays. The **policy bundle** is a JSON-able dict:

``forecaster``        the selected forecaster's state (``state()``), fitted through ``fit_cutoff``
``fit_cutoff``        last date the forecaster's parameters saw (ISO date)
``config``            the full resolved config (policy, features, data sections are used)
``forecasts``         per asset ``{"dates": [...], "variance": [...]}``: the walk-forward
                      (out-of-sample) forecasts of the update interval up to ``fit_cutoff``

Forecasts after ``fit_cutoff`` come from the forecaster itself and are out of sample by
construction, so the FHS window and the σ history stay out of sample as days pass.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pandas as pd

from configs.schema import Config
from models.base import Forecaster
from models.plausibility import implausibility, trailing_realized_variance
from serving.decide import PolicyState, decide, freeze, state_columns, state_from_row
from serving.inputs import asset_history, policy_inputs
from serving.policy import Parameters

BUNDLE_FORMAT = 2


def bundle_forecasts(forecasts: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """Bundle-ready walk-forward forecasts of the update interval, per asset."""
    out: dict[str, Any] = {}
    sel = forecasts[forecasts["horizon_days"] == horizon].sort_values("cutoff")
    for asset, fc in sel.groupby("asset"):
        out[str(asset)] = {"dates": [d.date().isoformat() for d in fc["cutoff"]],
                           "variance": [float(v) for v in fc["variance"]]}
    return out


def _forecast_series(
    forecaster: Forecaster, bundle: dict[str, Any], frame: pd.DataFrame, asset: str,
    as_of: pd.Timestamp, horizon: int,
) -> pd.DataFrame:
    stored = bundle["forecasts"].get(asset, {"dates": [], "variance": []})
    old = pd.DataFrame({"cutoff": pd.DatetimeIndex(stored["dates"]),
                        "variance": stored["variance"]})
    fit_cutoff = pd.Timestamp(bundle["fit_cutoff"])
    old = old[old["cutoff"] <= min(fit_cutoff, as_of)]
    start = min(fit_cutoff, as_of) + pd.Timedelta(days=1)
    wanted = pd.date_range(start, as_of, freq="D").union(pd.DatetimeIndex([as_of]))
    panel = pd.concat({asset: frame}, names=["asset", "date"])
    new = forecaster.forecast(panel, [horizon], wanted)[["cutoff", "variance"]]
    both = pd.concat([old[~old["cutoff"].isin(new["cutoff"])], new]).sort_values("cutoff")
    both["horizon_days"] = horizon
    return both


def _without_forecast(
    cfg: Config, asset: str, as_of: pd.Timestamp, age: int, previous: PolicyState | None,
    hours: float,
) -> tuple[Parameters, PolicyState | None]:
    """Parameters when the model has no forecast at ``as_of``: the fail-safe (:func:`freeze`).

    Data that stops ``age`` >= 1 days before the as-of is *stale* whatever its age (a feed
    one day late included): the as-of's forecast cannot be made, so the previously published
    set is frozen and flagged stale — not replaced by the conservative static set, which is
    for an asset with nothing published before. With data on the as-of itself the forecaster
    failed: frozen, not stale.
    """
    day = as_of.date()
    if age == 0:
        return freeze(previous, f"fail-safe: model has no forecast for {asset} at {day}",
                      cfg.policy, stale=False, hours=hours)
    return freeze(previous, f"fail-safe: stale data: last price {age} day(s) before {day}",
                  cfg.policy, stale=True, hours=hours)


def _implausible_today(cfg: Config, frame: pd.DataFrame, fc: pd.DataFrame,
                       as_of: pd.Timestamp) -> str:
    """Why the as-of forecast breaks ``backtest.plausibility`` (``""`` when it does not): the
    bound the walk-forward applies (:mod:`models.plausibility`), so a dead feed or a peg that
    the backtest fails is not published either."""
    bounds = cfg.backtest.plausibility
    if not bounds.enabled:
        return ""
    today = fc[fc["cutoff"] == as_of].iloc[-1]
    mean, _ = trailing_realized_variance(frame["rv"], bounds.window_days, bounds.min_obs)
    trailing = mean.get(as_of, float("nan"))
    return str(implausibility([float(today["variance"])], [int(today["horizon_days"])],
                              [trailing], bounds)[0])


def asset_parameters(
    forecaster: Forecaster, bundle: dict[str, Any], frame: pd.DataFrame, asset: str,
    as_of: pd.Timestamp, previous: PolicyState | None,
) -> tuple[Parameters, PolicyState | None]:
    """Parameters for one asset; ``frame`` is that asset's feature rows dated ``<= as_of``."""
    cfg = Config.model_validate(bundle["config"])
    hours = float(cfg.features.liquidation_delay_hours)
    observed = frame["close"].dropna()
    if observed.empty:
        return freeze(previous, "fail-safe: no price data", cfg.policy, stale=True, hours=hours)
    age = (as_of - observed.index.max()).days
    if age > 0:  # no price on the as-of: nothing new is known, whatever the model could say
        return _without_forecast(cfg, asset, as_of, age, previous, hours)
    fc = _forecast_series(forecaster, bundle, frame, asset, as_of,
                          cfg.features.update_interval_days)
    if fc.empty or as_of not in set(fc["cutoff"]):
        return _without_forecast(cfg, asset, as_of, 0, previous, hours)
    why = _implausible_today(cfg, frame, fc, as_of)
    if why:  # the backtest's bound guards what is published too: freeze, never publish it
        return freeze(previous, f"fail-safe: implausible forecast for {asset} at "
                      f"{as_of.date()}: {why}", cfg.policy, stale=False, hours=hours)
    h = asset_history(frame, fc, cfg)
    x = replace(policy_inputs(h, len(h.dates) - 1, cfg.features.update_interval_days, hours,
                              cfg.policy.fhs_window), data_age_days=age)
    return decide(x, previous, cfg.data.stale_after_days, cfg.policy)


def policy_frame(
    forecaster: Forecaster, bundle: dict[str, Any], features: pd.DataFrame, as_of: dt.date,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per asset in ``features`` with the policy's parameters as of ``as_of``."""
    stamp = pd.Timestamp(as_of)
    visible = features[features.index.get_level_values("date") <= stamp]
    # one groupby, not a membership test per asset: linear in the number of assets
    frames = {asset: g.droplevel("asset") for asset, g in visible.groupby(level="asset")}
    empty = features.iloc[0:0].droplevel("asset")
    prev_rows = previous.set_index("asset") if previous is not None else None
    horizon = int(bundle["config"]["features"]["update_interval_days"])
    rows = []
    for asset in sorted(features.index.get_level_values("asset").unique()):
        frame = frames.get(asset, empty).sort_index()
        prev = prev_rows.loc[asset] if prev_rows is not None and asset in prev_rows.index else None
        params, state = asset_parameters(forecaster, bundle, frame, asset, stamp,
                                         state_from_row(prev))
        rows.append({"as_of": as_of, "asset": asset, "horizon_days": horizon,
                     **params.as_dict(),
                     **state_columns(state)})
    return pd.DataFrame(rows)


def frozen_frame(
    bundle: dict[str, Any], previous: pd.DataFrame | None, reasons: dict[str, str],
    as_of: dt.date,
) -> pd.DataFrame:
    """Rows for assets without usable data this update (e.g. a file that failed to load under
    ``keep_going``): the fail-safe (:func:`freeze`) on each one's previously published row,
    flagged stale with ``reasons[asset]``. Assets never published before get no row."""
    if previous is None or not reasons:
        return pd.DataFrame()
    cfg = Config.model_validate(bundle["config"])
    hours = float(cfg.features.liquidation_delay_hours)
    prev_rows = previous.set_index("asset")
    rows = []
    for asset in sorted(set(reasons) & set(prev_rows.index)):
        params, state = freeze(state_from_row(prev_rows.loc[asset]),
                               f"fail-safe: {reasons[asset]}", cfg.policy, stale=True,
                               hours=hours)
        rows.append({"as_of": as_of, "asset": asset,
                     "horizon_days": int(cfg.features.update_interval_days),
                     **params.as_dict(), **state_columns(state)})
    return pd.DataFrame(rows)

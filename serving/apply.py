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
construction, so the FHS window and the σ history stay out of sample as days pass. A day
served before ``fit_cutoff`` (a backfill with a later version) takes its stored walk-forward
forecast, never the fitted model's, which saw the days after it; without one it is frozen.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config
from models.base import Forecaster
from models.plausibility import implausibility, trailing_realized_variance
from serving.decide import (
    PolicyInputs,
    PolicyState,
    decide,
    decide_all,
    freeze,
    state_columns,
    state_from_row,
)
from serving.inputs import (
    PanelArrays,
    asset_history,
    covered_loss_arrays,
    latest_inputs,
    merged_series,
    per_asset_lists,
    policy_inputs,
    series_by_asset,
    stored_by_asset,
)
from serving.policy import Parameters
from serving.seasoning import Reference, key_of, seasoned_inputs
from serving.seasoning import reference as stress_reference
from serving.tail_source import TailSource

BUNDLE_FORMAT = 2


def bundle_forecasts(forecasts: pd.DataFrame, horizon: int) -> dict[str, Any]:
    """Bundle-ready walk-forward forecasts of the update interval, per asset."""
    return per_asset_lists(forecasts[forecasts["horizon_days"] == horizon],
                           {"variance": "variance"})


def _forecast_series(
    forecaster: Forecaster, bundle: dict[str, Any], frame: pd.DataFrame, asset: str,
    as_of: pd.Timestamp, horizon: int,
) -> pd.DataFrame:
    stored = bundle["forecasts"].get(asset, {"dates": [], "variance": []})
    old = pd.DataFrame({"cutoff": pd.DatetimeIndex(stored["dates"]),
                        "variance": stored["variance"]})
    limit, wanted = _wanted_cutoffs(bundle, as_of)
    old = old[old["cutoff"] <= limit]
    if len(wanted):
        panel = pd.concat({asset: frame}, names=["asset", "date"])
        new = forecaster.forecast(panel, [horizon], wanted)[["cutoff", "variance"]]
    else:
        new = old.iloc[:0]
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


def reference_today(visible: pd.DataFrame, cfg: Config, as_of: pd.Timestamp
                    ) -> Reference | None:
    """The stress reference young assets take on ``as_of`` (:mod:`serving.seasoning`), over
    every asset of ``visible`` (rows dated ``<= as_of``); None without a stress floor or when
    no asset is young that day."""
    if cfg.policy.stress_floor_weight <= 0 or not len(visible):
        return None
    day = int((as_of - pd.Timestamp(0)).days)
    ref = stress_reference(visible, [cfg.policy], on=day)[cfg.policy.loss]
    return ref if len(ref.tables[key_of(cfg.policy)][0]) else None


def asset_parameters(
    forecaster: Forecaster, bundle: dict[str, Any], frame: pd.DataFrame, asset: str,
    as_of: pd.Timestamp, previous: PolicyState | None,
    reference: Reference | None = None, tail: TailSource | None = None,
) -> tuple[Parameters, PolicyState | None]:
    """Parameters for one asset; ``frame`` is that asset's feature rows dated ``<= as_of``,
    ``reference`` the universe's stress ES for a young asset (:func:`reference_today`; None:
    no seasoned asset lends one), ``tail`` a tail-driven bundle's direct tail
    (:mod:`serving.tail_source`; None: the FHS tail of the σ forecast)."""
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
    x = seasoned_inputs(x, reference, cfg.policy)
    if tail is None:
        return decide(x, previous, cfg.data.stale_after_days, cfg.policy)
    panel = pd.concat({asset: frame}, names=["asset", "date"])
    ready, frozen, fell_back = tail.prepare({asset: x}, panel, as_of, {asset: previous},
                                            cfg.policy, hours)
    if asset in frozen:
        return frozen[asset]
    return tail.noted(decide(ready[asset], previous, cfg.data.stale_after_days, cfg.policy),
                      asset in fell_back)


def policy_frame_per_asset(
    forecaster: Forecaster, bundle: dict[str, Any], features: pd.DataFrame, as_of: dt.date,
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`policy_frame` one asset at a time (:func:`asset_parameters`): the reference the
    batch is tested against, and the path of an asset the batch cannot take."""
    stamp = pd.Timestamp(as_of)
    visible = features[features.index.get_level_values("date") <= stamp]
    # one groupby, not a membership test per asset: linear in the number of assets
    frames = {asset: g.droplevel("asset") for asset, g in visible.groupby(level="asset")}
    empty = features.iloc[0:0].droplevel("asset")
    prev_rows = previous.set_index("asset") if previous is not None else None
    horizon = int(bundle["config"]["features"]["update_interval_days"])
    reference = reference_today(visible, Config.model_validate(bundle["config"]), stamp)
    tail = TailSource.of(bundle)
    rows = []
    codes = np.unique(np.asarray(features.index.codes[0]))
    for asset in sorted(str(a) for a in features.index.levels[0][codes]):
        frame = frames.get(asset, empty).sort_index()
        prev = prev_rows.loc[asset] if prev_rows is not None and asset in prev_rows.index else None
        params, state = asset_parameters(forecaster, bundle, frame, asset, stamp,
                                         state_from_row(prev), reference, tail)
        rows.append({"as_of": as_of, "asset": asset, "horizon_days": horizon,
                     **params.as_dict(),
                     **state_columns(state)})
    return pd.DataFrame(rows)


def _wanted_cutoffs(bundle: dict[str, Any], as_of: pd.Timestamp) -> tuple[pd.Timestamp,
                                                                          pd.DatetimeIndex]:
    """(last stored cutoff used, cutoffs the forecaster must forecast), the same for every
    asset. The stored walk-forward forecasts stand up to the fit cutoff; the fitted model
    forecasts the days after it, and the as-of itself when it is the fit cutoff (fitted
    through the as-of: the next day is still unseen). An as-of *before* the fit cutoff (a
    backfill served with a later version) takes the stored, out-of-sample forecast: the
    model's own would come from parameters that saw the days after it."""
    fit_cutoff = pd.Timestamp(bundle["fit_cutoff"])
    limit = min(fit_cutoff, as_of)
    wanted = pd.date_range(limit + pd.Timedelta(days=1), as_of, freq="D")
    if as_of < fit_cutoff:
        return limit, wanted
    return limit, wanted.union(pd.DatetimeIndex([as_of]))


def _batchable(forecaster: Forecaster) -> bool:
    """Whether one asset's forecast from a panel of many equals its forecast alone (the
    protocol's ``per_asset``, or ``forecast_per_asset`` for pooled parameters applied to each
    asset's own rows): then one call serves every asset."""
    return bool(getattr(forecaster, "per_asset", False)
                or getattr(forecaster, "forecast_per_asset", False))


class _Batch:
    """What every asset's update needs, computed once over the visible panel (sorted)."""

    def __init__(self, forecaster: Forecaster, bundle: dict[str, Any], cfg: Config,
                 visible: pd.DataFrame, as_of: pd.Timestamp,
                 tail: TailSource | None = None) -> None:
        self.forecaster, self.bundle, self.cfg, self.visible = forecaster, bundle, cfg, visible
        self.tail = tail
        self.as_of, self.day0 = as_of, (as_of - pd.Timestamp(0)).days
        self.reference = reference_today(visible, cfg, as_of)
        self.hours = float(cfg.features.liquidation_delay_hours)
        self.arrays = a = PanelArrays.from_panel(visible)
        self.slot = {name: k for k, name in enumerate(a.assets)}
        close = a.column(visible, "close")
        rows = np.where(np.isnan(close), -1, np.arange(len(close)))
        self.last_price = np.maximum.reduceat(rows, a.start) if len(rows) else rows
        fresh = [k for k in range(len(a.assets))
                 if self.last_price[k] >= a.start[k] and a.day[self.last_price[k]] == self.day0]
        # a duplicated date would make the per-asset reindexing fail or differ: not batched
        repeated = set(a.slot[1:][(np.diff(a.day) <= 0) & (np.diff(a.slot) == 0)].tolist())
        self.limit, self.wanted = _wanted_cutoffs(bundle, as_of)
        names = [a.assets[k] for k in fresh if k not in repeated]
        stored = stored_by_asset(bundle, names, self.limit)
        self.stored = stored or {}
        self.new, failed = self._forecasts(names) if stored is not None else ({}, set(names))
        self.batched = set(names) - failed
        self.plausible: set[str] = set()
        if not self.batched:
            return
        self.loss = covered_loss_arrays(visible, cfg.policy)
        self.ret = a.column(visible, "ret_1d")
        self.adv = a.rolling_mean(np.exp(a.column(visible, "log_dollar_volume")),
                                  cfg.policy.liquidity.adv_window, closed="left")
        bounds = cfg.backtest.plausibility
        if bounds.enabled:  # the trailing mean realized variance of each asset's last row
            rv, last = a.column(visible, "rv"), a.end - 1
            count = a.window_count(rv, last, bounds.window_days)
            mean = a.rolling_mean(rv, bounds.window_days)[last]
            self.trailing_rv = np.full(len(rv), np.nan)
            self.trailing_rv[last] = np.where(count >= bounds.min_obs, mean, np.nan)
        self.plausible = self._screen()
        last_rows = a.end - 1
        proxy = (visible["worst_loss_is_proxy"].iloc[last_rows]
                 if "worst_loss_is_proxy" in visible else pd.Series(False, index=last_rows))
        self.proxy = proxy.fillna(True).to_numpy(bool)  # as the per-asset reindex does

    def _forecasts(self, names: list[str]
                   ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], set[str]]:
        """(new forecasts of ``names``, the assets whose forecast raised): from one call over
        the panel when the forecaster allows it (:func:`_batchable`), else, or when that
        call raises, from one call per asset on its own rows, as :func:`_forecast_series`
        makes it. An asset that raised takes the per-asset path, which freezes it."""
        u = self.cfg.features.update_interval_days
        if not len(self.wanted):  # an as-of before the fit cutoff: stored forecasts only
            return {}, set()
        if _batchable(self.forecaster):
            try:
                return series_by_asset(self.forecaster.forecast(self.visible, [u],
                                                                self.wanted)), set()
            except Exception:  # one asset may break the call: each is then forecast alone
                pass
        a, out, failed = self.arrays, {}, set()
        for name in names:
            k = self.slot[name]
            frame = self.visible.iloc[a.start[k]:a.end[k]].droplevel("asset")
            try:
                fc = self.forecaster.forecast(pd.concat({name: frame}, names=["asset", "date"]),
                                              [u], self.wanted)
            except Exception:  # the per-asset path raises it again, and freezes the asset
                failed.add(name)
                continue
            out[name] = (fc["cutoff"].to_numpy().astype("datetime64[D]").astype(np.int64),
                         fc["variance"].to_numpy(dtype=float))
        return out, failed

    def parameters(self, asset: str, previous: PolicyState | None
                   ) -> tuple[Parameters, PolicyState | None]:
        """:func:`asset_parameters` of ``asset``, from the batch's arrays where it can."""
        got = self.prepared(asset, previous)
        if isinstance(got, PolicyInputs):
            return decide(got, previous, self.cfg.data.stale_after_days, self.cfg.policy)
        return got

    def prepared(self, asset: str, previous: PolicyState | None
                 ) -> tuple[Parameters, PolicyState | None] | PolicyInputs:
        """:meth:`parameters` up to the policy update: the inputs of the update, or the
        parameters when the asset is frozen before it (no data, no forecast, implausible)."""
        cfg, hours, k = self.cfg, self.hours, self.slot.get(asset)
        a = self.arrays
        if k is None or self.last_price[k] < a.start[k]:
            return freeze(previous, "fail-safe: no price data", cfg.policy, stale=True,
                          hours=hours)
        age = self.day0 - int(a.day[self.last_price[k]])
        if age > 0:
            return _without_forecast(cfg, asset, self.as_of, age, previous, hours)
        if asset not in self.batched:
            frame = self.visible.iloc[a.start[k]:a.end[k]].droplevel("asset")
            return asset_parameters(self.forecaster, self.bundle, frame, asset, self.as_of,
                                    previous, self.reference, self.tail)
        old_day, old_var = self.stored.get(asset, (np.empty(0, np.int64), np.empty(0)))
        new_day, new_var = self.new.get(asset, (np.empty(0, np.int64), np.empty(0)))
        day, var = merged_series(old_day, old_var, new_day, new_var)
        if len(day) > 1 and np.any(day[1:] <= day[:-1]):  # repeated cutoffs: per-asset path
            self.batched.discard(asset)
            return self.prepared(asset, previous)
        if not len(day) or day[-1] != self.day0:
            return _without_forecast(cfg, asset, self.as_of, 0, previous, hours)
        s, e = int(a.start[k]), int(a.end[k])
        why = self._implausible(asset, var[-1], e - 1)
        if why:
            return freeze(previous, f"fail-safe: implausible forecast for {asset} at "
                          f"{self.as_of.date()}: {why}", cfg.policy, stale=False, hours=hours)
        # ADV ends the day before: the mean over the window that closes before the as-of row
        # (serving.policy.trailing_adv), whether or not the day before has a row
        adv = self.adv[e - 1] if e - 1 >= s and a.day[e - 1] == self.day0 else np.nan
        x = latest_inputs(day, var, a.day[s:e], self.loss[s:e], self.ret[e - 1], adv,
                          self.proxy[k], cfg.features.update_interval_days, hours,
                          cfg.policy.fhs_window)
        return seasoned_inputs(x, self.reference, cfg.policy)

    def _implausible(self, asset: str, variance: float, row: int) -> str:
        """:func:`_implausible_today`: the reason, ``""`` when plausible."""
        bounds = self.cfg.backtest.plausibility
        if not bounds.enabled:
            return ""
        if asset in self.plausible:  # the common case, checked for every asset at once
            return ""
        h = self.cfg.features.update_interval_days
        return str(implausibility([float(variance)], [h], [self.trailing_rv[row]], bounds)[0])

    def _screen(self) -> set[str]:
        """The batched assets whose as-of forecast passes the plausibility bound, found with
        one vectorised check (those that fail get their reason one by one)."""
        bounds, a = self.cfg.backtest.plausibility, self.arrays
        names = [n for n in self.batched if n in self.new and len(self.new[n][0])
                 and self.new[n][0][-1] == self.day0]
        if not bounds.enabled or not names:
            return set()
        var = [self.new[n][1][-1] for n in names]
        trailing = self.trailing_rv[[a.end[self.slot[n]] - 1 for n in names]]
        why = implausibility(var, self.cfg.features.update_interval_days, trailing, bounds)
        return {n for n, w in zip(names, why, strict=True) if not w}


def _previous_states(previous: pd.DataFrame | None) -> dict[str, PolicyState | None]:
    """Each asset's state from its previously published row (one pass over the records)."""
    if previous is None:
        return {}
    records = previous.to_dict(orient="records")
    names = [str(r["asset"]) for r in records]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"previous parameters hold more than one row for {twice}")
    return {n: state_from_row(r) for n, r in zip(names, records, strict=True)}


def policy_frame(
    forecaster: Forecaster, bundle: dict[str, Any], features: pd.DataFrame, as_of: dt.date,
    previous: pd.DataFrame | None = None, tail: TailSource | None = None,
) -> pd.DataFrame:
    """One row per asset in ``features`` with the policy's parameters as of ``as_of``.

    All assets in one batch: one forecaster call over the panel (when the forecaster's
    forecast of an asset reads only that asset's rows), the stored forecasts parsed once, the
    rolling means of every asset in one pass, numpy arrays instead of per-asset frames. The
    frame equals :func:`policy_frame_per_asset`'s. An asset whose update raises is frozen
    (:func:`freeze`, the reason names the error); the others are published. A tail-driven
    bundle's direct tail (``tail``, built from the bundle when not given:
    :mod:`serving.tail_source`) is forecast for every trusted asset at once.
    """
    cfg = Config.model_validate(bundle["config"])
    tail = tail if tail is not None else TailSource.of(bundle)
    stamp = pd.Timestamp(as_of)
    dates = features.index.get_level_values("date")
    visible = features if not len(dates) or dates.max() <= stamp else features[dates <= stamp]
    if not visible.index.is_monotonic_increasing:
        visible = visible.sort_index()
    states = _previous_states(previous)
    batch = _Batch(forecaster, bundle, cfg, visible, stamp, tail)
    horizon = int(bundle["config"]["features"]["update_interval_days"])
    codes = np.unique(np.asarray(features.index.codes[0]))
    assets = sorted(str(a) for a in features.index.levels[0][codes])
    done: dict[str, tuple[Parameters, PolicyState | None]] = {}
    ready: dict[str, PolicyInputs] = {}
    for asset in assets:
        try:
            got = batch.prepared(asset, states.get(asset))
        except Exception as err:  # one asset's failure never stops the batch
            done[asset] = _failed(cfg, asset, as_of, err, states.get(asset))
            continue
        if isinstance(got, PolicyInputs):
            ready[asset] = got
        else:
            done[asset] = got
    fell_back: set[str] = set()
    if tail is not None and ready:  # the direct tail of every trusted asset, one call;
        # an asset whose forecast raised was never judged so: the fail-safe
        ready, frozen, fell_back = tail.prepare(ready, visible, stamp, states, cfg.policy,
                                                float(cfg.features.liquidation_delay_hours))
        done.update(frozen)
    # every trusted asset's update at once; should that raise, each on its own, so that only
    # the asset at fault is frozen
    names = list(ready)
    try:
        done.update(zip(names, decide_all([ready[n] for n in names],
                                          [states.get(n) for n in names],
                                          cfg.data.stale_after_days, cfg.policy), strict=True))
    except Exception:
        for n in names:
            try:
                done[n] = decide(ready[n], states.get(n), cfg.data.stale_after_days, cfg.policy)
            except Exception as err:
                done[n] = _failed(cfg, n, as_of, err, states.get(n))
    for n in fell_back:  # published on the FHS tail
        done[n] = tail.noted(done[n], True)
    rows = [{"as_of": as_of, "asset": asset, "horizon_days": horizon,
             **done[asset][0].as_dict(), **state_columns(done[asset][1])} for asset in assets]
    return pd.DataFrame(rows)


def _failed(cfg: Config, asset: str, as_of: dt.date, err: Exception,
            state: PolicyState | None) -> tuple[Parameters, PolicyState]:
    """The fail-safe of an asset whose update raised, the reason naming the error."""
    return freeze(state, f"fail-safe: policy failed for {asset} at {as_of}: "
                  f"{type(err).__name__}: {err}", cfg.policy, stale=False,
                  hours=float(cfg.features.liquidation_delay_hours))


def frozen_frame(
    bundle: dict[str, Any], previous: pd.DataFrame | None, reasons: dict[str, str],
    as_of: dt.date, new_too: set[str] | frozenset[str] = frozenset(),
    fresh: set[str] | frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """Rows for assets without usable data this update (e.g. a file that failed to load under
    ``keep_going``): the fail-safe (:func:`freeze`) on each one's previously published row,
    flagged stale with ``reasons[asset]`` (not stale for ``fresh`` ones, whose data is
    current). Assets never published before get no row, except those of ``new_too`` (data
    that is there but cannot be trusted): the conservative set."""
    if not reasons:
        return pd.DataFrame()
    return frozen_rows(Config.model_validate(bundle["config"]), previous, reasons, as_of,
                       new_too, fresh)


def frozen_rows(
    cfg: Config, previous: pd.DataFrame | None, reasons: dict[str, str], as_of: dt.date,
    new_too: set[str] | frozenset[str] = frozenset(),
    fresh: set[str] | frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """:func:`frozen_frame` under the config ``cfg`` (the model's bundled one; the serve-time
    one when no model can be loaded, :func:`serving.serve.freeze_without_model`)."""
    if not reasons:
        return pd.DataFrame()
    hours = float(cfg.features.liquidation_delay_hours)
    prev_rows = previous.set_index("asset") if previous is not None else pd.DataFrame()
    rows = []
    for asset in sorted(set(reasons) & (set(prev_rows.index) | set(new_too))):
        state = state_from_row(prev_rows.loc[asset]) if asset in prev_rows.index else None
        params, state = freeze(state, f"fail-safe: {reasons[asset]}", cfg.policy,
                               stale=asset not in fresh, hours=hours)
        rows.append({"as_of": as_of, "asset": asset,
                     "horizon_days": int(cfg.features.update_interval_days),
                     **params.as_dict(), **state_columns(state)})
    return pd.DataFrame(rows)

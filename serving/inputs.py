"""Policy inputs from a feature panel and a forecast series, shared by the batch job and the
policy backtest so that both compute exactly the same thing."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from configs.schema import Config, PolicyConfig
from serving.decide import PolicyInputs
from serving.policy import trailing_adv


@dataclass(frozen=True)
class AssetHistory:
    """One asset's daily series aligned on the forecast cutoffs."""

    dates: pd.DatetimeIndex
    variance: np.ndarray          # forecast variance of the next interval at each cutoff
    ret: np.ndarray               # log return of the cutoff day
    loss_next: np.ndarray         # covered log loss of the next interval (target, NaN at end)
    short_loss_next: np.ndarray   # worst adverse move for a short (perp view)
    loss_is_proxy: np.ndarray
    adv_usd: np.ndarray
    # every realized covered loss of the frame (not only forecast dates) and the day its
    # interval ended (days since epoch): the stress floor's long look-back and the loss memory
    realized_loss: np.ndarray = field(default_factory=lambda: np.empty(0))
    realized_day: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def covered_loss(frame: pd.DataFrame, cfg: PolicyConfig) -> tuple[pd.Series, pd.Series]:
    """(long, short) covered log loss of the interval that *ends* at each date (a feature)."""
    if cfg.loss == "close_to_close":
        r = frame["ret_1d"]
        return (-r).clip(lower=0.0), r.clip(lower=0.0)
    return frame["worst_loss_long"], frame["worst_loss_short"]


def asset_history(frame: pd.DataFrame, forecast: pd.DataFrame, cfg: Config) -> AssetHistory:
    """Align one asset's feature rows with its 1-interval forecasts (by cutoff)."""
    u = cfg.features.update_interval_days
    fc = forecast[forecast["horizon_days"] == u].set_index("cutoff")["variance"].sort_index()
    long_loss, short_loss = covered_loss(frame, cfg.policy)
    # loss of the interval after t is known at t+u: shift the feature back by u days
    long_next = long_loss.shift(-u, freq="D").reindex(fc.index)
    short_next = short_loss.shift(-u, freq="D").reindex(fc.index)
    proxy = frame.get("worst_loss_is_proxy", pd.Series(False, index=frame.index))
    dollar = np.exp(frame["log_dollar_volume"])
    adv = trailing_adv(dollar, cfg.policy.liquidity.adv_window)  # ends the day before
    realized = long_loss.dropna().sort_index()
    return AssetHistory(
        dates=pd.DatetimeIndex(fc.index), variance=fc.to_numpy(float),
        ret=frame["ret_1d"].reindex(fc.index).to_numpy(float),
        loss_next=long_next.to_numpy(float), short_loss_next=short_next.to_numpy(float),
        loss_is_proxy=proxy.reindex(fc.index).fillna(True).to_numpy(bool),
        adv_usd=adv.reindex(fc.index).to_numpy(float),
        realized_loss=realized.to_numpy(float),
        realized_day=realized.index.to_numpy().astype("datetime64[D]").astype(np.int64),
    )


def policy_inputs(
    h: AssetHistory, i: int, u: int, hours: float, window: int
) -> PolicyInputs:
    """Inputs of the update at position ``i``: only losses realized by then enter the window."""
    sigma = np.sqrt(h.variance)
    days = h.dates.to_numpy().astype("datetime64[D]").astype(np.int64)  # days since epoch
    # the loss after cutoff s is realized at s+u: usable at t for s <= t-u (dates, not rows,
    # so a missing day can never let a future loss in)
    known = int(np.searchsorted(days, days[i] - u, side="right"))
    lo = max(known - window, 0)
    z = h.loss_next[lo:known] / sigma[lo:known]
    seen = int(np.searchsorted(h.realized_day, days[i], side="right"))  # ended by the as-of
    return PolicyInputs(
        as_of=dt.date(1970, 1, 1) + dt.timedelta(days=int(days[i])), variance=float(h.variance[i]),
        variance_prev=float(h.variance[i - 1]) if i else math.nan,
        ret_today=float(h.ret[i]), z_window=z, sigma_history=sigma[: i + 1],
        loss_history=h.realized_loss[:seen], loss_age_days=days[i] - h.realized_day[:seen],
        adv_usd=float(h.adv_usd[i]), loss_is_proxy=bool(h.loss_is_proxy[i]), hours=hours,
    )



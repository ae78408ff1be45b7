r"""Joint stress scenarios: every asset's price path relative to today, on one time grid.

A scenario is an array of price relatives of shape (paths, steps, assets), step 0 = 1.

**Historical** episodes (``stress.episodes``) are replayed from hourly candles on an hourly
grid: step 0 is the open of the first hour, step *i* the close of hour *i*. An hour missing
inside the episode keeps the last close (counted in the note). An asset without hourly data
over the episode follows its daily closes, log-linearly interpolated across each day (source
``daily``, flagged: its intraday lows are lost); an asset not listed then has no move
(``missing``: accounts holding it are excluded, nothing is invented). Each episode is replayed
*as it happened* and *filtered* (Barone-Adesi et al. 1999): log moves rescaled from the
volatility of the time to today's forecast,

.. math::
    x^{\mathrm{filt}}_{t} = x_t\, \hat\sigma_{\mathrm{today}} / \hat\sigma_{\mathrm{then}},

with :math:`\hat\sigma_{\mathrm{then}}` the EWMA σ known the day before the episode began.

**Hypothetical** shocks, on a grid of one shock step then the liquidation delay:
``shock_asset`` moves by ``shock_move`` in one hour and every other asset by its beta to it,
:math:`x_k = \beta_k \ln(1 + m)` (trailing daily returns up to the as-of), or with correlation
one, :math:`x_k = \ln(1 + m)\, \sigma_k / \sigma_{\mathrm{shock}}`; a volatility shock, every
asset falling :math:`z\, m\, \sigma_k` with σ (hence slippage) × *m*; and one asset's collapse
(``collapse_move``) with the others unchanged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from configs.schema import StressConfig, StressEpisode


@dataclass(frozen=True)
class Scenario:
    """One joint scenario: ``relative`` has shape (P, S, K), columns in ``assets`` order."""

    name: str
    kind: str                     # historical | filtered | hypothetical | monte_carlo
    relative: np.ndarray
    delay_steps: int
    assets: list[str]
    source: dict[str, str] = field(default_factory=dict)  # per asset: hourly, daily, missing...
    sigma_multiplier: float = 1.0
    note: str = ""

    @property
    def missing_assets(self) -> list[str]:
        return [a for a in self.assets if self.source.get(a) == "missing"]


def ewma_sigma(daily_close: pd.Series, decay: float, min_obs: int = 30) -> pd.Series:
    r"""Point-in-time EWMA σ of the daily log return: :math:`\hat\sigma^2_t = \lambda
    \hat\sigma^2_{t-1} + (1-\lambda) r^2_{t-1}` — the value at *t* uses returns up to *t − 1*."""
    r = np.log(daily_close).diff()
    var = (r**2).ewm(alpha=1.0 - decay, adjust=False, min_periods=min_obs).mean().shift(1)
    return np.sqrt(var)


def _hourly_log_path(hourly: pd.DataFrame, grid: pd.DatetimeIndex) -> tuple[np.ndarray, int]:
    """Log price path (S = hours + 1) from candles opening on ``grid``; NaN if not covered."""
    candles = hourly.reindex(grid)
    if pd.isna(candles["open"].iloc[0]):
        return np.full(len(grid) + 1, np.nan), 0
    filled = int(candles["close"].isna().sum())
    close = candles["close"].ffill().to_numpy(float)
    prices = np.concatenate([[candles["open"].iloc[0]], close])
    return np.log(prices / prices[0]), filled


def _daily_log_path(daily: pd.DataFrame, days: pd.DatetimeIndex) -> np.ndarray:
    """Log path on the hourly grid from daily open/closes, log-linear within each day."""
    rows = daily.reindex(days)
    if rows["close"].isna().any() or pd.isna(rows["open"].iloc[0]):
        return np.full(24 * len(days) + 1, np.nan)
    knots = np.log(np.concatenate([[rows["open"].iloc[0]], rows["close"].to_numpy(float)]))
    hours = np.arange(24 * len(days) + 1) / 24.0
    path = np.interp(hours, np.arange(len(knots)), knots)
    return path - path[0]


def historical(episode: StressEpisode, daily: dict[str, pd.DataFrame],
               hourly: dict[str, pd.DataFrame], assets: list[str]) -> tuple[np.ndarray,
                                                                            dict[str, str], int]:
    """Joint log path (S, K) of an episode as it happened, the source per asset, filled hours."""
    days = pd.date_range(pd.Timestamp(episode.start), pd.Timestamp(episode.end), freq="D")
    grid = pd.date_range(days[0], periods=24 * len(days), freq="h")
    paths, source, filled = [], {}, 0
    for a in assets:
        path = np.full(len(grid) + 1, np.nan)
        if a in hourly:
            path, n = _hourly_log_path(hourly[a], grid)
            source[a] = "hourly"
            filled += n
        if np.isnan(path).any() and a in daily:
            path = _daily_log_path(daily[a], days)
            source[a] = "daily"
        if np.isnan(path).any():
            source[a] = "missing"
        paths.append(path)
    return np.stack(paths, axis=1), source, filled


def historical_scenarios(cfg: StressConfig, daily: dict[str, pd.DataFrame],
                         hourly: dict[str, pd.DataFrame], assets: list[str],
                         sigma_today: np.ndarray, as_of: dt.date,
                         delay_steps: int) -> list[Scenario]:
    """Every episode ending on or before ``as_of``, as it happened and filtered."""
    out = []
    for ep in cfg.episodes:
        if ep.end > as_of:
            continue  # strict as-of cut: a later episode is not known yet
        x, source, filled = historical(ep, daily, hourly, assets)
        before = pd.Timestamp(ep.start)
        sigma_then = np.array([
            ewma_sigma(daily[a]["close"], cfg.ewma_decay).get(before, np.nan) if a in daily
            else np.nan for a in assets])
        note = f"{filled} missing hours kept the last close" if filled else ""
        base = dict(delay_steps=delay_steps, assets=assets, source=source, note=note)
        out.append(Scenario(ep.name, "historical", np.exp(x)[None], **base))
        scale = sigma_today / sigma_then  # NaN σ_then → NaN move → missing, never invented
        filt_source = {a: ("missing" if not np.isfinite(s) else source[a])
                       for a, s in zip(assets, scale, strict=True)}
        out.append(Scenario(f"{ep.name}_filtered", "filtered", np.exp(x * scale)[None],
                            delay_steps, assets, filt_source, note=note))
    return out


def betas(daily: dict[str, pd.DataFrame], assets: list[str], to: str, window: int) -> np.ndarray:
    """OLS beta of each asset's daily log return on ``to``'s, over the last ``window`` days."""
    r = pd.DataFrame({a: np.log(daily[a]["close"]).diff() for a in assets if a in daily})
    r = r.iloc[-window:]
    if to not in r:
        return np.full(len(assets), np.nan)
    out = []
    for a in assets:
        pair = r[[a, to]].dropna() if a in r else pd.DataFrame()
        if len(pair) < 30:
            out.append(np.nan)
            continue
        out.append(np.cov(pair[a], pair[to])[0, 1] / np.var(pair[to], ddof=1))
    return np.asarray(out)


def _shock(name: str, log_move: np.ndarray, assets: list[str], delay: int, source: str,
           sigma_multiplier: float = 1.0, note: str = "") -> Scenario:
    """One shock step held through the liquidation delay: S = 2 + delay."""
    steps = np.vstack([np.zeros(len(assets))] + [log_move] * (1 + delay))
    flags = {a: ("missing" if not np.isfinite(m) else source)
             for a, m in zip(assets, log_move, strict=True)}
    return Scenario(name, "hypothetical", np.exp(steps)[None], delay, assets, flags,
                    sigma_multiplier, note)


def hypothetical_scenarios(cfg: StressConfig, daily: dict[str, pd.DataFrame],
                           assets: list[str], sigma_today: np.ndarray,
                           delay_steps: int) -> list[Scenario]:
    """Beta and correlation-one shocks, the volatility shock, single-asset collapses."""
    shock = np.log1p(cfg.shock_move)
    out = []
    if cfg.shock_asset in assets:
        i = assets.index(cfg.shock_asset)
        beta = betas(daily, assets, cfg.shock_asset, cfg.beta_window_days)
        beta[i] = 1.0
        # e.g. BTC_drop30 (no '%': scenario names become MLflow metric keys)
        tag = f"{cfg.shock_asset}_drop{round(-100 * cfg.shock_move)}"
        out.append(_shock(f"{tag}_beta", beta * shock, assets, delay_steps,
                          "beta", note=f"betas over {cfg.beta_window_days} days"))
        out.append(_shock(f"{tag}_corr1", shock * sigma_today / sigma_today[i],
                          assets, delay_steps, "corr1"))
    m = cfg.vol_multiplier
    out.append(_shock(f"vol_x{m:g}", -cfg.vol_z * m * sigma_today, assets, delay_steps,
                      "vol_shock", sigma_multiplier=m))
    for a in cfg.collapse_assets if cfg.collapse_assets is not None else assets:
        if a not in assets:
            continue
        move = np.zeros(len(assets))
        move[assets.index(a)] = np.log1p(cfg.collapse_move)
        out.append(_shock(f"{a}_collapse", move, assets, delay_steps, "collapse"))
    return out

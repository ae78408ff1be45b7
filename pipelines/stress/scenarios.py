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

with :math:`\hat\sigma_{\mathrm{then}}` the EWMA σ known the day before the episode began
and :math:`\hat\sigma_{\mathrm{today}}` the EWMA σ of the day after the as-of
(:func:`ewma_sigma_after`): one filter on both sides, and none of it the published model's
(the stress judges that model's parameters; a σ it under-forecast would scale its own
scenarios down).

**Hypothetical** shocks, on a grid of one shock step then the liquidation delay:
``shock_asset`` moves by ``shock_move`` in one hour and every other asset by its beta to it,
:math:`x_k = \beta_k \ln(1 + m)` (trailing daily returns up to the as-of), or with correlation
one, :math:`x_k = \ln(1 + m)\, \sigma_k / \sigma_{\mathrm{shock}}`; a volatility shock, every
asset falling :math:`z\, m\, \sigma_k` with σ (hence slippage) × *m*; and one asset's collapse
(``collapse_move``) with the others unchanged.

**Skipped, never approximated.** Both shocks of ``shock_asset`` need it: when it is unusable
(stale data or no σ forecast) neither is built, and the correlation-one shock also needs a
positive finite :math:`\sigma_{\mathrm{shock}}` (0 would move every other asset by −∞, a
price of 0). A skipped scenario is returned as :class:`Skipped` with its reason, which the
summary publishes. A move that cannot be computed (non-finite) is *missing*: NaN in the
scenario, so the accounts holding the asset are excluded, never priced at 0 or ∞.
"""

from __future__ import annotations

import datetime as dt
import math
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


@dataclass(frozen=True)
class Skipped:
    """A scenario that was not built, and why (``skipped_scenarios`` of the summary)."""

    name: str
    kind: str
    reason: str


def missing_where_not_finite(log_path: np.ndarray) -> np.ndarray:
    """``log_path`` (..., K) with every asset that has a non-finite log move anywhere set to
    NaN throughout: a move that cannot be computed is missing, whereas exp(−∞) = 0 would be
    read as a price of 0 and exp(+∞) as a price no account could fall below."""
    bad = ~np.isfinite(log_path).reshape(-1, log_path.shape[-1]).all(axis=0)  # (K,)
    return np.where(bad, np.nan, log_path)


def _ewma_variance(daily_close: pd.Series, decay: float, min_obs: int) -> pd.Series:
    """The EWMA of squared daily log returns, the value at *t* reading returns up to *t*."""
    r = np.log(daily_close).diff()
    return (r**2).ewm(alpha=1.0 - decay, adjust=False, min_periods=min_obs).mean()


def ewma_sigma(daily_close: pd.Series, decay: float, min_obs: int = 30) -> pd.Series:
    r"""Point-in-time EWMA σ of the daily log return: :math:`\hat\sigma^2_t = \lambda
    \hat\sigma^2_{t-1} + (1-\lambda) r^2_{t-1}` — the value at *t* uses returns up to *t − 1*."""
    return np.sqrt(_ewma_variance(daily_close, decay, min_obs).shift(1))


def ewma_sigma_after(daily_close: pd.Series, decay: float, as_of: dt.date,
                     min_obs: int = 30) -> float:
    """The EWMA σ of the day after ``as_of`` (:func:`ewma_sigma`'s value there: returns up to
    and including the as-of), NaN with fewer than ``min_obs`` returns. The σ every scenario
    is scaled by: the filter of history, not the published model's forecast, so a model
    that under-forecasts σ is not stressed more mildly for it."""
    var = _ewma_variance(daily_close.loc[: pd.Timestamp(as_of)], decay, min_obs)
    last = float(var.iloc[-1]) if len(var) else math.nan
    return math.sqrt(last) if math.isfinite(last) and last >= 0 else math.nan


def _hourly_log_path(hourly: pd.DataFrame, grid: pd.DatetimeIndex) -> tuple[np.ndarray, int]:
    """Log price path (S = hours + 1) from candles opening on ``grid``; NaN if not covered.

    Hours missing *inside* the episode keep the last close (counted). Candles that stop
    before the episode's last hour, or start after its first, do not cover it: carrying the
    last close through the missing end would replay a crash as though it had stopped when
    the feed did (the caller then takes the daily path, flagged ``daily``)."""
    candles = hourly.reindex(grid)
    if pd.isna(candles["open"].iloc[0]) or pd.isna(candles["close"].iloc[-1]):
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
            if not np.isnan(path).any():  # filled hours count where the hours are used
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
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = sigma_today / sigma_then  # NaN or 0 σ_then → missing, never invented
            x_filt = missing_where_not_finite(x * scale)
        filt_source = {a: ("missing" if np.isnan(x_filt[:, j]).any() else source[a])
                       for j, a in enumerate(assets)}
        out.append(Scenario(f"{ep.name}_filtered", "filtered", np.exp(x_filt)[None],
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
    """One shock step held through the liquidation delay: S = 2 + delay; a non-finite move
    is missing (NaN on every step, :func:`missing_where_not_finite`)."""
    steps = missing_where_not_finite(np.vstack([np.zeros(len(assets))] + [log_move] * (1 + delay)))
    flags = {a: ("missing" if np.isnan(steps[:, j]).any() else source)
             for j, a in enumerate(assets)}
    return Scenario(name, "hypothetical", np.exp(steps)[None], delay, assets, flags,
                    sigma_multiplier, note)


def hypothetical_scenarios(cfg: StressConfig, daily: dict[str, pd.DataFrame],
                           assets: list[str], sigma_today: np.ndarray, delay_steps: int,
                           unusable: list[str] | tuple[str, ...] = (),
                           ) -> tuple[list[Scenario], list[Skipped]]:
    """Beta and correlation-one shocks, the volatility shock, single-asset collapses; and the
    shocks that could not be built (module docstring), with the reason.

    ``unusable`` are the assets whose published row cannot be stressed (stale or no
    forecast); their own moves are set missing by the caller in every scenario.
    """
    shock = np.log1p(cfg.shock_move)
    out, skipped = [], []
    # e.g. BTC_drop30 (no '%': scenario names become MLflow metric keys)
    tag = f"{cfg.shock_asset}_drop{round(-100 * cfg.shock_move)}"
    if cfg.shock_asset in assets:
        i = assets.index(cfg.shock_asset)
        if cfg.shock_asset in unusable:
            why = (f"shock asset {cfg.shock_asset} is unusable (stale data or no forecast): "
                   "a shock defined by its move cannot be applied")
            skipped += [Skipped(f"{tag}_{v}", "hypothetical", why) for v in ("beta", "corr1")]
        else:
            beta = betas(daily, assets, cfg.shock_asset, cfg.beta_window_days)
            beta[i] = 1.0
            out.append(_shock(f"{tag}_beta", beta * shock, assets, delay_steps,
                              "beta", note=f"betas over {cfg.beta_window_days} days"))
            sigma_shock = float(sigma_today[i])
            if np.isfinite(sigma_shock) and sigma_shock > 0:
                out.append(_shock(f"{tag}_corr1", shock * sigma_today / sigma_shock,
                                  assets, delay_steps, "corr1"))
            else:
                skipped.append(Skipped(f"{tag}_corr1", "hypothetical", f"sigma_1d of "
                                       f"{cfg.shock_asset} is {sigma_shock!r}: the "
                                       "correlation-one moves divide by it"))
    else:  # a misspelt or unpublished shock asset: said, never a silently smaller stress
        why = (f"shock asset {cfg.shock_asset} is not among the {len(assets)} published "
               "assets (stress.shock_asset)")
        skipped += [Skipped(f"{tag}_{v}", "hypothetical", why) for v in ("beta", "corr1")]
    m = cfg.vol_multiplier
    out.append(_shock(f"vol_x{m:g}", -cfg.vol_z * m * sigma_today, assets, delay_steps,
                      "vol_shock", sigma_multiplier=m))
    for a in cfg.collapse_assets if cfg.collapse_assets is not None else assets:
        if a not in assets:  # named in stress.collapse_assets, not published: said
            skipped.append(Skipped(f"{a}_collapse", "hypothetical", f"{a} is not among the "
                                   "published assets (stress.collapse_assets)"))
            continue
        if a in unusable:  # its holders are excluded from every scenario: nothing to collapse
            skipped.append(Skipped(f"{a}_collapse", "hypothetical", f"{a} is unusable (stale "
                                   "data or no forecast): its holders are excluded"))
            continue
        move = np.zeros(len(assets))
        move[assets.index(a)] = np.log1p(cfg.collapse_move)
        out.append(_shock(f"{a}_collapse", move, assets, delay_steps, "collapse"))
    return out, skipped

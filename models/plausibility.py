r"""Is a variance forecast plausible enough to be scored, selected or published?

A forecast :math:`\hat V_{t,h}` (variance of the log return over days ``t+1 .. t+h``, daily
decimal² summed) is *plausible* when it is finite, positive, implies a daily volatility of at
least ``min_vol_1d``, and stays within a band around what the market has just realized:

.. math::
    \rho_{t,h} = \frac{\hat V_{t,h}}{h\, \overline{RV}_t}, \qquad
    \overline{RV}_t = \frac{1}{|W_t|}\sum_{s \in W_t} rv_s, \quad
    W_t = \{t - w + 1, \dots, t\} \cap \{s : rv_s \text{ known}\},

    \text{plausible} \iff \rho_{\min} \le \rho_{t,h} \le \rho_{\max}
        \text{ and } |W_t| \ge n_{\min}.

:math:`\overline{RV}_t` uses rows dated ``<= t`` only, so the check knows nothing the
forecaster could not know. Defaults (``configs.schema.PlausibilityConfig``): ``w`` = 30 days,
:math:`n_{\min}` = 15, band :math:`[1/100, 50]` — a forecast volatility 10× below or 7×
above the trailing realized volatility. Variance models mean-revert and anchor on recent
realized variance. The band is a guard, not a tuned setting, and it holds on the selection
period alone: there (cutoffs 2021-01-01 → 2023-06-30, the nine enabled forecasters, the
forecasts it kept) every forecast lies in :math:`\rho \in [0.086, 16.5]` (``harx_iv`` on
SOL, ``harx_mlp`` on SOL after the FTX crash), a margin of 3× above and 8.6× below; the
evaluation period's, read after, lie in :math:`[0.078, 19.9]` (19.9 from ``garch11_t``
after TRX's +80 % day of 2024-12-03), still 2.5× and 7.8× inside (``python -m
benchmarks.plausibility_band``, 2026-11-29). The low side is the wider because a spike
keeps the trailing *mean* high for a whole window after a model has rightly calmed down (an
EGARCH fitted through a ×10 pump and −90 % dump reaches 0.014 a few weeks later), while on
the high side the spike day is already in the mean. The faults the band is built for are
orders of magnitude out: an EGARCH 7-day forecast at :math:`10^{23}`; ``egarch_t``'s one-day
forecast of 140× after that same TRX day (σ of 73 % a day; with the 7-day ones, the only
rows the defaults flag on the embedded data: 3 cutoffs × 2 horizons); a model dividing by a
flat-lined feed's zero variance. ``min_vol_1d`` = 0.1 % a day (1.9 % a year) is far below any
crypto collateral's volatility; a forecast under it describes a peg or a dead feed, whose
risk no variance model measures.

The check is a pure function of arrays so that the backtest (failed rows are never scored)
and serving (an implausible forecast falls back, with the reason) apply the same rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from configs.schema import PlausibilityConfig

ArrayLike = np.ndarray | pd.Series | list[float]


def trailing_realized_variance(rv: pd.Series, window_days: int, min_obs: int
                               ) -> tuple[pd.Series, pd.Series]:
    """Mean daily ``rv`` over the ``window_days`` calendar days ending at each date, and the
    number of known values it averages (NaN mean where fewer than ``min_obs``).

    ``rv`` is one asset's series indexed by date (gaps allowed: the window is in calendar
    days, so a gap leaves it with fewer observations, never with older ones).
    """
    rv = rv.sort_index().astype(float)
    rolling = rv.rolling(f"{int(window_days)}D", min_periods=1)
    mean, count = rolling.mean(), rolling.count()
    return mean.where(count >= min_obs), count


def implausibility(
    variance: ArrayLike,
    horizon_days: ArrayLike,
    trailing_variance_1d: ArrayLike,
    bounds: PlausibilityConfig,
) -> np.ndarray:
    """Why each forecast is implausible, ``""`` where it is plausible.

    Parameters
    ----------
    variance : forecast variance over the horizon, daily decimal² summed over its days.
    horizon_days : the horizon of each forecast (days), broadcast against ``variance``.
    trailing_variance_1d : :math:`\\overline{RV}_t` at each forecast's cutoff (daily decimal²;
        NaN when the window holds fewer than ``bounds.min_obs`` values), e.g. from
        :func:`trailing_realized_variance`.
    bounds : the configured bounds; ``bounds.enabled`` False accepts every finite positive
        forecast.

    Returns
    -------
    numpy.ndarray of str, one reason per forecast (first rule broken), ``""`` when plausible.

    Examples
    --------
    >>> from configs.schema import PlausibilityConfig
    >>> list(implausibility([7e-3, 1e23, -1.0], 7, [1e-3, 1e-3, 1e-3], PlausibilityConfig()))
    ['', 'forecast is 1.4e+25x h x the trailing 30-day realized variance (band [0.01, 50])', \
'forecast variance is not positive (-1)']
    """
    v = np.asarray(variance, dtype=float).ravel()
    h = np.broadcast_to(np.asarray(horizon_days, dtype=float), v.shape)
    rv = np.broadcast_to(np.asarray(trailing_variance_1d, dtype=float), v.shape)
    out = np.full(v.shape, "", dtype=object)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = v / (h * rv)
        vol_1d = np.sqrt(np.where(v > 0, v / h, np.nan))
        # the rows every rule accepts, found at once; the first broken rule's wording is
        # only composed for the others (one Python call per forecast was 1.1 s per 730k)
        fine = np.isfinite(v) & (v > 0)
        if bounds.enabled:
            fine &= ((vol_1d >= bounds.min_vol_1d) & np.isfinite(rv) & (rv > 0)
                     & (bounds.min_ratio <= ratio) & (ratio <= bounds.max_ratio))
    for i in np.flatnonzero(~fine):
        out[i] = _reason(v[i], vol_1d[i], rv[i], ratio[i], bounds)
    return out


NO_REFERENCE = "nothing to check the forecast against"


def unverifiable(reasons: ArrayLike) -> np.ndarray:
    """Where a reason says only that the market gave nothing to check the forecast against
    (a gap in the data left too few realized-variance days in the trailing window): the
    forecast is not used, but it says nothing against the model that made it."""
    return np.array([str(r).endswith(NO_REFERENCE) for r in np.asarray(reasons, dtype=object)],
                    dtype=bool)


def _reason(v: float, vol_1d: float, rv: float, ratio: float, b: PlausibilityConfig) -> str:
    if not np.isfinite(v):
        return f"forecast variance is not finite ({v})"
    if v <= 0:
        return f"forecast variance is not positive ({v:.3g})"
    if not b.enabled:
        return ""
    if vol_1d < b.min_vol_1d:
        return (f"forecast daily vol {vol_1d:.2e} is below the floor {b.min_vol_1d:g} "
                "(a peg or a dead feed)")
    if not np.isfinite(rv):
        return (f"fewer than {b.min_obs} realized-variance days in the trailing "
                f"{b.window_days} days: {NO_REFERENCE}")
    if rv <= 0:
        return f"trailing {b.window_days}-day realized variance is zero (a flat-lined feed)"
    if not b.min_ratio <= ratio <= b.max_ratio:
        return (f"forecast is {ratio:.2g}x h x the trailing {b.window_days}-day realized "
                f"variance (band [{b.min_ratio:g}, {b.max_ratio:g}])")
    return ""


class TrailingVariance:
    """:func:`trailing_realized_variance` of every asset of a panel, computed when first
    asked for and then kept: the walk-forwards of every model check their forecasts against
    the same panel, so they share one (each model's check computed all of them again: 2.8 s
    a model at 1,000 assets, in the process that gathers the cluster's results)."""

    def __init__(self, panel: pd.DataFrame, bounds: PlausibilityConfig) -> None:
        self.panel, self.bounds = panel, bounds
        self._flat: pd.Series | None = None
        self._keys: tuple[pd.Index, np.ndarray, np.ndarray, int, int] | None = None
        self._keyed = False  # _keys built (None then means: a date off midnight)

    def flat(self) -> pd.Series:
        """The trailing mean of every (asset, date) of the panel, one Series, in (asset,
        date) order: :func:`trailing_realized_variance` of each asset, bit for bit, from one
        grouped rolling window (pandas' kernel restarts its sums where a group starts) instead
        of one call per asset (1.6 → 0.45 s at 1,000 assets)."""
        if self._flat is None:
            b = self.bounds
            rv = self.panel["rv"].astype(float)
            if not rv.index.is_monotonic_increasing:
                rv = rv.sort_index()
            frame = pd.DataFrame({"asset": rv.index.get_level_values("asset").astype(str),
                                  "date": rv.index.get_level_values("date"),
                                  "rv": rv.to_numpy()})
            rolling = frame.groupby("asset", sort=False).rolling(
                f"{int(b.window_days)}D", on="date", min_periods=1)["rv"]
            mean, count = rolling.mean(), rolling.count()
            self._flat = pd.Series(mean.where(count >= b.min_obs).to_numpy(),
                                   index=pd.MultiIndex.from_arrays(
                                       [frame["asset"], frame["date"]],
                                       names=["asset", "date"]))
        return self._flat

    def at(self, assets: pd.Series, cutoffs: pd.Series) -> np.ndarray:
        """The trailing mean at each (asset, cutoff); NaN where the panel has no such row.

        Looked up on integer keys (asset code, day) by binary search when every cutoff and
        panel date is a midnight (the walk-forwards' cutoffs are): a MultiIndex of strings
        was 0.35 s a model at 1,000 assets; otherwise on the (asset, timestamp) index."""
        flat = self.flat()
        if flat.empty:
            return np.full(len(assets), np.nan)
        cut = pd.DatetimeIndex(cutoffs)
        keys = self._day_keys()
        if keys is None or not _midnights(cut):
            index = pd.MultiIndex.from_arrays([assets.astype(str).to_numpy(), cut])
            pos = flat.index.get_indexer(index)
        else:
            codes_of, sorted_keys, rows, span, first = keys
            which, unique = pd.factorize(assets)  # -1: a missing asset name
            found = codes_of.get_indexer(pd.Index(unique).astype(str))
            code = np.where(which >= 0, found[np.maximum(which, 0)] if len(found) else -1, -1)
            day = _days(cut) - first
            wanted = code * span + day
            pos = np.searchsorted(sorted_keys, wanted)
            pos = np.minimum(pos, len(sorted_keys) - 1)
            hit = (code >= 0) & (day >= 0) & (day < span) & (sorted_keys[pos] == wanted)
            pos = np.where(hit, rows[pos], -1)
        return np.where(pos >= 0, flat.to_numpy()[pos], np.nan)

    def _day_keys(self) -> tuple[pd.Index, np.ndarray, np.ndarray, int, int] | None:
        """(asset names by code, the flat rows' keys ``code·span + day`` ascending, the flat
        row of each key, span, first day), built once; None when a panel date is off
        midnight (the timestamp index is used then)."""
        if not self._keyed:
            self._keyed = True
            flat = self.flat()
            dates = pd.DatetimeIndex(flat.index.get_level_values("date"))
            if _midnights(dates):
                days = _days(dates)
                first = int(days.min())
                span = int(days.max()) - first + 1
                keys = flat.index.codes[0].astype(np.int64) * span + (days - first)
                rows = np.argsort(keys, kind="stable")
                self._keys = (flat.index.levels[0], keys[rows], rows, span, first)
        return self._keys


def _days(dates: pd.DatetimeIndex) -> np.ndarray:
    return dates.to_numpy().astype("datetime64[D]").astype(np.int64)


def _midnights(dates: pd.DatetimeIndex) -> bool:
    """Every date a midnight (tz-naive): a whole number of days."""
    return dates.tz is None and bool(np.all(
        dates.to_numpy().astype("datetime64[ns]") == dates.to_numpy().astype(
            "datetime64[D]").astype("datetime64[ns]")))


def forecast_implausibility(forecasts: pd.DataFrame, panel: pd.DataFrame,
                            bounds: PlausibilityConfig,
                            trailing: TrailingVariance | None = None) -> pd.Series:
    """:func:`implausibility` of every row of a forecast frame (``asset, cutoff, horizon_days,
    variance``) against the panel's ``rv``; a Series of reasons aligned with ``forecasts``.
    ``trailing``: the panel's :class:`TrailingVariance` for these bounds, when the caller
    checks several frames against one panel."""
    if forecasts.empty:
        return pd.Series("", index=forecasts.index, dtype=object)
    if trailing is None:
        trailing = TrailingVariance(panel, bounds)
    elif (trailing.bounds.window_days, trailing.bounds.min_obs) != (bounds.window_days,
                                                                     bounds.min_obs):
        raise ValueError(f"the trailing variance was computed for {trailing.bounds}, "
                         f"not for {bounds}")
    rv_at = trailing.at(forecasts["asset"], forecasts["cutoff"])
    reasons = implausibility(forecasts["variance"], forecasts["horizon_days"], rv_at, bounds)
    return pd.Series(reasons, index=forecasts.index, dtype=object)

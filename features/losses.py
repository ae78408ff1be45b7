r"""The loss a lender is exposed to: the worst liquidation-delay loss within an update interval.

Margin parameters are published once per update interval of :math:`U` days
(``features.update_interval_days``) and an unhealthy position is liquidated within a delay of
:math:`H` hours (``features.liquidation_delay_hours``). The margin must therefore cover the
worst :math:`H`-hour price move anywhere in the interval.

**Which windows count.** Let :math:`c(\tau)` be the hourly close at time :math:`\tau` (the close
of the candle opening at :math:`\tau - 1h`). The row dated :math:`t` describes the interval
:math:`(S, E]` with :math:`S` = 00:00 UTC of day :math:`t-U+1` and :math:`E` = 24:00 UTC of day
:math:`t`. A window is the :math:`H` hours :math:`[e-H, e]` ending at an hourly close
:math:`e \in \{S+1h, \dots, E\}` — the :math:`24U` windows that **complete** in the interval.
The first window starts at :math:`c(S)`, the last close before the interval: the position's
reference is the price at the interval start. With the default :math:`H = 1` these are exactly
the windows triggered in :math:`[S, E)`. For :math:`H > 1` a window triggered in the last
:math:`H-1` hours completes in (and is attributed to) the next interval; this is what keeps a
row known at the end of day :math:`t` (point-in-time) while every :math:`H`-hour window on the
hourly grid is counted exactly once, and it makes ``target_*`` the feature shifted by
:math:`U` days exactly. Per window, with :math:`P_0 = c(e-H)`:

.. math::

    \ell^{long} = \ln P_0 - \ln c(e), \qquad \ell^{short} = \ln c(e) - \ln P_0

    \ell^{long}_{intrabar} = \ln P_0 - \ln \min_{k} L_k, \qquad
    \ell^{short}_{intrabar} = \ln \max_{k} H_k - \ln P_0

over the :math:`H` candles :math:`k` of the window (lows and highs between closes; the
intrabar variant is stricter). The interval's value is the maximum over its windows, a
positive number being a loss; it is negative only if every window moved in the position's
favour.

**Outages.** A window is :math:`H` consecutive *traded* candles and the close before them: an
hour missing from the file is an hour without trading on the venue (an exchange outage; the
embedded files' gaps are Binance's own, missing from its 4-hour klines too), during which no
position could be liquidated, so the move across it is part of the loss of a position open
when it began. A window may therefore span missing hours, at most
``features.outage_bridge_hours`` of them (0: none, every window needs its :math:`H` hours on
the grid); across a longer gap it has no start. An interval is measured from hourly data
only when its hourly candles account for its daily range: their highest high and lowest low
reach the daily candles' within :data:`RANGE_TOLERANCE` (for :math:`U = 1`, no extreme lies
in the missing hours; a file with hours removed for bad data, or one a feed has delivered
only part of, does not, and gets the proxy); and then when at least
``features.min_hours_for_rv`` × :math:`U` of its :math:`24U` windows are complete on the grid
(the same threshold as the one that makes a day's RV hourly, counted in windows), or, with
fewer, when every move between its candles is measured (never the asset's listing interval,
which has no proxy either): a window ends at each of the interval's traded candles — none
follows a gap longer than the bridge, across which the move from the last close before it
would be in no window, nor is among the file's first :math:`H` candles (an hourly file that
starts after the daily one: the move from the daily close before it). The listing interval
keeps its hourly value when it has enough windows, whatever its range (no proxy to fall back
on). An interval with enough complete windows is measured from them whatever came before; a
gap longer than the bridge that ends in its first hours would go unmeasured there (none on
the embedded data). Measured on the embedded data (76 asset-days with fewer than 20 windows,
the last on 2021-08-13): the hours account for the range on 72, where the range proxy was
3.9 times the hourly loss (median); on 3 of them (ETH, BNB and LTC on 2018-02-09) a 33-hour
outage leads into the day, and they take the proxy. No day with 20 windows or more misses
its range there (the two whose 20 candles do, ETH on 2017-09-23 and BTC on 2018-02-11, have 19
windows and took the proxy already), so the range check on such days changed no embedded
figure; it guards against a day a feed cut short or holed where the day's extreme was
(:func:`serving.serve.hourly_lost` also freezes a served day whose hours end early).

**Daily-range proxy** (no hourly candles, or too few that do not account for the range;
``worst_loss_is_proxy`` True). With
:math:`P_S` the close before the interval (the first candle's open when it is missing), and
:math:`\bar H, \underline L` the highest high and lowest low of the interval's :math:`U` daily
candles,

.. math::

    \ell^{long}_{proxy} = \ln\frac{\max(P_S, \bar H)}{\underline L}, \qquad
    \ell^{short}_{proxy} = \ln\frac{\bar H}{\min(P_S, \underline L)}

used for both the close and the intrabar variants; none for the asset's first interval, which
has no close before it (its first candle opens at the listing reference price, not a traded
one: the range of a listing day is price discovery, not a move a position was exposed to).
For :math:`H = 1` it is an upper bound of
both: every window starts at a price in :math:`\{P_S\} \cup [\underline L, \bar H]` and ends
within :math:`[\underline L, \bar H]`. It assumes the whole interval's range could be lost
within one delay, so it is conservative — by how much is measured on BTC/ETH in
``benchmarks/README.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from configs.schema import FeaturesConfig
from features.consistency import TOLERANCE as CONSISTENCY_TOLERANCE

LOSS_COLUMNS = (
    "worst_loss_long",
    "worst_loss_short",
    "worst_loss_long_intrabar",
    "worst_loss_short_intrabar",
)
# the covered-loss column of each loss variant, per side ("long", "short")
LOSS_VARIANTS = {"close": "worst_loss_{side}", "intrabar": "worst_loss_{side}_intrabar"}
SIDES = ("long", "short")


def loss_column(side: str, variant: str) -> str:
    """The panel column of the covered loss of ``side`` in ``variant`` (:data:`LOSS_VARIANTS`)."""
    if side not in SIDES or variant not in LOSS_VARIANTS:
        raise ValueError(f"side must be one of {SIDES} and variant one of "
                         f"{list(LOSS_VARIANTS)}; got {side!r}, {variant!r}")
    return LOSS_VARIANTS[variant].format(side=side)
PROXY_FLAG = "worst_loss_is_proxy"
_HOURS = 24
# Relative gap allowed between the hourly candles' extremes and the daily candle's when the
# hours account for the day's range: the hourly/daily consistency check's own tolerance
# (hours and days of one venue agree exactly)
RANGE_TOLERANCE = CONSISTENCY_TOLERANCE


def _interval_max(per_day: np.ndarray, counts: np.ndarray, days: int) -> tuple[np.ndarray, ...]:
    """Max and window count over the trailing ``days`` rows; rows before a full span get 0/-inf."""
    if days == 1:
        return per_day, counts
    top = np.full_like(per_day, -np.inf)
    total = np.zeros_like(counts)
    if len(counts) < days:
        return top, total
    top[days - 1:] = sliding_window_view(per_day, days, axis=0).max(axis=-1)
    total[days - 1:] = sliding_window_view(counts, days).sum(axis=-1)
    return top, total


def hourly_worst_losses(
    hourly: pd.DataFrame, delay_hours: int, interval_days: int, bridge_hours: int = 0
) -> pd.DataFrame:
    """Worst ``delay_hours``-hour losses per interval from hourly candles (module docstring).

    Parameters
    ----------
    hourly : DataFrame
        Candles indexed by open time (tz-naive UTC, on the hour) with ``high, low, close``.
    delay_hours : int
        Liquidation delay :math:`H`.
    interval_days : int
        Update interval :math:`U`.
    bridge_hours : int
        Most missing hours a window may span (``features.outage_bridge_hours``).

    Returns
    -------
    DataFrame
        Indexed by ``date`` (the interval's last day, every day from the first to the last
        candle's), columns :data:`LOSS_COLUMNS` (NaN where the interval has no window),
        ``n_windows`` (windows in the interval complete on the hourly grid),
        ``hour_high`` / ``hour_low`` (log of the interval's highest hourly high and lowest
        hourly low; NaN without a candle) and ``hour_gap`` (True where the move into one of
        the interval's traded candles lies in no window: it follows a gap longer than the
        bridge, or is among the first ``delay_hours`` candles of the file).
    """
    H, U = int(delay_hours), int(interval_days)
    stamps = pd.DatetimeIndex(hourly.index)
    first, last = stamps.min().floor("D"), stamps.max().floor("D")
    n_days = (last - first).days + 1
    grid = pd.date_range(first, periods=n_days * _HOURS, freq="h")
    h = hourly[["high", "low", "close"]].reindex(grid)
    lc = np.log(h["close"].to_numpy(dtype=float))  # (N,) N = n_days · 24
    lh = np.log(h["high"].to_numpy(dtype=float))
    ll = np.log(h["low"].to_numpy(dtype=float))
    n = len(grid)
    losses = np.full((4, n), -np.inf)  # window ending at candle j's close
    valid = np.zeros(n, dtype=bool)  # ... complete on the grid (the min_hours_for_rv count)
    if n > H:
        valid[H:] = sliding_window_view(np.isfinite(lc), H + 1).all(axis=-1)
    traded = np.flatnonzero(np.isfinite(lc))  # the traded candles, in time order
    covered = np.zeros(len(traded), dtype=bool)  # a window ends at the traded candle
    if len(traded) > H:
        c, lo, hi = lc[traded], ll[traded], lh[traded]
        p0, end = c[:-H], c[H:]  # close of the traded candle H before, and this one's
        low = sliding_window_view(lo, H).min(axis=-1)[1:]  # traded candles k-H+1 .. k
        high = sliding_window_view(hi, H).max(axis=-1)[1:]
        ok = traded[H:] - traded[:-H] <= H + int(bridge_hours)  # at most that many missing
        covered[H:] = ok
        with np.errstate(invalid="ignore"):
            window = np.stack([p0 - end, end - p0, p0 - low, high - p0])  # (4, T-H)
        losses[:, traded[H:]] = np.where(ok, window, -np.inf)
    per_day = losses.reshape(4, n_days, _HOURS).max(axis=-1).T  # (n_days, 4)
    counts = valid.reshape(n_days, _HOURS).sum(axis=-1)
    # the day's highest high and lowest low (log of the extreme: the fast build's formula),
    # and whether a traded candle's move in lies in no window (1, else -inf): a gap longer
    # than the bridge, or the first H candles of the file
    raw_high = h["high"].to_numpy(dtype=float).reshape(n_days, _HOURS)
    raw_low = h["low"].to_numpy(dtype=float).reshape(n_days, _HOURS)
    gap = np.full(n, -np.inf)
    gap[traded[~covered]] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        extras = np.column_stack([np.log(np.fmax.reduce(raw_high, axis=1)),
                                  -np.log(np.fmin.reduce(raw_low, axis=1)),
                                  gap.reshape(n_days, _HOURS).max(axis=-1)])
    extras = np.where(np.isfinite(extras), extras, -np.inf)  # a day without a candle
    top, total = _interval_max(np.column_stack([per_day, extras]), counts, U)
    out = pd.DataFrame(np.where(np.isfinite(top[:, :4]), top[:, :4], np.nan),
                       columns=list(LOSS_COLUMNS),
                       index=pd.date_range(first, periods=n_days, freq="D", name="date"))
    out["n_windows"] = total.astype("int64")
    out["hour_high"] = np.where(np.isfinite(top[:, 4]), top[:, 4], np.nan)
    out["hour_low"] = np.where(np.isfinite(top[:, 5]), -top[:, 5], np.nan)
    out["hour_gap"] = top[:, 6] > 0
    return out


def accounts_for_range(hour_high: np.ndarray, hour_low: np.ndarray, top: np.ndarray,
                       bottom: np.ndarray) -> np.ndarray:
    """Whether an interval's hourly candles reach its daily range (log extremes of the hours,
    highest daily high and lowest daily low): within :data:`RANGE_TOLERANCE`; False where any
    is missing."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((hour_high >= np.log(top) + np.log1p(-RANGE_TOLERANCE))
                & (hour_low <= np.log(bottom) + np.log1p(RANGE_TOLERANCE)))


def daily_range(daily: pd.DataFrame, interval_days: int) -> tuple[pd.Series, pd.Series]:
    """Each interval's highest daily high and lowest daily low (NaN with a missing candle)."""
    U = int(interval_days)
    return (daily["high"].rolling(U, min_periods=U).max(),
            daily["low"].rolling(U, min_periods=U).min())


def range_worst_losses(daily: pd.DataFrame, interval_days: int) -> pd.DataFrame:
    """The conservative daily-range proxy of :data:`LOSS_COLUMNS` (module docstring).

    ``daily`` is one asset's OHLC on a complete daily calendar (missing days as NaN rows); an
    interval with a missing candle is NaN.
    """
    U = int(interval_days)
    top, bottom = daily_range(daily, U)
    ref = daily["close"].shift(U).fillna(daily["open"].shift(U - 1))
    long = np.log(np.fmax(ref, top) / bottom)
    short = np.log(top / np.fmin(ref, bottom))
    # the listing interval (no close before it) has no proxy: its first candle opens at the
    # exchange's listing reference price, not a traded one (AVAX: open and low 0.85, high 7.0
    # on 2020-09-22, a "loss" of 88% in a day of price discovery), and no position could be
    # held before the asset's first price
    listed = daily["close"].notna().cumsum().shift(U, fill_value=0).to_numpy() > 0
    known = top.notna() & listed
    long, short = long.where(known), short.where(known)
    return pd.DataFrame({LOSS_COLUMNS[0]: long, LOSS_COLUMNS[1]: short,
                         LOSS_COLUMNS[2]: long, LOSS_COLUMNS[3]: short}, index=daily.index)


def worst_loss_features(
    daily: pd.DataFrame, hourly: pd.DataFrame | None, cfg: FeaturesConfig
) -> pd.DataFrame:
    """:data:`LOSS_COLUMNS` and ``worst_loss_is_proxy`` of one asset on ``daily``'s calendar.

    Hourly values where the interval has enough complete windows, or fewer whose candles
    account for its daily range (module docstring, "Outages"), else the daily-range proxy
    (flagged); NaN with the flag False where neither exists.
    """
    U = cfg.update_interval_days
    proxy = range_worst_losses(daily, U)
    if hourly is not None and len(hourly) > 0:
        exact = hourly_worst_losses(hourly, cfg.liquidation_delay_hours, U,
                                    cfg.outage_bridge_hours).reindex(daily.index)
        top, bottom = (x.to_numpy(float) for x in daily_range(daily, U))
        reached = accounts_for_range(exact["hour_high"].to_numpy(float),
                                     exact["hour_low"].to_numpy(float), top, bottom)
        has_proxy = proxy[LOSS_COLUMNS[0]].notna().to_numpy()
        # enough windows whose hours reach the daily range (or no proxy to fall back on: the
        # listing interval); or fewer that reach it and leave no move unmeasured, except on
        # the listing interval, which has no proxy either (no close before it)
        enough = (exact["n_windows"] >= cfg.min_hours_for_rv * U).to_numpy()
        hourly_ok = (enough & (reached | ~has_proxy)) | (
            reached & ~exact["hour_gap"].fillna(True).to_numpy(bool)
            & exact[LOSS_COLUMNS[0]].notna().to_numpy() & has_proxy)
    else:
        exact = proxy
        hourly_ok = np.zeros(len(daily), dtype=bool)
    out = pd.DataFrame(index=daily.index)
    for col in LOSS_COLUMNS:
        out[col] = np.where(hourly_ok, exact[col], proxy[col])
    out[PROXY_FLAG] = ~hourly_ok & proxy[LOSS_COLUMNS[0]].notna().to_numpy()
    return out

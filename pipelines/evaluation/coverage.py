"""VaR and ES backtests: does the margin cover the loss as often as it claims to?

A breach (hit) is :math:`I_t = 1\\{L_t > \\mathrm{VaR}_t\\}` with losses positive, and the VaR
at coverage level ``p`` (0.01 for a 99 % VaR) should be breached with probability ``p``,
independently from one day to the next. Each test checks one half of that claim:

- Kupiec (1995) proportion of failures: is the breach *rate* ``p``?
- Christoffersen (1998) independence: do breaches *cluster* (first-order Markov)?
- Christoffersen (1998) conditional coverage: both at once.
- Basel Committee (1996) traffic light: breach counts on rolling 250-day windows, in zones.
- McNeil and Frey (2000) exceedance residuals: is the ES large enough on breach days?

Likelihood ratios use the convention :math:`0 \\ln 0 = 0` (``scipy.special.xlogy``), so zero
breaches, all breaches or an empty transition cell give finite statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import xlogy

from pipelines.evaluation.distributions import chi2_sf, monte_carlo_p

Zone = Literal["green", "yellow", "red"]
ZONES: tuple[Zone, ...] = ("green", "yellow", "red")  # in order of severity
# Basel Committee (1996): yellow from a cumulative binomial probability of 95 %, red from 99.99 %
YELLOW_CUM_PROB = 0.95
RED_CUM_PROB = 0.9999
# a verdict needs a year of judged days (Basel's 250-day backtesting window): at 99% that
# expects 2.5 breaches, and on fewer no breach count could show a VaR too low, so a young asset
# would pass by having no history. Passing on fewer days is *unproven* (policy acceptance,
# variance VaR screen, tail comparison alike); failing on fewer days still fails.
MIN_VERDICT_DAYS = 250


def too_few_days(frame: pd.DataFrame, column: str) -> pd.Series:
    """Which rows of ``frame`` (statistics left undefined) were on fewer than
    :data:`MIN_VERDICT_DAYS` days, by its ``column`` of days: a young asset's, not a failure.
    False where the column is missing or null (nothing says the sample was short)."""
    days = frame[column] if column in frame else pd.Series(np.nan, frame.index)
    return pd.to_numeric(days, errors="coerce") < MIN_VERDICT_DAYS


def _as_hits(hits: np.ndarray | pd.Series | list[bool]) -> np.ndarray:
    arr = np.asarray(hits)
    if arr.dtype == bool:  # already hits: the checks below hold by type (np.isin was ~10%
        return arr.ravel()  # of judging a policy, once per asset, path and period)
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise ValueError("hits contain NaN: drop the rows without a loss or VaR first "
                         "(var_backtest does it)")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError("hits must be booleans or 0/1 (I_t = loss_t > VaR_t)")
    return arr.astype(bool).ravel()


def _check_p(p: float) -> None:
    if not 0.0 < p < 1.0:
        raise ValueError(f"coverage level p is a breach probability in (0, 1), got {p}")


# ------------------------------------------------------------------------------------ Kupiec


@dataclass(frozen=True)
class KupiecResult:
    """Kupiec POF test: ``statistic`` = LR_pof ~ chi2(1), with the acceptance band of counts."""

    statistic: float
    p_value: float
    n: int
    breaches: int
    expected: float  # n * p
    breach_rate: float
    p: float
    band_lo: int  # breach counts in [band_lo, band_hi] are not rejected at ``size``
    band_hi: int
    size: float


def kupiec_lr(breaches: int | np.ndarray, n: int, p: float) -> float | np.ndarray:
    r"""Kupiec's likelihood ratio for ``breaches`` = :math:`x` breaches in :math:`n` days.

    .. math::

        LR_{pof} = -2 \ln\left[(1-p)^{n-x} p^x\right]
                   + 2 \ln\left[(1-\hat\pi)^{n-x} \hat\pi^x\right], \qquad \hat\pi = x / n.
    """
    x = np.asarray(breaches, dtype=float)
    pi = x / n
    lr = -2.0 * (xlogy(n - x, 1.0 - p) + xlogy(x, p)) + 2.0 * (xlogy(n - x, 1.0 - pi)
                                                              + xlogy(x, pi))
    return float(lr) if lr.ndim == 0 else lr


def kupiec_band(n: int, p: float, size: float = 0.05) -> tuple[int, int]:
    """Smallest and largest breach counts whose LR_pof stays below the chi2(1) critical value.

    LR_pof is convex in the count, so the accepted counts form one interval.
    """
    _check_p(p)
    counts = np.arange(n + 1)
    accepted = counts[kupiec_lr(counts, n, p) < stats.chi2.ppf(1.0 - size, df=1)]
    return int(accepted.min()), int(accepted.max())


def kupiec_pof(hits: np.ndarray | pd.Series | list[bool], p: float,
               size: float = 0.05) -> KupiecResult:
    r"""Kupiec (1995) proportion-of-failures test of the breach rate.

    .. math:: LR_{pof} = 2 n \,\mathrm{KL}(\hat\pi \,\|\, p) \sim \chi^2_1,

    written out in :func:`kupiec_lr`. Both too many and too few breaches reject: with
    n = 250 and p = 0.01, zero breaches gives LR = 5.03 > 3.84 (the 95 % band is 1..6), a
    reminder that a VaR that is never breached is too conservative, i.e. costly margin.

    References
    ----------
    Kupiec, P. H. (1995). Techniques for verifying the accuracy of risk measurement models.
    *Journal of Derivatives* 3(2), 73-84.

    Examples
    --------
    >>> r = kupiec_pof([True] * 4 + [False] * 246, p=0.01)
    >>> round(r.statistic, 4), (r.band_lo, r.band_hi)
    (0.7691, (1, 6))
    """
    _check_p(p)
    h = _as_hits(hits)
    n, x = h.size, int(h.sum())
    if n == 0:
        raise ValueError("Kupiec test needs at least one observation")
    lr, (lo, hi) = kupiec_lr(x, n, p), kupiec_band(n, p, size)
    return KupiecResult(statistic=lr, p_value=chi2_sf(lr, 1), n=n, breaches=x,
                        expected=n * p, breach_rate=x / n, p=p, band_lo=lo, band_hi=hi,
                        size=size)


# --------------------------------------------------------------------------- Christoffersen


@dataclass(frozen=True)
class IndependenceResult:
    """Christoffersen independence test: ``statistic`` = LR_ind ~ chi2(1).

    ``n_ij`` counts days in state i followed by a day in state j (1 = breach).
    """

    statistic: float
    p_value: float
    n00: int
    n01: int
    n10: int
    n11: int
    pi01: float  # P(breach | no breach yesterday)
    pi11: float  # P(breach | breach yesterday)
    pi: float  # unconditional breach rate over the n - 1 transitions


def christoffersen_independence(hits: np.ndarray | pd.Series | list[bool]) -> IndependenceResult:
    r"""Christoffersen (1998) test of independence of breaches against a Markov chain.

    .. math::

        LR_{ind} = -2 \ln\left[(1-\hat\pi)^{n_{00}+n_{10}} \hat\pi^{n_{01}+n_{11}}\right]
        + 2 \ln\left[(1-\hat\pi_{01})^{n_{00}} \hat\pi_{01}^{n_{01}}
                     (1-\hat\pi_{11})^{n_{10}} \hat\pi_{11}^{n_{11}}\right] \sim \chi^2_1,

    with :math:`\hat\pi_{01} = n_{01}/(n_{00}+n_{01})`, :math:`\hat\pi_{11} =
    n_{11}/(n_{10}+n_{11})`, :math:`\hat\pi = (n_{01}+n_{11})/(n-1)`. A row of the 2x2 table
    with no transitions contributes nothing (its probability is set to 0, and
    :math:`0 \ln 0 = 0`). Clustered breaches (:math:`\hat\pi_{11} \gg \hat\pi_{01}`) are what
    a margin model that reacts too slowly to a volatility spike produces.

    References
    ----------
    Christoffersen, P. F. (1998). Evaluating interval forecasts. *International Economic
    Review* 39(4), 841-862.
    """
    h = _as_hits(hits).astype(int)
    if h.size < 2:
        raise ValueError("the independence test needs at least two observations")
    # transition code 2 * I_{t-1} + I_t: 0 = 00, 1 = 01, 2 = 10, 3 = 11
    n00, n01, n10, n11 = (int(c) for c in np.bincount(2 * h[:-1] + h[1:], minlength=4))
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (h.size - 1)
    log_l0 = xlogy(n00 + n10, 1.0 - pi) + xlogy(n01 + n11, pi)
    log_l1 = (xlogy(n00, 1.0 - pi01) + xlogy(n01, pi01)
              + xlogy(n10, 1.0 - pi11) + xlogy(n11, pi11))
    lr = max(float(-2.0 * (log_l0 - log_l1)), 0.0)  # >= 0 up to rounding
    return IndependenceResult(statistic=lr, p_value=chi2_sf(lr, 1), n00=n00,
                              n01=n01, n10=n10, n11=n11, pi01=pi01, pi11=pi11, pi=pi)


@dataclass(frozen=True)
class ConditionalCoverageResult:
    """Christoffersen conditional coverage: ``statistic`` = LR_pof + LR_ind ~ chi2(2)."""

    statistic: float
    p_value: float
    pof: KupiecResult
    ind: IndependenceResult
    critical_value_5pct: float = float(stats.chi2.ppf(0.95, df=2))  # 5.991


def christoffersen_cc(hits: np.ndarray | pd.Series | list[bool],
                      p: float) -> ConditionalCoverageResult:
    r"""Christoffersen (1998) conditional coverage test: right rate *and* no clustering.

    .. math:: LR_{cc} = LR_{pof} + LR_{ind} \sim \chi^2_2 \quad (5.99 \text{ at } 5\,\%).

    As is common practice, LR_pof uses all n days and LR_ind the
    n - 1 transitions; Christoffersen's exact decomposition conditions both on the first day,
    which differs by at most one observation.
    """
    pof = kupiec_pof(hits, p)
    ind = christoffersen_independence(hits)
    lr = pof.statistic + ind.statistic
    return ConditionalCoverageResult(statistic=lr, p_value=chi2_sf(lr, 2),
                                     pof=pof, ind=ind)


# ------------------------------------------------------------------------- traffic light


@lru_cache(maxsize=256)
def traffic_light_thresholds(n: int = 250, p: float = 0.01) -> tuple[int, int]:
    r"""Largest breach counts of the green and yellow zones for ``n`` days at level ``p``.

    Zone of a count :math:`x` from the binomial cumulative probability
    :math:`F(x) = P(X \le x)`, :math:`X \sim \mathrm{Bin}(n, p)`: green if
    :math:`F(x) < 95\,\%`, yellow if :math:`F(x) < 99.99\,\%`, red otherwise (Basel
    Committee, 1996). For n = 250, p = 0.01 this gives the supervisory 0-4 / 5-9 /
    10+ zones. Zero breaches is green whatever ``n * p``. Cached: a pure function of (n, p)
    that the policy verdicts ask for once per asset of every path.

    References
    ----------
    Basel Committee on Banking Supervision (1996). Supervisory framework for the use of
    "backtesting" in conjunction with the internal models approach to market risk capital
    requirements.

    Examples
    --------
    >>> traffic_light_thresholds(250, 0.01)
    (4, 9)
    """
    _check_p(p)
    cdf = stats.binom.cdf(np.arange(n + 1), n, p)
    cdf[-1] = 1.0  # guard against rounding below 1 for the certain event
    # zero breaches is always green, even when n * p is so small that F(0) >= 95 %
    green_max = max(int(np.argmax(cdf >= YELLOW_CUM_PROB)) - 1, 0)
    yellow_max = max(int(np.argmax(cdf >= RED_CUM_PROB)) - 1, green_max)
    return green_max, yellow_max


@dataclass(frozen=True)
class TrafficLightResult:
    """Basel zones per rolling window; ``windows`` has one row per window end."""

    windows: pd.DataFrame  # index: window end label; columns: breaches, zone
    green_max: int
    yellow_max: int
    window: int
    p: float
    worst_zone: Zone | None  # None when there is no full window
    n_windows: int
    n_yellow: int
    n_red: int
    max_breaches: int


def basel_traffic_light(hits: np.ndarray | pd.Series | list[bool], window: int = 250,
                        p: float = 0.01) -> TrafficLightResult:
    r"""Breach count and Basel zone of every rolling ``window``-day window of ``hits``.

    .. math:: x_t = \sum_{s=t-w+1}^{t} I_s, \qquad
              \mathrm{zone}_t = \mathrm{green} \text{ if } x_t \le g,\
              \mathrm{yellow} \text{ if } x_t \le y,\ \mathrm{red} \text{ otherwise},

    with :math:`(g, y)` from :func:`traffic_light_thresholds` (4 and 9 for 250 days at 99 %).
    Only full windows count; a Series' index labels the window ends.
    """
    h, counts = _window_counts(hits, window)
    green_max, yellow_max = traffic_light_thresholds(window, p)
    labels = hits.index if isinstance(hits, pd.Series) else pd.RangeIndex(h.size)
    zone_ix = (counts > green_max).astype(int) + (counts > yellow_max).astype(int)
    windows = pd.DataFrame({"breaches": counts.astype(int),
                            "zone": np.asarray(ZONES, dtype=object)[zone_ix]},
                           index=labels[window - 1:] if counts.size else labels[:0])
    windows.index.name = "window_end"
    return TrafficLightResult(
        windows=windows, green_max=green_max, yellow_max=yellow_max, window=window, p=p,
        worst_zone=ZONES[int(zone_ix.max())] if counts.size else None,
        n_windows=int(counts.size), n_yellow=int((zone_ix == 1).sum()),
        n_red=int((zone_ix == 2).sum()), max_breaches=int(counts.max()) if counts.size else 0,
    )


def red_windows(hits: np.ndarray, window: int = 250, p: float = 0.01) -> int:
    """:func:`basel_traffic_light`'s ``n_red`` alone (no table of windows): the number of
    full ``window``-day windows whose breach count is above the yellow zone."""
    counts = _window_counts(hits, window)[1]
    return int((counts > traffic_light_thresholds(window, p)[1]).sum())


def _window_counts(hits: np.ndarray | pd.Series | list[bool], window: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(the hits as booleans, the breach count of every full ``window``-day window)."""
    h = _as_hits(hits)
    if window < 1:
        raise ValueError(f"traffic-light window must be >= 1 day, got {window}")
    csum = np.concatenate([[0], np.cumsum(h)])
    return h, csum[window:] - csum[: max(h.size - window + 1, 0)]  # (n - window + 1,)


# ------------------------------------------------------------------------------ ES backtest


@dataclass(frozen=True)
class ESBacktestResult:
    """McNeil-Frey: t-ratio of the mean exceedance residual, one-sided "ES too small" p."""

    statistic: float
    p_value: float
    mean_residual: float
    n_exceedances: int
    n: int
    n_dropped: int
    reps: int
    seed: int | None
    note: str = ""


MF_MIN_EXCEEDANCES = 3  # below: the exceedance-residual bootstrap is undefined (docstring)


def mcneil_frey(losses: np.ndarray | pd.Series, var: np.ndarray | pd.Series,
                es: np.ndarray | pd.Series, scale: np.ndarray | pd.Series | None = None,
                reps: int = 2000, seed: int | None = 0) -> ESBacktestResult:
    r"""McNeil-Frey (2000) exceedance-residual test of the expected shortfall.

    On the breach days :math:`\{t : L_t > \mathrm{VaR}_t\}` the residuals

    .. math:: r_t = \frac{L_t - \mathrm{ES}_t}{s_t}, \qquad
              T = \frac{\bar r}{\hat\sigma_r / \sqrt{k}}

    have mean zero if the ES is right; :math:`T > 0` means the losses beyond the VaR are
    larger than the ES promised. The p-value is the one-sided bootstrap of Efron and
    Tibshirani (1993, section 16.4): resample the centred residuals ``reps`` times (seeded)
    and count :math:`T^* \ge T`. The scale :math:`s_t` is the volatility forecast
    (McNeil-Frey's choice) when ``scale`` is given; by default :math:`s_t = \mathrm{ES}_t`,
    which for a location-zero scale family is :math:`\sigma_t` times a constant and leaves
    :math:`T` unchanged. Fewer than :data:`MF_MIN_EXCEEDANCES` breaches (or identical
    residuals): p-value NaN, ``note``: with 2, every resample has a zero mean or a zero
    spread, so the bootstrap cannot answer (it rejected a third of right ES forecasts). A
    resample without spread has no :math:`T^*` and is left out; the p-value is
    :math:`(1 + \#\{T^* \ge T\}) / (1 + B)` over the :math:`B` resamples that have one.

    References
    ----------
    McNeil, A. J. and Frey, R. (2000). Estimation of tail-related risk measures for
    heteroscedastic financial time series: an extreme value approach. *Journal of Empirical
    Finance* 7(3-4), 271-300.
    """
    s = es if scale is None else scale
    loss, (v, e, sc), n_dropped = _aligned(losses, var, es, s)
    hit = loss.to_numpy() > v
    r = (loss.to_numpy()[hit] - e[hit]) / sc[hit]
    k, nan = int(r.size), float("nan")
    if k < MF_MIN_EXCEEDANCES or np.ptp(r) == 0:
        return ESBacktestResult(nan, nan, float(r.mean()) if k else nan, k, len(loss),
                                n_dropped, reps, seed, f"fewer than {MF_MIN_EXCEEDANCES} "
                                "exceedances, or identical residuals: the test is undefined")
    t_obs = float(r.mean() / (r.std(ddof=1) / math.sqrt(k)))
    rng = np.random.default_rng(seed)
    boot = (r - r.mean())[rng.integers(0, k, size=(reps, k))]  # (reps, k)
    sd = boot.std(axis=1, ddof=1)
    spread = sd > 0
    t_star = boot.mean(axis=1)[spread] * math.sqrt(k) / sd[spread]
    return ESBacktestResult(statistic=t_obs, p_value=monte_carlo_p(t_star, t_obs),
                            mean_residual=float(r.mean()), n_exceedances=k, n=len(loss),
                            n_dropped=n_dropped, reps=reps, seed=seed)


# ----------------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class VarBacktest:
    """Every VaR backtest on one (asset, model) series of losses and VaR forecasts."""

    n: int
    n_dropped: int  # days with a NaN loss or VaR
    breaches: int
    breach_rate: float
    p: float
    pof: KupiecResult
    ind: IndependenceResult
    cc: ConditionalCoverageResult
    traffic_light: TrafficLightResult
    worst_zone: Zone | None


def _aligned(losses: np.ndarray | pd.Series, *others: np.ndarray | pd.Series
             ) -> tuple[pd.Series, list[np.ndarray], int]:
    """Losses as a Series (index kept) and the other arrays, on days where all are finite."""
    loss = losses if isinstance(losses, pd.Series) else pd.Series(np.asarray(losses, float))
    arrs = [np.asarray(o, dtype=float).ravel() for o in others]
    if any(a.size != len(loss) for a in arrs) or any(
            isinstance(o, pd.Series) and not o.index.equals(loss.index) for o in others):
        raise ValueError(f"losses ({len(loss)} rows) and forecasts ({[a.size for a in arrs]}) "
                         "must share one index; align them on the date first")
    keep = np.logical_and.reduce([np.isfinite(a) for a in [loss.to_numpy(float), *arrs]])
    return loss[keep].astype(float), [a[keep] for a in arrs], int((~keep).sum())


def var_backtest(losses: np.ndarray | pd.Series, var: np.ndarray | pd.Series, p: float,
                 window: int = 250) -> VarBacktest:
    """Kupiec, Christoffersen and traffic-light backtests of ``var`` against ``losses``.

    Breach: ``loss > var`` (both positive for a loss); Series must share one index. Days
    with a NaN in either are dropped (their neighbours become consecutive for LR_ind).
    """
    loss, (v,), n_dropped = _aligned(losses, var)
    hits = pd.Series(loss.to_numpy() > v, index=loss.index)
    cc = christoffersen_cc(hits, p)
    tl = basel_traffic_light(hits, window=window, p=p)
    return VarBacktest(n=cc.pof.n, n_dropped=n_dropped, breaches=cc.pof.breaches,
                       breach_rate=cc.pof.breach_rate, p=p, pof=cc.pof, ind=cc.ind, cc=cc,
                       traffic_light=tl, worst_zone=tl.worst_zone)

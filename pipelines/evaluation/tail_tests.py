r"""Scoring and backtests of joint (VaR, ES) forecasts of a loss.

Losses are positive numbers (a loss fraction or log loss), VaR and ES at ``level`` (0.99)
are positive, and :math:`\alpha = 1 - \text{level}` is the tail probability; a breach is
:math:`I_t = 1\{L_t > \mathrm{VaR}_t\}`.

- :func:`fz0_loss` — the FZ0 scoring function of Patton, Ziegel and Chen (2019): strictly
  consistent for the pair (VaR, ES), so the model with the lower mean FZ0 is the better tail
  forecast (compared across models by Diebold-Mariano and the MCS in
  :mod:`pipelines.evaluation.tail_compare`).
- :func:`kupiec_one_sided` — exact binomial test of "too many breaches" (a margin that is
  breached too rarely is costly, not unsafe).
- :func:`dq_test` — Engle and Manganelli (2004) dynamic quantile test: breaches must not be
  predictable from past breaches or from the VaR itself.
- :func:`mcneil_frey` — McNeil and Frey (2000) exceedance residuals (implemented in
  :mod:`pipelines.evaluation.coverage`, re-exported here).
- :func:`acerbi_szekely_z2` — Acerbi and Székely (2014) test 2 of the ES, p-value by
  simulation under a GPD tail beyond the VaR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipelines.evaluation.coverage import mcneil_frey
from pipelines.evaluation.distributions import MC_SEED, monte_carlo_p

__all__ = [
    "DQResult",
    "OneSidedResult",
    "Z2Result",
    "acerbi_szekely_z2",
    "dq_test",
    "fz0_loss",
    "kupiec_one_sided",
    "mcneil_frey",
]

ArrayLike = np.ndarray | pd.Series | list[float]


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.99; got {level}")
    return 1.0 - level


def _finite(*arrays: ArrayLike) -> tuple[list[np.ndarray], int]:
    """The arrays on rows where all are finite, and how many rows were dropped."""
    arrs = [np.asarray(a, dtype=float).ravel() for a in arrays]
    if len({a.size for a in arrs}) != 1:
        raise ValueError(f"inputs must have one length each, got {[a.size for a in arrs]}")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrs])
    return [a[keep] for a in arrs], int((~keep).sum())


def fz0_loss(losses: ArrayLike, var: ArrayLike, es: ArrayLike, level: float) -> np.ndarray:
    r"""FZ0 loss of each (VaR, ES) forecast, written for positive losses.

    Patton, Ziegel and Chen (2019), eq. (6), with returns :math:`Y = -L`, :math:`v = -\mathrm{VaR}`,
    :math:`e = -\mathrm{ES}`:

    .. math::

        FZ0(L, \mathrm{VaR}, \mathrm{ES}; \alpha) =
            \frac{1\{L > \mathrm{VaR}\}\,(L - \mathrm{VaR})}{\alpha\,\mathrm{ES}}
            + \frac{\mathrm{VaR}}{\mathrm{ES}} + \ln \mathrm{ES} - 1,
        \qquad \alpha = 1 - \text{level}.

    It is defined only for :math:`0 \le \mathrm{VaR} \le \mathrm{ES}`, :math:`\mathrm{ES} > 0`
    (PZC's :math:`e \le v \le 0`, :math:`e < 0` in returns: the tail of a loss at 97.5 % and
    above; a VaR of exactly 0, a pegged asset's, is the boundary the formula still scores); a row
    with finite forecasts outside it is an error, never a score. A forecast of no loss at all
    (VaR = ES = 0, a peg that never moved) has no score (NaN: FZ0 runs to −∞ as ES → 0 on a
    day without a loss and to +∞ on a day with one), so that asset-day leaves the pooled
    comparison. It is negative for small ES: only differences between models mean anything.
    A NaN in any input gives NaN in that row.

    Examples
    --------
    >>> float(fz0_loss([0.10], [0.05], [0.08], 0.99)[0].round(4))
    59.5993
    """
    alpha = _check_level(level)
    loss, v, e = (np.asarray(a, dtype=float) for a in (losses, var, es))
    bad = outside_fz0_domain(v, e)
    if bad.any():
        raise ValueError(f"FZ0 needs 0 <= VaR <= ES and ES > 0 on every row with a forecast; "
                         f"{int(bad.sum())} rows are outside it (first: VaR {v[bad][0]:.6g}, "
                         f"ES {e[bad][0]:.6g})")
    with np.errstate(invalid="ignore", divide="ignore"):
        exceed = np.where(loss > v, loss - v, 0.0)
        out = exceed / (alpha * e) + v / e + np.log(e) - 1.0
    scored = np.isfinite(loss) & np.isfinite(v) & np.isfinite(e) & (e > 0.0)
    return np.where(scored, out, np.nan)


def outside_fz0_domain(var: ArrayLike, es: ArrayLike) -> np.ndarray:
    """Rows with both forecasts finite and not ``0 <= VaR <= ES``, ``ES > 0`` (to 1e-12),
    a forecast of no loss at all (VaR = ES = 0) excepted: it is unscored, not wrong."""
    v, e = np.asarray(var, dtype=float), np.asarray(es, dtype=float)
    finite = np.isfinite(v) & np.isfinite(e)
    with np.errstate(invalid="ignore"):
        inside = (v >= 0.0) & (e > 0.0) & (e >= v - 1e-12)
        return finite & ~(inside | ((v == 0.0) & (e == 0.0)))


# --------------------------------------------------------------------- one-sided Kupiec


@dataclass(frozen=True)
class OneSidedResult:
    """Exact test of H1 "breach rate > alpha": ``p_value`` = P(X >= breaches | Bin(n, alpha))."""

    p_value: float
    breaches: int
    n: int
    expected: float
    breach_rate: float


def kupiec_one_sided(losses: ArrayLike, var: ArrayLike, level: float) -> OneSidedResult:
    r"""One-sided coverage test: are there *too many* breaches?

    .. math:: p = P(X \ge x), \qquad X \sim \mathrm{Bin}(n, \alpha),

    the exact binomial tail, because at 99 % over a few hundred days the :math:`\chi^2`
    approximation of the LR is poor. Rows with a NaN are dropped.
    """
    alpha = _check_level(level)
    (loss, v), _ = _finite(losses, var)
    n, x = loss.size, int((loss > v).sum())
    if n == 0:
        raise ValueError("the coverage test needs at least one row with a loss and a VaR")
    return OneSidedResult(p_value=float(stats.binom.sf(x - 1, n, alpha)), breaches=x, n=n,
                          expected=n * alpha, breach_rate=x / n)


# --------------------------------------------------------------------- dynamic quantile


@dataclass(frozen=True)
class DQResult:
    """Engle-Manganelli DQ statistic, its Monte Carlo p-value (the chi2(df) one beside it),
    regressors used."""

    statistic: float
    p_value: float  # Monte Carlo (``sims`` > 0), else the chi-squared one
    df: int
    n: int  # rows in the regression (after the lags)
    lags: int
    n_dropped: int
    p_value_asymptotic: float = float("nan")
    sims: int = 0


DQ_SIMS = 999  # the Monte Carlo p-value's resolution: 1/1000
DQ_SEED = MC_SEED  # fixed: a p-value is a function of its data alone


def _dq_statistics(hit: np.ndarray, v: np.ndarray | None, alpha: float, lags: int
                   ) -> np.ndarray:
    r"""DQ statistic of each row of ``hit`` ((R, N) breach indicators) against one VaR
    series ``v`` (N,) or none, at tail probability ``alpha`` (1 - level):
    :math:`\lVert P_X y \rVert^2 / (\alpha(1-\alpha))`, with :math:`y = Hit_{t}` after the
    first ``lags`` rows and :math:`P_X` the projection on the span of the constant, the
    lagged hits and the VaR (a pseudo-inverse where they do not span)."""
    y_all = hit.astype(float) - alpha  # (R, N)
    big_n = y_all.shape[1]
    y = y_all[:, lags:]
    cols = [np.ones_like(y)] + [y_all[:, lags - k: big_n - k] for k in range(1, lags + 1)]
    if v is not None:
        cols.append(np.broadcast_to(v[lags:], y.shape))
    x = np.stack(cols, axis=-1)  # (R, n, k)
    gram = np.einsum("rnk,rnl->rkl", x, x)
    xty = np.einsum("rnk,rn->rk", x, y)
    return np.einsum("rk,rk->r", xty, np.einsum("rkl,rl->rk", np.linalg.pinv(gram), xty)) / (
        alpha * (1.0 - alpha))


def dq_test(losses: ArrayLike, var: ArrayLike, level: float, lags: int = 4,
            include_var: bool = True, sims: int = DQ_SIMS, seed: int = DQ_SEED) -> DQResult:
    r"""Engle and Manganelli (2004) out-of-sample dynamic quantile test.

    With :math:`Hit_t = 1\{L_t > \mathrm{VaR}_t\} - \alpha` and regressors
    :math:`X_t = (1, Hit_{t-1}, \dots, Hit_{t-K}, \mathrm{VaR}_t)`,

    .. math::

        DQ = \frac{Hit' X (X'X)^{-1} X' Hit}{\alpha (1 - \alpha)}
             \overset{a}{\sim} \chi^2_{\mathrm{rank}(X)},

    under H0 that hits are i.i.d. Bernoulli(:math:`\alpha`) given the past (right rate and
    no clustering, and a VaR that does not predict its breaches). The VaR column is centred
    and scaled first (the statistic, a projection, does not change) so that a nearly
    constant VaR does not make the statistic and the rank disagree; both come from one
    least-squares solve. Rows with a NaN are dropped before the lags are formed.

    **p-value.** At 99 % over a few hundred days the chi-squared approximation rejects about
    twice its size (one chance pair of breaches a few days apart is a large statistic): 9-12 %
    of i.i.d. samples at the 5 % level (``tests/test_tail_tests.py``). So ``p_value`` is the
    Monte Carlo one (Dufour 2006): the share of ``sims`` samples of i.i.d.
    Bernoulli(:math:`\alpha`) hits against the same VaR series whose statistic reaches the
    observed one, :math:`(1 + \#\{DQ^* \ge DQ\}) / (1 + \mathit{sims})`, seeded;
    ``p_value_asymptotic`` keeps the chi-squared one (``sims = 0``: that one alone).

    The policy's acceptance has its own DQ (:func:`pipelines.policy_eval.acceptance.
    dq_permutation_p`): it tests the dynamics alone, conditional on the breach count
    (permutations of the observed hits), because its coverage is judged one-sided beside
    it and a policy must not fail DQ for breaching too rarely. This one tests the joint null
    (rate :math:`\alpha` and no dynamics), as a tail forecast's DQ is read.

    References
    ----------
    Engle, R. F. and Manganelli, S. (2004). CAViaR: conditional autoregressive value at risk
    by regression quantiles. *Journal of Business & Economic Statistics* 22(4), 367-381.
    Dufour, J.-M. (2006). Monte Carlo tests with nuisance parameters. *Journal of
    Econometrics* 133(2), 443-477.
    """
    alpha = _check_level(level)
    if lags < 0:
        raise ValueError(f"lags must be >= 0, got {lags}")
    (loss, v), n_dropped = _finite(losses, var)
    hit = loss > v
    n = hit.size - lags
    if n <= lags + 2:
        raise ValueError(f"the DQ test needs more rows than regressors; got {hit.size} rows "
                         f"for {lags} lags")
    z = None
    if include_var:
        sd = float(v.std())
        z = (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)  # constant: no information
    y_all = hit.astype(float) - alpha
    cols = [np.ones(n)] + [y_all[lags - k:hit.size - k] for k in range(1, lags + 1)]
    if z is not None:
        cols.append(z[lags:])
    x = np.column_stack(cols)  # (n, 1 + K [+ 1])
    y = y_all[lags:]
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    fitted = x @ beta
    stat = float(fitted @ fitted / (alpha * (1.0 - alpha)))
    p_asym = float(stats.chi2.sf(stat, int(rank)))
    p = p_asym
    if sims > 0:
        rng = np.random.default_rng(seed)
        null = _dq_statistics(rng.random((sims, hit.size)) < alpha, z, alpha, lags)
        p = monte_carlo_p(null, stat, tie_rtol=1e-9)
    return DQResult(statistic=stat, p_value=p, df=int(rank), n=n, lags=lags,
                    n_dropped=n_dropped, p_value_asymptotic=p_asym, sims=sims)


# ------------------------------------------------------------------- Acerbi-Székely Z2


@dataclass(frozen=True)
class Z2Result:
    """Acerbi-Székely Z2 (negative: ES too small) and its one-sided simulated p-value."""

    statistic: float
    p_value: float
    n: int
    breaches: int
    sims: int
    tail_shape: float
    seed: int | None


def _gpd_ppf(u: np.ndarray, shape: float) -> np.ndarray:
    r"""Unit-scale GPD quantile :math:`((1-u)^{-\xi} - 1)/\xi` (:math:`-\ln(1-u)` at 0).

    Closed form: ``scipy.stats.genpareto.ppf`` is ~50x slower on a simulation-sized array.
    """
    if shape == 0.0:
        return -np.log1p(-u)
    return np.expm1(-shape * np.log1p(-u)) / shape


def acerbi_szekely_z2(losses: ArrayLike, var: ArrayLike, es: ArrayLike, level: float,
                      sims: int = 2000, tail_shape: float = 0.2,
                      seed: int | None = 0) -> Z2Result:
    r"""Acerbi and Székely (2014) test 2 ("testing ES directly") for positive losses.

    .. math:: Z_2 = 1 - \frac{1}{T\alpha} \sum_{t=1}^{T} \frac{L_t\, I_t}{\mathrm{ES}_t},

    zero in expectation when both VaR and ES are right, negative when the losses beyond the
    VaR are larger or more frequent than promised. The null distribution needs the
    predictive tail beyond the VaR, which a (VaR, ES) forecast does not fully give: it is
    simulated with breaches :math:`I_t \sim \mathrm{Bernoulli}(\alpha)` and excesses over
    the VaR drawn from a generalized Pareto with shape :math:`\xi` = ``tail_shape`` and the
    mean that makes :math:`E[L_t \mid I_t] = \mathrm{ES}_t`, i.e. scale
    :math:`(\mathrm{ES}_t - \mathrm{VaR}_t)(1 - \xi)`. :math:`\xi = 0.2` is the tail of a
    Student-t(5), in the range McNeil and Frey (2000) report for standardized residuals;
    Acerbi and Székely show the 5 % critical value of :math:`Z_2` barely moves with the tail
    (about -0.7 at :math:`\alpha` = 2.5 %). The p-value is :math:`P(Z_2^* \le Z_2)` over
    ``sims`` seeded simulations, :math:`(1 + \#\{Z_2^* \le Z_2\}) / (1 + \mathit{sims})` (a
    Monte Carlo p-value is never 0).

    References
    ----------
    Acerbi, C. and Székely, B. (2014). Backtesting expected shortfall. *Risk*, December.
    """
    alpha = _check_level(level)
    if not 0.0 <= tail_shape < 1.0:
        raise ValueError(f"tail_shape must lie in [0, 1) for a finite ES, got {tail_shape}")
    (loss, v, e), _ = _finite(losses, var, es)
    n = loss.size
    if n == 0 or np.any(e <= 0.0) or np.any(e < v):
        raise ValueError("Z2 needs rows with 0 < VaR <= ES (positive losses)")
    stat = float(1.0 - np.where(loss > v, loss / e, 0.0).sum() / (n * alpha))
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(rng.random((sims, n)) < alpha)  # simulated breaches
    excess = _gpd_ppf(rng.random(rows.size), tail_shape) * (e - v)[cols] * (1.0 - tail_shape)
    sim_sum = np.bincount(rows, (v[cols] + excess) / e[cols], minlength=sims)  # (S,)
    z_star = 1.0 - sim_sum / (n * alpha)
    return Z2Result(statistic=stat, p_value=monte_carlo_p(z_star, stat, upper=False), n=n,
                    breaches=int((loss > v).sum()), sims=sims, tail_shape=tail_shape,
                    seed=seed)


def es_breach_summary(losses: ArrayLike, var: ArrayLike, es: ArrayLike) -> dict[str, float]:
    """Mean loss on breach days against the mean ES promised on them (a readable check)."""
    (loss, v, e), _ = _finite(losses, var, es)
    hit = loss > v
    nan = math.nan
    return {"mean_loss_on_breach": float(loss[hit].mean()) if hit.any() else nan,
            "mean_es_on_breach": float(e[hit].mean()) if hit.any() else nan}

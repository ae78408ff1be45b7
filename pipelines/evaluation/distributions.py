"""The tail probabilities the backtests need, without scipy.stats' distribution objects.

``scipy.stats.chi2.sf(x, df)`` is ``scipy.special.chdtrc(df, x)`` behind a generic wrapper that
checks arguments and support (~50-80 µs a call); a frozen ``stats.t(df)`` costs ~0.5 ms to
build. The policy verdicts call these several times per asset of every replayed path
(thousands of times at 1,000 assets), so they call the special functions directly. The
values are scipy's own, bit for bit, for every finite and non-finite argument the tests use
(``tests/test_distributions.py``). :func:`monte_carlo_p` is the one Monte Carlo p-value of
the DQ, McNeil-Frey and Acerbi-Székely tests.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

# the DQ tests' fixed seed (tail_tests.dq_test, policy_eval.acceptance.dq_permutation_p): a
# p-value is a function of its data alone, on any engine
MC_SEED = 2004


def monte_carlo_p(null: ArrayLike, observed: float, upper: bool = True,
                  tie_rtol: float = 0.0) -> float:
    r"""Monte Carlo p-value (Dufour 2006): :math:`(1 + \#\{T^* \ge T\}) / (1 + B)` over the
    :math:`B` draws ``null`` of the statistic under the null (``upper``; otherwise
    :math:`T^* \le T`), never 0; NaN for a NaN statistic. ``tie_rtol`` (upper tail): a draw
    within this relative distance below the observed statistic counts as a tie (a statistic
    computed two ways, by a regression and by a projection, differs in its last bits where
    it should be equal)."""
    if not np.isfinite(observed):
        return float("nan")
    if tie_rtol and not upper:
        raise ValueError("tie_rtol is for the upper tail")
    t = np.asarray(null, dtype=float).ravel()
    tie = observed * (1.0 - tie_rtol) if observed >= 0 else observed * (1.0 + tie_rtol)
    hits = t >= tie if upper else t <= observed
    return float((1 + np.count_nonzero(hits)) / (1 + t.size))


def chi2_sf(x: float, df: float) -> float:
    """``float(scipy.stats.chi2.sf(x, df))``: P(X > x) for X ~ χ²(df); 1 below the support."""
    if not df > 0:
        return float("nan")
    if x < 0:  # below the support (chdtrc itself gives NaN there)
        return 1.0
    return float(special.chdtrc(df, x))


def t_cdf(x: float, df: float) -> float:
    """``float(scipy.stats.t(df).cdf(x))``: P(T ≤ x) for a Student t with ``df`` > 0."""
    if not df > 0:
        return float("nan")
    return float(special.stdtr(df, x))


def t_sf(x: float, df: float) -> float:
    """``float(scipy.stats.t(df).sf(x))``: P(T > x)."""
    if not df > 0:
        return float("nan")
    return float(special.stdtr(df, -x))

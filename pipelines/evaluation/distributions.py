"""The tail probabilities the backtests need, without scipy.stats' distribution objects.

``scipy.stats.chi2.sf(x, df)`` is ``scipy.special.chdtrc(df, x)`` behind a generic wrapper that
checks arguments and support (~50-80 µs a call); a frozen ``stats.t(df)`` costs ~0.5 ms to
build. The policy verdicts call these several times per asset of every replayed path
(thousands of times at 1,000 assets), so they call the special functions directly. The
values are scipy's own, bit for bit, for every finite and non-finite argument the tests use
(``tests/test_distributions.py``).
"""

from __future__ import annotations

from scipy import special


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

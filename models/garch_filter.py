r"""GARCH(p, q) one-step variance of fixed parameters, for many assets at once, without ``arch``.

A served GARCH forecast is a filter, not a fit: the stored parameters run the variance
recursion over the asset's returns and the value one step past each cutoff is the forecast.
:func:`models.garch.one_step_variance` does that with arch's own functions, one asset at a
time; importing ``arch`` (which imports ``scipy.stats`` and ``matplotlib``) took 1.0-1.1 s of
a fresh 12-asset serve whose every other step took 0.4 s. This module computes the *same
numbers*, bit for bit (tests compare them with arch's exactly, bounds that bind included),
with numpy alone and every asset in one pass over time:

* the backcast :math:`\sum_{i<\tau} w_i r_i^2`, :math:`w_i \propto 0.94^i`,
  :math:`\tau = \min(75, n)` (``arch.univariate.volatility.GARCH.backcast``);
* the variance bounds: an EWMA(0.94) of :math:`r^2` from the same weights' starting value,
  ×1e-6 and ×1e6, the lower one at least :math:`\mathrm{var}(r)/10^8`, the upper one within
  :math:`[1 + \max r^2,\ 10^7 (1 + \max r^2)]` (``VolatilityProcess.variance_bounds``);
* the recursion :math:`\sigma^2_t = \omega + \sum_j \alpha_j r^2_{t-1-j}
  + \sum_j \beta_j \sigma^2_{t-1-j}`, the backcast standing in before the first return, each
  value clamped to its bounds as arch does (below the lower: the lower; above the upper:
  upper + log(value/upper)) (``recursions.garch_recursion``), run one step past the end with
  bounds :math:`[0, \infty)` (``_one_step_forecast``).

The additions are made in arch's order, term by term, so every float is the one arch's
compiled loop makes. Only the symmetric GARCH (no asymmetric term, ``o = 0``) is here; GJR
and EGARCH are filtered by arch (:mod:`models.garch`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from models.ewma import aligned, ewma_recursion

__all__ = ["backcast", "one_step_variances", "variance_bounds"]

EWMA_LAMBDA = 0.94  # arch's choice for the backcast weights and the bounds' EWMA
TAU = 75


def _weights(n: int) -> np.ndarray:
    tau = min(TAU, n)
    w = EWMA_LAMBDA ** np.arange(tau)
    return w / sum(w)  # builtin sum, as arch: sequential, not numpy's pairwise


def backcast(y: np.ndarray) -> float:
    """arch's GARCH backcast (power 2) of the returns ``y``."""
    w = _weights(y.shape[0])
    return float(np.sum((np.absolute(y[:len(w)]) ** 2.0) * w))


def _ewma_starts(y: np.ndarray) -> float:
    w = _weights(y.shape[0])
    return float(w.dot(y[:len(w)] ** 2.0))


def _limits(y: np.ndarray) -> tuple[float, float, float]:
    """(lower floor, upper floor, upper cap) of arch's variance bounds for ``y``.

    arch computes them on every return it is handed, so in the walk-forward (returns up to
    the segment's end) a forecast at ``t`` could read a bound set by a later return, where
    a serve at ``t`` would not. The bounds are 1e-8 of the sample variance and 1e7 times the
    largest square: they bind only for a degenerate path, and the walk-forward's forecasts
    equal those made from the rows up to each cutoff to 1.9e-15 on the embedded data (the
    prefix check of a review, 2026-11-29), so this is said, not changed."""
    var = float(np.var(y))
    min_upper_bound = 1 + float(np.max(y**2.0))
    return var / 1e8, min_upper_bound, 1e7 * (1 + float(np.max(y**2.0)))


def _ewma_bounds(squared: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(T, A) ``ewma_recursion(0.94, ...)`` of arch: garch_recursion with parameters
    (0, 1 - λ, λ), the start value as backcast (so row t reads r²_{t-1}), bounds that never
    bind; its ``(0 + (1-λ)x) + λy`` is :func:`models.ewma.ewma_recursion`'s ``λy + (1-λ)x``
    to the last bit (adding 0 and the order of two terms change no float)."""
    lagged = np.vstack([starts[None, :], squared[:-1]])
    return ewma_recursion(lagged, starts, EWMA_LAMBDA)


def variance_bounds(y: np.ndarray) -> np.ndarray:
    """(n, 2) arch's variance bounds (power 2) of one asset's returns ``y``."""
    return _bounds([y])[0][:len(y)]


def _bounds(series: Sequence[np.ndarray]) -> list[np.ndarray]:
    squared = aligned([np.asarray(y, dtype=float) ** 2.0 for y in series], 0)
    starts = np.array([_ewma_starts(y) for y in series])
    var_bound = _ewma_bounds(squared, starts)
    out = []
    for a, y in enumerate(series):
        vb = np.vstack((var_bound[:len(y), a] / 1e6, var_bound[:len(y), a] * 1e6)).T
        lower, min_upper, upper = _limits(y)
        vb[vb[:, 0] < lower, 0] = lower
        vb[vb[:, 1] < min_upper, 1] = min_upper
        vb[vb[:, 1] > upper, 1] = upper
        out.append(vb)
    return out


def _clamp(s: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """arch's ``bounds_check``: below ``lo`` → lo; else above ``hi`` → hi + log(s/hi) (hi +
    1000 past the largest double)."""
    below, above = s < lo, s > hi
    if not (below.any() or above.any()):
        return s
    out = s.copy()
    out[below] = lo[below]
    above &= ~below
    if above.any():
        huge = above & (s > np.finfo(float).max)
        soft = np.flatnonzero(above & ~huge)
        # libm's log, as arch's compiled loop calls it: numpy's own log differs from it in
        # the last bit for a few ratios (14 of 4,000 in [1, 2) on an AVX-512 machine), and
        # a value over the upper bound is rare enough to take one at a time
        out[soft] = [h + math.log(v / h) for v, h in zip(s[soft], hi[soft], strict=True)]
        out[huge] = hi[huge] + 1000
    return out


def one_step_variances(params: Sequence[dict[str, float]], returns: Sequence[np.ndarray],
                       at: Sequence[np.ndarray], p: int = 1, q: int = 1
                       ) -> list[np.ndarray]:
    """Per asset, the one-step variance at the cutoffs ``at[i]`` (positions in
    ``returns[i]``) of a GARCH(p, q) with ``params[i]`` (arch's names: ``omega``,
    ``alpha[j]``, ``beta[j]``), in the returns' units squared: what
    :func:`models.garch.one_step_variance` returns, bit for bit."""
    if not returns:
        return []
    ys = [np.asarray(y, dtype=float) for y in returns]
    bounds = _bounds(ys)
    # one step past each asset's end: resid 0, bounds [0, inf) (arch's _one_step_forecast)
    fresids = aligned([np.absolute(y) ** 2.0 for y in ys], 1)
    rows, cols = fresids.shape
    lo, hi = np.zeros((rows, cols)), np.full((rows, cols), np.inf)
    for a, vb in enumerate(bounds):
        lo[:len(vb), a], hi[:len(vb), a] = vb[:, 0], vb[:, 1]
    start = np.array([backcast(y) for y in ys])
    omega = np.array([x["omega"] for x in params])
    alpha = [np.array([x[f"alpha[{j + 1}]"] for x in params]) for j in range(p)]
    beta = [np.array([x[f"beta[{j + 1}]"] for x in params]) for j in range(q)]
    sigma2 = np.empty((rows, cols))
    for t in range(rows):
        s = omega.copy()
        for j in range(p):
            s += alpha[j] * (start if t - 1 - j < 0 else fresids[t - 1 - j])
        for j in range(q):
            s += beta[j] * (start if t - 1 - j < 0 else sigma2[t - 1 - j])
        sigma2[t] = _clamp(s, lo[t], hi[t])
    return [sigma2[np.asarray(idx) + 1, a] for a, idx in enumerate(at)]

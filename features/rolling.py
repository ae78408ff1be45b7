r"""Rolling second moments of a pair of series: correlation and regression beta.

For the valid pairs :math:`(x_i, y_i)` (both finite) in a window of :math:`n` pairs,

.. math::

    s_{xy} = \frac{1}{n-1}\Big(\sum x_i y_i - \frac{1}{n}\sum x_i \sum y_i\Big), \qquad
    \rho = \frac{s_{xy}}{\sqrt{s_{xx}\,s_{yy}}}, \qquad \beta_{x|y} = \frac{s_{xy}}{s_{yy}}

computed from prefix sums, so one pass serves every window and a value depends only on rows
up to its own (what the point-in-time tests check: the same prefix gives the same bits).
"""

from __future__ import annotations

import numpy as np

# A window whose variance is below this share of its mean square is treated as constant: the
# prefix-sum formula cannot tell a zero variance from rounding noise there.
_REL_VAR_FLOOR = 1e-10


def _window_sum(prefix: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum over rows ``starts[i] .. i`` given ``prefix = [0, cumsum(values)]``."""
    ends = np.arange(1, len(prefix))
    return prefix[ends] - prefix[starts]


def trailing_starts(length: int, window: int) -> np.ndarray:
    """First row of each trailing ``window``-row window (rows ``i-window+1 .. i``)."""
    return np.maximum(np.arange(length) - window + 1, 0)


def calendar_starts(dates: np.ndarray, window_days: int) -> np.ndarray:
    """First row whose date is within the trailing ``window_days`` calendar days (inclusive).

    ``dates`` are sorted day stamps; row ``i``'s window is dates in
    :math:`[d_i - (w-1), d_i]`, the same span as pandas' ``rolling(f"{w}D")``.
    """
    stamps = np.asarray(dates, dtype="datetime64[ns]")
    lower = stamps - np.timedelta64(window_days - 1, "D")
    return np.searchsorted(stamps, lower, side="left")


def rolling_corr_beta(
    x: np.ndarray, y: np.ndarray, starts: np.ndarray, min_obs: int
) -> tuple[np.ndarray, np.ndarray]:
    r"""Rolling correlation of ``x`` with ``y`` and beta of ``x`` on ``y`` (formulas above).

    Parameters
    ----------
    x, y : ndarray
        Aligned 1-d float arrays; NaN marks a missing observation (the pair is skipped).
    starts : ndarray
        First row of each row's window (:func:`trailing_starts`, :func:`calendar_starts`).
    min_obs : int
        Least number of valid pairs in a window; fewer gives NaN.

    Returns
    -------
    (corr, beta) : tuple of ndarray
        NaN where the window has too few pairs or either series is constant in it.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    valid = np.isfinite(x) & np.isfinite(y)
    xv, yv = np.where(valid, x, 0.0), np.where(valid, y, 0.0)

    def wsum(values: np.ndarray) -> np.ndarray:
        return _window_sum(np.concatenate([[0.0], np.cumsum(values)]), starts)

    n = wsum(valid.astype(float))
    sx, sy = wsum(xv), wsum(yv)
    sxx, syy, sxy = wsum(xv * xv), wsum(yv * yv), wsum(xv * yv)
    with np.errstate(divide="ignore", invalid="ignore"):
        cxy = (sxy - sx * sy / n) / (n - 1.0)
        cxx = (sxx - sx * sx / n) / (n - 1.0)
        cyy = (syy - sy * sy / n) / (n - 1.0)
        ok = (n >= max(min_obs, 2)) & (cxx > _REL_VAR_FLOOR * sxx / n) & (
            cyy > _REL_VAR_FLOOR * syy / n)
        corr = np.where(ok, np.clip(cxy / np.sqrt(cxx * cyy), -1.0, 1.0), np.nan)
        beta = np.where(ok, cxy / cyy, np.nan)
    return corr, beta

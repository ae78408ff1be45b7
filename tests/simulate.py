r"""A seeded GARCH(1,1) feature panel for tests: the schema's columns, known dynamics, no I/O.

Per asset :math:`i` (parameters drawn around the crypto-like values below, so assets differ)

.. math::

    \sigma_t^2 = \omega + \alpha r_{t-1}^2 + \beta \sigma_{t-1}^2, \qquad
    r_t = \sigma_t z_t, \quad z_t \sim t_6 \sqrt{4/6}

with :math:`\omega \approx 2\cdot10^{-5}, \alpha \approx 0.08, \beta \approx 0.9`
(unconditional variance ≈ 1e-3, a daily vol of ~3%). The variance proxies are unbiased but
noisy measurements of :math:`\sigma_t^2`:

* ``rv_hourly = σ² · exp(0.5 ε - 0.125)`` for the **first** asset only (``n_hours`` 24,
  ``rv_is_hourly`` True); NaN with ``n_hours`` 0 for the others;
* ``gk_var = σ² · exp(0.8 ε' - 0.32)`` for every asset (a range estimator is noisier);
* ``rv`` is ``rv_hourly`` where it exists, else ``gk_var``, exactly as the schema defines it.

``har_rv_{1,7,30}d`` are trailing means of ``rv`` (NaN until the window is full);
``dvol_var_1d`` is 1.1 × the trailing 30-day mean of σ² (a variance risk premium), available
from day 200 only (``dvol_available`` False and NaN before); ``dvol_is_own`` is True for the
first asset; ``corr_spx_30d`` is 0.2 plus small noise; ``log_dollar_volume = log(close·1e6)``.

Example
-------
>>> panel = simulate_panel(("AAA", "BBB"), n_days=300, seed=1)
>>> panel.index.names, len(panel)
(FrozenList(['asset', 'date']), 600)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.targets import forward_variance

DVOL_FIRST_DAY = 200  # DVOL starts late in the real data too (2021-03); test the mask


def _garch_path(rng: np.random.Generator, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """(σ², r) of one GARCH(1,1)-t6 path started at its unconditional variance."""
    alpha = 0.08 * rng.uniform(0.75, 1.25)
    persistence = rng.uniform(0.965, 0.985)
    beta = persistence - alpha
    omega = 2e-5 * rng.uniform(0.5, 1.5)
    z = rng.standard_t(6, size=n_days) * np.sqrt(4.0 / 6.0)  # unit variance
    sigma2 = np.empty(n_days)
    r = np.empty(n_days)
    sigma2[0] = omega / (1.0 - persistence)
    for t in range(n_days):
        if t > 0:
            sigma2[t] = omega + alpha * r[t - 1] ** 2 + beta * sigma2[t - 1]
        r[t] = np.sqrt(sigma2[t]) * z[t]
    return sigma2, r


def _asset_frame(
    rng: np.random.Generator, dates: pd.DatetimeIndex, hourly: bool, own_dvol: bool
) -> pd.DataFrame:
    n = len(dates)
    sigma2, r = _garch_path(rng, n)
    close = 100.0 * np.exp(np.cumsum(r))
    gk_var = sigma2 * np.exp(0.8 * rng.standard_normal(n) - 0.32)
    rv_hourly = sigma2 * np.exp(0.5 * rng.standard_normal(n) - 0.125)
    if not hourly:
        rv_hourly = np.full(n, np.nan)
    rv = pd.Series(np.where(np.isnan(rv_hourly), gk_var, rv_hourly), index=dates)
    dvol = pd.Series(sigma2 * 1.1, index=dates).rolling(30, min_periods=30).mean()
    dvol_available = (np.arange(n) >= DVOL_FIRST_DAY) & dvol.notna().to_numpy()
    return pd.DataFrame(
        {
            "close": close,
            "ret_1d": r,
            "gk_var": gk_var,
            "rv_hourly": rv_hourly,
            "n_hours": np.full(n, 24 if hourly else 0),
            "rv": rv.to_numpy(),
            "rv_is_hourly": np.full(n, hourly),
            "har_rv_1d": rv.to_numpy(),
            "har_rv_7d": rv.rolling(7, min_periods=7).mean().to_numpy(),
            "har_rv_30d": rv.rolling(30, min_periods=30).mean().to_numpy(),
            "dvol_var_1d": np.where(dvol_available, dvol.to_numpy(), np.nan),
            "dvol_is_own": np.full(n, own_dvol),
            "dvol_available": dvol_available,
            "corr_spx_30d": np.clip(0.2 + 0.05 * rng.standard_normal(n), -1.0, 1.0),
            "log_dollar_volume": np.log(close * 1e6),
        },
        index=dates,
    )


def simulate_panel(
    assets: Sequence[str] = ("AAA", "BBB"),
    n_days: int = 900,
    seed: int = 0,
    start: str = "2020-01-01",
    with_targets: bool = False,
) -> pd.DataFrame:
    """A (asset, date)-indexed feature panel driven by per-asset GARCH(1,1)-t6 paths.

    Parameters
    ----------
    assets : asset names; the first one has hourly RV and its own DVOL.
    n_days : consecutive daily rows per asset, starting at ``start``.
    seed : every number is a function of (seed, asset position): same seed, same panel.
    start : first date (UTC day, tz-naive).
    with_targets : also add ``target_variance_1d``, ``target_variance_7d`` and
        ``target_return_1d`` (built with :mod:`features.targets`, as the real panel is).
    """
    dates = pd.date_range(start, periods=n_days, freq="D", name="date").as_unit("ns")
    frames = []
    for i in range(len(assets)):
        rng = np.random.default_rng([seed, i])
        frame = _asset_frame(rng, dates, hourly=i == 0, own_dvol=i == 0)
        if with_targets:
            frame["target_variance_1d"] = forward_variance(frame["rv"], 1)
            frame["target_variance_7d"] = forward_variance(frame["rv"], 7)
            frame["target_return_1d"] = frame["ret_1d"].shift(-1)
        frames.append(frame)
    return pd.concat(frames, keys=list(assets), names=["asset", "date"]).sort_index()

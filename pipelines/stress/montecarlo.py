r"""Joint filtered historical simulation (FHS) of the whole book's assets.

Each asset's daily log return is standardized by its point-in-time EWMA σ,
:math:`z_{t,k} = r_{t,k} / \hat\sigma_{t,k}` (:func:`pipelines.stress.scenarios.ewma_sigma`).
A path draws ``horizon`` dates with replacement and applies the **whole cross-section** of
that date, rescaled to today's forecast σ,

.. math::
    x_{h,k} = \sum_{j \le h} z_{d_j,k}\, \hat\sigma_{\mathrm{today},k},

so the assets of a path crash together exactly when they crashed together in history: the
correlations and the tail dependence of the data are kept, not modelled (Barone-Adesi,
Giannopoulos & Vosper 1999; the joint version is what CCPs' FHS VaR does). Only dates on
which every asset has a standardized return are drawn (complete cross-sections, counted);
dates after the as-of are never in the pool. A daily step is longer than the liquidation
delay, so a path's trigger executes at the step's own close (``delay_steps = 0``): the gap
risk of a day is in, the intraday path is not.

**Student-t copula** (optional, ``stress.t_copula_dof``): the same FHS marginals (each
asset's empirical distribution of *z*) joined by a t copula on the EWMA correlation of the
standardized returns at the as-of (the RiskMetrics correlation forecast),

.. math::
    T = G / \sqrt{W/\nu},\ G \sim N(0, R),\ W \sim \chi^2_\nu, \qquad
    z_k = \hat F_k^{-1}\big(t_\nu(T_k)\big),

which draws co-crashes the history did not hold exactly (tail dependence grows as ν falls)
while keeping every marginal as it was observed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pipelines.stress.scenarios import Scenario, ewma_sigma


def standardized_returns(daily: dict[str, pd.DataFrame], assets: list[str],
                         decay: float) -> pd.DataFrame:
    """Dates × assets standardized daily log returns, complete cross-sections only."""
    z = {}
    for a in assets:
        close = daily[a]["close"]
        z[a] = np.log(close).diff() / ewma_sigma(close, decay)
    frame = pd.DataFrame(z)[assets]
    return frame.replace([np.inf, -np.inf], np.nan).dropna()


def fhs_paths(z: np.ndarray, sigma_today: np.ndarray, n_paths: int, horizon: int,
              seed: int) -> np.ndarray:
    """Price relatives (P, horizon + 1, K) from resampled cross-sections of ``z`` (D, K)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(z), size=(n_paths, horizon))  # (P, H) dates, shared by assets
    x = np.cumsum(z[idx] * sigma_today, axis=1)  # (P, H, K)
    return np.exp(np.concatenate([np.zeros((n_paths, 1, z.shape[1])), x], axis=1))


def monte_carlo(daily: dict[str, pd.DataFrame], assets: list[str], sigma_today: np.ndarray,
                n_paths: int, horizon: int, seed: int, decay: float) -> Scenario:
    """The joint FHS scenario over ``assets`` (see the module docstring)."""
    z = standardized_returns(daily, assets, decay)
    if len(z) < 250:
        raise ValueError(f"joint FHS needs >= 250 dates on which all of {', '.join(assets)} "
                         f"have a return; only {len(z)} (an asset listed too recently?)")
    rel = fhs_paths(z.to_numpy(float), sigma_today, n_paths, horizon, seed)
    note = (f"{len(z)} complete cross-sections {z.index[0].date()}..{z.index[-1].date()}, "
            f"{n_paths} paths × {horizon} day(s), seed {seed}")
    return Scenario("fhs_joint", "monte_carlo", rel, 0, assets,
                    dict.fromkeys(assets, "fhs"), note=note)


def ewma_correlation(z: np.ndarray, decay: float) -> np.ndarray:
    r"""EWMA correlation of the rows of ``z`` (D, K), the newest row weighted most:
    :math:`\Sigma = \sum_t w_t z_t z_t^\top`, :math:`w_t \propto \lambda^{D-1-t}`."""
    w = decay ** np.arange(len(z) - 1, -1, -1.0)
    cov = (z * (w / w.sum())[:, None]).T @ z  # (K, K)
    d = np.sqrt(np.diag(cov))
    corr = cov / np.outer(d, d)
    vals, vecs = np.linalg.eigh((corr + corr.T) / 2)
    corr = (vecs * np.maximum(vals, 1e-8)) @ vecs.T  # nearest PSD; then unit diagonal again
    d = np.sqrt(np.diag(corr))
    return corr / np.outer(d, d)


def t_copula_paths(z: np.ndarray, sigma_today: np.ndarray, corr: np.ndarray, dof: float,
                   n_paths: int, horizon: int, seed: int) -> np.ndarray:
    """Price relatives (P, horizon + 1, K): t-copula dependence, empirical FHS marginals."""
    rng = np.random.default_rng(seed)
    k = z.shape[1]
    g = rng.standard_normal((n_paths, horizon, k)) @ np.linalg.cholesky(corr).T  # (P, H, K)
    t = g / np.sqrt(rng.chisquare(dof, (n_paths, horizon, 1)) / dof)
    u = stats.t.cdf(t, dof)  # (P, H, K) uniforms with t dependence
    marg = np.stack([np.quantile(z[:, j], u[..., j]) for j in range(k)], axis=-1)
    x = np.cumsum(marg * sigma_today, axis=1)
    return np.exp(np.concatenate([np.zeros((n_paths, 1, k)), x], axis=1))


def t_copula(daily: dict[str, pd.DataFrame], assets: list[str], sigma_today: np.ndarray,
             n_paths: int, horizon: int, seed: int, decay: float, dof: float) -> Scenario:
    """The Student-t copula scenario over ``assets`` (see the module docstring)."""
    z = standardized_returns(daily, assets, decay).to_numpy(float)
    corr = ewma_correlation(z, decay)
    rel = t_copula_paths(z, sigma_today, corr, dof, n_paths, horizon, seed)
    note = f"t copula nu={dof:g} on the EWMA correlation, FHS marginals of {len(z)} dates"
    return Scenario("t_copula", "monte_carlo", rel, 0, assets,
                    dict.fromkeys(assets, "t_copula"), note=note)

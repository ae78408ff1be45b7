r"""Joint filtered historical simulation (FHS) of the whole book's assets.

Each asset's daily log return is standardized by its point-in-time EWMA σ,
:math:`z_{t,k} = r_{t,k} / \hat\sigma_{t,k}` (:func:`pipelines.stress.scenarios.ewma_sigma`).
A path draws ``horizon`` dates with replacement and applies the **whole cross-section** of
that date, rescaled to today's σ of the same filter (the EWMA σ of the day after the as-of,
:func:`pipelines.stress.scenarios.ewma_sigma_after`, not the published model's),

.. math::
    x_{h,k} = \sum_{j \le h} z_{d_j,k}\, \hat\sigma_{\mathrm{today},k},

so the assets of a path crash together exactly when they crashed together in history: the
correlations and the tail dependence of the data are kept, not modelled (Barone-Adesi,
Giannopoulos & Vosper 1999; the joint version is what CCPs' FHS VaR does). Only dates on
which every asset has a standardized return are drawn (complete cross-sections, counted);
dates after the as-of are never in the pool. A daily step is longer than the liquidation
delay, so a path's trigger executes at the step's own close (``delay_steps = 0``): the gap
risk of a day is in, the intraday path is not.

**Young assets** (:func:`fhs_pool`). The pool needs :data:`MIN_DATES` complete
cross-sections, and at least ``min_share`` (:data:`MIN_HISTORY_SHARE`,
``stress.pool_min_history_share``) of the longest asset's standardized history: one asset
listed a few months ago would shrink the complete cross-sections of the whole book below a
year and, before, cancelled the joint scenarios for every asset; one listed two years ago
would cut the pool to its listing and leave every earlier crash out. As clearing houses do
for a new product (a proxy time series), the assets with the longest histories whose
complete cross-sections reach both bounds are *seasoned*;
each other asset draws, on every resampled date, the standardized return of its **proxy**:
the seasoned asset whose standardized returns correlate most with its own over their
common dates (at least :data:`PROXY_MIN_OBS`; with fewer, the seasoned asset with the
longest history). Its own σ still scales the move, so a young asset moves with its proxy's
tail shape and crash timing at its own volatility. Its source is ``proxy:<asset>`` in the
scenario and the note names every proxy; no seasoned asset at all is an error.

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

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipelines.stress.scenarios import Scenario, ewma_sigma

MIN_DATES = 250  # complete cross-sections the joint scenarios draw from (a year of days)
# ... and at least this share of the longest standardized history, so that one asset with a
# year or two of history cannot cut the pool to the youngest seasoned asset's listing and
# leave the crashes before it (2020-03, 2018) out of every draw
MIN_HISTORY_SHARE = 0.8
PROXY_MIN_OBS = 30  # common standardized returns needed to choose a proxy by correlation


def _standardized(daily: dict[str, pd.DataFrame], assets: list[str], decay: float
                  ) -> pd.DataFrame:
    """Dates × assets standardized daily log returns, NaN where an asset has none."""
    z = {}
    for a in assets:
        close = daily[a]["close"]
        z[a] = np.log(close).diff() / ewma_sigma(close, decay)
    return pd.DataFrame(z)[assets].replace([np.inf, -np.inf], np.nan)


def standardized_returns(daily: dict[str, pd.DataFrame], assets: list[str],
                         decay: float) -> pd.DataFrame:
    """Dates × assets standardized daily log returns, complete cross-sections only."""
    return _standardized(daily, assets, decay).dropna()


@dataclass(frozen=True)
class Pool:
    """The dates a joint scenario draws from: ``z`` (dates × every asset asked, complete),
    a young asset's column being its proxy's; ``proxies``: young asset → seasoned proxy."""

    z: pd.DataFrame
    proxies: dict[str, str]

    def sources(self, seasoned: str) -> dict[str, str]:
        return {a: (f"proxy:{self.proxies[a]}" if a in self.proxies else seasoned)
                for a in self.z.columns}

    def describe(self) -> str:
        z = self.z
        text = (f"{len(z)} complete cross-sections {z.index[0].date()}..{z.index[-1].date()}")
        if self.proxies:
            text += "; too young for the pool, moved by a proxy: " + ", ".join(
                f"{a} by {p}" for a, p in self.proxies.items())
        return text


def proxies_for(young: pd.DataFrame, seasoned: pd.DataFrame, min_obs: int = PROXY_MIN_OBS
                ) -> dict[str, str]:
    """Each column of ``young`` → the column of ``seasoned`` whose values correlate most with
    it over their common dates (at least ``min_obs``; ties: the first column); the first
    column when none has that many (``seasoned`` is ordered longest history first). The
    pairwise-complete Pearson correlations of all (young, seasoned) pairs come from masked
    matrix products (one pandas ``corrwith`` per young asset was young × seasoned × days of
    Python-level work, ~25 s at 1,000 assets once most assets are young); equal to
    ``corrwith`` column by column (test)."""
    y, x = young.to_numpy(float), seasoned.to_numpy(float)
    my, mx = np.isfinite(y).astype(float), np.isfinite(x).astype(float)
    y0, x0 = np.where(my > 0, y, 0.0), np.where(mx > 0, x, 0.0)
    n = my.T @ mx                                   # (Y, S) common dates
    sy, sx = y0.T @ mx, my.T @ x0                   # sums over the common dates
    syy, sxx, sxy = (y0**2).T @ mx, my.T @ (x0**2), y0.T @ x0
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = n * sxy - sx * sy
        corr = cov / np.sqrt((n * sxx - sx**2) * (n * syy - sy**2))
    eligible = (n >= min_obs) & np.isfinite(corr)
    score = np.where(eligible, corr, -np.inf)
    best = np.argmax(score, axis=1)  # ties: the first column (longest history first)
    names = [str(c) for c in seasoned.columns]
    return {str(a): names[int(best[i])] if eligible[i].any() else names[0]
            for i, a in enumerate(young.columns)}


def fhs_pool(daily: dict[str, pd.DataFrame], assets: list[str], decay: float,
             min_dates: int = MIN_DATES, min_share: float = MIN_HISTORY_SHARE) -> Pool:
    """Complete cross-sections of the seasoned assets, young assets moved by their proxy
    (module docstring). When every asset is seasoned this is
    :func:`standardized_returns`, exactly."""
    z = _standardized(daily, assets, decay)
    count = z.notna().sum()
    seasoned = sorted(assets, key=lambda a: (-int(count[a]), assets.index(a)))
    longest = int(count.max()) if len(count) else 0
    need = max(min_dates, math.ceil(min_share * longest))
    while seasoned and len(z[seasoned].dropna()) < need:
        seasoned.pop()  # the asset with the shortest history leaves the pool first
    if not seasoned:
        raise ValueError(f"joint scenarios need >= {min_dates} dates with a standardized "
                         f"return of at least one of {', '.join(assets)}; none has them")
    pool = z[seasoned].dropna()
    young = [a for a in assets if a not in seasoned]
    proxies = proxies_for(z[young], z[seasoned]) if young else {}
    columns = {a: pool[proxies.get(a, a)] for a in assets}
    return Pool(pd.DataFrame(columns, index=pool.index)[assets], proxies)


def fhs_paths(z: np.ndarray, sigma_today: np.ndarray, n_paths: int, horizon: int,
              seed: int) -> np.ndarray:
    """Price relatives (P, horizon + 1, K) from resampled cross-sections of ``z`` (D, K)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(z), size=(n_paths, horizon))  # (P, H) dates, shared by assets
    x = np.cumsum(z[idx] * sigma_today, axis=1)  # (P, H, K)
    return np.exp(np.concatenate([np.zeros((n_paths, 1, z.shape[1])), x], axis=1))


def monte_carlo(daily: dict[str, pd.DataFrame], assets: list[str], sigma_today: np.ndarray,
                n_paths: int, horizon: int, seed: int, decay: float,
                min_share: float = MIN_HISTORY_SHARE) -> Scenario:
    """The joint FHS scenario over ``assets`` (see the module docstring)."""
    pool = fhs_pool(daily, assets, decay, min_share=min_share)
    rel = fhs_paths(pool.z.to_numpy(float), sigma_today, n_paths, horizon, seed)
    note = f"{pool.describe()}, {n_paths} paths × {horizon} day(s), seed {seed}"
    return Scenario("fhs_joint", "monte_carlo", rel, 0, assets, pool.sources("fhs"),
                    note=note)


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
             n_paths: int, horizon: int, seed: int, decay: float, dof: float,
             min_share: float = MIN_HISTORY_SHARE) -> Scenario:
    """The Student-t copula scenario over ``assets`` (see the module docstring). The copula
    joins the seasoned assets of :func:`fhs_pool`; a young asset takes its proxy's draws of
    standardized moves at its own σ (a column equal to another has no correlation matrix
    to factor)."""
    pool = fhs_pool(daily, assets, decay, min_share=min_share)
    seasoned = [a for a in assets if a not in pool.proxies]
    at = {a: i for i, a in enumerate(assets)}
    z = pool.z[seasoned].to_numpy(float)
    corr = ewma_correlation(z, decay)
    sigma = np.asarray(sigma_today, float)
    rel_s = t_copula_paths(z, sigma[[at[a] for a in seasoned]], corr, dof, n_paths,
                           horizon, seed)
    rel = np.empty((*rel_s.shape[:2], len(assets)))
    for j, a in enumerate(seasoned):
        rel[..., at[a]] = rel_s[..., j]
    for a, proxy in pool.proxies.items():
        j = seasoned.index(proxy)
        rel[..., at[a]] = np.exp(np.log(rel_s[..., j]) / sigma[at[proxy]] * sigma[at[a]])
    note = f"t copula nu={dof:g} on the EWMA correlation, FHS marginals of {pool.describe()}"
    return Scenario("t_copula", "monte_carlo", rel, 0, assets, pool.sources("t_copula"),
                    note=note)

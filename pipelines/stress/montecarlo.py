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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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

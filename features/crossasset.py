r"""Cross-asset crypto features: beta to BTC and the basket's average correlation (contagion).

Both use the daily log returns of every asset in the build (the *basket*: the assets passed to
:func:`features.build.build_panel`) on one UTC calendar; crypto days align exactly, so no lag
is needed — everything at row :math:`t` closed by 24:00 UTC of day :math:`t`.

**Beta to BTC** over days :math:`t-w+1..t` (pairs where both returns exist):

.. math:: \beta^{BTC}_t = \frac{\mathrm{Cov}(r^{a}, r^{BTC})}{\mathrm{Var}(r^{BTC})}

BTC's own beta is exactly 1 where its window has enough returns and NaN otherwise; every asset
gets NaN when BTC is not in the build.

**Basket correlation** (a contagion indicator: correlations go to one in a sell-off):

.. math::

    \bar\rho_t = \frac{2}{|A_t|(|A_t|-1)} \sum_{i<j \in A_t} \rho^{(w)}_{ij,t}

where :math:`A_t` is the set of assets *trading at* :math:`t` (a return exists for day
:math:`t`: listed, not delisted, no gap) and :math:`\rho^{(w)}_{ij,t}` the correlation over the
days of the window where both returned; pairs without ``corr_min_obs`` such days are left out
of the mean. An asset listed later or delisted (MATIC after 2024-09-10) therefore never enters
the value of a day it did not trade. The value is the same for every asset on a day.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from features.rolling import rolling_corr_beta, trailing_starts

BENCHMARK_ASSET = "BTC"
BETA_WINDOW = 30  # days; part of the column name
BASKET_WINDOW = 30


def wide_returns(returns: dict[str, pd.Series]) -> pd.DataFrame:
    """Daily returns of every asset on the union calendar (date × asset, NaN where absent)."""
    wide = pd.DataFrame(returns).sort_index()
    full = pd.date_range(wide.index.min(), wide.index.max(), freq="D", name="date")
    return wide.reindex(full)


def beta_to_benchmark(
    wide: pd.DataFrame, window: int, min_obs: int, benchmark: str = BENCHMARK_ASSET
) -> pd.DataFrame:
    """Rolling beta of each asset's return on ``benchmark``'s (date × asset); see module doc."""
    out = pd.DataFrame(np.nan, index=wide.index, columns=wide.columns)
    if benchmark not in wide.columns:
        return out
    starts = trailing_starts(len(wide), window)
    bench = wide[benchmark].to_numpy()
    for asset in wide.columns:
        _, beta = rolling_corr_beta(wide[asset].to_numpy(), bench, starts, min_obs)
        out[asset] = beta
    # cov(x, x)/var(x) is 1 up to rounding: state it exactly.
    out[benchmark] = np.where(np.isfinite(out[benchmark]), 1.0, np.nan)
    return out


def basket_correlation(wide: pd.DataFrame, window: int, min_obs: int) -> pd.DataFrame:
    """Average pairwise rolling correlation of the assets trading at each date.

    Returns
    -------
    DataFrame
        Indexed like ``wide``: ``basket_corr`` (NaN with fewer than one defined pair) and
        ``basket_n_assets`` (assets trading that day, int64).
    """
    starts = trailing_starts(len(wide), window)
    values = wide.to_numpy(dtype=float)  # (T, A)
    trading = np.isfinite(values)
    total = np.zeros(len(wide))
    pairs = np.zeros(len(wide))
    for i, j in combinations(range(values.shape[1]), 2):
        corr, _ = rolling_corr_beta(values[:, i], values[:, j], starts, min_obs)
        use = trading[:, i] & trading[:, j] & np.isfinite(corr)
        total += np.where(use, corr, 0.0)
        pairs += use
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(pairs > 0, total / pairs, np.nan)
    return pd.DataFrame({"basket_corr": mean, "basket_n_assets": trading.sum(axis=1)},
                        index=wide.index).astype({"basket_n_assets": "int64"})


def cross_asset_features(
    returns: dict[str, pd.Series], min_obs: int
) -> dict[str, pd.DataFrame]:
    """Per asset: ``beta_btc_30d``, ``basket_corr_30d``, ``basket_n_assets`` on its calendar."""
    if not returns:
        return {}
    wide = wide_returns(returns)
    beta = beta_to_benchmark(wide, BETA_WINDOW, min_obs)
    basket = basket_correlation(wide, BASKET_WINDOW, min_obs)
    out = {}
    for asset, ret in returns.items():
        frame = pd.DataFrame(index=ret.index)
        frame[f"beta_btc_{BETA_WINDOW}d"] = beta[asset].reindex(ret.index)
        frame[f"basket_corr_{BASKET_WINDOW}d"] = basket["basket_corr"].reindex(ret.index)
        frame["basket_n_assets"] = basket["basket_n_assets"].reindex(ret.index)
        out[asset] = frame
    return out

r"""``ewma94``: the RiskMetrics (J.P. Morgan/Reuters, 1996) exponentially weighted variance.

.. math::
    \sigma^2_{t+1} = \lambda\,\sigma^2_t + (1-\lambda)\,r_t^2, \qquad \lambda = 0.94,
    \qquad \operatorname{Var}_t\Big(\sum_{k=1}^{h} r_{t+k}\Big) = h\,\sigma^2_{t+1}

The recursion is an IGARCH(1,1) without intercept, so the term structure is flat: the
:math:`h`-day variance is :math:`h` times the one-day one (the square-root-of-time rule).
Returns are raw (zero mean), as for the GARCH models. It is what clearing houses run for
filtered historical simulation, hence the reference point for every other forecaster.

**Initialisation.** :math:`\sigma^2` after the first ``init_obs`` (30) returns of the data
handed to :meth:`~EwmaForecaster.forecast` is their mean square; the recursion runs from
there, and no forecast is made at earlier cutoffs. With :math:`\lambda = 0.94` the weight of
the start value decays below 1% after 75 days, so the choice does not reach the backtest
(which starts years after each asset's first day).

Nothing is estimated: :meth:`~EwmaForecaster.fit` only records the assets it saw (assets
unknown to fit are skipped at forecast time, as for every model).

Example
-------
>>> r = np.array([0.01, -0.02, 0.03])
>>> ewma_variance(r, decay=0.9, init_obs=2)          # σ²_{t+1} at each t
array([     nan, 0.00025 , 0.000315])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd

from configs.schema import EwmaConfig
from models.base import asset_blocks, concat_forecasts, forecast_columns


def ewma_variance(returns: np.ndarray, decay: float, init_obs: int) -> np.ndarray:
    """One-day-ahead variance at each return's date (NaN before ``init_obs`` returns)."""
    return ewma_variances([returns], decay, init_obs)[0]


def ewma_variances(series: Sequence[np.ndarray], decay: float, init_obs: int
                   ) -> list[np.ndarray]:
    r""":func:`ewma_variance` of each of ``series``, every series in one pass over time.

    The recursion is ``scipy.signal.lfilter([1 - λ], [1, -λ], r², zi=[λ·start])``'s, step
    for step (its state is :math:`z = 0·r^2 - (-λ)\,y = λy`, then :math:`y = z + (1-λ) r^2`),
    so for finite returns the values are lfilter's to the last bit (a test compares them;
    an infinite r² would give inf here where lfilter's 0·inf gives NaN, and the loaders
    refuse the prices that could make one) without importing
    ``scipy.signal`` (0.8 s of a fresh serve whose other steps took 0.4 s)."""
    squared = [np.asarray(r, dtype=float) ** 2 for r in series]
    out = [np.full(r2.shape, np.nan) for r2 in squared]
    live = [i for i, r2 in enumerate(squared) if len(r2) >= init_obs]
    if not live:
        return out
    start = np.array([squared[i][:init_obs].mean() for i in live])
    y = ewma_recursion(aligned([squared[i][init_obs:] for i in live]), start, decay)
    for j, i in enumerate(live):
        out[i][init_obs - 1] = start[j]
        out[i][init_obs:] = y[:len(squared[i]) - init_obs, j]
    return out


def aligned(series: Sequence[np.ndarray], extra: int = 0) -> np.ndarray:
    """(T, A) matrix of the series, each from row 0, ``extra`` rows of zeros past the
    longest (a column's rows past its own series are never read back)."""
    out = np.zeros((max(len(s) for s in series) + extra, len(series)))
    for a, s in enumerate(series):
        out[:len(s), a] = s
    return out


def ewma_recursion(x: np.ndarray, start: np.ndarray, decay: float) -> np.ndarray:
    """(T, A) :math:`y_t = λ y_{t-1} + (1-λ) x_t` down each column from :math:`y_{-1}` =
    ``start``: one step of every column at a time (the float operations of lfilter's and
    arch's scalar loops, in an order that gives their values exactly)."""
    weight = 1.0 - decay
    y = np.empty_like(x)
    prev = start
    for t in range(x.shape[0]):
        prev = prev * decay + weight * x[t]
        y[t] = prev
    return y


class EwmaForecaster:
    """RiskMetrics EWMA variance per asset; see the module docstring."""

    per_asset = True  # each asset on its own: the walk-forward may run assets apart

    def __init__(self, config: EwmaConfig | None = None, alias: str = "ewma94") -> None:
        self.config = config or EwmaConfig()
        self.alias = alias
        self.assets: list[str] = []

    def fit(self, panel: pd.DataFrame) -> Self:
        self.assets = sorted(str(a) for a in panel.index.get_level_values("asset").unique())
        return self

    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        panel, rows = asset_blocks(panel)  # slices of one sorted panel, not a cross-section each
        returns_all = panel["ret_1d"].to_numpy(dtype=float, na_value=np.nan)
        dates = panel.index.get_level_values("date")
        wanted_all = np.ones(len(dates), bool) if cutoffs is None else \
            dates.isin(pd.DatetimeIndex(cutoffs))
        present = [a for a in self.assets if a in rows]
        observed_rows = [rows[a][0] + np.flatnonzero(~np.isnan(returns_all[slice(*rows[a])]))
                         for a in present]  # gaps skipped
        variances = ewma_variances([returns_all[o] for o in observed_rows], self.config.decay,
                                   self.config.init_obs)  # every asset in one pass
        names, at_rows, one_day = [], [], []
        for asset, observed, sigma2 in zip(present, observed_rows, variances, strict=True):
            keep = ~np.isnan(sigma2) & wanted_all[observed]
            if not keep.any():
                continue
            names.append(asset)
            at_rows.append(observed[keep])
            one_day.append(sigma2[keep])
        if not names:
            return concat_forecasts([])
        n = [len(r) for r in at_rows]
        return forecast_columns(
            np.repeat(np.array(names, dtype=object), np.array(n) * len(horizons)),
            dates[np.concatenate([r for r in at_rows for _ in horizons])],
            np.concatenate([np.full(k, h) for k in n for h in horizons]),
            np.concatenate([h * v for v in one_day for h in horizons]))

    def state(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "kind": "ewma",
            "config": self.config.model_dump(mode="json"),
            "assets": list(self.assets),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        model = cls(EwmaConfig(**state["config"]), alias=state["alias"])
        model.assets = list(state["assets"])
        return model

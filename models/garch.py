"""GARCH-family baselines from ``arch``, fitted per asset on daily log returns.

.. math::
    r_t = \\sigma_t z_t, \\qquad
    \\sigma_t^2 = \\omega + \\alpha r_{t-1}^2 + \\beta \\sigma_{t-1}^2, \\qquad
    z_t \\sim t_\\nu \\text{ (unit variance)}

Bollerslev (1986); Student-t innovations after Bollerslev (1987). The mean is zero: the
realized proxy is a sum of *raw* squared returns, so the forecast must be of
:math:`E[r^2]`, and a daily crypto drift is statistically indistinguishable from zero anyway.

Spec vs result, as in ``arch``: :meth:`fit` estimates parameters; :meth:`forecast` rebuilds
the model on the data it is given, fixes the stored parameters (``arch_model(...).fix``) and
filters forward, so a forecast at cutoff ``t`` uses returns up to ``t`` only and serving
needs no pickle. Returns are scaled by 100 for the optimiser (arch's advice); variances are
scaled back to daily decimal².
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
from arch import arch_model

from models.base import asset_frame, concat_forecasts, forecast_frame, select_cutoffs
from pipelines.config import GarchConfig

SCALE = 100.0
MIN_OBS = 250  # fewer daily returns than this and the t-GARCH likelihood is too flat to trust


def _returns(frame: pd.DataFrame) -> pd.Series:
    # Missing days (NaN rows) are skipped: the recursion then treats the next return as
    # adjacent, which arch requires and which matters only across real gaps (none in Binance
    # daily data).
    return frame["ret_1d"].dropna() * SCALE


class GarchForecaster:
    """GARCH(1,1) with Student-t (``garch11_t``) or other innovations, per asset.

    Examples
    --------
    >>> from tests.simulate import simulate_panel
    >>> panel = simulate_panel(n_days=600)
    >>> model = GarchForecaster().fit(panel)
    >>> fc = model.forecast(panel, horizons=[1, 7])
    >>> bool((fc["variance"] > 0).all())
    True
    """

    def __init__(self, config: GarchConfig | None = None, alias: str = "garch11_t") -> None:
        self.config = config or GarchConfig()
        self.alias = alias
        self.params: dict[str, dict[str, float]] = {}

    def _spec(self, returns: pd.Series) -> Any:
        return arch_model(returns, mean="Zero", vol="GARCH", p=1, q=1, dist=self.config.dist)

    def fit(self, panel: pd.DataFrame) -> Self:
        self.params = {}
        for asset in panel.index.get_level_values("asset").unique():
            returns = _returns(asset_frame(panel, asset))
            if len(returns) < MIN_OBS:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is checked below, not warned
                res = self._spec(returns).fit(disp="off", options={"maxiter": 500})
            if res.convergence_flag != 0 or not np.all(np.isfinite(res.params)):
                continue  # no forecast beats a wrong one; the asset gets none from this model
            self.params[str(asset)] = {k: float(v) for k, v in res.params.items()}
        return self

    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        blocks = []
        max_h = max(horizons)
        for asset, params in self.params.items():
            if asset not in panel.index.get_level_values("asset"):
                continue
            returns = _returns(asset_frame(panel, asset))
            wanted = select_cutoffs(returns.index, cutoffs)
            if len(wanted) == 0 or len(returns) < 2:
                continue
            res = self._spec(returns).fix(pd.Series(params))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fc = res.forecast(horizon=max_h, start=wanted[0], reindex=False)
            # row t, column h.k: variance of day t+k given returns up to t (scaled²)
            path = fc.variance.loc[wanted].to_numpy() / SCALE**2  # (n_cutoffs, max_h)
            cumulative = np.cumsum(path, axis=1)
            for h in horizons:
                blocks.append(forecast_frame(asset, wanted, h, cumulative[:, h - 1]))
        return concat_forecasts(blocks)

    def state(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "kind": "garch",
            "config": self.config.model_dump(),
            "params": self.params,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        model = cls(GarchConfig(**state["config"]), alias=state["alias"])
        model.params = {a: dict(p) for a, p in state["params"].items()}
        return model

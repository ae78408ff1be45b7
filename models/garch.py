r"""GARCH-family baselines from ``arch``, fitted per asset on daily log returns.

Every alias is one row of :data:`GARCH_SPECS` — volatility process, lag orders ``p, o, q``
and innovation distribution, named as in ``arch`` — and one class serves them all:

.. math::
    r_t = \sigma_t z_t, \qquad z_t \text{ i.i.d., unit variance (Student-t or Hansen skew-t)}

    \text{GARCH / GJR:}\quad
    \sigma_t^2 = \omega + \alpha r_{t-1}^2 + \gamma r_{t-1}^2 \mathbb 1_{r_{t-1}<0}
        + \beta \sigma_{t-1}^2

    \text{EGARCH:}\quad
    \ln\sigma_t^2 = \omega + \alpha\big(|z_{t-1}| - \sqrt{2/\pi}\big) + \gamma z_{t-1}
        + \beta \ln\sigma_{t-1}^2

Bollerslev (1986); Glosten, Jagannathan and Runkle (1993); Nelson (1991); skew-t of Hansen
(1994). The mean is zero: the realized proxy is a sum of *raw* squared returns, so the forecast
must be of :math:`E[r^2]`, and a daily crypto drift is indistinguishable from zero anyway.

**Multi-day variance.** The ``h``-day forecast is :math:`\sum_{k=1}^{h} E_t[\sigma^2_{t+k}]`.
The one-step term is exact for every model. Beyond it:

* GARCH, and GJR with a *symmetric* distribution: arch's analytic recursion
  (:math:`E_t\sigma^2_{t+k+1} = \omega + (\alpha + \gamma/2 + \beta) E_t\sigma^2_{t+k}`).
* GJR with skew-t: arch's analytic recursion assumes :math:`E[z^2\mathbb 1_{z<0}] = 1/2`,
  which a skewed distribution breaks, so these forecasts are simulated.
* EGARCH: no closed form for ``h > 1``; simulated.

Simulated forecasts average ``simulations`` paths (1000 by default: the Monte Carlo standard
error of a 7-day variance is then well under 1% of it, small next to the QLIKE differences
between models) driven by **common random numbers**: the standardized shocks of step ``k`` are
drawn once per (seed, asset, k) from the fitted distribution and reused at every cutoff. A
forecast at cutoff ``t`` is then a deterministic function of the returns up to ``t`` — the
same whichever cutoffs are asked for together and however far the panel runs — and the
h-day forecast does not change when a longer horizon is requested with it.

Spec vs result, as in ``arch``: :meth:`GarchForecaster.fit` estimates parameters;
:meth:`~GarchForecaster.forecast` rebuilds the model on the data it is given, fixes the stored
parameters (``arch_model(...).fix``) and filters forward, so serving needs no pickle. arch's
backcast uses the first 75 returns of that data and its variance bounds (six orders of
magnitude around an EWMA, never binding for these parameters) are the only other inputs.
Returns are scaled by 100 for the optimiser (arch's advice); variances are scaled back to
daily decimal².
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from arch import arch_model
from arch.univariate.distribution import Distribution

from models.base import asset_frame, concat_forecasts, forecast_frame, select_cutoffs
from pipelines.config import GarchConfig

SCALE = 100.0
MIN_OBS = 250  # fewer daily returns than this and the t-GARCH likelihood is too flat to trust
SYMMETRIC = ("normal", "t")


@dataclass(frozen=True)
class GarchSpec:
    vol: Literal["GARCH", "EGARCH"]
    p: int
    o: int
    q: int
    dist: Literal["normal", "t", "skewt"]

    @property
    def analytic(self) -> bool:
        """True where arch's analytic multi-step recursion is exact for this model."""
        return self.vol == "GARCH" and (self.o == 0 or self.dist in SYMMETRIC)


GARCH_SPECS: dict[str, GarchSpec] = {
    "garch11_t": GarchSpec("GARCH", 1, 0, 1, "t"),
    "garch11_skewt": GarchSpec("GARCH", 1, 0, 1, "skewt"),
    "gjr_t": GarchSpec("GARCH", 1, 1, 1, "t"),
    "gjr_skewt": GarchSpec("GARCH", 1, 1, 1, "skewt"),
    "egarch_t": GarchSpec("EGARCH", 1, 1, 1, "t"),
}


def _returns(frame: pd.DataFrame) -> pd.Series:
    # Missing days (NaN rows) are skipped: the recursion then treats the next return as
    # adjacent, which arch requires and which matters only across real gaps (none in Binance
    # daily data).
    return frame["ret_1d"].dropna() * SCALE


def common_shocks(
    dist: Distribution, dist_params: np.ndarray, seed: int, asset: str, simulations: int,
    horizon: int,
) -> np.ndarray:
    """(simulations, horizon) standardized shocks; column ``k`` depends on (seed, asset, k) only."""
    columns = []
    for k in range(horizon):
        rng = np.random.default_rng([seed, zlib.crc32(asset.encode()), k])
        columns.append(type(dist)(seed=rng).simulate(dist_params)(simulations))
    return np.column_stack(columns)


class GarchForecaster:
    """One arch GARCH-family model (an alias of :data:`GARCH_SPECS`), fitted per asset.

    Examples
    --------
    >>> from tests.simulate import simulate_panel
    >>> panel = simulate_panel(n_days=600)
    >>> model = GarchForecaster(alias="gjr_t").fit(panel)
    >>> fc = model.forecast(panel, horizons=[1, 7])
    >>> bool((fc["variance"] > 0).all())
    True
    """

    def __init__(self, config: GarchConfig | None = None, alias: str = "garch11_t") -> None:
        if alias not in GARCH_SPECS:
            raise KeyError(f"no GARCH spec for alias {alias!r}; known: {sorted(GARCH_SPECS)}")
        self.config = config or GarchConfig()
        self.alias = alias
        self.spec = GARCH_SPECS[alias]
        self.params: dict[str, dict[str, float]] = {}

    def _model(self, returns: pd.Series) -> Any:
        s = self.spec
        return arch_model(returns, mean="Zero", vol=s.vol, p=s.p, o=s.o, q=s.q, dist=s.dist)

    def fit(self, panel: pd.DataFrame) -> Self:
        self.params = {}
        for asset in panel.index.get_level_values("asset").unique():
            returns = _returns(asset_frame(panel, asset))
            if len(returns) < MIN_OBS:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is checked below, not warned
                res = self._model(returns).fit(disp="off", options={"maxiter": 500})
            if res.convergence_flag != 0 or not np.all(np.isfinite(res.params)):
                continue  # no forecast beats a wrong one; the asset gets none from this model
            self.params[str(asset)] = {k: float(v) for k, v in res.params.items()}
        return self

    def _variance_paths(
        self, asset: str, returns: pd.Series, params: dict[str, float], start: pd.Timestamp,
        horizon: int,
    ) -> pd.DataFrame:
        """Row ``t``, column ``k``: :math:`E_t[\\sigma^2_{t+k}]` (scaled²) for every t >= start."""
        model = self._model(returns)
        res = model.fix(pd.Series(params))
        kwargs: dict[str, Any] = {"method": "analytic"}
        if horizon > 1 and not self.spec.analytic:
            names = model.distribution.parameter_names()
            dist_params = np.array([params[n] for n in names])
            shocks = common_shocks(model.distribution, dist_params, self.config.seed, asset,
                                   self.config.simulations, horizon)
            kwargs = {"method": "simulation", "simulations": self.config.simulations,
                      "rng": lambda size: shocks}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fc = res.forecast(horizon=horizon, start=start, reindex=False, **kwargs)
        return fc.variance

    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        blocks = []
        max_h = max(horizons)
        present = set(panel.index.get_level_values("asset"))
        for asset, params in self.params.items():
            if asset not in present:
                continue
            returns = _returns(asset_frame(panel, asset))
            wanted = select_cutoffs(returns.index, cutoffs)
            if len(wanted) == 0 or len(returns) < 2:
                continue
            paths = self._variance_paths(asset, returns, params, wanted[0], max_h)
            path = paths.loc[wanted].to_numpy() / SCALE**2  # (n_cutoffs, max_h)
            cumulative = np.cumsum(path, axis=1)
            for h in horizons:
                blocks.append(forecast_frame(asset, wanted, h, cumulative[:, h - 1]))
        return concat_forecasts(blocks)

    def state(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "kind": "garch",
            "config": self.config.model_dump(mode="json"),
            "params": self.params,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        alias = state["alias"]
        config = dict(state["config"])
        legacy = config.pop("dist", None)  # states written before GARCH_SPECS carried the dist
        if alias in GARCH_SPECS and legacy not in (None, GARCH_SPECS[alias].dist):
            raise ValueError(
                f"garch state for {alias!r} says dist={legacy!r} but the alias is "
                f"dist={GARCH_SPECS[alias].dist!r}; refit the model"
            )
        model = cls(GarchConfig(**config), alias=alias)
        model.params = {a: dict(p) for a, p in state["params"].items()}
        return model

r"""CAViaR (Engle and Manganelli 2004), symmetric absolute value, on the covered loss.

Per asset, side and level :math:`q`, the VaR of the next interval's covered loss follows

.. math::

    \mathrm{VaR}_t = \beta_0 + \beta_1 \mathrm{VaR}_{t-1} + \beta_2\, x_t,

with :math:`x_t` the covered loss fraction of the interval ending at :math:`t` (already
positive, so its "absolute value" is itself), estimated by minimizing the quantile loss
:math:`\sum_t \rho_q(y_t - \mathrm{VaR}_t)` over the training rows (Nelder-Mead from two
starting persistences), within :math:`0 \le \beta_1 < 0.999` and :math:`\beta_2 \ge 0`
(a penalty outside): a VaR that falls after a loss, or alternates in sign, is not a margin,
and at a high level a handful of exceedances lets the quantile loss reach such fits. A level
is fitted only where the training rows expect at least ``min_exceedances`` exceedances
(:math:`n(1 - q) \ge 10` by default: 1,000 rows at 99 %, 2,000 at 99.5 %); below that the
recursion's three parameters rest on a few days, and the level has no forecast (the
policy's replay then takes the FHS tail, and says so). The recursion starts
at the first row of the asset with :math:`\mathrm{VaR}_{-1}` = the empirical
:math:`q`-quantile of the first ``init_obs`` training targets, a number stored with the
parameters, so a forecast at :math:`t` reads rows :math:`\le t` only. Days without a loss
are skipped (the next is treated as adjacent, as the GARCH recursion does). ES as in
:mod:`models.tail.quantile`: :math:`\mathrm{ES} = c_q \mathrm{VaR}`, :math:`c_q` the ratio
of losses to VaR on the training exceedances (at least 1); crossing across levels is
removed by rearrangement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.signal import lfilter

from configs.schema import TailCaviarConfig
from models.base import asset_frame, select_cutoffs
from models.tail.base import (
    DEFAULT_LEVELS,
    SIDES,
    calendar_series,
    concat_tails,
    covered_loss_targets,
    fitted_levels,
    loss_column,
    monotone_in_level,
    tail_frame,
    to_fraction,
)

VAR_FLOOR = 1e-4  # a VaR below 0.01% of value is not a margin; keeps ES = c·VaR positive


def caviar_path(beta: np.ndarray, x: np.ndarray, init: float) -> np.ndarray:
    """:math:`v_t = \\beta_0 + \\beta_1 v_{t-1} + \\beta_2 x_t` from :math:`v_{-1}` = ``init``."""
    b0, b1, b2 = beta
    return lfilter([1.0], [1.0, -b1], b0 + b2 * x, zi=[b1 * init])[0]


def quantile_loss(y: np.ndarray, v: np.ndarray, q: float) -> float:
    u = y - v
    return float(np.mean(u * (q - (u < 0))))


def fit_caviar(x: np.ndarray, y: np.ndarray, q: float, init: float, max_iter: int
               ) -> np.ndarray:
    """Quantile-loss minimizing (β0, β1, β2) on rows with a target (module docstring)."""
    has_y = np.isfinite(y)

    def objective(beta: np.ndarray) -> float:
        if not (0.0 <= beta[1] < 0.999 and beta[2] >= 0.0):  # module docstring
            return 1e6 + abs(beta[1]) + abs(min(beta[2], 0.0))
        v = caviar_path(beta, x, init)
        return quantile_loss(y[has_y], v[has_y], q)

    best = None
    level = float(np.quantile(y[has_y], q))
    for b1 in (0.8, 0.95):
        b2 = 0.1
        start = np.array([(1 - b1) * level - b2 * float(np.mean(x)), b1, b2])
        res = minimize(objective, start, method="Nelder-Mead",
                       options={"maxiter": max_iter, "xatol": 1e-6, "fatol": 1e-9})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    return np.asarray(best.x, dtype=float)


class CaviarTail:
    """Symmetric absolute value CAViaR per asset, side and level (module docstring)."""

    def __init__(self, config: TailCaviarConfig, alias: str = "caviar",
                 interval_days: int = 1) -> None:
        self.config = config
        self.alias = alias
        self.interval_days = int(interval_days)
        self.levels = list(DEFAULT_LEVELS)
        # side → asset → {"beta": [[b0, b1, b2] per level], "init": [...], "ratio": [...]}
        self.params: dict[str, dict[str, dict[str, list[Any]]]] = {}

    def _series(self, frame: pd.DataFrame, side: str) -> tuple[np.ndarray, pd.DatetimeIndex]:
        log_loss = calendar_series(frame, loss_column(side, self.config.loss_variant))
        x = pd.Series(to_fraction(log_loss.to_numpy(), side), index=log_loss.index)
        x = x.reindex(frame.index).dropna()
        return x.to_numpy(), pd.DatetimeIndex(x.index)

    def fit(self, panel: pd.DataFrame) -> Self:
        cfg = self.config
        self.params = {side: {} for side in SIDES}
        for asset in sorted(panel.index.get_level_values("asset").unique()):
            frame = asset_frame(panel, asset)
            for side in SIDES:
                x, dates = self._series(frame, side)
                y = covered_loss_targets(frame, side, cfg.loss_variant, self.interval_days)
                y = y.reindex(dates).to_numpy()
                if np.isfinite(y).sum() < cfg.min_obs:
                    continue
                first = y[np.isfinite(y)][:cfg.init_obs]
                fitted: dict[str, list[Any]] = {"beta": [], "init": [], "ratio": []}
                n_y = int(np.isfinite(y).sum())
                for q in self.levels:
                    if n_y * (1.0 - q) < cfg.min_exceedances:  # not identified: no forecast
                        for key in fitted:
                            fitted[key].append(None)
                        continue
                    init = float(np.quantile(first, q))
                    beta = fit_caviar(x, y, q, init, cfg.max_iter)
                    v = np.maximum(caviar_path(beta, x, init), VAR_FLOOR)
                    hit = np.isfinite(y) & (y > v)
                    ratio = float(y[hit].sum() / v[hit].sum()) if hit.any() else 1.0
                    fitted["beta"].append([float(b) for b in beta])
                    fitted["init"].append(init)
                    fitted["ratio"].append(max(ratio, 1.0))
                self.params[side][asset] = fitted
        return self

    def forecast_tail(self, panel: pd.DataFrame, levels: Sequence[float] = DEFAULT_LEVELS,
                      cutoffs: pd.DatetimeIndex | None = None) -> pd.DataFrame:
        qs = fitted_levels(self.alias, levels, self.levels, bool(self.params))
        blocks = []
        for asset in sorted(panel.index.get_level_values("asset").unique()):
            frame = asset_frame(panel, asset)
            for side in SIDES:
                p = self.params.get(side, {}).get(asset)
                if p is None:
                    continue
                fit = [j for j, b in enumerate(p["beta"]) if b is not None]  # ascending
                if not fit:
                    continue
                x, dates = self._series(frame, side)
                wanted = select_cutoffs(dates, cutoffs)
                pos = dates.get_indexer(wanted)
                raw = np.column_stack([
                    np.maximum(caviar_path(np.asarray(p["beta"][j]), x, p["init"][j]),
                               VAR_FLOOR)[pos] for j in fit])  # (N, L fitted)
                var, es = monotone_in_level(raw, raw * np.asarray([p["ratio"][j] for j in fit]))
                at = {self.levels[j]: k for k, j in enumerate(fit)}
                blocks += [tail_frame(asset, wanted, self.interval_days, side, q,
                                      var[:, at[q]], es[:, at[q]]) for q in qs if q in at]
        return concat_tails(blocks)

    def state(self) -> dict[str, Any]:
        return {"alias": self.alias, "kind": "caviar", "interval_days": self.interval_days,
                "config": self.config.model_dump(mode="json"), "levels": self.levels,
                "params": self.params}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        model = cls(TailCaviarConfig(**state["config"]), state["alias"], state["interval_days"])
        model.levels = [float(q) for q in state["levels"]]
        model.params = state["params"]
        return model

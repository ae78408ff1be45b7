r"""HAR-RV (Corsi, 2009) in logs, per asset, one direct regression per horizon; and HARX-IV.

For horizon :math:`h` the mean daily variance over the next :math:`h` days is regressed on the
daily, weekly and monthly realized-variance terms of the panel (``har_rv_{1,7,30}d``, built
from ``rv``: hourly RV where it exists, else Garman-Klass):

.. math::
    \log\frac{RV_{t+1:t+h}}{h} = \beta_0 + \beta_d \log RV^{(1)}_t + \beta_w \log RV^{(7)}_t
        + \beta_m \log RV^{(30)}_t \;[+\ \beta_{iv} \log IV^2_t] + \varepsilon_t

estimated by OLS, *direct* (one regression per trained horizon, no iteration of the one-day
model). Logs keep the crash days from dominating the fit and the forecast positive. The
forecast of the variance — the mean, not the median, because QLIKE and the margin policy want
:math:`E[RV]` — undoes the log with the log-normal correction:

.. math::
    \hat V_{t,h} = h \exp\big(x_t'\hat\beta + \tfrac12 \hat\sigma^2_\varepsilon\big),
    \qquad \hat\sigma^2_\varepsilon = \frac{\sum \hat\varepsilon^2}{n - k}

(exact if :math:`\varepsilon` is Gaussian; log RV residuals are close to it, Andersen et al.
2003). Training targets :math:`RV_{t+1:t+h}` are built inside :meth:`HarForecaster.fit` from
the ``rv`` column of the panel it is given; rows whose window runs past the panel's end are
NaN and dropped, so a fit at a cutoff never sees later data. A forecast at ``t`` reads row
``t`` only.

Aliases (:data:`HAR_SPECS`):

* ``har_rv`` — the regression above, per asset.
* ``harx_iv`` — HARX with Deribit DVOL as implied variance, in **two regimes**: rows with
  ``dvol_available`` use HAR + log DVOL (fitted on those rows only), rows without it use the
  plain HAR fitted on every row. DVOL is never filled in; an asset gets the IV regime only
  once it has ``min_obs`` rows with DVOL (the backtest starts 2021-01-01, DVOL 2021-03-24).
  Assets without their own DVOL use BTC's as a market fear gauge (``dvol_is_own`` False).
* ``har_rv_pooled`` — one regression over all assets with per-asset intercepts and common
  slopes (a panel HAR), residual variance per asset.

Example
-------
>>> from tests.simulate import simulate_panel
>>> panel = simulate_panel(("AAA",), n_days=700)
>>> model = HarForecaster(horizons=[1, 7]).fit(panel)
>>> sorted(model.params["AAA"]["har"])
['1', '7']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd

from configs.schema import HarConfig
from features.schema import target_columns
from models.base import (
    asset_blocks,
    concat_forecasts,
    forecast_columns,
    requested_horizons,
    trained_horizons,
)
from models.panel_inputs import dvol_mask, forward_targets, log_variance

HAR_TERMS = ("har_rv_1d", "har_rv_7d", "har_rv_30d")


@dataclass(frozen=True)
class HarSpec:
    iv: bool  # add log DVOL in the regime where DVOL exists (HARX)
    pooled: bool  # common slopes across assets, per-asset intercepts


HAR_SPECS: dict[str, HarSpec] = {
    "har_rv": HarSpec(iv=False, pooled=False),
    "harx_iv": HarSpec(iv=True, pooled=False),
    "har_rv_pooled": HarSpec(iv=False, pooled=True),
}


def har_design(frame: pd.DataFrame, iv: bool) -> tuple[np.ndarray, np.ndarray]:
    """(X (N, k) with a leading 1, valid (N,)): log HAR terms [+ log DVOL] of each row."""
    cols = [np.ones(len(frame))] + [log_variance(frame[c]) for c in HAR_TERMS]
    valid = np.isfinite(frame[list(HAR_TERMS)].to_numpy(dtype=float)).all(axis=1)
    if iv:
        has_iv = dvol_mask(frame)
        cols.append(np.where(has_iv, log_variance(frame["dvol_var_1d"]), np.nan))
        valid &= has_iv
    return np.column_stack(cols), valid


def ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients (k,), residuals (n,)) of the least-squares fit of ``y`` on ``x``."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef, y - x @ coef


def asset_codes(assets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct names, code of each row): ``np.unique(assets, return_inverse=True)``
    by hashing, where np.unique sorts a million Python strings (3.7 s of a 1,000-asset
    walk-forward)."""
    codes, names = pd.factorize(np.asarray(assets, dtype=object), sort=True)
    if (codes < 0).any():
        raise ValueError("asset names must not be missing")
    return np.asarray(names, dtype=object), codes.astype(np.intp)


def within_wls(
    x: np.ndarray, y: np.ndarray, codes: np.ndarray, n_groups: int, weight: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Weighted least squares of ``y`` on [one dummy per group, ``x``] without the dummies:
    (intercepts (G,), slopes (F,), residuals (N,), unweighted).

    By the within transformation (Frisch–Waugh–Lovell), the slopes are those of the
    group-demeaned ``y`` on the group-demeaned ``x``, the means weighted by ``weight``:

    .. math:: \hat\beta = \arg\min_\beta \sum_t w_t\big(\tilde y_t - \tilde x_t'\beta\big)^2,
              \quad \tilde v_t = v_t - \bar v^{w}_{a(t)}, \qquad
              \hat\alpha_a = \bar y^{w}_a - \bar x^{w\prime}_a \hat\beta

    the same fit as the dummy design (fitted values equal to rounding), in O(N·F) memory
    instead of O(N·(G + F)). A group without rows gets intercept 0, as its all-zero dummy
    does under the minimum-norm solution. Where a column is constant within every group its
    split with the intercepts is not identified: the dummy design's minimum-norm solution
    shares it, this fit gives it to the intercepts; the fitted values are the same.
    """
    total = np.bincount(codes, weights=weight, minlength=n_groups)
    has = total > 0
    denom = np.where(has, total, 1.0)
    mean_x = np.stack([np.bincount(codes, weights=weight * col, minlength=n_groups)
                       for col in x.T], axis=1).reshape(n_groups, x.shape[1]) / denom[:, None]
    mean_y = np.bincount(codes, weights=weight * y, minlength=n_groups) / denom
    x_within, y_within = x - mean_x[codes], y - mean_y[codes]
    root = np.sqrt(weight)  # weighted least squares: rows scaled by sqrt(w)
    slopes, resid = ols(root[:, None] * x_within, root * y_within)
    if not np.all(weight == 1.0):
        resid = y_within - x_within @ slopes
    return np.where(has, mean_y - mean_x @ slopes, 0.0), slopes, resid


def _entry(coef: np.ndarray, resid: np.ndarray, dof: int) -> dict[str, Any]:
    return {"coef": coef.tolist(), "resid_var": float(resid @ resid / dof), "n": len(resid)}


class HarForecaster:
    """Log-HAR family (:data:`HAR_SPECS`); see the module docstring."""

    def __init__(
        self, config: HarConfig | None = None, horizons: Sequence[int] = (1, 7),
        alias: str = "har_rv",
    ) -> None:
        if alias not in HAR_SPECS:
            raise KeyError(f"no HAR spec for alias {alias!r}; known: {sorted(HAR_SPECS)}")
        self.config = config or HarConfig()
        self.alias = alias
        self.spec = HAR_SPECS[alias]
        self.horizons = trained_horizons(alias, horizons)
        # asset → regime ("har" | "harx") → str(horizon) → {coef, resid_var, n}
        self.params: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self.per_asset = not self.spec.pooled  # the walk-forward may run assets apart
        # a forecast reads only its asset's rows, pooled slopes or not: serving may forecast
        # every asset in one call (serving.apply)
        self.forecast_per_asset = True

    # ------------------------------------------------------------------ fit
    def fit(self, panel: pd.DataFrame) -> Self:
        leaked = target_columns(panel)
        if leaked:
            raise ValueError(f"{self.alias}.fit: panel holds target column(s) {leaked}; pass "
                             "features.schema.feature_view(panel)")
        panel = panel.sort_index()
        log_y = log_variance(forward_targets(panel, self.horizons) / self.horizons)  # (N, H)
        assets = panel.index.get_level_values("asset").to_numpy()
        regimes = {"har": False, "harx": True} if self.spec.iv else {"har": False}
        self.params = {}
        for regime, iv in regimes.items():
            x, valid = har_design(panel, iv)
            for j, h in enumerate(self.horizons):
                ok = valid & np.isfinite(log_y[:, j])
                fits = (self._fit_pooled if self.spec.pooled else self._fit_per_asset)(
                    x[ok], log_y[ok, j], assets[ok])
                for asset, entry in fits.items():
                    self.params.setdefault(asset, {}).setdefault(regime, {})[str(h)] = entry
        # an asset needs the plain HAR at every horizon; the IV regime is an optional upgrade
        self.params = {
            a: {r: e for r, e in p.items() if len(e) == len(self.horizons)}
            for a, p in self.params.items()
            if len(p.get("har", {})) == len(self.horizons)
        }
        return self

    def _fit_per_asset(
        self, x: np.ndarray, y: np.ndarray, assets: np.ndarray
    ) -> dict[str, dict[str, Any]]:
        # one stable sort instead of a pass over every row per asset (quadratic in assets);
        # each asset's rows keep their order, so each fit is the same
        names, codes = asset_codes(assets)
        order = np.argsort(codes, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(names)))]
        out = {}
        for i, asset in enumerate(names):
            rows = order[bounds[i]:bounds[i + 1]]
            if len(rows) >= max(self.config.min_obs, x.shape[1] + 2):
                coef, resid = ols(x[rows], y[rows])
                out[str(asset)] = _entry(coef, resid, len(resid) - x.shape[1])
        return out

    def _fit_pooled(
        self, x: np.ndarray, y: np.ndarray, assets: np.ndarray
    ) -> dict[str, dict[str, Any]]:
        # membership by the codes of one hashing factorize: np.isin over object (string) arrays
        # compares every row with every name, 108 s of a 134 s walk-forward at 1,000 assets
        names, codes = asset_codes(assets)
        counts = np.bincount(codes, minlength=len(names))
        enough = counts >= self.config.min_obs
        keep = enough[codes]
        if not keep.any():
            return {}
        names, x, y = names[enough], x[keep], y[keep]
        # kept assets renumbered 0..len(names)-1 in sorted order, as a search in ``names``
        codes = (np.cumsum(enough) - 1)[codes[keep]]
        # own intercepts by the within transformation: the dummy design's fit without its
        # (n, A) matrix (1,000 assets x 1M rows would be 8 GB)
        intercepts, slopes, resid = within_wls(x[:, 1:], y, codes, len(names), np.ones(len(y)))
        order = np.argsort(codes, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(names)))]
        out = {}
        for i, asset in enumerate(names):
            rows = order[bounds[i]:bounds[i + 1]]
            # per-asset residual variance: range-proxy assets are noisier than intraday RV
            out[str(asset)] = _entry(np.r_[intercepts[i], slopes], resid[rows], len(rows) - 1)
        return out

    # ------------------------------------------------------------- forecast
    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        horizons = requested_horizons(self.alias, horizons, self.horizons)
        # the design of every row at once (row-wise, so each asset's rows are those of its
        # own frame), then one small product per asset: no cross-section per asset
        panel, rows = asset_blocks(panel)
        known = [a for a in self.params if a in rows]
        if not known:
            return concat_forecasts([])
        dates = panel.index.get_level_values("date")
        # the design of the cutoff rows only: it is row-wise, so a subset gives the same rows
        picked = np.arange(len(panel)) if cutoffs is None else \
            np.flatnonzero(dates.isin(pd.DatetimeIndex(cutoffs)))
        sub = panel if cutoffs is None else panel.iloc[picked]
        x, valid = har_design(sub, iv=False)
        if any("harx" in self.params[a] for a in known):
            x_iv, has_iv = har_design(sub, iv=True)
        dates = dates[picked]
        names, at_rows, h_col, variance = [], [], [], []
        for asset in known:
            regimes = self.params[asset]
            start, end = np.searchsorted(picked, rows[asset])
            at = start + np.flatnonzero(valid[start:end])
            if len(at) == 0:
                continue
            x_har = x[at]
            for h in horizons:
                log_var = self._predict(regimes["har"][str(h)], x_har)
                if "harx" in regimes:
                    iv_log_var = self._predict(regimes["harx"][str(h)], np.nan_to_num(x_iv[at]))
                    log_var = np.where(has_iv[at], iv_log_var, log_var)
                names.append(np.full(len(at), asset, dtype=object))
                at_rows.append(at)
                h_col.append(np.full(len(at), h))
                variance.append(h * np.exp(log_var))
        if not names:
            return concat_forecasts([])
        return forecast_columns(np.concatenate(names), dates[np.concatenate(at_rows)],
                                np.concatenate(h_col), np.concatenate(variance))

    @staticmethod
    def _predict(entry: dict[str, Any], x: np.ndarray) -> np.ndarray:
        """Log of the mean daily variance: x'β + σ²_ε/2 (log-normal mean correction)."""
        return x @ np.asarray(entry["coef"]) + 0.5 * entry["resid_var"]

    # ---------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "kind": "har",
            "config": self.config.model_dump(mode="json"),
            "horizons": list(self.horizons),
            "regressors": list(HAR_TERMS) + (["dvol_var_1d"] if self.spec.iv else []),
            "params": self.params,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        model = cls(HarConfig(**state["config"]), state["horizons"], alias=state["alias"])
        model.params = state["params"]
        return model

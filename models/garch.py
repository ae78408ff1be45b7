r"""GARCH-family baselines from ``arch``, fitted per asset on daily log returns.

Every alias is one row of :data:`GARCH_SPECS` — volatility process, lag orders ``p, o, q``
and innovation distribution, named as in ``arch`` — and one class serves them all:

.. math::
    r_t = \sigma_t z_t, \qquad z_t \text{ i.i.d., unit variance (Student-t or Hansen skew-t)}

    \text{GARCH / GJR:}\quad
    \sigma_t^2 = \omega + (\alpha + \gamma \mathbb 1_{z_{t-1}<0})\, r_{t-1}^2
        + \beta \sigma_{t-1}^2

    \text{EGARCH:}\quad
    \ln\sigma_t^2 = \omega + \alpha\big(|z_{t-1}| - \sqrt{2/\pi}\big) + \gamma z_{t-1}
        + \beta \ln\sigma_{t-1}^2

Bollerslev (1986); Glosten, Jagannathan and Runkle (1993); Nelson (1991); skew-t of Hansen
(1994). The mean is zero: the realized proxy is a sum of *raw* squared returns, so the forecast
must be of :math:`E[r^2]`, and a daily crypto drift is indistinguishable from zero anyway.

**Multi-day variance** is :math:`\sum_{k=1}^{h} E_t[\sigma^2_{t+k}]`. The first term is
arch's one-step forecast (exact for every model). Beyond it:

* GARCH and GJR, in closed form (:func:`gjr_term_structure`):
  :math:`E_t\sigma^2_{t+k+1} = \omega + (\alpha + \kappa\gamma + \beta)\,E_t\sigma^2_{t+k}`
  with :math:`\kappa = E[z^2 \mathbb 1_{z<0}]` from the fitted distribution (arch's
  ``partial_moment``). :math:`\kappa = 1/2` for a symmetric law — arch's own analytic
  forecast, which a test matches to 1e-12 — and differs from it under skew-t, where arch's
  recursion (which hard-codes 1/2) would be wrong.
* EGARCH: arch has no closed form for ``h > 1`` and offers simulation, but under Student-t
  shocks the quantity does not exist: :math:`E\,e^{c|z|} = \infty`, so
  :math:`E_t\sigma^2_{t+k}` is infinite for :math:`k \ge 2` and a simulated mean never
  settles (on the embedded data, 1,000 and 50,000 t-paths disagreed by up to 99% on a 7-day
  forecast). The shocks are taken instead from the model's own standardized residuals up to
  the cutoff — the innovation law of filtered historical simulation (Barone-Adesi et al.,
  1999), whose moments are finite — and, because the shocks are i.i.d., the expectation over
  them factorizes (:func:`egarch_term_structure`):

  .. math::
      E_t\sigma^2_{t+k} = \exp\Big(\omega\sum_{j=0}^{k-2}\beta^j
          + \beta^{k-1}\ln\sigma^2_{t+1}\Big) \prod_{i=0}^{k-2} \hat M_t(\beta^i),
      \qquad \hat M_t(c) = \frac1{n_t}\sum_{s \le t} e^{c\,g(z_s)},
      \quad g(z) = \alpha(|z| - \sqrt{2/\pi}) + \gamma z

  — exactly what an FHS simulation converges to with infinitely many paths (a test checks it
  against a brute-force one), with no Monte Carlo noise and no seed: a forecast at ``t`` is
  a deterministic function of the returns up to ``t``.

  **Ceiling.** :math:`\hat M_t(c)` is a mean of exponentials of the shocks: one shock far
  outside what the fixed parameters expect (a ×10 pump in weeks after a calm year gives
  :math:`z \approx 30`) makes it the whole mean, and the product over ``h-1`` steps grows
  without bound — a 7-day forecast of :math:`10^{23}` on a real altcoin. No variance that
  large has ever been seen: each :math:`E_t\sigma^2_{t+k}`, :math:`k \ge 2`, is capped at

  .. math:: \bar\sigma^2_t = \max\big(\sigma^2_{t+1},\ \max_{s \le t} r_s^2\big),

  the larger of the model's one-step variance and the largest squared daily return up to the
  cutoff: a forecast that expects *every* coming day to be worse than the worst day on record
  is the Jensen term of an outlier, not information. The cap is monotone in the data known
  at ``t`` (no look-ahead) and, on the embedded data, never binds on a healthy asset.

Spec vs result, as in ``arch``: :meth:`GarchForecaster.fit` estimates parameters;
:meth:`~GarchForecaster.forecast` rebuilds the model on the data it is given, fixes the stored
parameters (``arch_model(...).fix``) and filters forward, so serving needs no pickle. arch's
backcast uses the first 75 returns of that data and its variance bounds (six orders of
magnitude around an EWMA, never binding for these parameters) are its only other inputs.
A symmetric GARCH (``garch11_t``, ``garch11_skewt``) is filtered by
:mod:`models.garch_filter` instead: the same numbers bit for bit, every asset in one pass, and
no ``arch`` import, so a served GARCH champion does not pay arch's 1.0-1.1 s of imports.
Returns are scaled by 100 for the optimiser (arch's advice); variances are scaled back to
daily decimal².
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Self

import numpy as np
import pandas as pd

from configs.schema import GarchConfig
from models.base import asset_blocks, asset_frame, concat_forecasts, forecast_columns
from models.garch_filter import one_step_variances
from models.garch_specs import GARCH_SPECS

SCALE = 100.0


@contextlib.contextmanager
def exact_constraint_jacobians() -> Iterator[None]:
    """During the block, arch's fits give SLSQP the Jacobian of their linear parameter
    constraints (``a·θ − b ≥ 0``: positivity, stationarity), which is the row ``a`` itself.

    arch passes those constraints without a Jacobian, so scipy differentiates each one
    numerically at every iteration: 42% of a GARCH(1,1)-t walk-forward task's time (profiled
    on 50 synthetic assets). The numerical derivative of a linear function with 0/±1
    coefficients is that row to the last bit in almost every case, so the fits are almost
    always the same; on 40 synthetic assets every EGARCH fit and 38 of 40 GARCH fits were
    identical, the other two within 4e-6 in a parameter (relative) and 8e-9 in the
    log-likelihood, with the exact Jacobian's optimum the higher. GARCH(1,1)-t fits took
    0.70 → 0.38 s, EGARCH 0.72 → 0.52 s.

    arch builds the constraint list with its module helper ``constraint(a, b)``; the block
    swaps in a wrapper that adds ``jac`` to each entry and puts the helper back after, in
    this process only (walk-forward tasks are single-threaded). An arch without that helper
    fits as it does on its own.
    """
    import arch.univariate.base as arch_base  # a fit's import: a serve filters without arch

    original = getattr(arch_base, "constraint", None)
    if original is None:
        yield
        return

    def with_jacobian(a: np.ndarray, b: np.ndarray) -> list[dict[str, object]]:
        constraints = original(a, b)
        for row, con in zip(np.asarray(a, dtype=float), constraints, strict=True):
            con["jac"] = _constant(row)
        return constraints

    arch_base.constraint = with_jacobian
    try:
        yield
    finally:
        arch_base.constraint = original


def _constant(row: np.ndarray) -> Any:
    def jac(params: np.ndarray, *args: Any) -> np.ndarray:
        return row
    return jac


def _returns(frame: pd.DataFrame) -> pd.Series:
    # Missing days (NaN rows) are skipped: the recursion then treats the next return as
    # adjacent, which arch requires and which matters only across real gaps (none in Binance
    # daily data).
    return frame["ret_1d"].dropna() * SCALE


def gjr_term_structure(
    params: dict[str, float], kappa: float, sigma2_next: np.ndarray, horizon: int
) -> np.ndarray:
    """(n, horizon) :math:`E_t\\sigma^2_{t+k}` of a GARCH/GJR(1,1) from the one-step values."""
    omega, alpha, beta = params["omega"], params["alpha[1]"], params["beta[1]"]
    persistence = alpha + kappa * params.get("gamma[1]", 0.0) + beta
    out = np.empty((len(sigma2_next), horizon))
    out[:, 0] = sigma2_next
    for k in range(1, horizon):
        out[:, k] = omega + persistence * out[:, k - 1]
    return out


def egarch_term_structure(
    params: dict[str, float], ln_sigma2_next: np.ndarray, residuals: np.ndarray,
    pool_size: np.ndarray, horizon: int, ln_ceiling: np.ndarray | None = None,
) -> np.ndarray:
    """(n, horizon) :math:`E_t\\sigma^2_{t+k}` of an EGARCH(1,1,1), shocks drawn from the past.

    Cutoff ``i`` draws its i.i.d. shocks from ``residuals[:pool_size[i]]``, its standardized
    residuals up to the cutoff (filtered historical simulation), in closed form. Steps
    ``k >= 2`` are capped at ``exp(ln_ceiling[i])`` when given (the module's *Ceiling*).
    """
    omega, alpha = params["omega"], params["alpha[1]"]
    gamma, beta = params["gamma[1]"], params["beta[1]"]
    news = alpha * (np.abs(residuals) - np.sqrt(2 / np.pi)) + gamma * residuals  # g(z), (N,)
    out = np.empty((len(ln_sigma2_next), horizon))
    out[:, 0] = np.exp(ln_sigma2_next)
    ln_deterministic = np.asarray(ln_sigma2_next, dtype=float)  # (n,)
    ln_moments = np.zeros(len(ln_sigma2_next))  # Σ_i ln M̂_t(β^i), (n,)
    for k in range(1, horizon):
        # log of the running sums of exp(β^{k-1} g(z)) over growing pools, overflow-free
        ln_running = np.logaddexp.accumulate(beta ** (k - 1) * news)  # (N,)
        ln_moments += ln_running[pool_size - 1] - np.log(pool_size)
        ln_deterministic = omega + beta * ln_deterministic
        ln_expected = ln_deterministic + ln_moments  # (n,)
        if ln_ceiling is not None:
            ln_expected = np.minimum(ln_expected, ln_ceiling)
        out[:, k] = np.exp(ln_expected)
    return out


def one_step_variance(volatility: Any, params: dict[str, float], returns: pd.Series,
                      wanted: pd.DatetimeIndex) -> np.ndarray:
    """(len(wanted),) one-step variance of a fixed GARCH/GJR at the cutoffs ``wanted``
    (scaled²): what ``arch_model(returns, ...).fix(params).forecast(horizon=1,
    start=wanted[0])`` returns there, computed by the same arch functions on the same arrays
    (backcast, variance bounds, analytic forecast) without building a model, a fixed result
    and forecast frames for each asset.
    """
    y = returns.to_numpy(dtype=float)
    vp = np.array([params[n] for n in volatility.parameter_names()])
    at = returns.index.get_indexer(wanted)
    bounds = volatility.variance_bounds(y, 2.0)
    fc = volatility.forecast(vp, y, volatility.backcast(y), bounds, start=int(at[0]),
                             horizon=1, method="analytic").forecasts
    return fc[at - at[0], 0]


def plausible(res: Any) -> bool:
    """A fit the optimiser reports as converged, with finite parameters, that explains the scale.

    The model says :math:`z_t = r_t/\\sigma_t` has unit variance; a mean :math:`z^2` outside
    [0.5, 2] is a degenerate optimum. SLSQP reaches one for EGARCH-t on short samples (BTC
    2023-07..2024-12: α ≈ 4e2, ν → 2, max |z| ≈ 5,800, reported as converged); no fit of
    the embedded walk-forward (19 refits × every alias and asset) is rejected.
    """
    if res.convergence_flag != 0 or not np.all(np.isfinite(res.params)):
        return False
    mean_z2 = float(np.mean(res.std_resid.to_numpy() ** 2))
    return 0.5 < mean_z2 < 2.0


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

    per_asset = True  # each asset fitted on its own: the walk-forward may run assets apart

    @property
    def symmetric(self) -> bool:
        """A GARCH without the asymmetric term: filtered by :mod:`models.garch_filter`."""
        return self.spec.vol == "GARCH" and self.spec.o == 0

    def _model(self, returns: pd.Series) -> Any:
        from arch import arch_model  # fits, GJR and EGARCH only (models.garch_filter)

        s = self.spec
        return arch_model(returns, mean="Zero", vol=s.vol, p=s.p, o=s.o, q=s.q, dist=s.dist)

    def fit(self, panel: pd.DataFrame) -> Self:
        self.params = {}
        for asset in panel.index.get_level_values("asset").unique():
            returns = _returns(asset_frame(panel, asset))
            if len(returns) < self.config.min_obs:
                continue
            with warnings.catch_warnings(), exact_constraint_jacobians():
                warnings.simplefilter("ignore")  # convergence is checked below, not warned
                res = self._model(returns).fit(disp="off", show_warning=False,
                                               options={"maxiter": 500})
            if plausible(res) and self._stationary(res):  # no forecast beats a wrong one
                self.params[str(asset)] = {k: float(v) for k, v in res.params.items()}
        return self

    def _stationary(self, res: Any) -> bool:
        """A GJR fit whose multi-step persistence α + κγ + β (:func:`gjr_term_structure`,
        κ from the fitted law) is below 1: arch bounds only α + γ/2 + β, which a skewed law
        (κ up to ~0.63) can leave above 1, and the h-day forecast then grows without bound.
        Symmetric GARCH and EGARCH: True (arch's own constraint is the right one)."""
        params = {k: float(v) for k, v in res.params.items()}
        if self.spec.vol != "GARCH" or not params.get("gamma[1]"):
            return True
        dist = res.model.distribution
        kappa = float(dist.partial_moment(2, 0.0, np.array(
            [params[n] for n in dist.parameter_names()])))
        return params["alpha[1]"] + kappa * params["gamma[1]"] + params["beta[1]"] < 1.0

    def variance_paths(
        self, asset: str, returns: pd.Series, wanted: pd.DatetimeIndex, horizon: int,
        template: Any = None,
    ) -> np.ndarray:
        """(len(wanted), horizon) :math:`E_t\\sigma^2_{t+k}` in daily decimal², t in ``wanted``.

        ``template``: an arch model of this spec built on other data, whose volatility process
        and distribution (which hold no data) a GARCH/GJR reuses instead of building its own.
        """
        params = self.params[asset]
        if self.symmetric:
            at = returns.index.get_indexer(wanted)
            return self._symmetric_paths([params], [returns.to_numpy(dtype=float)], [at],
                                         horizon)[0]
        if self.spec.vol == "GARCH":
            model = self._model(returns) if template is None else template
            sigma2_next = one_step_variance(model.volatility, params, returns, wanted)
            names = model.distribution.parameter_names()
            dist_params = np.array([params[n] for n in names])
            # κ enters from the second step on: a one-step path skips its (slow) integral
            kappa = float(model.distribution.partial_moment(2, 0.0, dist_params)) \
                if horizon > 1 else 0.0
            paths = gjr_term_structure(params, kappa, sigma2_next, horizon)
        else:
            model = self._model(returns)
            res = model.fix(pd.Series(params))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                one_step = res.forecast(horizon=1, start=wanted[0], reindex=False).variance
            sigma2_next = one_step.iloc[:, 0].loc[wanted].to_numpy()  # (n,) scaled²
            residuals = res.std_resid.to_numpy()  # z_s for every return in the data
            pool_size = returns.index.get_indexer(wanted) + 1  # residuals up to the cutoff
            worst_r2 = np.maximum.accumulate(returns.to_numpy() ** 2)[pool_size - 1]  # (n,)
            ln_ceiling = np.log(np.maximum(sigma2_next, worst_r2))
            paths = egarch_term_structure(params, np.log(sigma2_next), residuals, pool_size,
                                          horizon, ln_ceiling)
        return paths / SCALE**2

    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        panel, rows = asset_blocks(panel)  # slices of one sorted panel, not a cross-section each
        values = panel["ret_1d"].to_numpy(dtype=float, na_value=np.nan)
        dates = panel.index.get_level_values("date")
        in_cutoffs = np.ones(len(dates), bool) if cutoffs is None else \
            dates.isin(pd.DatetimeIndex(cutoffs))
        assets, wanted_rows, returns = [], [], []
        for asset in self.params:
            if asset not in rows:
                continue
            start, end = rows[asset]
            observed = start + np.flatnonzero(~np.isnan(values[start:end]))  # as _returns
            wanted = observed[in_cutoffs[observed]]
            if len(wanted) == 0 or len(observed) < 2:
                continue
            assets.append(asset)
            wanted_rows.append(wanted)
            returns.append(pd.Series(values[observed] * SCALE, index=dates[observed],
                                     name="ret_1d"))
        horizon = max(horizons, default=1)
        if self.symmetric:  # every asset in one pass of the filter
            at = [r.index.get_indexer(dates[w]) for r, w in zip(returns, wanted_rows,
                                                                strict=True)]
            paths = self._symmetric_paths([self.params[a] for a in assets],
                                          [r.to_numpy() for r in returns], at, horizon)
        else:
            template = self._model(returns[0]) if assets else None  # its processes hold no data
            paths = [self.variance_paths(a, r, dates[w], horizon, template)
                     for a, r, w in zip(assets, returns, wanted_rows, strict=True)]
        names, at_rows, h_col, variance = [], [], [], []
        for asset, wanted, path in zip(assets, wanted_rows, paths, strict=True):
            cumulative = np.cumsum(path, axis=1)  # (n_cutoffs, max_h)
            for h in horizons:
                names.append(np.full(len(wanted), asset, dtype=object))
                at_rows.append(wanted)
                h_col.append(np.full(len(wanted), h))
                variance.append(cumulative[:, h - 1])
        if not names:
            return concat_forecasts([])
        return forecast_columns(np.concatenate(names), dates[np.concatenate(at_rows)],
                                np.concatenate(h_col), np.concatenate(variance))

    def _symmetric_paths(self, params: list[dict[str, float]], returns: list[np.ndarray],
                         at: list[np.ndarray], horizon: int) -> list[np.ndarray]:
        """Per asset, (len(at), horizon) paths of a symmetric GARCH in daily decimal²: the
        one-step variances of :mod:`models.garch_filter` (arch's, bit for bit), then the
        closed form with no asymmetric term (κ does not enter)."""
        one_step = one_step_variances(params, returns, at, p=self.spec.p, q=self.spec.q)
        return [gjr_term_structure(x, 0.0, s, horizon) / SCALE**2
                for x, s in zip(params, one_step, strict=True)]

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

"""GARCH fits hand SLSQP the exact Jacobian of arch's linear parameter constraints: the same
optimum as arch's own fit (numerical Jacobians) on real returns, arch's helper put back
after, even when the fit raises."""

from __future__ import annotations

import warnings

import arch.univariate.base as arch_base
import numpy as np
import pandas as pd
import pytest

from models.garch import GARCH_SPECS, GarchForecaster, exact_constraint_jacobians
from tests.conftest import MARKET


def _daily_returns(asset: str, start: str, end: str) -> pd.Series:
    frame = pd.read_csv(MARKET / "crypto" / "daily" / f"{asset}.csv.gz")
    close = frame.set_index(pd.to_datetime(frame["timestamp"]).dt.tz_localize(None))["close"]
    close = close.loc[start:end]
    return (np.log(close).diff().dropna() * 100.0).rename("ret")


def _fit(alias: str, returns: pd.Series, exact: bool):
    model = GarchForecaster(alias=alias)._model(returns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exact:
            with exact_constraint_jacobians():
                return model.fit(disp="off", options={"maxiter": 500})
        return model.fit(disp="off", options={"maxiter": 500})


@pytest.mark.parametrize("alias", ["garch11_t", "egarch_t"])
@pytest.mark.parametrize(("asset", "start", "end"),
                         [("BTC", "2019-01-01", "2022-12-31"), ("ETH", "2020-06-01", "2024-06-30"),
                          ("SOL", "2021-01-01", "2025-06-30")])
def test_the_exact_jacobian_fit_reaches_archs_own_optimum(alias, asset, start, end) -> None:
    returns = _daily_returns(asset, start, end)
    plain, exact = _fit(alias, returns, False), _fit(alias, returns, True)
    assert plain.convergence_flag == 0 and exact.convergence_flag == 0
    np.testing.assert_allclose(exact.params.to_numpy(), plain.params.to_numpy(), rtol=1e-4,
                               atol=1e-7)
    assert exact.loglikelihood >= plain.loglikelihood - 1e-6
    assert list(exact.params.index) == list(plain.params.index)


def test_the_constraints_carry_their_rows_as_jacobian_inside_the_block_only() -> None:
    original = arch_base.constraint
    a = np.array([[0.0, 1.0, 0.0], [0.0, -1.0, -1.0]])
    b = np.array([0.0, -1.0])
    theta = np.array([0.1, 0.2, 0.7])
    with exact_constraint_jacobians():
        cons = arch_base.constraint(a, b)
        assert len(cons) == 2
        for row, con in zip(a, cons, strict=True):
            assert np.array_equal(con["jac"](theta), row)
        assert [con["fun"](theta) for con in cons] == pytest.approx(a @ theta - b)
    assert arch_base.constraint is original
    assert "jac" not in arch_base.constraint(a, b)[0]


def test_the_helper_is_put_back_when_the_fit_raises() -> None:
    original = arch_base.constraint
    with pytest.raises(RuntimeError, match="boom"), exact_constraint_jacobians():
        raise RuntimeError("boom")
    assert arch_base.constraint is original


def test_every_spec_fits_through_the_forecaster_with_the_block() -> None:
    """GarchForecaster.fit uses the block: a spec's parameters equal a plain fit's closely."""
    returns = _daily_returns("BTC", "2020-01-01", "2023-12-31")
    dates = returns.index
    panel = pd.DataFrame({"ret_1d": returns.to_numpy() / 100.0},
                         index=pd.MultiIndex.from_arrays([dates, ["BTC"] * len(dates)],
                                                         names=["date", "asset"]))
    for alias in ("garch11_t", "egarch_t"):
        assert alias in GARCH_SPECS
        fitted = GarchForecaster(alias=alias).fit(panel).params["BTC"]
        plain = _fit(alias, returns, False).params
        np.testing.assert_allclose([fitted[k] for k in plain.index], plain.to_numpy(),
                                   rtol=1e-4, atol=1e-7)


def test_a_gjr_fit_whose_skewed_persistence_reaches_one_is_declined() -> None:
    """arch bounds α + γ/2 + β < 1; the h-day path grows by α + κγ + β, and a left-skewed
    law has κ = E[z² 1(z<0)] near 0.6: α 0.02, γ 0.2, β 0.87 pass arch (0.99) but persist at
    ~1.01, whose 7-day forecast would grow without bound. Declined; the same fit under a
    symmetric law (κ = 1/2) is kept."""
    from arch import arch_model

    returns = pd.Series(np.random.default_rng(3).standard_normal(600) * 2.0)
    skewed = arch_model(returns, vol="GARCH", p=1, o=1, q=1, dist="skewt").fix(
        [0.0, 0.05, 0.02, 0.2, 0.87, 6.0, -0.3])
    kappa = float(skewed.model.distribution.partial_moment(2, 0.0, np.array([6.0, -0.3])))
    assert 0.02 + 0.2 / 2 + 0.87 < 1.0 < 0.02 + kappa * 0.2 + 0.87
    assert not GarchForecaster(alias="gjr_skewt")._stationary(skewed)
    # and the fit keeps no parameters for that asset (its forecast would explode)
    from tests.simulate import simulate_panel

    model = GarchForecaster(alias="gjr_skewt")

    class _Fits:  # arch's model, fitted to that very result
        def fit(self, *args: object, **kwargs: object) -> object:
            return skewed

    model._model = lambda returns: _Fits()  # type: ignore[method-assign]
    import models.garch as garch

    with pytest.MonkeyPatch.context() as mp:  # converged and scaled: persistence at stake
        mp.setattr(garch, "plausible", lambda res: True)
        assert model.fit(simulate_panel(("AAA",), n_days=400, seed=2)).params == {}
    symmetric = arch_model(returns, vol="GARCH", p=1, o=1, q=1, dist="t").fix(
        [0.0, 0.05, 0.02, 0.2, 0.87, 6.0])
    assert GarchForecaster(alias="gjr_t")._stationary(symmetric)

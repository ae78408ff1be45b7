"""The symmetric GARCH filter without arch: arch's one-step variance bit for bit, batched over
ragged assets, and a served GARCH champion that never imports arch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arch import arch_model

from features.loaders import load_daily
from models.garch import SCALE, GarchForecaster, gjr_term_structure, one_step_variance
from models.garch_filter import backcast, one_step_variances, variance_bounds
from tests.conftest import MARKET
from tests.fresh import forecast_code, watched_imports

FITTED = {"omega": 0.05, "alpha[1]": 0.08, "beta[1]": 0.9}
FLOORED = {"omega": 1e-12, "alpha[1]": 1e-9, "beta[1]": 0.0}  # under arch's lower bound
CAPPED = {"omega": 1e20, "alpha[1]": 0.1, "beta[1]": 0.8}  # over its upper bound: soft cap


def _returns(asset: str, days: int) -> pd.Series:
    close = load_daily(MARKET / "crypto" / "daily" / f"{asset}.csv.gz")["close"]
    return (np.log(close).diff().dropna() * SCALE).iloc[:days]


def _arch(returns: pd.Series) -> object:
    return arch_model(returns, mean="Zero", vol="GARCH", p=1, o=0, q=1, dist="t").volatility


@pytest.mark.parametrize("params", [FITTED, FLOORED, CAPPED])
@pytest.mark.parametrize(("asset", "days"), [("BTC", 900), ("TRX", 400), ("DOT", 60)])
def test_one_step_variance_is_archs_bit_for_bit(asset: str, days: int, params: dict) -> None:
    returns = _returns(asset, days)
    vol, y = _arch(returns), returns.to_numpy()
    assert backcast(y) == vol.backcast(y)
    np.testing.assert_array_equal(variance_bounds(y), vol.variance_bounds(y, 2.0))
    at = np.array([0, 1, 2, days // 2, days - 2, days - 1])
    theirs = one_step_variance(vol, params, returns, returns.index[at])
    ours = one_step_variances([params], [y], [at])[0]
    np.testing.assert_array_equal(ours, theirs)
    if params is FLOORED:  # the bounds did bind, so the clamp was exercised
        assert (ours[:-1] == variance_bounds(y)[at[:-1] + 1, 0]).all()


def test_assets_of_different_lengths_in_one_pass_equal_each_alone() -> None:
    series = [_returns("BTC", 700).to_numpy(), _returns("LTC", 75).to_numpy(),
              _returns("TRX", 3).to_numpy(), _returns("SOL", 300).to_numpy()]
    params = [FITTED, CAPPED, FITTED, FLOORED]
    at = [np.arange(len(y)) for y in series]
    together = one_step_variances(params, series, at)
    for p, y, a, got in zip(params, series, at, together, strict=True):
        np.testing.assert_array_equal(got, one_step_variances([p], [y], [a])[0])
    assert one_step_variances([], [], []) == []


def test_forecaster_paths_equal_the_arch_path_and_take_skipped_days_as_arch() -> None:
    """garch11_t and garch11_skewt through ``forecast``: the paths arch's functions give (its
    filter, then the closed form with arch's κ, which does not enter without γ)."""
    returns = {a: _returns(a, 500) for a in ("BTC", "ETH")}
    returns["ETH"].iloc[[40, 41, 300]] = np.nan  # missing days are skipped, as arch needs
    panel = pd.concat({a: (r / SCALE).rename("ret_1d").to_frame() for a, r in returns.items()},
                      names=["asset", "date"])
    for alias, extra in (("garch11_t", {"nu": 5.0}), ("garch11_skewt",
                                                      {"eta": 6.0, "lambda": -0.1})):
        model = GarchForecaster(alias=alias)
        model.params = {"BTC": {**FITTED, **extra}, "ETH": {**CAPPED, **extra}}
        fc = model.forecast(panel, horizons=[1, 7])
        for asset, r in returns.items():
            r = (r / SCALE).dropna() * SCALE  # the forecaster's own input, to the last bit
            am = arch_model(r, mean="Zero", vol="GARCH", p=1, o=0, q=1, dist=model.spec.dist)
            params = model.params[asset]
            one = one_step_variance(am.volatility, params, r, r.index)
            dist = np.array([params[n] for n in am.distribution.parameter_names()])
            kappa = float(am.distribution.partial_moment(2, 0.0, dist))
            paths = np.cumsum(gjr_term_structure(params, kappa, one, 7) / SCALE**2, axis=1)
            for h in (1, 7):
                got = fc[(fc["asset"] == asset) & (fc["horizon_days"] == h)]
                assert list(got["cutoff"]) == list(r.index)
                np.testing.assert_array_equal(got["variance"].to_numpy(), paths[:, h - 1])


def test_serving_a_symmetric_garch_imports_none_of_what_a_fit_needs() -> None:
    params = {"A": {"omega": 0.05, "alpha[1]": 0.08, "beta[1]": 0.9, "nu": 5.0}}
    state = {"alias": "garch11_t", "kind": "garch", "config": {}, "params": params}
    assert watched_imports(forecast_code(state, rows=2 * 90)) == []


def test_the_soft_upper_clamp_takes_libms_log_as_arch_does() -> None:
    # returns of 1e-9: the upper bound is 1 + max r² = 1.0, so ω in (1, 2) lands just above
    # it, where numpy's own SIMD log and libm's (arch's) can differ in the last bit
    returns = pd.Series(np.random.default_rng(3).normal(0, 1e-9, 120),
                        index=pd.date_range("2024-01-01", periods=120))
    vol, y = _arch(returns), returns.to_numpy()
    at = np.arange(0, 119, 7)
    # six ω whose numpy log differs from libm's in the last bit on an AVX-512 machine (14 of
    # 4,000 uniform draws in [1, 2) do there), among 34 others, all in one pass
    omegas = [1.2781549445537355, 1.0445640691891307, 1.5486657504700494, 1.014927913045825,
              1.0127809412796371, 1.1174007694621868,
              *np.random.default_rng(4).uniform(1.0, 2.0, 34)]
    params = [{"omega": float(w), "alpha[1]": 0.0, "beta[1]": 0.0} for w in omegas]
    batched = one_step_variances(params, [y] * len(params), [at] * len(params))
    for p, got in zip(params, batched, strict=True):
        np.testing.assert_array_equal(got, one_step_variance(vol, p, returns, returns.index[at]))
    overflow = {"omega": 1e308, "alpha[1]": 0.5, "beta[1]": 10.0}  # inf: upper bound + 1000
    theirs = one_step_variance(vol, overflow, returns, returns.index[at])
    np.testing.assert_array_equal(one_step_variances([overflow], [y], [at])[0], theirs)

"""The direct tail probabilities equal scipy.stats' own, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipelines.evaluation.distributions import chi2_sf, monte_carlo_p, t_cdf, t_sf

XS = [-math.inf, -3.0, -1e-17, -0.0, 0.0, 1e-300, 1e-9, 0.5, 1.0, 3.84, 5.99, 9.21, 40.0,
      700.0, 1e6, math.inf, math.nan]
DFS = [1, 2, 3, 5, 6, 7, 0.5, 29, 120, 250, 1_000, 50_000]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("df", DFS)
def test_chi2_sf_is_scipys(df) -> None:
    rng = np.random.default_rng(df if isinstance(df, int) else 7)
    for x in [*XS, *rng.chisquare(df, 200).tolist()]:
        assert _same(chi2_sf(x, df), float(stats.chi2.sf(x, df))), (x, df)


@pytest.mark.parametrize("df", DFS)
def test_t_cdf_and_sf_are_scipys(df) -> None:
    rng = np.random.default_rng(3)
    frozen = stats.t(df=df)
    for x in [*XS, *(-x for x in XS), *rng.standard_t(df, 200).tolist()]:
        assert _same(t_cdf(x, df), float(frozen.cdf(x))), (x, df)
        assert _same(t_sf(x, df), float(frozen.sf(x))), (x, df)


@pytest.mark.parametrize("df", [0, -1, math.nan])
def test_an_invalid_df_gives_nan_as_scipy_does(df) -> None:
    assert math.isnan(chi2_sf(1.0, df)) and math.isnan(float(stats.chi2.sf(1.0, df)))
    assert math.isnan(t_cdf(1.0, df)) and math.isnan(float(stats.t.cdf(1.0, df)))
    assert math.isnan(t_sf(1.0, df)) and math.isnan(float(stats.t.sf(1.0, df)))


def test_monte_carlo_p_by_hand() -> None:
    null = [0.5, 1.0, 2.0, 3.0]
    assert monte_carlo_p(null, 2.0) == pytest.approx((1 + 2) / 5)  # 2.0 and 3.0 reach it
    assert monte_carlo_p(null, 9.0) == pytest.approx(1 / 5)  # never 0
    assert monte_carlo_p(null, 1.0, upper=False) == pytest.approx((1 + 2) / 5)  # lower tail
    # a draw a hair below the observed value is a tie only within tie_rtol
    assert monte_carlo_p([2.0 - 1e-12], 2.0) == pytest.approx(1 / 2)
    assert monte_carlo_p([2.0 - 1e-12], 2.0, tie_rtol=1e-9) == pytest.approx(2 / 2)
    assert monte_carlo_p([-2.0 - 1e-12], -2.0, tie_rtol=1e-9) == pytest.approx(2 / 2)
    assert math.isnan(monte_carlo_p(null, float("nan")))  # no statistic: no p-value, not 1/(B+1)
    with pytest.raises(ValueError, match="upper tail"):
        monte_carlo_p(null, 1.0, upper=False, tie_rtol=1e-9)

"""Known answers and size under simulation for the tail scoring and backtests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipelines.evaluation.tail_tests import (
    acerbi_szekely_z2,
    dq_test,
    fz0_loss,
    kupiec_one_sided,
    mcneil_frey,
)

T5 = stats.t(df=5)


def t_tail(level: float) -> tuple[float, float]:
    """True VaR and ES of a Student-t(5) loss (closed form)."""
    q = T5.ppf(level)
    es = T5.pdf(q) / (1 - level) * (5 + q**2) / 4
    return float(q), float(es)


def test_fz0_hand_computed() -> None:
    # breach: 0.05 / (0.01 * 0.08) + 0.05/0.08 + ln 0.08 - 1
    breach = 62.5 + 0.625 + math.log(0.08) - 1.0
    # no breach: only VaR/ES + ln ES - 1
    quiet = 0.5 + math.log(0.1) - 1.0
    out = fz0_loss([0.10, 0.01, np.nan], [0.05, 0.05, 0.05], [0.08, 0.10, 0.10], 0.99)
    assert out[0] == pytest.approx(breach, rel=1e-12)
    assert out[1] == pytest.approx(quiet, rel=1e-12)
    assert np.isnan(out[2])


def test_fz0_prefers_true_tail_over_wrong_ones() -> None:
    rng = np.random.default_rng(3)
    loss = T5.rvs(size=200_000, random_state=rng) * 0.02
    v, e = (0.02 * x for x in t_tail(0.99))
    truth = fz0_loss(loss, np.full(loss.size, v), np.full(loss.size, e), 0.99).mean()
    for fv, fe in [(0.8 * v, 0.8 * e), (1.25 * v, 1.25 * e), (v, 0.8 * e), (v, 1.3 * e)]:
        wrong = fz0_loss(loss, np.full(loss.size, fv), np.full(loss.size, fe), 0.99).mean()
        assert wrong > truth


def test_fz0_is_patton_ziegel_chen_in_returns() -> None:
    """Written independently in PZC's (2019, eq. 6) own terms, returns Y = -L, v = -VaR,
    e = -ES: FZ0 = -1{Y <= v}(v - Y)/(alpha e) + v/e + ln(-e) - 1."""
    rng = np.random.default_rng(8)
    loss = rng.standard_t(4, 500) * 0.03
    var = np.abs(rng.normal(0.05, 0.01, 500)) + 0.01
    es = var * rng.uniform(1.0, 1.6, 500)
    y, v, e, alpha = -loss, -var, -es, 0.01
    pzc = -(y <= v).astype(float) * (v - y) / (alpha * e) + v / e + np.log(-e) - 1.0
    np.testing.assert_allclose(fz0_loss(loss, var, es, 0.99), pzc, rtol=1e-12)


@pytest.mark.parametrize("var,es", [(0.05, 0.0), (0.0, -0.01), (-0.01, 0.05), (0.08, 0.05)])
def test_fz0_refuses_forecasts_outside_its_domain(var: float, es: float) -> None:
    """0 <= VaR <= ES, ES > 0 (PZC's e <= v <= 0, e < 0): outside it the loss is not a score."""
    with pytest.raises(ValueError, match="0 <= VaR <= ES and ES > 0"):
        fz0_loss([0.1, 0.2], [0.05, var], [0.06, es], 0.99)
    assert np.isfinite(fz0_loss([0.1], [0.05], [0.05], 0.99)).all()  # ES = VaR: inside
    # a VaR of 0 (a pegged asset's) is the boundary: scored; no loss forecast at all: no score
    assert fz0_loss([0.0], [0.0], [0.01], 0.99)[0] == pytest.approx(math.log(0.01) - 1.0)
    assert np.isnan(fz0_loss([0.0, 0.1], [0.0, 0.05], [0.0, 0.08], 0.99)[0])


def test_kupiec_one_sided_is_the_binomial_tail() -> None:
    loss = np.r_[np.ones(4), np.zeros(96)]
    r = kupiec_one_sided(loss, np.full(100, 0.5), 0.99)
    # P(X >= 4), X ~ Bin(100, 0.01) = 1 - sum_{k<4} C(100,k) 0.01^k 0.99^(100-k)
    below = sum(math.comb(100, k) * 0.01**k * 0.99 ** (100 - k) for k in range(4))
    assert r.breaches == 4 and r.p_value == pytest.approx(1 - below, rel=1e-9)
    assert kupiec_one_sided(np.zeros(100), np.full(100, 0.5), 0.99).p_value == 1.0


def test_dq_constant_only_is_the_score_test() -> None:
    # hits 1,1,0,0 at alpha 0.25: Hit = .75,.75,-.25,-.25, sum 1; DQ = 1^2 / (4 * .25 * .75)
    r = dq_test([1, 1, 0, 0], [0.5] * 4, level=0.75, lags=0, include_var=False)
    assert r.statistic == pytest.approx(4 / 3) and r.df == 1


def test_dq_with_one_lag_hand_computed() -> None:
    # alpha 0.5, hits 1,0,1,1,0,0: Hit = .5,-.5,.5,.5,-.5,-.5. With one lag the rows are
    # y = (-.5,.5,.5,-.5,-.5), x1 = (.5,-.5,.5,.5,-.5): X'X = [[5, .5], [.5, 1.25]],
    # X'y = (-.5, -.25), det 6: DQ = (1.25*.25 - 2*.5*.125 + 5*.0625) / 6 / .25 = 1/3
    det = 5 * 1.25 - 0.25
    by_hand = (1.25 * 0.25 - 2 * 0.5 * 0.125 + 5 * 0.0625) / det / 0.25
    r = dq_test([1, 0, 1, 1, 0, 0], [0.5] * 6, level=0.5, lags=1, include_var=False)
    assert by_hand == pytest.approx(1 / 3)
    assert r.statistic == pytest.approx(by_hand, rel=1e-12) and r.n == 5


def test_dq_size_and_power_under_simulation() -> None:
    rng = np.random.default_rng(11)
    reps, n, level = 300, 1000, 0.95
    rejects = 0
    for _ in range(reps):
        v = np.exp(rng.normal(0, 0.3, n))  # a time-varying VaR independent of the hits
        hit = rng.random(n) < 0.05
        rejects += dq_test(np.where(hit, v + 1, v - 1), v, level, sims=0).p_value < 0.05
    assert 0.02 <= rejects / reps <= 0.09
    # clustered breaches (each breach repeats the next day) are caught
    hit = rng.random(n) < 0.025
    hit[1:] |= hit[:-1]
    v = np.ones(n)
    assert dq_test(np.where(hit, 2.0, 0.0), v, level).p_value < 0.01


def test_dq_monte_carlo_p_value_keeps_its_size_at_99_percent() -> None:
    """At 99 % over 730 days the chi-squared p-value rejects i.i.d. hits far more often than
    5 %; the Monte Carlo p-value does not."""
    rng = np.random.default_rng(21)
    asymptotic = monte_carlo = 0
    reps = 200
    for _ in range(reps):
        v = np.exp(rng.normal(0, 0.3, 730))
        hit = rng.random(730) < 0.01
        r = dq_test(np.where(hit, v + 1, v - 1), v, 0.99, sims=199)
        asymptotic += r.p_value_asymptotic < 0.05
        monte_carlo += r.p_value < 0.05
    assert asymptotic / reps > 0.10
    assert 0.02 <= monte_carlo / reps <= 0.08


def test_dq_simulated_statistics_equal_the_direct_solve() -> None:
    from pipelines.evaluation.tail_tests import _dq_statistics

    rng = np.random.default_rng(4)
    v = np.exp(rng.normal(0, 0.3, 300))
    hits = rng.random((3, 300)) < 0.05
    z = (v - v.mean()) / v.std()
    got = _dq_statistics(hits, z, 0.05, 4)  # alpha: the tail probability
    for row, stat in zip(hits, got, strict=True):
        direct = dq_test(np.where(row, v + 1, v - 1), v, 0.95, sims=0).statistic
        assert stat == pytest.approx(direct, rel=1e-9)


def test_dq_with_a_nearly_constant_var_uses_one_rank() -> None:
    """The statistic is a projection: rescaling the VaR column cannot move it, so a VaR that
    varies by 1e-9 gives the statistic and the degrees of freedom of its rescaled self."""
    rng = np.random.default_rng(5)
    noise = rng.standard_normal(400)
    hit = rng.random(400) < 0.05
    tiny = dq_test(np.where(hit, 1.0, 0.0), 0.05 + 1e-9 * noise, 0.95, sims=0)
    wide = dq_test(np.where(hit, 10.0, -10.0), 0.05 + noise, 0.95, sims=0)
    assert tiny.df == wide.df == 6
    assert tiny.statistic == pytest.approx(wide.statistic, rel=1e-6)
    assert tiny.p_value == pytest.approx(wide.p_value, rel=1e-6)


def test_mcneil_frey_hand_computed_statistic() -> None:
    loss = np.array([1.0, 3.0, 0.0, 4.0, 0.5, 2.5])
    var, es = np.full(6, 2.0), np.full(6, 2.5)
    # breaches 3, 4, 2.5: residuals (L - ES)/ES = .2, .6, 0; mean .2667, sd .3055
    r = mcneil_frey(loss, var, es, reps=200, seed=1)
    res = np.array([0.2, 0.6, 0.0])
    assert r.statistic == pytest.approx(res.mean() / (res.std(ddof=1) / math.sqrt(3)))
    assert r.n_exceedances == 3


def test_z2_hand_computed() -> None:
    loss = np.array([0.0, 3.0, 1.0, 0.5])
    var, es = np.full(4, 2.0), np.full(4, 2.5)
    # one breach (3.0): Z2 = 1 - (3/2.5) / (4 * 0.25) = -0.2
    r = acerbi_szekely_z2(loss, var, es, level=0.75, sims=100)
    assert r.statistic == pytest.approx(-0.2) and r.breaches == 1


@pytest.mark.parametrize(("test", "reps", "band"), [
    # McNeil-Frey's bootstrap is cheap: 1,000 samples hold its size within ~1 pp (measured
    # 3.1%, a bootstrap-t being a little conservative), so a test of true size 10% fails
    ("mcneil_frey", 1000, (0.015, 0.075)),
    # Z2 simulates its null: 200 samples here, its null checked exactly by the uniformity
    # test below
    ("z2", 200, (0.01, 0.10)),
])
def test_es_backtests_size_under_simulation(test: str, reps: int,
                                            band: tuple[float, float]) -> None:
    rng = np.random.default_rng(5)
    level, n = 0.975, 500
    q, es = t_tail(level)
    sigma = np.exp(rng.normal(-3.5, 0.2, (reps, n)))
    loss = T5.rvs(size=(reps, n), random_state=rng) * sigma
    rejects = 0
    for i in range(reps):
        if test == "z2":
            p = acerbi_szekely_z2(loss[i], q * sigma[i], es * sigma[i], level, sims=500,
                                  seed=i).p_value
        else:
            p = mcneil_frey(loss[i], q * sigma[i], es * sigma[i], sigma[i], reps=300,
                            seed=i).p_value
        rejects += p < 0.05
    assert band[0] <= rejects / reps <= band[1]
    # a tail 25% too small (Z2) or an ES 20% too small beyond a right VaR (McNeil-Frey, which
    # tests the ES given the VaR) is rejected most of the time
    low = [acerbi_szekely_z2(loss[i], 0.75 * q * sigma[i], 0.75 * es * sigma[i], level, sims=500)
           .p_value < 0.05 for i in range(40)] if test == "z2" else [
        mcneil_frey(loss[i], q * sigma[i], 0.8 * es * sigma[i], sigma[i], reps=300)
        .p_value < 0.05 for i in range(40)]
    assert np.mean(low) > 0.5


def test_z2_p_value_is_never_zero() -> None:
    """16 breaches far beyond their ES: no simulated Z2 is as low; p = 1 / (1 + sims)."""
    loss = np.r_[np.full(16, 50.0), np.zeros(184)]
    r = acerbi_szekely_z2(loss, np.full(200, 1.0), np.full(200, 1.5), level=0.99, sims=300)
    assert r.statistic < -10 and r.p_value == pytest.approx(1 / 301)


def test_z2_p_values_are_uniform_when_the_losses_follow_the_simulated_null() -> None:
    """Losses drawn from the very null the test simulates (breaches at α, GPD excesses whose
    mean makes E[L | breach] = ES): the p-values must be uniform. A null whose excess scale
    is off (without the (1 - ξ) that fixes its mean: an excess 25% too large) moves them
    towards 1 (measured: mean 0.73, 0.3% rejected at 5%) and fails here; a long sample with
    ES well above VaR gives the excesses their weight in Z2."""
    rng = np.random.default_rng(21)
    level, n, reps, xi = 0.975, 2000, 300, 0.2
    var, es = np.full(n, 1.0), np.full(n, 3.0)
    p = np.empty(reps)
    for i in range(reps):
        breach = rng.random(n) < 1.0 - level
        excess = ((1.0 - rng.random(n)) ** -xi - 1.0) / xi * (es - var) * (1.0 - xi)
        loss = np.where(breach, var + excess, var * rng.random(n))
        p[i] = acerbi_szekely_z2(loss, var, es, level, sims=300, tail_shape=xi, seed=i).p_value
    assert 0.45 <= np.mean(p) <= 0.55  # uniform: 1/2, within 3 standard errors
    assert 0.02 <= np.mean(p < 0.05) <= 0.09

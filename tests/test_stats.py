"""Forecast-comparison tests: hand-computed values, symmetry, size and power on seeded draws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipelines.evaluation.stats import (
    andrews_bandwidth,
    bartlett_variance,
    diebold_mariano,
    fixed_b_cdf,
    mcs_r_pvalues,
    mincer_zarnowitz,
    model_confidence_set,
    newey_west_lags,
    stationary_bootstrap_indices,
)

# ----------------------------------------------------------------------------- Diebold-Mariano


def test_dm_matches_hand_computation_at_horizon_1():
    loss_a = [1.0, 3.0, 2.0, 5.0, 4.0]
    loss_b = [2.0, 2.0, 4.0, 4.0, 6.0]
    # d = [-1, 1, -2, 1, -2], mean -0.6, deviations [-0.4, 1.6, -1.4, 1.6, -1.4]
    gamma0 = (0.16 + 2.56 + 1.96 + 2.56 + 1.96) / 5  # 1.84
    dm_raw = -0.6 / math.sqrt(gamma0 / 5)
    hln = math.sqrt((5 + 1 - 2 * 1 + 1 * 0 / 5) / 5)
    r = diebold_mariano(loss_a, loss_b, horizon=1)
    assert r.mean_diff == pytest.approx(-0.6)
    assert r.long_run_variance == pytest.approx(1.84)
    assert r.statistic_raw == pytest.approx(dm_raw) == pytest.approx(-0.989071, abs=1e-6)
    assert r.hln_factor == pytest.approx(hln)
    assert r.statistic == pytest.approx(dm_raw * hln)
    assert r.df == 4
    assert r.p_value == pytest.approx(2 * stats.t.sf(abs(dm_raw * hln), 4))
    assert r.p_value_a_better == pytest.approx(stats.t.cdf(dm_raw * hln, 4))
    assert not r.variance_fallback
    # d alternates in sign: its Bartlett estimate is below gamma_0, so the rectangular stands
    assert r.kernel == "rectangular" and r.bandwidth > 0


def test_dm_matches_hand_computation_at_horizon_2():
    d = [-1.0, -2.0, -1.0, 0.0, 1.0, 0.0, -1.0, -2.0]  # mean -0.75
    e = [-0.25, -1.25, -0.25, 0.75, 1.75, 0.75, -0.25, -1.25]
    gamma0 = sum(x * x for x in e) / 8  # 7.5 / 8
    gamma1 = sum(e[t] * e[t - 1] for t in range(1, 8)) / 8  # 3.1875 / 8
    assert (gamma0, gamma1) == (0.9375, 0.3984375)
    lrv = gamma0 + 2 * gamma1  # 1.734375
    dm_raw = -0.75 / math.sqrt(lrv / 8)
    hln = math.sqrt((8 + 1 - 2 * 2 + 2 * 1 / 8) / 8)  # sqrt(5.25 / 8)
    r = diebold_mariano(d, np.zeros(8), horizon=2)
    assert r.long_run_variance == pytest.approx(1.734375)
    assert r.statistic_raw == pytest.approx(dm_raw) == pytest.approx(-1.610775, abs=1e-6)
    assert r.statistic == pytest.approx(dm_raw * hln) == pytest.approx(-1.304877, abs=1e-6)
    assert r.p_value == pytest.approx(2 * stats.t.sf(abs(dm_raw * hln), 7))


def test_dm_falls_back_to_gamma0_when_the_long_run_variance_is_negative():
    # d = [-1, 1, -2, 1, -2]: gamma1 = -7.36 / 5, so gamma0 + 2 gamma1 = -1.104 < 0
    r = diebold_mariano([-1.0, 1.0, -2.0, 1.0, -2.0], np.zeros(5), horizon=2)
    assert r.variance_fallback
    assert r.long_run_variance == pytest.approx(1.84)
    assert "non-positive" in r.note
    assert r.statistic_raw == pytest.approx(-0.6 / math.sqrt(1.84 / 5))


def test_andrews_bandwidth_and_bartlett_variance_by_hand():
    d = np.array([1.0, 2.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0])  # mean 2.25
    e = d - 2.25
    rho = sum(e[t] * e[t - 1] for t in range(1, 8)) / sum(x * x for x in e[:-1])
    assert rho == pytest.approx(1.6875 / 4.4375)
    alpha = 4 * rho**2 / ((1 - rho) ** 2 * (1 + rho) ** 2)
    assert andrews_bandwidth(d) == pytest.approx(1.1447 * (alpha * 8) ** (1 / 3))
    assert andrews_bandwidth(np.ones(10)) == 0.0  # no variation: no dependence to estimate
    # S = 2.5: weights 1 - 1/2.5 = 0.6 and 1 - 2/2.5 = 0.2; lags at or beyond S weigh 0
    gamma = np.array([1.0, 0.5, 0.25, 0.9])
    assert bartlett_variance(gamma, 2.5) == pytest.approx(1.0 + 2 * (0.6 * 0.5 + 0.2 * 0.25))
    assert bartlett_variance(gamma, 0.0) == 1.0


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """An AR(1) path d_t = rho·d_{t-1} + e_t from d_0 = e_0, e standard normal."""
    shocks = rng.standard_normal(n)
    d = np.empty(n)
    d[0] = shocks[0]
    for t in range(1, n):
        d[t] = rho * d[t - 1] + shocks[t]
    return d


def test_dm_uses_the_bartlett_variance_when_the_differential_persists():
    d = _ar1(np.random.default_rng(12), 400, 0.8)
    r = diebold_mariano(d, np.zeros(400))
    old = diebold_mariano(d, np.zeros(400), dependence=False)
    e = d - d.mean()
    s = andrews_bandwidth(d)
    gammas = np.array([e[k:] @ e[:400 - k] / 400 for k in range(math.ceil(s))])
    assert r.kernel == "bartlett" and r.bandwidth == pytest.approx(s)
    assert r.long_run_variance == pytest.approx(bartlett_variance(gammas, s))
    assert old.kernel == "rectangular" and old.long_run_variance == pytest.approx(gammas[0])
    assert r.long_run_variance > 3 * old.long_run_variance  # AR(0.8): about 9 times
    # the first-order autocorrelation is reported beside the test (its size depends on it)
    assert r.lag1_autocorr == pytest.approx((e[1:] @ e[:-1]) / (e[:-1] @ e[:-1]))
    assert 0.7 < r.lag1_autocorr < 0.9
    assert r.statistic == pytest.approx(old.statistic * math.sqrt(
        old.long_run_variance / r.long_run_variance))


def test_dm_size_under_a_persistent_differential():
    """Two equally good models whose loss differential is AR(1) with coefficient 0.9 (errors
    that persist): gamma_0 alone rejects most of the time; the Bartlett variance with
    fixed-b p-values cuts that to about 9% (14% with Student-t p-values)."""
    rng = np.random.default_rng(13)
    new, old = [], []
    for _ in range(300):
        d = _ar1(rng, 500, 0.9)
        new.append(diebold_mariano(d, np.zeros(500)).p_value)
        old.append(diebold_mariano(d, np.zeros(500), dependence=False).p_value)
    assert np.mean(np.array(old) < 0.05) > 0.5
    assert np.mean(np.array(new) < 0.05) < 0.12  # fixed-b p-values; Student-t ones: 0.14


@pytest.mark.parametrize("b", [0.08, 0.2, 0.5])
def test_fixed_b_quantiles_match_kiefer_vogelsang(b):
    """Kiefer and Vogelsang (2005), Bartlett kernel: the fixed-b critical values are the cubics
    1.6449 + 2.1859b + 0.3142b² - 0.3427b³ (95%) and 1.9600 + 2.9694b + 0.4160b² - 0.5324b³
    (97.5%); the simulated limit's quantiles match them to the simulation's precision."""
    for level, coef in ((0.95, (1.6449, 2.1859, 0.3142, -0.3427)),
                        (0.975, (1.9600, 2.9694, 0.4160, -0.5324))):
        cv = sum(c * b**k for k, c in enumerate(coef))
        assert fixed_b_cdf(cv, b) == pytest.approx(level, abs=0.006)
        assert fixed_b_cdf(-cv, b) == pytest.approx(1 - level, abs=0.006)  # symmetric
    assert fixed_b_cdf(1.96, 0.0) == pytest.approx(stats.norm.cdf(1.96), abs=0.004)  # b→0: N(0,1)


def test_fixed_b_between_grid_points_and_without_a_statistic():
    """Off the simulated grid (b = 0.1025) the interpolated law still has KV's quantiles;
    a NaN statistic has no probability."""
    b = 0.1025
    cv = 1.9600 + 2.9694 * b + 0.4160 * b**2 - 0.5324 * b**3
    assert fixed_b_cdf(cv, b) == pytest.approx(0.975, abs=0.006)
    lo, hi = fixed_b_cdf(cv, 0.100), fixed_b_cdf(cv, 0.105)
    assert min(lo, hi) <= fixed_b_cdf(cv, b) <= max(lo, hi)
    assert math.isnan(fixed_b_cdf(float("nan"), 0.1))


def test_dm_takes_fixed_b_p_values_where_the_bartlett_variance_is_used():
    d = _ar1(np.random.default_rng(21), 600, 0.9)
    r = diebold_mariano(d + 0.3, np.zeros(600))
    b = r.bandwidth / r.n
    assert r.kernel == "bartlett" and 0.02 < b < 0.2
    assert r.p_value_a_better == pytest.approx(fixed_b_cdf(r.statistic, b))
    assert r.p_value == pytest.approx(fixed_b_cdf(-abs(r.statistic), b) + 1
                                      - fixed_b_cdf(abs(r.statistic), b))
    assert r.p_value > 2 * stats.t.sf(abs(r.statistic), r.df)  # wider tails than Student-t


def test_dm_swapping_models_flips_the_sign():
    rng = np.random.default_rng(3)
    a, b = rng.chisquare(1, 200), rng.chisquare(1, 200) * 1.2
    ab, ba = diebold_mariano(a, b, horizon=3), diebold_mariano(b, a, horizon=3)
    assert ba.statistic == pytest.approx(-ab.statistic)
    assert ba.p_value == pytest.approx(ab.p_value)
    assert ba.p_value_a_better == pytest.approx(1.0 - ab.p_value_a_better)


def test_dm_drops_pairs_with_a_nan():
    rng = np.random.default_rng(4)
    a, b = rng.chisquare(1, 100), rng.chisquare(1, 100)
    a_nan, b_nan = a.copy(), b.copy()
    a_nan[[5, 50]] = np.nan
    b_nan[70] = np.nan
    keep = np.ones(100, bool)
    keep[[5, 50, 70]] = False
    r = diebold_mariano(a_nan, b_nan)
    assert (r.n, r.n_dropped) == (97, 3)
    assert r.statistic == pytest.approx(diebold_mariano(a[keep], b[keep]).statistic)


def test_dm_detects_a_truly_better_model():
    rng = np.random.default_rng(5)
    err_a, err_b = rng.normal(0, 1.0, 500), rng.normal(0, 1.5, 500)
    r = diebold_mariano(err_a**2, err_b**2)
    assert r.mean_diff < 0
    assert r.p_value < 0.01
    assert r.p_value_a_better < 0.01


def test_dm_has_the_right_size_for_equally_good_models():
    rng = np.random.default_rng(6)
    p1, p5 = [], []
    for _ in range(300):
        err_a, err_b = rng.standard_normal((2, 250))
        p1.append(diebold_mariano(err_a**2, err_b**2).p_value)
        # 5-step-ahead forecasts: an MA(4) loss differential
        d = np.convolve(rng.standard_normal(254), np.ones(5), "valid")
        p5.append(diebold_mariano(d, np.zeros(250), horizon=5).p_value)
    assert 0.02 <= np.mean(np.array(p1) < 0.05) <= 0.09
    assert 0.02 <= np.mean(np.array(p5) < 0.05) <= 0.10
    # roughly uniform: each p-value decile holds about a tenth of the draws
    deciles = np.histogram(p1, bins=10, range=(0, 1))[0] / 300
    assert deciles.min() > 0.04 and deciles.max() < 0.17


def test_dm_constant_differential_is_undefined_not_an_error():
    r = diebold_mariano([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert math.isnan(r.statistic) and math.isnan(r.p_value)
    assert "constant" in r.note


def test_dm_rejects_a_horizon_the_sample_cannot_support():
    with pytest.raises(ValueError, match="horizon"):
        diebold_mariano([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], horizon=3)


# ---------------------------------------------------------------------------- Mincer-Zarnowitz


def test_mz_perfect_forecast_has_unit_slope_and_r2():
    f = np.linspace(1.0, 5.0, 50)
    r = mincer_zarnowitz(f, f)
    assert r.intercept == pytest.approx(0.0, abs=1e-10)
    assert r.slope == pytest.approx(1.0)
    assert r.r_squared == pytest.approx(1.0)
    assert (r.statistic, r.p_value) == (0.0, 1.0)
    r_log = mincer_zarnowitz(f, f, log=True)
    assert r_log.slope == pytest.approx(1.0) and r_log.log
    doubled = mincer_zarnowitz(2 * f, f)  # exact but biased: no sampling doubt left
    assert doubled.slope == pytest.approx(2.0) and doubled.p_value == 0.0


def _proxy(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """True variances (GARCH-like persistence) and a noisy unbiased proxy sigma2 * z^2."""
    log_var = np.zeros(n)
    for t in range(1, n):
        log_var[t] = 0.95 * log_var[t - 1] + 0.3 * rng.standard_normal()
    sigma2 = np.exp(log_var)
    return sigma2, sigma2 * rng.standard_normal(n) ** 2


def test_mz_does_not_reject_an_unbiased_forecast():
    sigma2, realized = _proxy(np.random.default_rng(7), 2000)
    r = mincer_zarnowitz(realized, sigma2)
    assert abs(r.slope - 1.0) < 2.5 * r.slope_se
    assert r.p_value > 0.05
    assert r.maxlags == newey_west_lags(2000) == 7


def test_mz_detects_a_biased_forecast():
    sigma2, realized = _proxy(np.random.default_rng(7), 2000)
    r = mincer_zarnowitz(realized, 0.6 * sigma2)  # forecasts variance 40 % too low
    assert r.slope == pytest.approx(1 / 0.6, rel=0.15)
    assert r.p_value < 1e-4
    shifted = mincer_zarnowitz(realized, sigma2 + 0.5)  # additive bias
    assert shifted.intercept == pytest.approx(-0.5, abs=0.2)
    assert shifted.p_value < 1e-4


def test_mz_drops_nan_pairs_and_uses_the_given_lags():
    sigma2, realized = _proxy(np.random.default_rng(8), 300)
    realized[[0, 10]] = np.nan
    r = mincer_zarnowitz(realized, sigma2, maxlags=4)
    assert (r.n, r.n_dropped, r.maxlags) == (298, 2, 4)


# ------------------------------------------------------------------------ Model Confidence Set


def _losses(seed: int, n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    common = rng.chisquare(1, n)  # the part of the loss every model shares (the proxy noise)
    return pd.DataFrame({
        "garch11_t": common + rng.normal(0, 0.3, n),
        "har": common + rng.normal(0, 0.3, n),
        "naive": common + 0.5 + rng.normal(0, 0.3, n),  # clearly worse
    })


def test_mcs_excludes_a_clearly_worse_model():
    r = model_confidence_set(_losses(9), size=0.10, reps=500, seed=1)
    assert r.excluded == ("naive",)
    assert set(r.included) == {"garch11_t", "har"}
    assert r.p_values["naive"] < 0.01
    assert r.elimination_order[0] == "naive"
    assert r.p_values[r.elimination_order[-1]] == 1.0
    frame = r.to_frame()
    assert list(frame.index) == list(r.elimination_order)
    assert frame["p_value"].is_monotonic_increasing


def test_mcs_max_method_agrees():
    r = model_confidence_set(_losses(9), reps=500, method="max", seed=1)
    assert r.excluded == ("naive",) and r.method == "max"


def test_mcs_keeps_identical_models():
    base = _losses(10)["har"]
    same = pd.DataFrame({"a": base, "b": base, "c": base})
    r = model_confidence_set(same, reps=200, seed=1)
    assert r.included == ("a", "b", "c")
    assert r.excluded == ()
    assert r.duplicates == {"b": "a", "c": "a"}
    # a copy of a model shares its fate
    with_copy = _losses(9).assign(naive_copy=lambda f: f["naive"])
    r2 = model_confidence_set(with_copy, reps=500, seed=1)
    assert set(r2.excluded) == {"naive", "naive_copy"}
    # equal up to rounding (x * s / s): one model too
    s = np.random.default_rng(2).uniform(1.0, 3.0, len(base))
    near = pd.DataFrame({"a": base, "b": (base * s) / s})
    assert not np.array_equal(near["a"], near["b"])
    assert model_confidence_set(near, reps=200, seed=1).duplicates == {"b": "a"}
    assert r2.p_values["naive_copy"] == r2.p_values["naive"]


def test_mcs_is_reproducible_with_a_seed():
    # three nearly equal models, so the p-values depend on the bootstrap draws
    losses = _losses(11).drop(columns="naive").assign(
        other=lambda f: f["har"] + 0.02)
    one = model_confidence_set(losses, reps=300, seed=42)
    two = model_confidence_set(losses, reps=300, seed=42)
    other_seed = model_confidence_set(losses, reps=300, seed=43)
    assert one == two
    assert one.p_values != other_seed.p_values


def _arch_mcs(losses: np.ndarray, reps: int, block: int, seed: int) -> list[tuple[int, float]]:
    from arch.bootstrap import MCS

    mcs = MCS(pd.DataFrame(losses), size=0.10, reps=reps, block_size=block, method="R",
              bootstrap="stationary", seed=seed)
    mcs.compute()
    table = mcs.pvalues["Pvalue"]
    return [(int(i), float(p)) for i, p in zip(table.index, table, strict=True)]


def test_stationary_bootstrap_indices_are_arch_resamples():
    from arch.bootstrap import StationaryBootstrap

    for n, reps, block, seed in [(10, 7, 1, 0), (97, 40, 9, 3), (365, 25, 19, 11), (50, 5, 200, 2)]:
        ours = stationary_bootstrap_indices(n, reps, block, seed)
        bs = StationaryBootstrap(block, np.arange(n), seed=seed)
        theirs = np.column_stack([pos[0] for pos, _ in bs.bootstrap(reps)])
        assert ours.shape == (n, reps)
        np.testing.assert_array_equal(ours, theirs)
        again = stationary_bootstrap_indices(n, reps, block, seed)  # drawn once, shared
        assert again is ours and not again.flags.writeable


def test_mcs_r_matches_arch_bit_for_bit():
    """Random shapes, block lengths, replications and seeds, rounded and near-identical
    losses: the same elimination order and exactly the same p-values as arch's MCS."""
    rng = np.random.default_rng(5)
    compared = 0
    for case in range(40):
        n, k = int(rng.integers(10, 600)), int(rng.integers(2, 10))
        block, reps, seed = int(rng.integers(1, 40)), int(rng.integers(1, 400)), int(
            rng.integers(0, 1000))
        losses = rng.gamma(1.0, 1.0, (n, k)) * rng.uniform(0.5, 1.5, k)
        if case % 5 == 0:
            losses[:, 1] = losses[:, 0] + 1e-9  # nearly the same model
        if case % 7 == 0:
            losses = np.round(losses, 1)  # many equal losses
        ours = mcs_r_pvalues(losses, reps, block, seed)
        try:
            theirs = _arch_mcs(losses, reps, block, seed)
        except IndexError:  # arch cannot name a worst model (a NaN statistic): nor can we
            assert ours is None
            continue
        assert ours == theirs
        compared += 1
    assert compared >= 35


def test_mcs_r_leaves_what_it_cannot_name_to_arch(monkeypatch):
    """Where the fast path declines (a tie or a NaN at the largest statistic), the public
    function gives arch's own answer."""
    import pipelines.evaluation.stats as st

    losses = _losses(11).assign(other=lambda f: f["har"] + 0.02)
    fast = model_confidence_set(losses, reps=300, seed=4)
    monkeypatch.setattr(st, "mcs_r_pvalues", lambda *a: None)
    slow = model_confidence_set(losses, reps=300, seed=4)
    arch = _arch_mcs(losses.to_numpy(), 300, 22, 4)
    assert slow.elimination_order == tuple(losses.columns[i] for i, _ in arch)
    assert [slow.p_values[m] for m in slow.elimination_order] == [p for _, p in arch]
    assert slow == fast


def test_mcs_drops_rows_with_a_missing_loss():
    losses = _losses(9)
    losses.iloc[[3, 4], 1] = np.nan
    r = model_confidence_set(losses, reps=200, seed=1)
    assert (r.n, r.n_dropped, r.block_size) == (498, 2, 22)


def test_dm_treats_a_differential_of_rounding_noise_as_constant():
    """Two losses equal up to their last bits: the test is undefined, never 'significant'."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0.5, 2.0, 400)
    s = rng.uniform(1.0, 3.0, 400)
    r = diebold_mariano((x * s) / s, x)
    assert np.isnan(r.statistic) and np.isnan(r.p_value) and "constant" in r.note
    shifted = diebold_mariano(x, x + 0.1)  # a constant shift: the same
    assert np.isnan(shifted.statistic) and "constant" in shifted.note
    assert np.isfinite(diebold_mariano(x, x + rng.normal(0, 1e-3, 400)).statistic)


def test_mincer_zarnowitz_on_a_constant_realized_series_is_undefined():
    rng = np.random.default_rng(5)
    r = mincer_zarnowitz(np.ones(100), rng.uniform(1, 2, 100))
    assert np.isnan(r.statistic) and np.isnan(r.p_value) and np.isnan(r.r_squared)
    assert "constant realized variance" in r.note


def test_mincer_zarnowitz_refuses_half_the_sample_as_hac_lags():
    rng = np.random.default_rng(6)
    x = rng.uniform(1.0, 2.0, 8)
    r = mincer_zarnowitz(x + rng.normal(0, 0.1, 8), x, maxlags=12)
    assert np.isnan(r.statistic) and "8 complete pairs for 12 HAC lags" in r.note
    assert np.isfinite(mincer_zarnowitz(np.r_[x, x] + rng.normal(0, 0.1, 16), np.r_[x, x],
                                        maxlags=7).statistic)

"""VaR/ES backtests: hand-computed likelihood ratios, Basel zones, seeded right and wrong VaRs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipelines.evaluation.coverage import (
    basel_traffic_light,
    christoffersen_cc,
    christoffersen_independence,
    kupiec_band,
    kupiec_lr,
    kupiec_pof,
    mcneil_frey,
    traffic_light_thresholds,
    var_backtest,
)

CHI2_1_95 = 3.841458820694124


def _hits(n: int, at: list[int]) -> np.ndarray:
    h = np.zeros(n, bool)
    h[at] = True
    return h


# ------------------------------------------------------------------------------------ Kupiec


def _lr_by_hand(x: int, n: int, p: float) -> float:
    restricted = (n - x) * math.log(1 - p) + x * math.log(p)
    unrestricted = (n - x) * math.log(1 - x / n) + x * math.log(x / n)
    return -2 * restricted + 2 * unrestricted


def test_kupiec_matches_hand_computation():
    r = kupiec_pof(_hits(250, [10, 70, 150, 220]), p=0.01)
    assert (r.n, r.breaches, r.expected, r.breach_rate) == (250, 4, 2.5, 0.016)
    assert r.statistic == pytest.approx(_lr_by_hand(4, 250, 0.01)) == pytest.approx(0.769138,
                                                                                    abs=1e-6)
    assert r.p_value == pytest.approx(stats.chi2.sf(r.statistic, 1))


def test_kupiec_zero_and_all_breaches_are_finite():
    none = kupiec_pof(np.zeros(250, bool), p=0.01)
    assert none.statistic == pytest.approx(-2 * 250 * math.log(0.99))  # 5.025
    assert none.p_value < 0.05  # never breached: too conservative at 99 %
    every = kupiec_pof(np.ones(20, bool), p=0.01)
    assert every.statistic == pytest.approx(-2 * 20 * math.log(0.01))


def test_kupiec_band_is_the_lr_inversion():
    lo, hi = kupiec_band(250, 0.01)
    assert (lo, hi) == (1, 6)
    for x in range(lo, hi + 1):
        assert _lr_by_hand(x, 250, 0.01) < CHI2_1_95
    assert -2 * 250 * math.log(0.99) >= CHI2_1_95  # x = 0, outside
    assert _lr_by_hand(hi + 1, 250, 0.01) >= CHI2_1_95
    # same inversion on a longer sample, by brute force
    by_hand = [x for x in range(1, 1000) if _lr_by_hand(x, 1000, 0.01) < CHI2_1_95]
    assert kupiec_band(1000, 0.01) == (by_hand[0], by_hand[-1]) == (5, 16)
    assert np.allclose(kupiec_lr(np.array([4, 5]), 250, 0.01),
                       [_lr_by_hand(4, 250, 0.01), _lr_by_hand(5, 250, 0.01)])


def test_hits_with_nan_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        kupiec_pof(np.array([0.0, np.nan, 1.0]), p=0.01)
    with pytest.raises(ValueError, match="coverage level"):
        kupiec_pof([True, False], p=99.0)


# ---------------------------------------------------------------------------- Christoffersen


def test_independence_matches_hand_computed_2x2_table():
    hits = [0, 0, 1, 1, 0, 1, 0, 0, 0, 1]
    # transitions: 00 01 11 10 01 10 00 00 01 -> n00=3, n01=3, n10=2, n11=1
    r = christoffersen_independence(hits)
    assert (r.n00, r.n01, r.n10, r.n11) == (3, 3, 2, 1)
    assert (r.pi01, r.pi11, r.pi) == (0.5, 1 / 3, 4 / 9)
    log_l0 = 5 * math.log(5 / 9) + 4 * math.log(4 / 9)
    log_l1 = 3 * math.log(0.5) + 3 * math.log(0.5) + 2 * math.log(2 / 3) + math.log(1 / 3)
    assert r.statistic == pytest.approx(-2 * (log_l0 - log_l1)) == pytest.approx(0.228457, abs=1e-6)
    assert r.p_value == pytest.approx(stats.chi2.sf(r.statistic, 1))


def test_clustered_breaches_reject_independence():
    clustered = _hits(250, [100, 101, 102, 103, 104])  # n11 = 4, one run
    r = christoffersen_independence(clustered)
    assert (r.n01, r.n11, r.n10) == (1, 4, 1)
    assert r.statistic > 15 and r.p_value < 1e-4
    # the same count spread out passes both tests
    spread = christoffersen_cc(_hits(250, [20, 70, 120, 170, 220]), p=0.02)
    assert spread.ind.n11 == 0 and spread.ind.p_value > 0.5 and spread.p_value > 0.5


def test_independent_breaches_are_not_rejected():
    rng = np.random.default_rng(12)
    pvals = [christoffersen_independence(rng.random(1000) < 0.05).p_value for _ in range(200)]
    assert 0.01 <= np.mean(np.array(pvals) < 0.05) <= 0.10


def test_empty_transition_cells_give_finite_statistics():
    none = christoffersen_independence(np.zeros(100, bool))
    assert (none.statistic, none.p_value) == (0.0, 1.0)
    last_only = christoffersen_independence(_hits(100, [99]))  # no transition out of a breach
    assert (last_only.n10, last_only.n11, last_only.pi11) == (0, 0, 0.0)
    assert math.isfinite(last_only.statistic) and last_only.statistic == pytest.approx(0.0)


def test_conditional_coverage_adds_pof_and_independence():
    hits = _hits(250, [100, 101, 102, 103, 104])
    r = christoffersen_cc(hits, p=0.01)
    assert r.statistic == pytest.approx(r.pof.statistic + r.ind.statistic)
    assert r.p_value == pytest.approx(stats.chi2.sf(r.statistic, 2))
    assert r.critical_value_5pct == pytest.approx(5.991, abs=1e-3)
    assert r.statistic > r.critical_value_5pct


# ----------------------------------------------------------------------------- traffic light


def test_traffic_light_reproduces_the_basel_4_9_thresholds():
    assert traffic_light_thresholds(250, 0.01) == (4, 9)
    cdf = stats.binom(250, 0.01).cdf
    assert cdf(4) < 0.95 <= cdf(5)  # 89.22 % vs 95.88 % in the Basel table
    assert cdf(9) < 0.9999 <= cdf(10)  # 99.97 % vs 99.99 %
    assert traffic_light_thresholds(250, 1e-5) == (0, 0)  # zero breaches is always green


def test_twelve_breaches_in_a_window_is_red():
    hits = pd.Series(_hits(400, list(range(150, 390, 20))),  # 12 breaches in days 150..370
                     index=pd.date_range("2022-01-01", periods=400, freq="D"))
    r = basel_traffic_light(hits)
    assert r.n_windows == 151 and r.max_breaches == 12
    assert r.worst_zone == "red" and r.n_red > 0
    assert r.windows.index[0] == pd.Timestamp("2022-09-07")  # the 250th day
    last = r.windows.iloc[-1]
    assert (last["breaches"], last["zone"]) == (12, "red")
    first = r.windows.iloc[0]  # days 0..249 hold breaches 150..230: 5
    assert (first["breaches"], first["zone"]) == (5, "yellow")
    by_hand = [int(hits.iloc[i - 249:i + 1].sum()) for i in range(249, 400)]
    assert r.windows["breaches"].tolist() == by_hand
    assert r.n_yellow + r.n_red + int((r.windows["zone"] == "green").sum()) == 151


def test_traffic_light_without_a_full_window():
    r = basel_traffic_light(np.zeros(100, bool))
    assert (r.n_windows, r.worst_zone, len(r.windows)) == (0, None, 0)


# ----------------------------------------------------------------------------------- bundle


def test_var_backtest_accepts_a_correct_var_and_rejects_a_too_small_one():
    rng = np.random.default_rng(13)
    sigma = np.exp(np.cumsum(rng.normal(0, 0.05, 2000)) * 0.1) * 0.03
    losses = sigma * rng.standard_normal(2000)
    right = var_backtest(losses, sigma * stats.norm.ppf(0.99), p=0.01)
    assert right.pof.p_value > 0.05 and right.cc.p_value > 0.05
    assert right.worst_zone in ("green", "yellow") and right.traffic_light.n_red == 0
    too_small = var_backtest(losses, sigma * stats.norm.ppf(0.95), p=0.01)
    assert too_small.breach_rate == pytest.approx(0.05, abs=0.01)
    assert too_small.pof.p_value < 1e-6 and too_small.worst_zone == "red"


def test_var_backtest_drops_days_without_loss_or_var():
    losses = pd.Series([0.01, np.nan, 0.05, 0.02, 0.03])
    var = np.array([0.02, 0.02, np.nan, 0.02, 0.02])
    r = var_backtest(losses, var, p=0.05, window=3)
    assert (r.n, r.n_dropped, r.breaches) == (3, 2, 1)
    assert r.traffic_light.windows.index.tolist() == [4]  # labels of the kept days


# -------------------------------------------------------------------------------- ES (McNeil)


def _normal_tail(rng: np.random.Generator, n: int, level: float):
    sigma = 0.02 * np.exp(0.5 * np.sin(np.arange(n) / 50))
    losses = sigma * rng.standard_normal(n)
    q = stats.norm.ppf(level)
    es_unit = stats.norm.pdf(q) / (1 - level)  # ES of N(0, 1) at ``level``
    return losses, sigma * q, sigma * es_unit, sigma


def test_mcneil_frey_accepts_the_right_es_and_rejects_a_too_small_one():
    losses, var, es, sigma = _normal_tail(np.random.default_rng(14), 4000, 0.95)
    right = mcneil_frey(losses, var, es, scale=sigma, reps=1000)
    assert right.n_exceedances == pytest.approx(200, abs=30)
    assert right.p_value > 0.05
    # scaling by the ES itself changes nothing for a location-zero scale family
    assert mcneil_frey(losses, var, es, reps=1000).statistic == pytest.approx(right.statistic)
    too_small = mcneil_frey(losses, var, 0.9 * es, scale=sigma, reps=1000)
    assert too_small.statistic > 3 and too_small.p_value < 0.01
    assert too_small == mcneil_frey(losses, var, 0.9 * es, scale=sigma, reps=1000)  # seeded


def test_mcneil_frey_without_exceedances_is_undefined():
    r = mcneil_frey(np.zeros(10), np.ones(10), np.full(10, 2.0))
    assert r.n_exceedances == 0 and math.isnan(r.p_value) and "fewer than 3" in r.note


def test_mcneil_frey_with_two_exceedances_is_undefined_not_a_rejection():
    """With 2 exceedances every resample has a zero mean or no spread: the bootstrap gave
    p = 0 for any positive mean residual (losses 2.6 and 2.7 against ES 2.5)."""
    r = mcneil_frey(np.array([2.6, 2.7, 0.0, 0.0]), np.full(4, 2.0), np.full(4, 2.5))
    assert r.n_exceedances == 2 and math.isnan(r.p_value)
    assert r.mean_residual == pytest.approx(((0.1 + 0.2) / 2.5) / 2)


def test_mcneil_frey_size_with_few_exceedances():
    """Right ES forecasts (exceedances from the true Student-t(5) tail), 3 to 6 of them: the
    bootstrap rejects at most about its size, never the third it rejected with 2."""
    rng = np.random.default_rng(8)
    q = stats.t(5).ppf(0.99)
    es = stats.t(5).pdf(q) / 0.01 * (5 + q**2) / 4
    rejects, runs = 0, 0
    for k in (3, 4, 5, 6):
        for _ in range(100):
            tail = stats.t(5).ppf(1 - rng.random(k) * 0.01)  # k draws beyond the VaR
            loss = np.r_[tail, np.zeros(20)]
            r = mcneil_frey(loss, np.full(loss.size, q), np.full(loss.size, es), reps=400)
            rejects += r.p_value < 0.05
            runs += 1
    assert rejects / runs <= 0.08


def test_monte_carlo_p_values_are_never_zero():
    rng = np.random.default_rng(9)
    loss = np.r_[rng.uniform(5.0, 6.0, 8), np.zeros(200)]  # far beyond ES 2.5
    r = mcneil_frey(loss, np.full(loss.size, 2.0), np.full(loss.size, 2.5), reps=500)
    assert r.p_value == pytest.approx(1 / 501)


def test_var_backtest_refuses_misaligned_series():
    idx = pd.date_range("2024-01-01", periods=5, freq="D")
    losses = pd.Series(np.full(5, 0.01), index=idx)
    with pytest.raises(ValueError, match="share one index"):
        var_backtest(losses, pd.Series(np.full(5, 0.02), index=idx + pd.Timedelta("1D")), 0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_red_windows_counts_the_traffic_lights_red_windows(seed) -> None:
    from pipelines.evaluation.coverage import red_windows

    rng = np.random.default_rng(seed)
    for n, window, p in [(900, 250, 0.01), (250, 250, 0.01), (249, 250, 0.01), (0, 250, 0.01),
                         (600, 100, 0.025), (400, 30, 0.05)]:
        # clustered breaches (a rate that switches) so that some windows go red
        rate = np.where(rng.random(n) < 0.2, 0.15, p)
        hits = rng.random(n) < rate
        assert red_windows(hits, window, p) == basel_traffic_light(hits, window, p).n_red
    assert red_windows(np.ones(300, bool), 250, 0.01) == 51
    with pytest.raises(ValueError, match="NaN"):
        red_windows(np.array([0.0, np.nan]), 1, 0.01)

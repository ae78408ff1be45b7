"""Margin policy: FHS tail, lending invariants for any input, fallbacks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.config import PolicyConfig
from serving.policy import (
    check_invariants,
    fallback_parameters,
    margin_parameters,
    student_t_measures,
    tail_measures,
)

CFG = PolicyConfig()


def test_fhs_es_is_the_mean_beyond_the_empirical_var():
    z = np.arange(1.0, 101.0)  # 1..100
    var, es = tail_measures(z, 0.95)
    assert var == 96.0 and es == pytest.approx(np.mean([96, 97, 98, 99, 100]))


def test_student_t_es_matches_numerical_integration():
    from scipy import integrate, stats

    nu, q = 4.0, 0.99
    scale = math.sqrt((nu - 2) / nu)
    var_t = stats.t.ppf(q, nu)
    tail, _ = integrate.quad(lambda x: x * stats.t.pdf(x, nu), var_t, np.inf)
    var, es = student_t_measures(q, nu)
    assert var == pytest.approx(var_t * scale)
    assert es == pytest.approx(tail / (1 - q) * scale, rel=1e-6)


def test_mmf_scales_with_forecast_volatility_and_is_the_fraction_lost():
    rng = np.random.default_rng(1)
    z = rng.standard_t(5, size=500) / math.sqrt(5 / 3)
    low = margin_parameters(0.02**2, z, CFG)
    high = margin_parameters(0.04**2, z, CFG)
    _, es_z = tail_measures(z[-CFG.fhs_window:], CFG.confidence)
    assert low.mmf == pytest.approx(1 - math.exp(-es_z * 0.02))
    assert high.mmf > low.mmf
    assert low.lt == pytest.approx(1 - low.mmf) and low.imf == pytest.approx(low.mmf * 1.25)
    assert low.max_leverage == pytest.approx(1 / low.imf)


def test_short_history_uses_student_t_and_says_so():
    p = margin_parameters(0.03**2, np.ones(10), CFG)
    _, es = student_t_measures(CFG.confidence)
    assert p.es_99 == pytest.approx(1 - math.exp(-es * 0.03))
    assert "student-t" in p.reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1e-4])
def test_invalid_forecast_falls_back_to_conservative_flagged_parameters(bad):
    p = margin_parameters(bad, np.ones(300), CFG)
    assert p.flag_fallback and p.mmf == CFG.fallback_mmf
    assert "invalid variance forecast" in p.reason


def test_tiny_volatility_is_clamped_to_the_floor_and_flagged():
    p = margin_parameters(1e-10, np.random.default_rng(0).normal(size=500), CFG)
    assert p.mmf == CFG.mmf_floor and p.flag_clamped and "floor" in p.reason


def test_stale_fallback_is_flagged_stale():
    p = fallback_parameters(CFG, "stale data", stale=True)
    assert p.flag_stale and p.flag_fallback and p.ltv < p.lt


special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])
finite_or_not = st.one_of(special, st.floats(min_value=-1.0, max_value=10.0),
                          st.floats(min_value=1e-12, max_value=1e-2))


@settings(max_examples=300, deadline=None)
@given(
    variance=finite_or_not,
    z=st.lists(st.one_of(special, st.floats(min_value=-1e6, max_value=1e6)), max_size=600),
    buffer=st.floats(min_value=0.01, max_value=1.0),
)
def test_invariants_hold_for_any_forecast_and_loss_history(variance, z, buffer):
    cfg = PolicyConfig(im_buffer=buffer)
    p = margin_parameters(variance, np.asarray(z, float), cfg)
    check_invariants(p, cfg)  # raises on any violation
    assert p.ltv < p.lt and p.lt * p.lb <= 1 + 1e-12
    assert cfg.mmf_floor <= p.mmf <= max(cfg.mmf_cap, cfg.fallback_mmf)
    assert 1.0 <= p.lb <= cfg.lb_max and p.max_leverage >= 1.0

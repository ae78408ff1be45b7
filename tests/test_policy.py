"""Margin policy: tail measures, lending view, APC, guardrails, fail-safes, invariants."""

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.schema import PolicyConfig
from serving.decide import PolicyInputs, PolicyState, apply_guardrails, decide, risk_parameters
from serving.policy import (
    check_invariants,
    conservative_parameters,
    fraction_lost,
    initial_margin,
    liquidity_addon,
    student_t_measures,
    tail_measures,
)

CFG = PolicyConfig()
DAY = dt.date(2024, 1, 10)
Z = np.random.default_rng(1).standard_t(5, size=500) * 0.8 + 1.0  # worst-loss-like, positive


def inputs(variance=0.03**2, prev=0.03**2, ret=0.0, z=Z, adv=1e9, age=0, as_of=DAY,
           history=None):
    hist = np.full(300, 0.03) if history is None else history
    return PolicyInputs(as_of=as_of, variance=variance, variance_prev=prev, ret_today=ret,
                        z_window=z, sigma_history=hist, adv_usd=adv, data_age_days=age)


def test_fhs_es_is_the_mean_beyond_the_empirical_var():
    var, es = tail_measures(np.arange(1.0, 101.0), 0.95)
    assert var == 96.0 and es == pytest.approx(np.mean([96, 97, 98, 99, 100]))


def test_student_t_es_matches_numerical_integration():
    from scipy import integrate, stats

    nu, q = 4.0, 0.99
    scale = math.sqrt((nu - 2) / nu)
    var_t = stats.t.ppf(q, nu)
    tail, _ = integrate.quad(lambda x: x * stats.t.pdf(x, nu), var_t, np.inf)
    var, es = student_t_measures(q, nu)
    assert var == pytest.approx(var_t * scale) and es == pytest.approx(tail / (1 - q) * scale)


def test_mmf_is_the_fraction_lost_at_the_scaled_es_plus_slippage():
    p = risk_parameters(inputs(adv=1e9), CFG)
    _, es_z = tail_measures(Z, CFG.confidence)
    slip = 0.03 * math.sqrt(CFG.liquidity.reference_size_usd / 1e9)
    assert p.liquidity_addon == pytest.approx(slip)
    assert p.mmf == pytest.approx(fraction_lost(es_z * 0.03) + slip)


def test_lending_cushion_equals_mmf_so_bad_debt_starts_exactly_beyond_it():
    p = risk_parameters(inputs(), CFG)
    assert 1 - p.lt * p.lb == pytest.approx(p.mmf)
    assert p.ltv == pytest.approx((1 - p.imf) / p.lb) and p.ltv < p.lt
    assert p.max_leverage == pytest.approx(1 / p.imf)


def test_higher_volatility_and_thinner_markets_mean_higher_margins():
    base = risk_parameters(inputs(), CFG)
    assert risk_parameters(inputs(variance=0.06**2), CFG).mmf > base.mmf
    assert risk_parameters(inputs(adv=1e6), CFG).mmf > base.mmf
    assert risk_parameters(inputs(adv=1e6), CFG).lb > base.lb


def test_missing_volume_means_the_maximum_liquidity_addon():
    assert liquidity_addon(0.03, float("nan"), CFG) == CFG.liquidity.max_addon


def test_apc_terms_each_raise_the_initial_margin_and_can_be_switched_off():
    off = CFG.model_copy(update={"apc": CFG.apc.model_copy(update={
        "buffer_enabled": False, "stress_enabled": False, "floor_enabled": False})})
    assert initial_margin(0.1, 0.3, 0.2, off) == pytest.approx(0.101)  # the minimum IM gap
    assert initial_margin(0.1, 0.3, 0.2, CFG) == pytest.approx(max(0.125, 0.75 * 0.1 + 0.075, 0.2))
    calm = risk_parameters(inputs(variance=0.01**2, history=np.full(300, 0.05)), CFG)
    assert calm.imf > calm.mmf * (1 + CFG.apc.buffer)  # the long-run floor binds in calm times


def test_the_buffer_is_exhausted_before_the_initial_margin_rises():
    only_buffer = CFG.model_copy(update={"apc": CFG.apc.model_copy(update={
        "stress_enabled": False, "floor_enabled": False})})
    # previous IMF 0.125 at MMF 0.10; MMF rises to 0.11: IMF stays, the buffer absorbs it
    assert initial_margin(0.11, np.nan, np.nan, only_buffer, prev_imf=0.125) == 0.125
    # MMF rises past the old IMF: IMF follows at the minimum gap, not at MMF × 1.25
    assert initial_margin(0.14, np.nan, np.nan, only_buffer, prev_imf=0.125) == pytest.approx(
        0.1414)
    # MMF falls: IMF comes down only when the old value leaves the band's top
    assert initial_margin(0.08, np.nan, np.nan, only_buffer, prev_imf=0.125) == pytest.approx(0.1)


def test_yesterdays_realized_loss_floors_todays_margin():
    calm = risk_parameters(inputs(), CFG)
    crash = PolicyInputs(**{**inputs().__dict__, "recent_losses": np.array([0.01, 0.35])})
    after = risk_parameters(crash, CFG)
    assert after.mmf == pytest.approx(fraction_lost(0.35) + after.liquidity_addon)
    assert after.mmf > calm.mmf
    off = CFG.model_copy(update={"recent_loss_days": 0})
    assert risk_parameters(crash, off).mmf == pytest.approx(calm.mmf)


def test_short_history_uses_student_t_and_says_so():
    p = risk_parameters(inputs(z=np.ones(10)), CFG)
    assert "student-t" in p.reason


def test_tightening_applies_at_once():
    low, _ = decide(inputs(), None, 3, CFG)
    high, _ = decide(inputs(variance=0.05**2, prev=0.03**2, ret=-0.2),
                     PolicyState(low), 3, CFG)
    assert high.mmf > low.mmf and not high.flag_held
    assert high.mmf == pytest.approx(risk_parameters(inputs(variance=0.05**2), CFG).mmf)


def test_loosening_is_rate_limited_and_delayed():
    high, state = decide(inputs(variance=0.06**2), None, 3, CFG)
    lower = inputs(variance=0.02**2, prev=0.06**2)
    day1, state = decide(lower, state, 3, CFG)
    step = min(CFG.guardrails.loosen_abs_step, CFG.guardrails.loosen_rel_step * high.mmf)
    assert day1.mmf == pytest.approx(high.mmf - step) and day1.flag_held
    assert state.last_loosened == DAY
    day2, state = decide(PolicyInputs(**{**lower.__dict__, "as_of": DAY + dt.timedelta(1)}),
                         state, 3, CFG)
    assert day2.mmf == pytest.approx(day1.mmf) and "held" in day2.reason  # within 3 days
    day4, _ = decide(PolicyInputs(**{**lower.__dict__, "as_of": DAY + dt.timedelta(3)}),
                     state, 3, CFG)
    assert day4.mmf == pytest.approx(day1.mmf - step)


def test_changes_below_the_deadband_are_not_published():
    first, state = decide(inputs(), None, 3, CFG)
    nudged = risk_parameters(inputs(variance=(0.03 * 1.001) ** 2), CFG)
    out, _ = apply_guardrails(nudged, state, DAY, CFG)
    assert out.mmf == first.mmf and out.flag_held and "deadband" in out.reason


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1e-4])
def test_invalid_forecast_keeps_previous_or_goes_conservative(bad):
    prev, state = decide(inputs(), None, 3, CFG)
    kept, _ = decide(inputs(variance=bad), state, 3, CFG)
    assert kept.mmf == prev.mmf and kept.flag_fallback and "invalid variance" in kept.reason
    cold, _ = decide(inputs(variance=bad), None, 3, CFG)
    assert cold.mmf == CFG.failsafe.conservative_mmf and cold.flag_fallback


def test_a_single_bad_print_cannot_move_the_margin():
    """σ ×10 overnight with a flat close (a wick, not a crash) is refused."""
    prev, state = decide(inputs(), None, 3, CFG)
    spike, _ = decide(inputs(variance=0.30**2, prev=0.03**2, ret=0.001), state, 3, CFG)
    assert spike.mmf == prev.mmf and "implausible jump" in spike.reason
    crash, _ = decide(inputs(variance=0.30**2, prev=0.03**2, ret=-0.25), state, 3, CFG)
    assert crash.mmf > prev.mmf and crash.reason.count("implausible") == 0


def test_stale_data_goes_conservative_and_recovers_without_rate_limit():
    _, state = decide(inputs(), None, 3, CFG)
    stale, state = decide(inputs(age=5), state, 3, CFG)
    assert stale.flag_stale and stale.mmf == CFG.failsafe.conservative_mmf
    back, _ = decide(inputs(as_of=DAY + dt.timedelta(1)), state, 3, CFG)
    assert back.mmf == pytest.approx(risk_parameters(inputs(), CFG).mmf)


def test_conservative_set_satisfies_the_invariants():
    p = conservative_parameters(CFG, "test", stale=True)
    check_invariants(p, CFG)
    assert p.flag_stale and p.ltv < p.lt


special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0])
variances = st.one_of(special, st.floats(-1.0, 10.0), st.floats(1e-12, 1e-2))
zs = st.lists(st.one_of(special, st.floats(-1e6, 1e6)), max_size=600)


@settings(max_examples=200, deadline=None)
@given(days=st.lists(st.tuples(variances, st.floats(-1.0, 1.0), zs,
                               st.one_of(special, st.floats(0.0, 1e12)), st.integers(0, 10)),
                     min_size=1, max_size=8),
       buffer=st.floats(0.0, 1.0), guard=st.booleans())
def test_invariants_and_guardrails_hold_for_any_input_sequence(days, buffer, guard):
    cfg = CFG.model_copy(update={
        "apc": CFG.apc.model_copy(update={"buffer": buffer}),
        "guardrails": CFG.guardrails.model_copy(update={"enabled": guard})})
    state, prev_var, prev_out = None, math.nan, None
    for k, (var, ret, z, adv, age) in enumerate(days):
        x = PolicyInputs(as_of=DAY + dt.timedelta(k), variance=var, variance_prev=prev_var,
                         ret_today=ret, z_window=np.asarray(z, float),
                         sigma_history=np.asarray(z[:50], float), adv_usd=adv, data_age_days=age)
        out, state = decide(x, state, 3, cfg)
        check_invariants(out, cfg)
        assert out.ltv < out.lt and out.lt * out.lb <= 1 + 1e-12
        if guard and prev_out is not None and not prev_out.flag_fallback and not out.flag_fallback:
            # loosening never exceeds the configured step in one update
            g = cfg.guardrails
            step = min(g.loosen_abs_step, g.loosen_rel_step * prev_out.mmf)
            assert out.mmf >= prev_out.mmf - step - 1e-12
        prev_var, prev_out = var, out

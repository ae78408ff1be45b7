"""Margin policy targets: tail measures, stress floor, loss memory, lending view, LB, APC."""

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config, PolicyConfig
from serving.decide import PolicyInputs, decide, risk_parameters
from serving.inputs import asset_history, policy_inputs
from serving.policy import (
    check_invariants,
    conservative_parameters,
    fraction_lost,
    initial_margin,
    liquidity_addon,
    loss_memory,
    mean,
    quantile_higher,
    stress_es,
    student_t_measures,
    tail_measures,
    trailing_adv,
)

CFG = PolicyConfig()
DAY = dt.date(2024, 1, 10)
Z = np.random.default_rng(1).standard_t(5, size=500) * 0.8 + 1.0  # worst-loss-like, positive


def inputs(variance=0.03**2, prev=0.03**2, ret=0.0, z=Z, adv=1e9, age=0, as_of=DAY,
           history=None, **extra):
    hist = np.full(300, 0.03) if history is None else history
    return PolicyInputs(as_of=as_of, variance=variance, variance_prev=prev, ret_today=ret,
                        z_window=z, sigma_history=hist, adv_usd=adv, data_age_days=age, **extra)


def test_fhs_es_is_the_mean_beyond_the_empirical_var():
    var, es = tail_measures(np.arange(1.0, 101.0), 0.95)
    assert var == 96.0 and es == pytest.approx(np.mean([96, 97, 98, 99, 100]))


def test_the_replays_fast_tail_helpers_equal_numpy_bit_for_bit():
    rng = np.random.default_rng(7)
    for n in (1, 2, 7, 250, 1001):
        x = rng.standard_t(3, size=n)
        for q in (0.0, 0.5, 0.975, 0.99, 1.0):
            assert quantile_higher(x, q) == float(np.quantile(x, q, method="higher"))
        assert mean(x) == float(np.mean(x))
    before = x.copy()
    quantile_higher(x, 0.99)
    assert np.array_equal(x, before)  # the caller's window is not reordered


def test_parameters_with_reason_is_dataclasses_replace_and_rejects_unknown_fields():
    import dataclasses

    p = conservative_parameters(CFG, "first")
    q = p.with_reason("second", ltv=0.5, flag_held=True)
    assert q == dataclasses.replace(p, reason="first; second", ltv=0.5, flag_held=True)
    assert p.reason == "first" and p.ltv == 0.0  # the original is untouched
    with pytest.raises(TypeError, match="ltvv"):
        p.with_reason("x", ltvv=0.5)


def test_student_t_es_matches_numerical_integration():
    from scipy import integrate, stats

    nu, q = 4.0, 0.99
    scale = math.sqrt((nu - 2) / nu)
    var_t = stats.t.ppf(q, nu)
    tail, _ = integrate.quad(lambda x: x * stats.t.pdf(x, nu), var_t, np.inf)
    var, es = student_t_measures(q, nu)
    assert var == pytest.approx(var_t * scale) and es == pytest.approx(tail / (1 - q) * scale)


@pytest.mark.parametrize("nu", [2.5, 4, 4.0, 5, 7.5, 30])
def test_student_t_measures_are_scipy_stats_bit_for_bit(nu: float) -> None:
    from scipy import stats

    scale = math.sqrt((nu - 2) / nu)
    for q in [0.5, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, *np.linspace(0.6, 0.9999, 97)]:
        t = stats.t.ppf(q, nu)
        es = stats.t.pdf(t, nu) / (1 - q) * (nu + t**2) / (nu - 1)
        assert student_t_measures(float(q), nu) == (float(t * scale), float(es * scale))


def test_mmf_is_the_scaled_es_and_slippage_is_charged_in_lb_only():
    p = risk_parameters(inputs(adv=1e8), CFG)
    _, es_z = tail_measures(Z, CFG.confidence)
    slip = 0.03 * math.sqrt(CFG.liquidity.reference_size_usd / 1e8)
    assert p.liquidity_addon == pytest.approx(slip)
    assert p.mmf == pytest.approx(fraction_lost(es_z * 0.03))  # no slippage in MMF
    cost = CFG.lb_k * 0.03 * math.sqrt(1 / 24) + slip
    assert p.lb == pytest.approx(1 + min(max(cost, CFG.lb_min - 1), CFG.lb_max - 1))
    assert p.loss_es == pytest.approx(p.mmf) and p.loss_level == CFG.confidence


def test_lending_cushion_equals_mmf_so_bad_debt_starts_exactly_beyond_it():
    p = risk_parameters(inputs(), CFG)
    assert 1 - p.lt * p.lb == pytest.approx(p.mmf)
    assert p.ltv == pytest.approx((1 - p.imf) / p.lb) and p.ltv < p.lt
    assert p.max_leverage == pytest.approx(1 / p.imf)


def test_higher_volatility_raises_margins_and_thinner_markets_raise_the_bonus():
    base = risk_parameters(inputs(), CFG)
    assert risk_parameters(inputs(variance=0.06**2), CFG).mmf > base.mmf
    thin = risk_parameters(inputs(adv=1e6), CFG)
    assert thin.mmf == pytest.approx(base.mmf) and thin.lb > base.lb and thin.lt < base.lt


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
    assert initial_margin(0.11, np.nan, np.nan, only_buffer, prev_imf=0.125) == 0.125
    assert initial_margin(0.14, np.nan, np.nan, only_buffer, prev_imf=0.125) == pytest.approx(
        0.1414)
    assert initial_margin(0.08, np.nan, np.nan, only_buffer, prev_imf=0.125) == pytest.approx(0.1)


def test_stress_floor_is_the_es_of_the_worst_window_known_answer():
    cfg = CFG.model_copy(update={"stress_window_obs": 5, "stress_lookback_days": 30,
                                 "confidence": 0.6})
    losses = np.array([0.01] * 10 + [0.05, 0.10, 0.02, 0.08, 0.03] + [0.01] * 5)
    ages = np.arange(len(losses))[::-1].astype(float)
    # worst 5-window: mean 0.056; its VaR_0.6 (k = ceil(0.6·4) = 3rd of 5 sorted) is 0.08,
    # ES = mean(0.08, 0.10) = 0.09
    assert stress_es(losses, ages, cfg) == pytest.approx(1 - math.exp(-0.09))
    # a larger loss older than the look-back does not count; inside it, it does
    old = np.concatenate(([0.5], losses)), np.concatenate(([40.0], ages))
    assert stress_es(*old, cfg) == pytest.approx(1 - math.exp(-0.09))
    longer = cfg.model_copy(update={"stress_lookback_days": 60})
    # ... where its window [0.5, 0.01 ×4] (mean 0.108) is the worst; all 5 are >= its VaR
    assert stress_es(*old, longer) == pytest.approx(1 - math.exp(-0.108))
    # a loss not yet realized at the decision (negative age) never enters
    future = np.concatenate((losses, [0.9])), np.concatenate((ages, [-1.0]))
    assert stress_es(*future, cfg) == pytest.approx(1 - math.exp(-0.09))
    assert math.isnan(stress_es(np.array([]), np.array([]), cfg))


def test_stress_floor_weight_sets_the_mmf_floor():
    losses, ages = np.full(300, 0.4), np.arange(300)[::-1].astype(float)
    cfg = CFG.model_copy(update={"memory_weight": 0.0, "stress_floor_weight": 0.5})
    p = risk_parameters(inputs(loss_history=losses, loss_age_days=ages), cfg)
    assert p.stress_floor == pytest.approx(0.5 * fraction_lost(0.4))
    assert p.mmf == pytest.approx(p.stress_floor) and "stress floor" in p.reason
    off = cfg.model_copy(update={"stress_floor_weight": 0.0})
    assert risk_parameters(inputs(loss_history=losses, loss_age_days=ages), off).mmf < p.mmf


def test_loss_memory_decays_with_the_half_life_known_answer():
    assert loss_memory(np.array([0.2]), np.array([11.0]), 11.0) == pytest.approx(
        fraction_lost(0.2) / 2)
    two = loss_memory(np.array([0.2, 0.05]), np.array([22.0, 0.0]), 11.0)
    assert two == pytest.approx(max(fraction_lost(0.2) / 4, fraction_lost(0.05)))
    # the closed form equals the recursion M_t = max(loss_t, M_{t-1} · 2^{-1/h})
    rng = np.random.default_rng(3)
    daily = rng.exponential(0.02, 60)
    m = 0.0
    for t in range(60):
        m = max(fraction_lost(daily[t]), m * 2 ** (-1 / 7.0))
        closed = loss_memory(daily[: t + 1], np.arange(t + 1)[::-1].astype(float), 7.0)
        assert closed == pytest.approx(m)


def test_yesterdays_realized_loss_floors_todays_margin_through_the_memory():
    calm = risk_parameters(inputs(), CFG)
    crash = inputs(loss_history=np.array([0.01, 0.35]), loss_age_days=np.array([1.0, 0.0]))
    after = risk_parameters(crash, CFG)
    assert after.loss_memory == pytest.approx(fraction_lost(0.35))
    assert after.mmf == pytest.approx(fraction_lost(0.35)) and after.mmf > calm.mmf
    off = CFG.model_copy(update={"memory_weight": 0.0, "stress_floor_weight": 0.0})
    assert risk_parameters(crash, off).mmf == pytest.approx(calm.mmf)


def test_a_direct_tail_forecast_replaces_the_fhs_tail():
    p = risk_parameters(inputs(tail_var=0.05, tail_es=0.08), CFG)
    assert p.loss_var == pytest.approx(0.05) and p.loss_es == pytest.approx(0.08)
    assert p.mmf == pytest.approx(0.08) and "direct tail" in p.reason
    bad, _ = decide(inputs(tail_var=0.05, tail_es=float("nan")), None, 3, CFG)
    assert bad.flag_fallback and "invalid tail" in bad.reason


def test_short_history_uses_student_t_and_says_so():
    assert "student-t" in risk_parameters(inputs(z=np.ones(10)), CFG).reason


def test_conservative_set_admits_no_borrowing_and_satisfies_the_invariants():
    p = conservative_parameters(CFG, "test", stale=True)
    check_invariants(p, CFG)
    assert p.flag_stale and p.ltv == 0.0 and p.imf == 1.0 and p.lt > 0


def test_adv_ends_the_day_before_the_decision():
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    vol = pd.Series(np.arange(1.0, 41.0), index=days)
    adv = trailing_adv(vol, 30)
    assert adv.loc[days[35]] == pytest.approx(vol.iloc[5:35].mean())  # days t-30 .. t-1
    crash = vol.copy()
    crash.iloc[35] *= 1000  # the crash day's own volume
    assert trailing_adv(crash, 30).loc[days[35]] == adv.loc[days[35]]
    assert trailing_adv(crash, 30).loc[days[36]] > adv.loc[days[36]]
    # no row on t - 1: the other days of the window still give the mean (it was NaN, which
    # put the liquidity add-on at its cap and the LB target at its ceiling for that day)
    holed = vol.drop(days[34])
    assert trailing_adv(holed, 30).loc[days[35]] == pytest.approx(vol.iloc[5:34].mean())


def test_policy_inputs_see_only_the_past_volume_and_realized_losses():
    days = pd.date_range("2024-01-01", periods=60, freq="D")
    frame = pd.DataFrame({"close": 100.0, "ret_1d": 0.0, "worst_loss_long": 0.02,
                          "worst_loss_short": 0.02, "log_dollar_volume": np.log(1e9)},
                         index=days)
    fc = pd.DataFrame({"cutoff": days, "variance": 0.03**2, "horizon_days": 1})
    cfg = Config()
    base = asset_history(frame, fc, cfg)
    spiked = frame.copy()
    spiked.loc[days[-1], ["log_dollar_volume", "worst_loss_long"]] = [np.log(1e15), 0.9]
    h = asset_history(spiked, fc, cfg)
    assert h.adv_usd[-1] == base.adv_usd[-1]  # truncated at t-1: the spike is not in it
    x = policy_inputs(h, len(days) - 1, 1, 1.0, 500)
    # the loss of the interval ending on the as-of is realized (age 0); none after it
    assert x.loss_history[-1] == pytest.approx(0.9) and x.loss_age_days[-1] == 0
    assert np.all(x.loss_age_days >= 0)
    earlier = policy_inputs(h, len(days) - 2, 1, 1.0, 500)
    assert 0.9 not in earlier.loss_history


def test_the_apc_stress_term_binds_and_the_sigma_terms_by_hand():
    """EMIR Art. 28(1)(b): (1 - 0.25)·0.10 + 0.25·0.30 = 0.15 beats the buffer (0.125) and
    the floor (0.12); σ_stress is the higher 95 % quantile of the finite positive σ, σ_long
    their root mean square."""
    from serving.policy import sigma_terms

    assert initial_margin(0.10, 0.30, 0.12, CFG) == pytest.approx(0.15)
    assert initial_margin(0.10, 0.10, 0.12, CFG) == pytest.approx(0.125)  # buffer binds
    assert initial_margin(0.10, 0.10, 0.14, CFG) == pytest.approx(0.14)  # floor binds
    stress, long_run = sigma_terms(np.r_[np.arange(1, 21) / 100, np.nan, -1.0], 0.95)
    assert stress == pytest.approx(0.20)
    assert long_run == pytest.approx(math.sqrt(2870 / 20 / 1e4))  # Σk² = 2870


def test_a_short_history_takes_the_student_t4_tail_at_todays_sigma():
    p = risk_parameters(inputs(z=np.ones(10)), CFG)
    v, e = student_t_measures(CFG.confidence, 4.0)
    assert p.loss_var == pytest.approx(fraction_lost(v * 0.03))
    assert p.loss_es == pytest.approx(fraction_lost(e * 0.03))
    assert "student-t(4) tail: only 10 standardized losses" in p.reason


def test_the_jump_check_freezes_below_three_sigma_of_price_move_and_not_above():
    """σ ×4 in a day: a 2σ_prev move does not confirm it (freeze), a 3.5σ_prev one does;
    data exactly ``stale_after`` days old is still fresh."""
    from serving.decide import failsafe_why

    prev = 0.02**2
    why = failsafe_why(0, 16 * prev, prev, 0.04, None, None, 3, CFG)
    assert why is not None and why.startswith("implausible jump: σ ×4.0")
    assert failsafe_why(0, 16 * prev, prev, -0.07, None, None, 3, CFG) is None
    assert failsafe_why(0, 8 * prev, prev, 0.0, None, None, 3, CFG) is None  # ×2.8: no jump
    assert failsafe_why(3, prev, prev, 0.0, None, None, 3, CFG) is None
    assert failsafe_why(4, prev, prev, 0.0, None, None, 3, CFG).startswith("stale data")


def test_the_liquidation_bonus_and_the_slippage_stay_within_their_bounds():
    from serving.policy import liquidation_bonus

    assert liquidation_bonus(0.01, 0.0, 1.0, CFG) == pytest.approx(CFG.lb_min)  # 1.02
    assert liquidation_bonus(0.05, 0.0, 24.0, CFG) == pytest.approx(1 + 2.33 * 0.05)
    assert liquidation_bonus(0.5, 0.0, 1.0, CFG) == pytest.approx(CFG.lb_max)  # 1.15
    assert liquidation_bonus(math.nan, 0.0, 1.0, CFG) == CFG.lb_max
    assert liquidity_addon(0.5, 1e6, CFG) == pytest.approx(CFG.liquidity.max_addon)  # 1.12 > cap
    assert liquidity_addon(0.02, 5e8, CFG) == pytest.approx(0.02 * math.sqrt(5e6 / 5e8))


def test_a_clamped_mmf_is_flagged_and_said():
    cap = risk_parameters(inputs(loss_memory=0.9, stress_es=0.0), CFG)
    assert cap.mmf == CFG.mmf_cap and cap.flag_clamped
    assert "MMF 0.9000 clamped to cap 0.6000" in cap.reason
    floor = risk_parameters(inputs(variance=1e-12, prev=1e-12), CFG)
    assert floor.mmf == CFG.mmf_floor and floor.flag_clamped
    assert "clamped to floor 0.0200" in floor.reason
    assert not risk_parameters(inputs(), CFG).flag_clamped

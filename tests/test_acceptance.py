"""The one acceptance function: known answers on hand-built breach sequences, and the bad
debt bookkeeping on a hand-computed day."""

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from pipelines.policy_eval.acceptance import (
    accept_arrays,
    accept_asset,
    capital,
    dq_dynamics_statistics,
    dq_permutation_p,
    dq_test,
    kupiec_upper,
    relative_capital,
)
from pipelines.policy_eval.backtest import at_lb, static_path, with_outcomes

P = 0.01


def _path(hits, mmf=0.10):
    """One asset's path: a 30% loss on breach days, 1% otherwise, MMF constant."""
    hits = np.asarray(hits, bool)
    n = hits.size
    loss = np.where(hits, 0.30, 0.01)
    return pd.DataFrame({"asset": "X", "date": pd.date_range("2022-01-01", periods=n),
                         "loss_frac": loss, "mmf": mmf, "ltv": 0.8})


def _spread(n, k, seed=0):
    """k breaches at random, well-separated days among n."""
    hits = np.zeros(n, bool)
    hits[np.random.default_rng(seed).choice(np.arange(10, n, 25), size=k, replace=False)] = True
    return hits


def _tail(c: int, n: int, p: float) -> float:
    """P(X > c), X ~ Bin(n, p), summed term by term in exact rationals."""
    q = Fraction(p).limit_denominator(10**6)
    return float(1 - sum(math.comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(c + 1)))


def test_one_sided_kupiec_upper_band_known_answer():
    # P(X > 5 | 250) = 0.0412 <= 5% < P(X > 4) = 0.1078; the χ² band said 5 too
    assert kupiec_upper(250, P) == 5
    # 283 days: P(X > 5) = 0.0668 > 5%, so 6 breaches pass (the χ² band, 5, failed 6.7% of
    # correct policies); 500 days: P(X > 9) = 0.0311, P(X > 8) = 0.0671
    assert kupiec_upper(283, P) == 6 and kupiec_upper(500, P) == 9
    assert kupiec_upper(731, P) == 12 and kupiec_upper(0, P) == 0
    assert _tail(5, 283, P) == pytest.approx(0.0668, abs=1e-4)


def test_one_sided_kupiec_band_holds_its_size_at_every_day_count():
    # the smallest count whose exceedance probability is at most 5%: size held, no slack
    for n in (100, 137, 250, 283, 400, 546, 637, 731, 1000):
        upper = kupiec_upper(n, P)
        assert _tail(upper, n, P) <= 0.05 < _tail(upper - 1, n, P), n


def test_a_zero_breach_path_is_acceptable_and_reported_as_over_coverage():
    row = accept_asset(_path(np.zeros(500, bool)), P)
    assert row["breaches"] == 0 and row["acceptable"]
    assert row["over_coverage"] and not row["under_coverage"]  # 0 < band low (2 of 500)
    assert row["why_not"] == ""


def test_too_many_breaches_fail_and_say_so():
    row = accept_asset(_path(_spread(500, 12)), P)
    assert row["breaches"] == 12 and row["breach_upper"] == 9
    assert row["under_coverage"] and not row["acceptable"]
    assert "12 breaches > 9" in row["why_not"]
    ok = accept_asset(_path(_spread(500, 8)), P)
    assert not ok["under_coverage"] and ok["acceptable"]


def test_clustered_breaches_are_rejected_by_independence_at_a_fine_rate():
    hits = np.zeros(500, bool)
    hits[200:205] = True  # 5 breaches (rate 1%) on five consecutive days
    row = accept_asset(_path(hits), P)
    assert not row["under_coverage"]
    assert row["independence_p"] < 0.05 and row["dq_p"] < 0.05 and not row["acceptable"]
    spread = accept_asset(_path(_spread(500, 5)), P)
    assert spread["independence_p"] > 0.05 and spread["acceptable"]


def test_dq_known_answer_without_breaches():
    # h_t = -p on every day is fitted by the intercept alone: DQ = (n - K) p / (1 - p)
    n, lags = 500, 4
    var = np.linspace(0.05, 0.10, n)
    r = dq_test(np.zeros(n), var, P, lags)
    assert r.statistic == pytest.approx((n - lags) * P / (1 - P))
    assert r.dynamics_statistic == 0.0 and r.dynamics_p_value == 1.0


def test_dq_rejects_breaches_that_follow_breaches():
    hits = np.zeros(1000, bool)
    for start in range(50, 1000, 100):
        hits[start:start + 2] = True  # pairs: P(breach | breach yesterday) = 1/2
    r = dq_test(hits, np.full(hits.size, 0.1), P)
    assert r.dynamics_p_value < 0.01


def test_stress_bad_debt_over_budget_is_not_acceptable():
    path = _path(np.zeros(500, bool))
    assert accept_asset(path, P, stress_bad_debt=0.02, budget=0.02)["acceptable"]
    row = accept_asset(path, P, stress_bad_debt=0.03, budget=0.02)
    assert not row["acceptable"] and "stress bad debt 0.0300 > budget 0.0200" in row["why_not"]


def test_an_asset_without_a_budget_is_unproven_not_acceptable():
    # budgets in force but none for this asset (no comparator row): the bad-debt test is not
    # judged, so passing every other test is unproven, never a pass by default; inf is the
    # configured "no budget test" and passes
    path = _path(np.zeros(500, bool))
    row = accept_asset(path, P, stress_bad_debt=0.5, budget=math.nan)
    assert not row["acceptable"] and row["unproven"] and not row["within_budget"]
    assert row["why_not"] == "no stress budget: no comparator row for this asset in the period"
    assert accept_asset(path, P, stress_bad_debt=0.5, budget=math.inf)["acceptable"]
    failing = accept_asset(_path(_spread(500, 12)), P, stress_bad_debt=0.0, budget=math.nan)
    assert not failing["acceptable"] and not failing["unproven"]
    assert "breaches >" in failing["why_not"] and "no stress budget" in failing["why_not"]


def test_bad_debt_bookkeeping_on_a_hand_computed_day():
    # worst loss x = 21% of value; the 1% slippage is the liquidator's, paid out of LB, so it
    # is not added to x; MMF 10%, IMF 15%, LB 1.05
    row = pd.DataFrame({"asset": ["X"], "date": [pd.Timestamp("2024-08-04")],
                        "loss_next": [-math.log(0.79)], "short_loss_next": [0.0],
                        "liquidity_addon": [0.01], "mmf": [0.10], "imf": [0.15], "lb": [1.05]})
    row["lt"], row["ltv"] = (1 - row["mmf"]) / 1.05, (1 - row["imf"]) / 1.05
    out = with_outcomes(row).iloc[0]
    assert out["loss_frac"] == pytest.approx(0.21)
    # debt LT·C, liquidator takes D·LB of collateral worth C(1-x): lender loses (x - MMF)/LB
    assert out["bad_debt_lt"] == pytest.approx((0.21 - 0.10) / 1.05)     # 0.104762
    # a position opened at max LTV: cushion 1 - LTV·LB = IMF
    assert out["bad_debt_ltv"] == pytest.approx((0.21 - 0.15) / 1.05)    # 0.057143
    assert out["capital"] == pytest.approx(1 - 0.85 / 1.05)              # 0.190476
    assert bool(out["breach"])
    # the same margins with LB held at 1.10: LT = 0.9/1.1, bad debt (x - MMF)/1.1
    held = at_lb(with_outcomes(row), 1.10).iloc[0]
    assert held["lt"] == pytest.approx(0.9 / 1.1)
    assert held["bad_debt_lt"] == pytest.approx(0.11 / 1.10)
    # slippage never moves the lender's loss: the same day without it is the same outcome
    same = with_outcomes(row.assign(liquidity_addon=0.0)).iloc[0]
    assert same["loss_frac"] == out["loss_frac"] and same["bad_debt_lt"] == out["bad_debt_lt"]
    # the short side, reported: no rise, no loss; a 16.2% worst rise (log 0.15) against a
    # 10% MMF breaches and leaves 0.0618 per unit of notional
    assert out["bad_debt_short"] == 0.0 and not bool(out["breach_short"])
    up = with_outcomes(row.assign(short_loss_next=0.15)).iloc[0]
    assert up["short_loss_frac"] == pytest.approx(math.exp(0.15) - 1)
    assert up["bad_debt_short"] == pytest.approx(math.exp(0.15) - 1 - 0.10)
    assert bool(up["breach_short"]) and up["bad_debt_lt"] == out["bad_debt_lt"]
    unknown = with_outcomes(row.assign(short_loss_next=np.nan)).iloc[0]
    assert np.isnan(unknown["bad_debt_short"])


def test_no_bad_debt_inside_the_cushion_and_capital_is_mean_one_minus_ltv():
    tmpl = pd.DataFrame({"asset": "X", "date": pd.date_range("2024-01-01", periods=3),
                         "loss_next": [-math.log(0.95), -math.log(0.90), np.nan],
                         "short_loss_next": 0.0})
    out = static_path(tmpl, mmf=0.12, lt=0.88 / 1.05, lb=1.05, imf=0.2)
    assert out["bad_debt_lt"].iloc[:2].tolist() == [0.0, 0.0]
    assert np.isnan(out["bad_debt_lt"].iloc[2])  # not yet realized
    assert capital(out["ltv"]) == pytest.approx(1 - 0.8 / 1.05)


def test_the_batched_dq_dynamics_statistic_is_dq_tests():
    """The permutation test's statistic (centred cross-products, column pair by pair) is
    dq_test's Wald statistic of the slopes, on random hits, clustered hits, a flat margin
    (its column dropped by dq_test, projected out here) and short samples."""
    rng = np.random.default_rng(3)
    for _ in range(120):
        n = int(rng.integers(8, 900))
        hits = rng.random(n) < rng.choice([0.005, 0.01, 0.05, 0.3])
        if rng.random() < 0.3:
            hits[1:] |= hits[:-1] & (rng.random(n - 1) < 0.5)
        var = (np.full(n, 0.1) if rng.random() < 0.2
               else 0.1 * np.exp(rng.normal(0, 0.3, n)))
        want = dq_test(hits, var, P).dynamics_statistic
        got = dq_dynamics_statistics(hits[None, :], var, 4)[0]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def _ar_margin(rng, n):
    x = np.zeros(n)
    e = rng.normal(size=n)
    for t in range(1, n):
        x[t] = 0.98 * x[t - 1] + 0.2 * e[t]
    return 0.1 * np.exp(0.3 * x)


def test_dq_size_at_a_1pct_breach_rate_asymptotic_against_permutation():
    """Size under simulation: i.i.d. Bernoulli(1%) breaches over two years (730 days) against
    a persistent margin series. The asymptotic DQ p-value rejects about twice as often as its
    5% size; the acceptance (asymptotic rejections confirmed by the permutation test) at
    most about its size. 400 samples: a 95% band of about ±2.2 pp around a true 5%."""
    rng = np.random.default_rng(17)
    asymptotic = confirmed = 0
    reps = 400
    for _ in range(reps):
        mmf = _ar_margin(rng, 730)
        hits = rng.random(730) < P
        loss = np.where(hits, mmf + 0.05, mmf - 0.05)
        asymptotic += dq_test(hits, mmf, P).dynamics_p_value <= 0.05
        confirmed += accept_arrays(loss, mmf, np.full(730, 0.8), P)["dq_p"] <= 0.05
    assert asymptotic / reps >= 0.08  # the defect the permutation test is for
    assert confirmed / reps <= 0.07


def test_the_permutation_test_keeps_its_power_and_is_reproducible():
    """Breaches in pairs (a breach is followed by another half the time) over 730 days: the
    permutation p-value rejects; the same call twice gives the same p-value (fixed seed);
    acceptance reports the permutation p where the asymptotic test rejected, and keeps the
    asymptotic one beside it."""
    rng = np.random.default_rng(5)
    mmf = _ar_margin(rng, 730)
    hits = np.zeros(730, bool)
    hits[rng.choice(np.arange(20, 720, 60), size=5, replace=False)] = True
    hits[1:] |= hits[:-1]  # five pairs
    p = dq_permutation_p(hits, mmf)
    assert p <= 0.01 and p == dq_permutation_p(hits, mmf)
    row = accept_arrays(np.where(hits, 0.3, 0.01), mmf, np.full(730, 0.8), P)
    assert row["dq_asymptotic_p"] < 0.05 and row["dq_p"] == p and not row["acceptable"]
    quiet = accept_arrays(np.full(730, 0.01), mmf, np.full(730, 0.8), P)
    assert quiet["dq_p"] == quiet["dq_asymptotic_p"] == 1.0


def test_full_dq_statistic_agrees_with_the_tail_tests_module():
    from pipelines.evaluation.tail_tests import dq_test as reference

    rng = np.random.default_rng(5)
    var = 0.05 + 0.02 * rng.random(800)
    loss = rng.exponential(0.012, 800)
    mine = dq_test(loss > var, var, P)
    ref = reference(loss, var, 1 - P)
    assert (loss > var).sum() > 3
    assert mine.statistic == pytest.approx(ref.statistic, rel=1e-8) and mine.df == ref.df


def test_a_few_days_make_a_row_not_an_error():
    """An asset listed days before a period's end: the tests that cannot be run on so few days
    are NaN, not rejections; quiet days leave it unproven, a breach refuses it, and no
    ``min_days`` makes it acceptable below the DQ test's own minimum (lags + 3 days)."""
    for n in (1, 2, 6):
        quiet = accept_asset(_path(np.zeros(n, bool)), P)
        assert not quiet["acceptable"] and quiet["unproven"] and quiet["n"] == n
        assert np.isnan(quiet["dq_p"]) and np.isnan(quiet["dq_full_p"])
        assert np.isnan(quiet["independence_p"]) == (n == 1)
        assert quiet["why_not"] == f"too short to judge: {n} days < 250"
    for n in (1, 2, 5):  # the one-sided band on up to 5 days is 0: P(X > 0) = 0.049 at 5
        hit = np.zeros(n, bool)
        hit[-1] = True
        refused = accept_asset(_path(hit), P)
        assert not refused["acceptable"] and not refused["unproven"]
        assert refused["why_not"].startswith("1 breaches > 0;")
    hit = np.zeros(6, bool)
    hit[-1] = True  # on 6 days one breach is no evidence at 5% (P(X > 0) = 0.0585): unproven
    six = accept_asset(_path(hit), P)
    assert six["breach_upper"] == 1 and six["unproven"] and not six["acceptable"]
    assert six["why_not"] == "too short to judge: 6 days < 250"
    assert not accept_asset(_path(np.zeros(6, bool)), P, min_days=0)["acceptable"]
    assert accept_asset(_path(np.zeros(6, bool)), P, min_days=0)["why_not"] == (
        "too short to judge: 6 days < 7")
    assert accept_asset(_path(np.zeros(7, bool)), P, min_days=0)["acceptable"]
    with pytest.raises(ValueError, match="nothing to judge"):
        accept_asset(_path(np.zeros(0, bool)), P)


def test_a_short_sample_that_passes_every_test_is_unproven_not_acceptable():
    """A young asset with no breach in 100 days passes every test by having little history:
    unproven, not acceptable; the same with breaches enough to fail Kupiec is refused; a year
    of days (Basel's window) makes a verdict."""
    quiet = accept_asset(_path(np.zeros(100, bool)), P)
    assert not quiet["acceptable"] and quiet["unproven"]
    assert quiet["why_not"] == "too short to judge: 100 days < 250"
    assert not quiet["under_coverage"] and quiet["independence_p"] > 0.05
    failing = accept_asset(_path(_spread(100, 4)), P)  # Kupiec upper band at 100 days: 3
    assert not failing["acceptable"] and not failing["unproven"]
    assert failing["why_not"].startswith("4 breaches > 3;")
    year = accept_asset(_path(np.zeros(250, bool)), P)
    assert year["acceptable"] and not year["unproven"] and year["why_not"] == ""
    assert not accept_asset(_path(np.zeros(249, bool)), P)["acceptable"]
    assert accept_asset(_path(np.zeros(100, bool)), P, min_days=100)["acceptable"]


def test_relative_capital_compares_over_the_assets_both_policies_have():
    per_asset = pd.Series(
        {("policy:ewma94", "BTC"): 0.10, ("policy:ewma94", "ETH"): 0.14,
         ("policy:ewma94", "SOL"): 0.36, ("aave_v3", "BTC"): 0.20, ("aave_v3", "ETH"): 0.26,
         ("static", "DOGE"): 0.3})
    vs = relative_capital(per_asset, "policy:ewma94")
    # Aave on BTC/ETH against EWMA-FHS on BTC/ETH: 0.23 / 0.12, not 0.23 / 0.20 (3 assets)
    assert vs["aave_v3"] == pytest.approx(0.23 / 0.12 - 1.0)
    assert vs["policy:ewma94"] == 0.0 and np.isnan(vs["static"])  # no asset in common
    assert relative_capital(per_asset, "absent").isna().all()


def test_btc_eth_budgets_are_aave_from_its_launch_and_the_static_tables_before():
    """Aave v3's parameters were set in 2023: for the crashes before its launch the BTC/ETH
    budget is the static table's, like every other asset's; from the launch on, Aave's."""
    import datetime as dt

    from configs.schema import Config
    from pipelines.policy_eval.protocol import budgets

    cfg = Config()
    days = pd.to_datetime(["2022-05-10", "2022-11-08", "2023-08-16", "2024-08-04"])  # loss +1d

    def path(asset_debt: dict[str, list[float]]) -> pd.DataFrame:
        return pd.DataFrame([{"asset": a, "date": d, "bad_debt_lt": v}
                             for a, debts in asset_debt.items()
                             for d, v in zip(days, debts, strict=True)])

    comparators = {"static": path({"BTC": [0.01, 0.02, 0.04, 0.08], "SOL": [0.1, 0.2, 0.3, 0.4]}),
                   "aave_v3": path({"BTC": [0.5, 0.6, 0.0, 0.001]})}
    whole = budgets(comparators, cfg, dt.date(2021, 1, 1), dt.date(2025, 6, 30))
    assert whole["BTC"] == pytest.approx(0.01 + 0.02 + 0.0 + 0.001)  # static before, Aave after
    assert whole["SOL"] == pytest.approx(1.0)
    before = budgets(comparators, cfg, dt.date(2021, 1, 1), dt.date(2023, 1, 26))
    assert before["BTC"] == pytest.approx(0.03)  # all before the launch: the static table's
    after = budgets(comparators, cfg, dt.date(2023, 7, 1), None)
    assert after["BTC"] == pytest.approx(0.001)
    # a static table without BTC rows before the launch: Aave's budget for the rest, not none
    late_static = {**comparators, "static": comparators["static"][
        (comparators["static"]["asset"] != "BTC")
        | (comparators["static"]["date"] >= "2023-01-27")]}
    straddling = budgets(late_static, cfg, dt.date(2021, 1, 1), dt.date(2025, 6, 30))
    assert straddling["BTC"] == pytest.approx(0.0 + 0.001)
    assert budgets(comparators, cfg.with_overrides({"evaluation.budget": "none"}),
                   dt.date(2021, 1, 1), None) is None


def test_a_capital_or_stress_bad_debt_that_is_not_a_number_is_never_acceptable():
    """NaN compares False with every budget and a mean skips it: a broken path would pass."""
    rng = np.random.default_rng(0)
    loss, mmf = rng.uniform(0.0, 0.05, 300), np.full(300, 0.10)
    fine = accept_arrays(loss, mmf, np.full(300, 0.8), 0.01, stress_bad_debt=0.0, budget=0.0)
    assert fine["acceptable"] and fine["why_not"] == ""
    no_ltv = accept_arrays(loss, mmf, np.full(300, np.nan), 0.01, stress_bad_debt=0.0,
                           budget=0.0)
    assert not no_ltv["acceptable"] and not no_ltv["unproven"]
    assert no_ltv["why_not"] == "capital not a number"
    nan_debt = accept_arrays(loss, mmf, np.full(300, 0.8), 0.01, stress_bad_debt=math.nan,
                             budget=0.0)
    assert not nan_debt["acceptable"] and not nan_debt["within_budget"]
    assert nan_debt["why_not"] == "stress bad debt not a number"

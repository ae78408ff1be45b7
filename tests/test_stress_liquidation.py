"""Known answers of the stress liquidation model: health factor, trigger, delay, slippage of
the aggregate liquidated size, liquidation bonus and bad debt."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from configs.schema import PolicyConfig
from pipelines.stress.book import Book
from pipelines.stress.liquidation import Market, health_factor, liquidate, slippage
from serving.policy import liquidity_addon


def _one_asset(accounts: int = 1, adv: float = 79_800.0) -> tuple[Book, Market]:
    """10 units at $100 (LT 0.80, LB 1.05), debt $760 each: HF = 800 / 760."""
    book = Book(np.array([f"a{i}" for i in range(accounts)]), ["X"],
                np.full((accounts, 1), 10.0), np.full(accounts, 760.0))
    market = Market(["X"], np.array([100.0]), np.array([0.80]), np.array([1.05]),
                    np.array([0.05]), np.array([adv]), impact_coef=1.0, slippage_cap=0.99)
    return book, market


def test_one_account_liquidation_and_bad_debt_by_hand() -> None:
    # path 100 → 90 → 70: HF at 90 is 720/760 < 1, so the trigger is hour 1 and with a
    # one-hour delay the liquidation executes at 70 (collateral 700, HF 560/760).
    # seized share f = min(1, 760·1.05/700) = 1 → Q = 700 USD; ADV 79,800:
    # slippage s = 1 · 0.05 · √(700/79,800) = 0.00468, which the 5% bonus covers, so the
    # liquidator repays what the collateral is worth with its bonus: 700/1.05;
    # bad debt = 760 − 700/1.05 = 93.333...
    book, market = _one_asset()
    out = liquidate(book, market, np.array([1.0, 0.9, 0.7]).reshape(1, 3, 1), delay_steps=1)
    assert out.accounts_liquidated.tolist() == [1]
    assert out.seized_value[0] == pytest.approx(700.0, rel=1e-12)
    assert out.bad_debt[0] == pytest.approx(760.0 - 700.0 / 1.05, rel=1e-12)
    assert out.bad_debt_by_asset[0, 0] == pytest.approx(out.bad_debt[0], rel=1e-12)
    assert out.seized_by_step.tolist() == pytest.approx([0.0, 0.0, 700.0])
    # at 80 the collateral (800) still covers the debt with its bonus (798): the slippage
    # (0.5%) is the liquidator's, paid out of the bonus, so the protocol loses nothing
    calm = liquidate(book, market, np.array([1.0, 0.9, 0.8]).reshape(1, 3, 1), delay_steps=1)
    assert calm.accounts_liquidated.tolist() == [1] and calm.bad_debt.tolist() == [0.0]
    assert calm.seized_value[0] == pytest.approx(798.0, rel=1e-12)


def test_a_slippage_the_bonus_cannot_pay_leaves_the_sale_to_the_protocol() -> None:
    # ADV 700 for 700 of seized value: s = 0.05 · √1 = 5% > 1 − 1/1.05, so no liquidator
    # acts at a loss; the protocol sells at 700 · 0.95 = 665: bad debt 760 − 665 = 95
    book, market = _one_asset(adv=700.0)
    out = liquidate(book, market, np.array([1.0, 0.9, 0.7]).reshape(1, 3, 1), delay_steps=1)
    assert out.bad_debt[0] == pytest.approx(95.0, rel=1e-12)


def test_an_account_that_recovers_within_the_delay_is_not_liquidated() -> None:
    # 100 → 94 (HF 752/760: trigger) → 100 at execution (HF 800/760): not liquidated;
    # watched again, it falls to 90 at step 3 and is liquidated at step 4 (at 70)
    book, market = _one_asset()
    back = liquidate(book, market, np.array([1.0, 0.94, 1.0]).reshape(1, 3, 1), 1)
    assert back.accounts_liquidated.tolist() == [0] and back.seized_value.tolist() == [0.0]
    again = liquidate(book, market, np.array([1.0, 0.94, 1.0, 0.9, 0.7]).reshape(1, 5, 1), 1)
    assert again.accounts_liquidated.tolist() == [1]
    assert again.seized_by_step.tolist() == pytest.approx([0, 0, 0, 0, 700.0])
    assert again.bad_debt[0] == pytest.approx(760.0 - 700.0 / 1.05, rel=1e-12)
    # with no delay the trigger executes on its own step: at 94 (collateral 940) the
    # liquidator takes D·LB = 798
    now = liquidate(book, market, np.array([1.0, 0.94, 1.0]).reshape(1, 3, 1), 0)
    assert now.seized_by_step.tolist() == pytest.approx([0, 798.0, 0])


def test_fall_within_the_cushion_leaves_no_bad_debt() -> None:
    # HF < 1 below 95; the trigger hour is at 94 (value 940). Without slippage the liquidator
    # needs D·LB = 798 of collateral: a further fall of 15% (799) leaves no bad debt, 20%
    # (752) leaves 760 − 752/1.05.
    book, market = _one_asset(adv=1e30)
    market = dataclasses.replace(market, impact_coef=0.0)
    for drop, bad in ((0.15, 0.0), (0.20, 760.0 - 752.0 / 1.05)):
        path = np.array([1.0, 0.94, 0.94 * (1 - drop)]).reshape(1, 3, 1)
        out = liquidate(book, market, path, delay_steps=1)
        assert out.accounts_liquidated.tolist() == [1]
        assert out.bad_debt[0] == pytest.approx(bad, abs=1e-9)


def test_healthy_path_liquidates_nobody() -> None:
    book, market = _one_asset()
    out = liquidate(book, market, np.array([1.0, 0.99, 0.96]).reshape(1, 3, 1), 1)
    assert out.accounts_liquidated.tolist() == [0] and out.bad_debt.tolist() == [0.0]


def test_multi_collateral_health_factor_uses_value_weighted_lt() -> None:
    # 1 BTC at 60,000 (LT 0.80) + 10 ETH at 3,000 (LT 0.75), debt 50,000:
    # HF = (48,000 + 22,500) / 50,000 = 1.41; the account's LT = 70,500 / 90,000
    collateral = np.array([[1.0, 10.0]])
    hf = health_factor(collateral, np.array([60_000.0, 3_000.0]), np.array([0.80, 0.75]),
                       np.array([50_000.0]))
    assert hf[0] == pytest.approx(1.41, rel=1e-12)
    assert (hf[0] * 50_000 / 90_000) == pytest.approx(0.783333333, rel=1e-8)


def test_multi_collateral_trigger_and_weighted_bonus() -> None:
    # ETH alone falling 40% takes HF to (48,000 + 13,500)/50,000 = 1.23 (healthy); BTC −25%
    # with ETH −40%: (36,000 + 13,500)/50,000 = 0.99 → liquidated at those prices, no slippage.
    book = Book(np.array(["a"]), ["BTC", "ETH"], np.array([[1.0, 10.0]]), np.array([50_000.0]))
    market = Market(["BTC", "ETH"], np.array([60_000.0, 3_000.0]), np.array([0.80, 0.75]),
                    np.array([1.04, 1.10]), np.zeros(2), np.full(2, 1e30), 0.0)
    eth_only = liquidate(book, market, np.array([[[1, 1], [1, 0.6]]], float), 0)
    assert eth_only.accounts_liquidated.tolist() == [0]
    both = liquidate(book, market, np.array([[[1, 1], [0.75, 0.6]]], float), 0)
    value = np.array([45_000.0, 18_000.0])
    lb = value @ market.lb / value.sum()  # value-weighted LB = 1.0571...
    assert both.accounts_liquidated.tolist() == [1]
    assert both.seized_value[0] == pytest.approx(50_000 * lb)  # f = D·LB / V0 < 1
    assert both.bad_debt[0] == 0.0


def test_slippage_is_the_policy_square_root_law_of_the_aggregate_size() -> None:
    cfg = PolicyConfig()
    sigma, adv = 0.04, 2e8
    market = Market(["X"], np.ones(1), np.ones(1), np.ones(1), np.array([sigma]),
                    np.array([adv]), cfg.liquidity.impact_coef, 0.99)
    size = np.array([[cfg.liquidity.reference_size_usd]])
    assert slippage(size, market)[0, 0] == pytest.approx(liquidity_addon(sigma, adv, cfg))
    # two identical accounts liquidated together slip √2 times more than one alone: at ADV
    # 1,246.875 one slips 0.05·√(798/ADV) = 4% (the 5% bonus covers it, no bad debt), two
    # 5.66% (it does not: the protocol sells at 800·(1 − s2) and loses 760 − that each)
    adv = 798.0 / 0.64
    one = liquidate(*_one_asset(1, adv), np.array([1.0, 0.9, 0.8]).reshape(1, 3, 1), 1)
    two = liquidate(*_one_asset(2, adv), np.array([1.0, 0.9, 0.8]).reshape(1, 3, 1), 1)
    s2 = 0.05 * math.sqrt(2 * 798.0 / adv)
    assert one.bad_debt[0] == 0.0 and one.seized_value[0] == pytest.approx(798.0)
    assert two.bad_debt[0] == pytest.approx(2 * (760 - 800 * (1 - s2)))


def test_missing_move_excludes_exposed_accounts_only() -> None:
    book = Book(np.array(["a", "b"]), ["X", "Y"], np.array([[10.0, 0.0], [10.0, 5.0]]),
                np.array([760.0, 760.0]))
    market = Market(["X", "Y"], np.array([100.0, 100.0]), np.full(2, 0.8), np.full(2, 1.05),
                    np.full(2, 0.05), np.full(2, 79_800.0))
    path = np.array([[[1.0, np.nan], [0.9, np.nan], [0.7, np.nan]]])
    out = liquidate(book, market, path, 1)
    assert out.excluded_accounts == 1 and out.excluded_debt_usd == 760.0
    assert out.account_liquidated.tolist() == [1, 0]
    assert out.bad_debt[0] == pytest.approx(760.0 - 700.0 / 1.05)


def test_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    coll = rng.lognormal(2, 1, (50, 3))
    book = Book(np.arange(50).astype(str), ["A", "B", "C"], coll, 0.7 * coll.sum(axis=1))
    market = Market(["A", "B", "C"], np.ones(3), np.full(3, 0.8), np.full(3, 1.05),
                    np.full(3, 0.05), np.full(3, 500.0))
    rel = np.exp(np.cumsum(0.2 * rng.standard_normal((40, 4, 3)), axis=1))
    whole = liquidate(book, market, rel, 1)
    monkeypatch.setattr("pipelines.stress.liquidation.CELLS_PER_CHUNK", 50 * 7)
    chunked = liquidate(book, market, rel, 1)
    assert np.allclose(whole.bad_debt, chunked.bad_debt)
    assert np.array_equal(whole.account_liquidated, chunked.account_liquidated)
    assert whole.bad_debt.sum() > 0


def test_bad_debt_of_worthless_collateral_is_kept_and_attributed() -> None:
    """Collateral at price 0: the whole debt is bad debt, and it is attributed to the assets
    by the account's pre-move collateral value (nothing realized, nothing at the execution
    price to weight by), so the total over assets keeps it."""
    book = Book(np.array(["a", "b"]), ["X", "Y"], np.array([[10.0, 0.0], [10.0, 30.0]]),
                np.array([700.0, 700.0]))
    market = Market(["X", "Y"], np.array([100.0, 100.0]), np.full(2, 0.8), np.full(2, 1.05),
                    np.full(2, 0.05), np.full(2, 79_800.0))
    out = liquidate(book, market, np.array([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]]), 1)
    assert out.account_bad_debt.tolist() == [700.0, 700.0]
    assert out.bad_debt.tolist() == [1400.0] and out.bad_debt_by_step.tolist() == [0, 0, 1400]
    # a: all on X; b: 1,000 of X and 3,000 of Y before the move → 175 and 525
    assert out.bad_debt_by_asset[0] == pytest.approx([700.0 + 175.0, 525.0])
    # debt against collateral worth nothing even today could be attributed to no asset
    broke = Book(np.array(["c"]), ["X", "Y"], np.zeros((1, 2)), np.array([5.0]))
    with pytest.raises(ValueError, match=r"\['c'\] owe debt but hold no collateral"):
        liquidate(broke, market, np.ones((1, 2, 2)), 1)


def test_bad_debt_totals_agree_over_assets_accounts_steps_and_paths() -> None:
    """The invariant on a seeded book: every dollar of bad debt is in each breakdown, also on
    paths where some assets go to 0 (accounts holding only those realize nothing)."""
    rng = np.random.default_rng(11)
    n, k = 300, 4
    coll = rng.lognormal(2, 1, (n, k)) * (rng.random((n, k)) < 0.5)
    coll[coll.sum(axis=1) == 0, 0] = 1.0
    book = Book(np.arange(n).astype(str), list("ABCD"), coll,
                rng.uniform(0.4, 0.75, n) * coll.sum(axis=1))
    market = Market(list("ABCD"), np.ones(k), np.full(k, 0.8), np.full(k, 1.05),
                    np.full(k, 0.05), np.full(k, 2_000.0))
    rel = np.exp(np.cumsum(0.15 * rng.standard_normal((60, 5, k)), axis=1))
    rel[:, 0] = 1.0
    rel[::4, 2:, :2] = 0.0  # a quarter of the paths: A and B worthless from step 2
    out = liquidate(book, market, rel, 1)
    assert (out.bad_debt_by_asset >= 0).all()
    assert out.bad_debt_by_asset.sum(axis=1) == pytest.approx(out.bad_debt)
    assert out.bad_debt_by_asset.sum() == pytest.approx(out.account_bad_debt.sum())
    assert out.bad_debt_by_step.sum() == pytest.approx(out.account_bad_debt.sum())
    only_ab = (coll[:, 2:] == 0).all(axis=1)
    assert only_ab.sum() > 10 and out.account_bad_debt[only_ab].sum() > 0


def test_a_non_finite_move_is_missing_and_excludes_its_holders() -> None:
    """An infinite price relative is no price: treated like NaN (holders excluded, counted),
    not as a price that makes every holder healthy."""
    book = Book(np.array(["a", "b"]), ["X", "Y"], np.array([[10.0, 0.0], [10.0, 5.0]]),
                np.array([760.0, 760.0]))
    market = Market(["X", "Y"], np.array([100.0, 100.0]), np.full(2, 0.8), np.full(2, 1.05),
                    np.full(2, 0.05), np.full(2, 79_800.0))
    path = np.array([[[1.0, 1.0], [0.9, np.inf], [0.8, np.inf]]])
    out = liquidate(book, market, path, 1)
    assert out.excluded_accounts == 1 and out.excluded_debt_usd == 760.0
    assert out.evaluated_debt_usd == 760.0
    assert out.account_liquidated.tolist() == [1, 0]


def test_an_asset_without_a_sigma_slips_at_the_cap_not_into_a_nan() -> None:
    """A listing of days has no EWMA σ: its slippage is the cap (as without ADV), so a
    liquidation of it books a number, never NaN (a maximum read NaN as no bad debt)."""
    book, market = _one_asset()
    blind = dataclasses.replace(market, sigma_1d=np.array([np.nan]))
    assert slippage(np.array([[700.0]]), blind)[0, 0] == market.slippage_cap
    out = liquidate(book, blind, np.array([1.0, 0.9, 0.7]).reshape(1, 3, 1), 1)
    # the cap (99%) is far beyond the bonus: the protocol sells at 700 · 1%
    assert out.bad_debt[0] == pytest.approx(760.0 - 700.0 * (1 - 0.99), rel=1e-12)

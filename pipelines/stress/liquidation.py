r"""Liquidations and bad debt of a book along joint price paths, on today's parameters.

An account holds units :math:`C_{k}` of collateral assets and owes :math:`D` USD. Its health
factor at prices :math:`p` is Aave's, with the liquidation threshold of each collateral asset
(a multi-collateral account's LT is the value-weighted LT of what it holds):

.. math::
    HF = \frac{\sum_k C_k\, p_k\, LT_k}{D}

The first path step with :math:`HF < 1` triggers the liquidation, which executes ``delay``
steps later (the liquidation delay *H*) at that step's prices, if the account is still
unhealthy then (a liquidation call checks HF when it executes: an account whose prices came
back within the delay is not liquidated, and is watched again from the next step). A trigger
within ``delay`` steps of the scenario's end executes at its last step (no price after it is
known). The liquidator repays the debt and seizes collateral worth :math:`D \cdot LB`
(value-weighted LB, taken pro rata from every collateral asset) at the execution prices, so
it seizes the share :math:`f = \min(1, D\,LB / V)` of the collateral value
:math:`V = \sum_k C_k p_k`. What it sells moves the price: the slippage of asset *k* is the
square-root impact of the **aggregate** value seized in that asset on that path,

.. math::
    s_k = \min\big(c\,\sigma_k \sqrt{Q_k / ADV_k},\ s_{\max}\big), \qquad
    Q_k = \sum_{\text{liquidated}} f\, C_k\, p_k ,

the policy's :func:`serving.policy.liquidity_addon` with the reference size replaced by
:math:`Q_k` (no ADV → :math:`s_{\max}`). Slippage is the liquidator's cost, paid out of the
bonus (the policy prices LB for it), so while the bonus covers it, :math:`LB\,(1 - \bar s)
\ge 1` with :math:`\bar s` the seized value's mean slippage, the protocol's bad debt is
what the collateral at the execution prices cannot repay with the bonus,

.. math::
    B = \max(D - V / LB,\ 0),

zero as long as the price fell less than the cushion :math:`1 - LT \cdot LB` (= MMF) at the
trigger. When the bonus does not cover the slippage no liquidator acts, and the protocol
sells the collateral itself: :math:`B = \max(D - \sum_k C_k p_k (1 - s_k),\ 0)`. An
account's bad debt is attributed to its collateral assets pro rata to their
realized value, else (slippage took it all) to their value at the execution prices, else
(every asset it holds at price 0 then) to their value *before the move* (today's prices),
which is positive for every account with debt: per-asset bad debt always sums to the
accounts' total. Accounts holding an asset whose scenario move is missing (NaN, or any
non-finite relative) are *excluded* (counted, with their debt), never given an invented
price. Everything is matrix algebra over accounts × assets and paths × steps × assets, in
chunks of paths to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.stress.book import Book

CELLS_PER_CHUNK = 4_000_000  # accounts × paths per chunk: 32 MB per float64 array


@dataclass(frozen=True)
class Market:
    """Today's state per asset (columns aligned with :attr:`Book.assets`), from the
    published parameters and data up to the as-of."""

    assets: list[str]
    price: np.ndarray      # (K,) USD, close of the as-of day
    lt: np.ndarray         # (K,) liquidation threshold
    lb: np.ndarray         # (K,) liquidation bonus, e.g. 1.05
    sigma_1d: np.ndarray   # (K,) forecast 1-day σ (slippage)
    adv_usd: np.ndarray    # (K,) average daily dollar volume (slippage)
    impact_coef: float = 1.0
    slippage_cap: float = 0.99


@dataclass(frozen=True)
class Outcome:
    """Liquidations of one scenario, per path and per account."""

    bad_debt: np.ndarray            # (P,) USD
    bad_debt_by_asset: np.ndarray   # (P, K) USD
    seized_value: np.ndarray        # (P,) USD of collateral seized (scenario price)
    seized_by_asset: np.ndarray     # (P, K) USD
    accounts_liquidated: np.ndarray  # (P,) count
    account_bad_debt: np.ndarray    # (A,) USD summed over paths
    account_liquidated: np.ndarray  # (A,) number of paths on which it was liquidated
    seized_by_step: np.ndarray      # (S,) USD seized per execution step, all paths summed
    bad_debt_by_step: np.ndarray    # (S,)
    excluded_accounts: int          # hold an asset with a missing move
    excluded_debt_usd: float        # their debt: not evaluated
    evaluated_debt_usd: float       # the debt of every other account


def health_factor(collateral: np.ndarray, price: np.ndarray, lt: np.ndarray,
                  debt_usd: np.ndarray) -> np.ndarray:
    """:math:`HF = \\sum_k C_k p_k LT_k / D` per account (inf without debt); (A, K) → (A,)."""
    num = (collateral * lt) @ price
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(debt_usd > 0, num / np.where(debt_usd > 0, debt_usd, 1.0), np.inf)


def slippage(seized_usd: np.ndarray, market: Market) -> np.ndarray:
    """Square-root impact of the aggregate seized value per asset, (..., K) → (..., K); the
    cap where the asset has no ADV or no finite σ."""
    adv = market.adv_usd
    # no ADV, or no σ to scale the impact by (a listing of days): the size cannot be priced,
    # the cap applies (a NaN here was a NaN bad debt, which a maximum then read as none)
    ok = np.isfinite(adv) & (adv > 0) & np.isfinite(market.sigma_1d)
    ratio = seized_usd / np.where(ok, adv, 1.0)
    sigma = np.where(np.isfinite(market.sigma_1d), market.sigma_1d, 0.0)
    s = market.impact_coef * sigma * np.sqrt(np.maximum(ratio, 0.0))
    s = np.where(ok | (seized_usd <= 0), s, market.slippage_cap)
    return np.minimum(s, market.slippage_cap)


def liquidate(book: Book, market: Market, relative: np.ndarray, delay_steps: int) -> Outcome:
    """Run the liquidation model of the module docstring over joint price paths.

    Parameters
    ----------
    book : Book
        Accounts × assets collateral and the debt per account.
    market : Market
        Today's prices and parameters, columns in ``book.assets`` order.
    relative : np.ndarray
        Price relative to today, shape (P, S, K); step 0 is normally 1. An asset with NaN
        or ±inf anywhere is a missing move: accounts holding it are excluded.
    delay_steps : int
        Steps between the trigger and the execution (clipped to the last step).

    Raises
    ------
    ValueError
        If the assets differ, or an evaluated account owes debt against collateral worth
        nothing at today's prices (a validated book cannot: ``debt_without_collateral``).
    """
    if list(market.assets) != list(book.assets):
        raise ValueError("market and book assets differ: align them first")
    n_paths, n_steps, k = relative.shape
    missing = ~np.isfinite(relative).all(axis=(0, 1))  # (K,)
    relative = np.where(missing, 1.0, relative)
    excluded = (book.collateral[:, missing] > 0).any(axis=1)  # (A,)
    collateral = np.where(excluded[:, None], 0.0, book.collateral)  # (A, K)
    debt = np.where(excluded, 0.0, book.debt_usd)  # (A,)
    worthless = (debt > 0) & ~(collateral @ market.price > 0)
    if worthless.any():  # its bad debt could be attributed to no asset: refused, not lost
        raise ValueError(f"accounts {book.accounts[worthless][:5].tolist()} owe debt but hold "
                         "no collateral of positive value at today's prices")
    weighted = collateral * market.lt  # (A, K)
    n_acc = len(debt)
    out = _Accumulator(n_paths, n_steps, k, n_acc)
    chunk = max(1, CELLS_PER_CHUNK // max(n_acc, 1))
    for p0 in range(0, n_paths, chunk):
        price = market.price * relative[p0:p0 + chunk]  # (c, S, K)
        c = price.shape[0]
        # Step by step (S is small for shocks and Monte Carlo): (A, c) arrays stay contiguous,
        # which is ~3x faster than reducing a (A, c, S) array over its short last axis.
        first = np.full((n_acc, c), -1, dtype=np.int32)  # first unhealthy step, -1: never
        for s in range(n_steps):
            unhealthy = weighted @ price[:, s, :].T < debt[:, None]  # (A, c)
            np.copyto(first, s, where=unhealthy & (first < 0))
        acc, path = np.nonzero(first >= 0)
        if not len(acc):
            continue
        acc, path, step = _executed(weighted, debt, price, acc, path, first[acc, path],
                                    delay_steps)
        if len(acc):
            _settle(out, collateral[acc], debt[acc], price[path, step], acc, path, p0, c,
                    step, market)
    return out.result(int(excluded.sum()), float(book.debt_usd[excluded].sum()),
                      float(debt.sum()))


def _executed(weighted: np.ndarray, debt: np.ndarray, price: np.ndarray, acc: np.ndarray,
              path: np.ndarray, trigger: np.ndarray, delay: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (account, path, step) liquidations that execute: each trigger executes ``delay``
    steps later (at the last step at most) if the account is still unhealthy then; one that
    recovered is watched again from the step after, until the scenario ends."""
    n_steps = price.shape[1]
    if delay == 0:  # each trigger executes on its own step, at the prices that triggered it
        return acc, path, np.asarray(trigger)
    done: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while len(acc):
        step = np.minimum(trigger + delay, n_steps - 1)
        # with no delay the trigger's own test stands (the same prices: no second rounding)
        still = (step == trigger) | (np.einsum("nk,nk->n", weighted[acc], price[path, step])
                                     < debt[acc])
        done.append((acc[still], path[still], step[still]))
        watch = ~still & (step < n_steps - 1)
        acc, path, after = acc[watch], path[watch], step[watch]
        trigger = np.full(len(acc), -1)
        for s in range(int(after.min()) + 1 if len(after) else n_steps, n_steps):
            look = np.flatnonzero((trigger < 0) & (after < s))
            if not len(look):
                continue
            bad = np.einsum("nk,nk->n", weighted[acc[look]], price[path[look], s]) \
                < debt[acc[look]]
            trigger[look[bad]] = s
        again = trigger >= 0
        acc, path, trigger = acc[again], path[again], trigger[again]
    if not done:
        return (np.zeros(0, np.intp),) * 3  # type: ignore[return-value]
    return tuple(np.concatenate(x) for x in zip(*done, strict=True))  # type: ignore[return-value]


def _settle(out: _Accumulator, coll: np.ndarray, debt: np.ndarray, px: np.ndarray,
            acc: np.ndarray, path: np.ndarray, p0: int, c: int, step: np.ndarray,
            market: Market) -> None:
    """Seize, slip and book the bad debt of the liquidated (account, path) pairs."""
    value = coll * px  # (n, K) at the execution prices
    v0 = value.sum(axis=1)  # (n,)
    safe_v0 = np.where(v0 > 0, v0, 1.0)
    lb = np.where(v0 > 0, value @ market.lb / safe_v0, market.lb.max())  # (n,)
    share = np.minimum(1.0, debt * lb / safe_v0)  # (n,)
    seized = share[:, None] * value  # (n, K)
    k = value.shape[1]
    agg = np.stack([np.bincount(path, seized[:, j], minlength=c) for j in range(k)], axis=1)
    slip = slippage(agg, market)  # (c, K)
    net = value * (1.0 - slip[path])  # (n, K)
    seized_total = seized.sum(axis=1)
    mean_slip = np.where(seized_total > 0, (seized * slip[path]).sum(axis=1)
                         / np.where(seized_total > 0, seized_total, 1.0), 0.0)
    # the bonus pays the liquidator's slippage while it covers it; beyond, nobody liquidates
    # and the protocol sells the collateral itself
    covered = lb * (1.0 - mean_slip) >= 1.0
    bad = np.where(covered, np.maximum(debt - v0 / lb, 0.0),
                   np.maximum(debt - net.sum(axis=1), 0.0))  # (n,)
    if not np.isfinite(bad).all():  # every input is finite or capped: never a NaN verdict
        raise ValueError("stress liquidation: a bad debt that is not a number")
    bad_k = bad[:, None] * _attribution(net, value, coll * market.price)  # (n, K)
    rows = slice(p0, p0 + c)
    out.bad_debt_by_asset[rows] += np.stack(
        [np.bincount(path, bad_k[:, j], minlength=c) for j in range(k)], axis=1)
    out.seized_by_asset[rows] += agg
    out.accounts_liquidated[rows] += np.bincount(path, minlength=c)
    out.account_bad_debt += np.bincount(acc, bad, minlength=len(out.account_bad_debt))
    out.account_liquidated += np.bincount(acc, minlength=len(out.account_liquidated))
    out.seized_by_step += np.bincount(step, seized.sum(axis=1), minlength=len(out.seized_by_step))
    out.bad_debt_by_step += np.bincount(step, bad, minlength=len(out.bad_debt_by_step))


def _attribution(*values: np.ndarray) -> np.ndarray:
    """Weights (n, K) summing to 1 per account: the first of ``values`` (each (n, K), e.g.
    realized, at execution, before the move) with a positive total for that account. An
    account with debt holds collateral worth something today (the book's rule
    ``debt_without_collateral``), so the last, pre-move value, always has one; weighting by
    a zero total would lose the account's bad debt from the per-asset sums."""
    weights = np.zeros_like(values[0])
    done = np.zeros(len(weights), bool)
    for x in values:
        total = x.sum(axis=1)
        use = ~done & (total > 0)
        weights[use] = x[use] / total[use, None]
        done |= use
    return weights


class _Accumulator:
    """Running sums over chunks of paths."""

    def __init__(self, n_paths: int, n_steps: int, k: int, n_acc: int) -> None:
        self.bad_debt_by_asset = np.zeros((n_paths, k))
        self.seized_by_asset = np.zeros((n_paths, k))
        self.accounts_liquidated = np.zeros(n_paths, dtype=np.int64)
        self.account_bad_debt = np.zeros(n_acc)
        self.account_liquidated = np.zeros(n_acc, dtype=np.int64)
        self.seized_by_step = np.zeros(n_steps)
        self.bad_debt_by_step = np.zeros(n_steps)

    def result(self, excluded: int, excluded_debt: float, evaluated_debt: float) -> Outcome:
        return Outcome(self.bad_debt_by_asset.sum(axis=1), self.bad_debt_by_asset,
                       self.seized_by_asset.sum(axis=1), self.seized_by_asset,
                       self.accounts_liquidated, self.account_bad_debt,
                       self.account_liquidated, self.seized_by_step, self.bad_debt_by_step,
                       excluded, excluded_debt, evaluated_debt)

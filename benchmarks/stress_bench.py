"""Stress benchmark: 10,000 accounts × 10,000 joint-FHS paths on the embedded data.

Times the three parts of a Monte Carlo stress — the synthetic book, the joint FHS paths
(standardized returns of every asset, resampled whole cross-sections) and the liquidation
model — and reports peak memory two ways: ``tracemalloc`` (Python and NumPy allocations
during the timed section) and the process's maximum resident set size (``getrusage``).

Parameters are a stand-in for a published file, derived from the EWMA σ at the as-of with
the policy's lending relations (MMF = 1 − e^{-4σ}, LB = 1.03, LT = (1 − MMF)/LB, LTV =
(1 − 1.25·MMF)/LB), so the benchmark needs no pipeline run; the work is the same.

    .venv/bin/python -m benchmarks.stress_bench [--accounts 10000] [--paths 10000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from configs.schema import Config
from features.loaders import load_market
from pipelines.stress.book import synthetic_book, validate_book
from pipelines.stress.liquidation import Market, liquidate
from pipelines.stress.montecarlo import monte_carlo
from pipelines.stress.report import var_es
from pipelines.stress.scenarios import ewma_sigma
from serving.policy import trailing_adv

DATA = Path(__file__).resolve().parents[1] / "data" / "market"
AS_OF = dt.date(2025, 6, 30)


def stand_in_market(cfg: Config) -> tuple[Market, dict[str, pd.DataFrame], pd.Series]:
    data = load_market(DATA, as_of=AS_OF)
    # assets still trading at the as-of (a delisted one has no current price)
    assets = sorted(a for a, d in data.daily.items() if d.index[-1] >= pd.Timestamp(AS_OF))
    daily = {a: data.daily[a] for a in assets}
    sigma = np.array([ewma_sigma(daily[a]["close"], cfg.stress.ewma_decay).iloc[-1]
                      for a in assets])
    price = np.array([daily[a]["close"].iloc[-1] for a in assets])
    adv = np.array([trailing_adv(daily[a]["close"] * daily[a]["volume"],
                                 cfg.policy.liquidity.adv_window).iloc[-1] for a in assets])
    mmf = 1.0 - np.exp(-4.0 * sigma)
    lb = np.full(len(assets), 1.03)
    market = Market(assets, price, (1 - mmf) / lb, lb, sigma, adv,
                    cfg.policy.liquidity.impact_coef, cfg.stress.slippage_cap)
    return market, daily, pd.Series((1 - 1.25 * mmf) / lb, assets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--paths", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=1)
    args = parser.parse_args()
    cfg = Config().with_overrides({"stress.book.accounts": args.accounts})
    market, daily, ltv = stand_in_market(cfg)
    assets = market.assets

    tracemalloc.start()
    t0 = time.perf_counter()
    frame = synthetic_book(pd.Series(market.price, assets), ltv,
                           pd.Series(market.adv_usd, assets), cfg.stress.book,
                           cfg.stress.stablecoins)
    book = validate_book(frame, assets, cfg.stress.stablecoins, "<synthetic>", 0)
    t1 = time.perf_counter()
    scn = monte_carlo(daily, assets, market.sigma_1d, args.paths, args.horizon,
                      cfg.stress.mc_seed, cfg.stress.ewma_decay)
    t2 = time.perf_counter()
    out = liquidate(book, market, scn.relative, scn.delay_steps)
    t3 = time.perf_counter()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    var99, es99 = var_es(out.bad_debt, 0.99)
    figures = {
        "accounts": len(book.accounts), "assets": len(assets), "paths": args.paths,
        "steps": scn.relative.shape[1],
        "book_s": round(t1 - t0, 3), "fhs_paths_s": round(t2 - t1, 3),
        "liquidation_s": round(t3 - t2, 3), "total_s": round(t3 - t0, 3),
        "tracemalloc_peak_mb": round(peak / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "mean_accounts_liquidated": round(float(out.accounts_liquidated.mean()), 2),
        "prob_bad_debt": round(float((out.bad_debt > 0).mean()), 4),
        "bad_debt_var99_usd": round(var99), "bad_debt_es99_usd": round(es99),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

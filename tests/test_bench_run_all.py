"""``make bench`` walks each model forward as the run does: failures are counted, not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.run_all import walk_failures
from configs.schema import Config
from features.build import build_panel
from features.loaders import load_market
from models.backtest import ForecastFailureError, backtest, walk_forward
from models.registry import build_forecaster
from tests.conftest import write_slice


def test_walk_failures_counts_what_the_strict_walk_forward_raises_on(tmp_path: Path) -> None:
    """On the embedded data a plausible model can fail an asset (egarch_t on TRX); the
    benchmark must time the walk-forward and report the failures, as ``volmargin run`` does,
    where the strict :func:`walk_forward` raises. A band of [0.9, 1.1] × the trailing realized
    variance fails most EWMA forecasts of a real slice."""
    root = write_slice(tmp_path / "data", ["BTC", "ETH"], "2022-01-01", "2023-12-31")
    cfg = Config().with_overrides({"backtest.oos_start": "2023-01-01",
                                   "backtest.plausibility.min_ratio": 0.9,
                                   "backtest.plausibility.max_ratio": 1.1})
    panel = build_panel(load_market(root), cfg.features)
    bt = cfg.backtest

    failed = walk_failures(cfg, "ewma94", panel)

    out = backtest(lambda: build_forecaster("ewma94", cfg.models, bt.horizons), panel,
                   bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                   plausibility=bt.plausibility, chunk_assets=bt.chunk_assets)
    assert failed == len(out.failures) > 0
    with pytest.raises(ForecastFailureError, match="ewma94 BTC"):
        walk_forward(lambda: build_forecaster("ewma94", cfg.models, bt.horizons), panel,
                     bt.oos_start, bt.refit_every, bt.horizons, bt.min_train_days,
                     plausibility=bt.plausibility, chunk_assets=bt.chunk_assets)

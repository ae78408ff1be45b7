"""Every enabled model's walk-forward, started at once on one engine.

Kept apart from :mod:`pipelines.steps` (which logs to MLflow) so that what a retrain hands to
its workers, and the retrain benchmark, import no tracking stack: a compute node of a cluster
needs the models and the data, not MLflow.
"""

from __future__ import annotations

import pandas as pd

from configs.schema import Config, PlausibilityConfig
from features.schema import feature_view
from models.backtest import Eligibility, Mapper, PendingBacktest, start_backtest
from models.plausibility import TrailingVariance
from models.registry import build_forecaster, fits_per_asset


def start_walk_forwards(cfg: Config, panel: pd.DataFrame, mapper: Mapper = map
                        ) -> dict[str, PendingBacktest]:
    """Every enabled model's walk-forward handed to ``mapper``, pooled models first (see
    :func:`pipelines.steps.step_backtest`), on one shared feature view, planned on one
    shared :class:`~models.backtest.Eligibility` and checked against one shared trailing
    realized variance (computed when the first model is read, while the cluster still
    works); keyed by alias. No model is built here (:func:`models.registry.fits_per_asset`):
    where the fits run elsewhere, this process never imports torch."""
    bt = cfg.backtest
    features = feature_view(panel)
    trailing = TrailingVariance(panel, bt.plausibility or PlausibilityConfig())
    eligible = Eligibility(features)
    pooled_first = sorted(cfg.models.enabled, key=fits_per_asset)
    return {alias: start_backtest(
        lambda a=alias: build_forecaster(a, cfg.models, bt.horizons), panel, bt.oos_start,
        bt.refit_every, bt.horizons, bt.min_train_days, mapper=mapper,
        plausibility=bt.plausibility, chunk_assets=bt.chunk_assets, features=features,
        trailing=trailing, eligible=eligible, per_asset=fits_per_asset(alias), alias=alias)
        for alias in pooled_first}

"""The assets every model scored: what models' mean QLIKEs are compared on.

A model that failed an asset (often the hardest: `egarch_t` on TRX in the embedded data) would
otherwise be averaged over fewer, easier assets than the others and look better for it. The
report's forecast tables (:mod:`pipelines.report_md`), the per-forecaster means logged to
MLflow (:func:`pipelines.steps.common_means`) and the selection's quoted QLIKE
(:mod:`pipelines.selection.select`) all read their means over these assets. Pandas only: the
selection imports it without the statistics' import cost.
"""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd


def common_assets(scores: pd.DataFrame, models: Collection[str] | None = None
                  ) -> dict[int, set[str]]:
    """Per horizon, the assets every model of ``models`` (default: every model with a QLIKE
    at that horizon) has a QLIKE for; rows of ``scores``: ``model``, ``asset``,
    ``horizon_days``, ``qlike`` (NaN: not scored). A model that scored nothing at a horizon
    does not empty its set: it has no mean there, said by its caller."""
    scored = scores[scores["qlike"].notna()]
    if models is not None:
        scored = scored[scored["model"].isin(models)]
    out: dict[int, set[str]] = {}
    for h, rows in scored.groupby("horizon_days"):
        by_model = rows.groupby("model")["asset"].agg(set)
        out[int(h)] = set.intersection(*by_model) if len(by_model) else set()
    return out

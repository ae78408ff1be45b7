"""Walk-forward of a tail forecaster: expanding window, refit every ``refit_every`` days.

Same semantics as :func:`models.backtest.walk_forward`: at refit date ``c_k`` the model is
fitted on feature rows dated ``<= c_k`` (no ``target_*`` column reaches it) and forecasts
every cutoff in ``[c_k, c_{k+1})`` from rows dated ``<= t``; each row keeps the
``fitted_through`` date of its parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import pandas as pd

from features.schema import feature_view
from models.backtest import eligible_assets, refit_dates
from models.tail.base import TailForecaster, concat_tails

ProgressHook = Callable[[int, int], None]


class TailRefitError(RuntimeError):
    """A refit of a tail walk-forward (its fit or its forecasts) raised: ``fit_end`` is that
    refit's date and ``done`` the forecasts of the refits before it (they stand: each was
    made from what was known at its cutoff)."""

    def __init__(self, fit_end: pd.Timestamp, error: BaseException, done: pd.DataFrame
                 ) -> None:
        self.fit_end, self.error, self.done = pd.Timestamp(fit_end), error, done
        super().__init__(f"refit of {self.fit_end:%F}: {type(error).__name__}: {error}")


def fit_on_eligible(make_model: Callable[[], TailForecaster], features: pd.DataFrame,
                    fit_end: pd.Timestamp, min_train_days: int
                    ) -> tuple[TailForecaster | None, list[str]]:
    """A refit of the walk-forward at ``fit_end``: ``make_model()`` fitted on the rows dated
    ``<= fit_end`` of the assets with ``min_train_days`` of history by then, and those
    assets (no model where none has). Registration and the serve harness refit this way, so
    a served tail model is fitted as the walk-forward's would have been."""
    assets = eligible_assets(features, fit_end, min_train_days)
    if not assets:
        return None, assets
    dates = features.index.get_level_values("date")
    rows = features.index.get_level_values("asset").isin(assets) & (dates <= fit_end)
    return make_model().fit(features[rows]), assets


def tail_walk_forward(
    make_model: Callable[[], TailForecaster],
    panel: pd.DataFrame,
    start: dt.date | pd.Timestamp,
    end: dt.date | pd.Timestamp | None,
    refit_every: int,
    levels: Sequence[float],
    min_train_days: int,
    progress: ProgressHook | None = None,
    refused: list[dict[str, object]] | None = None,
) -> pd.DataFrame:
    """Out-of-sample tail forecasts for every cutoff from ``start`` to ``end`` (inclusive).
    ``refused``: where given, one ``{"fit_end", "side", "asset", "reason"}`` per asset and
    side a refit declined to fit (a model's ``refused``, e.g. EVT's degenerate GPD fits),
    which then has no forecast from that refit.

    Raises
    ------
    TailRefitError
        A refit raised; the forecasts of the refits before it ride on the error.
    """
    features = feature_view(panel)
    dates = features.index.get_level_values("date")
    last = dates.max() if end is None else min(pd.Timestamp(end), dates.max())
    fits = refit_dates(pd.Timestamp(start), last, refit_every)
    blocks = []
    for k, fit_end in enumerate(fits):
        seg_end = min(fits[k + 1] - pd.Timedelta(days=1), last) if k + 1 < len(fits) else last
        try:
            model, assets = fit_on_eligible(make_model, features, fit_end, min_train_days)
            if model is not None and refused is not None:
                refused += [{"fit_end": fit_end, "side": side, "asset": asset, "reason": why}
                            for side, per in (getattr(model, "refused", None) or {}).items()
                            for asset, why in per.items()]
            if model is not None:
                in_assets = features.index.get_level_values("asset").isin(assets)
                seg = pd.date_range(fit_end, seg_end, freq="D")
                fc = model.forecast_tail(features[in_assets & (dates <= seg_end)], levels, seg)
                fc["fitted_through"] = fit_end
                blocks.append(fc)
        except Exception as exc:  # the caller decides what the earlier refits are worth
            raise TailRefitError(fit_end, exc, _with_fitted_through(blocks)) from exc
        if progress is not None:
            progress(k + 1, len(fits))
    return _with_fitted_through(blocks)


def _with_fitted_through(blocks: list[pd.DataFrame]) -> pd.DataFrame:
    out = concat_tails(blocks)
    if "fitted_through" not in out.columns:
        out["fitted_through"] = pd.Series(dtype="datetime64[ns]")
    return out

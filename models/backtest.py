"""Walk-forward backtest: expanding window, refit every ``refit_every`` days, parameters fixed
between refits (Nixtla's ``cross_validation`` with ``refit``, arch's ``fix`` + ``forecast``).

At refit date ``c_k`` the model is fitted on feature rows dated ``<= c_k`` (no ``target_*``
column ever reaches it) and then forecasts every cutoff ``t`` in ``[c_k, c_{k+1})`` from rows
dated ``<= t``. Each forecast row keeps its ``cutoff`` and the ``fitted_through`` date of the
parameters that made it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import pandas as pd

from features.schema import feature_view
from models.base import Forecaster, concat_forecasts

ProgressHook = Callable[[int, int], None]


def refit_dates(start: pd.Timestamp, end: pd.Timestamp, every: int) -> pd.DatetimeIndex:
    """Fit cutoffs ``start, start+every, ...`` up to ``end`` inclusive."""
    return pd.date_range(start, end, freq=pd.Timedelta(days=every))


def eligible_assets(panel: pd.DataFrame, cutoff: pd.Timestamp, min_days: int) -> list[str]:
    """Assets with at least ``min_days`` daily returns up to ``cutoff``."""
    upto = panel[panel.index.get_level_values("date") <= cutoff]
    counts = upto["ret_1d"].notna().groupby(level="asset").sum()
    return sorted(counts.index[counts >= min_days])


def walk_forward(
    make_model: Callable[[], Forecaster],
    panel: pd.DataFrame,
    oos_start: dt.date,
    refit_every: int,
    horizons: Sequence[int],
    min_train_days: int,
    progress: ProgressHook | None = None,
) -> pd.DataFrame:
    """Out-of-sample forecasts for every cutoff from ``oos_start`` to the panel's last date."""
    features = feature_view(panel)
    dates = features.index.get_level_values("date")
    last = dates.max()
    fits = refit_dates(pd.Timestamp(oos_start), last, refit_every)
    blocks = []
    for k, fit_end in enumerate(fits):
        seg_end = min(fits[k + 1] - pd.Timedelta(days=1), last) if k + 1 < len(fits) else last
        assets = eligible_assets(features, fit_end, min_train_days)
        if assets:
            in_assets = features.index.get_level_values("asset").isin(assets)
            model = make_model().fit(features[in_assets & (dates <= fit_end)])
            seg_dates = pd.date_range(fit_end, seg_end, freq="D")
            fc = model.forecast(features[in_assets & (dates <= seg_end)], horizons, seg_dates)
            fc["fitted_through"] = fit_end
            blocks.append(fc)
        if progress is not None:
            progress(k + 1, len(fits))
    out = concat_forecasts(blocks)
    if "fitted_through" not in out.columns:
        out["fitted_through"] = pd.Series(dtype="datetime64[ns]")
    return out

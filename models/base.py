"""The one forecaster protocol every model implements, and the forecast frame contract.

Modelled on Nixtla's ``fit / forecast / cross_validation`` and arch's spec-vs-result split:

* ``fit(panel) -> self`` estimates parameters from a feature panel (no ``target_*`` columns;
  training targets are built inside the model from ``rv`` of the rows it was given, so a panel
  truncated at a cutoff can never leak what came after it).
* ``forecast(panel, horizons, cutoffs=None) -> frame`` with parameters held fixed; a forecast
  at cutoff ``t`` reads only rows dated ``<= t``.
* ``state() -> dict`` is JSON-able (parameters, small weight arrays as lists); never a pickle.
  ``from_state(state)`` rebuilds an identical forecaster.
* optional ``per_asset: bool``: True when fitting and forecasting each asset alone gives the
  same numbers as doing all at once (no pooled parameter); the walk-forward then runs, and
  fails, assets one by one (:mod:`models.backtest`). Absent means pooled.
* optional ``forecast_per_asset: bool``: True when an asset's forecast reads only that asset's
  rows (parameters may be pooled), so one ``forecast`` over many assets equals each asset's
  own; serving then forecasts every asset in one call (:mod:`serving.apply`). ``per_asset``
  implies it.

Forecast frame columns (:data:`FORECAST_COLUMNS`): ``asset, cutoff, horizon_days,
target_date, variance`` with ``variance`` the forecast variance of the log return over days
``cutoff+1 .. cutoff+horizon_days`` (daily decimal² summed over the horizon) and
``target_date = cutoff + horizon_days``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

FORECAST_COLUMNS = ["asset", "cutoff", "horizon_days", "target_date", "variance"]


@runtime_checkable
class Forecaster(Protocol):
    alias: str

    def fit(self, panel: pd.DataFrame) -> Self: ...

    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame: ...

    def state(self) -> dict[str, Any]: ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self: ...


def trained_horizons(alias: str, horizons: Sequence[int]) -> tuple[int, ...]:
    """Validate the horizons a direct (one model per horizon) forecaster is built for."""
    if not horizons or any(int(h) < 1 for h in horizons):
        raise ValueError(f"{alias}: horizons must be positive day counts, got {horizons}")
    return tuple(sorted({int(h) for h in horizons}))


def requested_horizons(
    alias: str, horizons: Sequence[int], trained: Sequence[int]
) -> list[int]:
    """The requested horizons, or a clear error naming those the model was not trained for."""
    wanted = [int(h) for h in horizons]
    untrained = sorted(set(wanted) - set(trained))
    if untrained:
        raise ValueError(f"{alias}: horizons {untrained} were not trained (trained: "
                         f"{list(trained)}); refit with them in `horizons`")
    return wanted


def forecast_frame(
    asset: str, cutoffs: pd.DatetimeIndex, horizon: int, variance: np.ndarray
) -> pd.DataFrame:
    """Build one asset × horizon block of the forecast frame."""
    cutoffs = pd.DatetimeIndex(cutoffs)
    return pd.DataFrame(
        {
            "asset": asset,
            "cutoff": cutoffs,
            "horizon_days": int(horizon),
            "target_date": cutoffs + pd.Timedelta(days=int(horizon)),
            "variance": np.asarray(variance, dtype=float),
        }
    )


def forecast_columns(
    assets: np.ndarray, cutoffs: pd.DatetimeIndex, horizons: np.ndarray, variance: np.ndarray
) -> pd.DataFrame:
    """The forecast frame of many asset × horizon blocks given as columns, sorted as
    :func:`concat_forecasts` sorts the blocks of :func:`forecast_frame`."""
    cutoffs = pd.DatetimeIndex(cutoffs)
    horizons = np.asarray(horizons, dtype=np.int64)
    out = pd.DataFrame(
        {
            "asset": pd.Series(assets, dtype=str),
            "cutoff": cutoffs,
            "horizon_days": horizons,
            "target_date": cutoffs + pd.to_timedelta(horizons, unit="D"),
            "variance": np.asarray(variance, dtype=float),
        }
    )
    return out.sort_values(["asset", "horizon_days", "cutoff"], ignore_index=True)


def forecast_table(assets: Any, cutoffs: Any, horizons: Sequence[int],
                   variance: np.ndarray) -> pd.DataFrame:
    """The forecast frame of N rows forecast at H horizons at once: ``variance`` (N, H) holds
    the row's forecast at ``horizons[j]`` in column ``j``. The frame :func:`concat_forecasts`
    gives for the per-asset :func:`forecast_frame` blocks of the same values, built without
    a block (and a comparison of every row's asset) per asset: a pooled model forecasting
    1,000 assets made 2,000 blocks of a frame each."""
    variance = np.asarray(variance, dtype=float).reshape(len(cutoffs), len(horizons))
    n = len(variance)
    if n == 0:
        return empty_forecast()
    return forecast_columns(np.tile(np.asarray(assets, dtype=object), len(horizons)),
                            pd.DatetimeIndex(np.tile(pd.DatetimeIndex(cutoffs).to_numpy(),
                                                     len(horizons))),
                            np.repeat(np.asarray(horizons, dtype=np.int64), n),
                            variance.T.reshape(-1))


def empty_forecast() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "asset": pd.Series(dtype=str),
            "cutoff": pd.Series(dtype="datetime64[ns]"),
            "horizon_days": pd.Series(dtype=int),
            "target_date": pd.Series(dtype="datetime64[ns]"),
            "variance": pd.Series(dtype=float),
        }
    )


def concat_forecasts(blocks: list[pd.DataFrame]) -> pd.DataFrame:
    blocks = [b for b in blocks if len(b)]
    if not blocks:
        return empty_forecast()
    out = pd.concat(blocks, ignore_index=True)
    return out.sort_values(["asset", "horizon_days", "cutoff"], ignore_index=True)


def asset_frame(panel: pd.DataFrame, asset: str) -> pd.DataFrame:
    """One asset's rows of the panel, indexed by date (sorted)."""
    return panel.xs(asset, level="asset").sort_index()


def asset_blocks(panel: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """The panel sorted by (asset, date), and each asset's rows ``[start, end)`` in it.

    ``sorted.iloc[start:end]`` holds the rows :func:`asset_frame` returns, in the same order:
    a forecast over many assets slices arrays instead of taking one cross-section per asset.
    """
    if not panel.index.is_monotonic_increasing:
        panel = panel.sort_index()
    codes = np.asarray(panel.index.codes[0])
    cut = np.flatnonzero(np.diff(codes)) + 1
    if not len(codes):
        return panel, {}
    starts, ends = np.r_[0, cut], np.r_[cut, len(codes)]
    names = panel.index.levels[0].take(codes[starts]).tolist()  # one take, not one per asset
    return panel, {str(n): (int(s), int(e))
                   for n, s, e in zip(names, starts, ends, strict=True)}


def select_cutoffs(
    dates: pd.DatetimeIndex, cutoffs: pd.DatetimeIndex | None
) -> pd.DatetimeIndex:
    """The requested cutoffs that exist in ``dates`` (all of ``dates`` when None)."""
    if cutoffs is None:
        return pd.DatetimeIndex(dates)
    return pd.DatetimeIndex(dates).intersection(pd.DatetimeIndex(cutoffs))

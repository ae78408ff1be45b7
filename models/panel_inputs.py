r"""Model inputs and training targets shared by the forecasters, without scikit-learn (HAR
reads them, and a serve of a HAR champion need not import scikit-learn: ~0.6 s of a fresh
``volmargin serve``); :mod:`models.preprocessing` builds its pipelines on them.

* :data:`INPUTS` — the one table of engineered inputs (name → function of panel rows). Each
  reads the row at ``t`` only, so inputs are as point-in-time as the panel. Variances enter
  in logs (floored at :data:`VAR_FLOOR`); DVOL is NaN where ``dvol_available`` is False — a
  missing value the model sees as missing, with the mask as its own input, never a pretend
  number.
* :class:`InputMatrix` — panel rows → the (N, F + A) matrix of named inputs and an asset
  one-hot, what a fitted tree model's preprocessor does (scikit-learn's ``PanelFeatures``
  step calls it): a served ``gbm_sklearn`` builds its inputs without importing scikit-learn.
* :func:`forward_targets` — :math:`V_{t,h} = \sum_{i=1}^{h} RV_{t+i}` for every row, from the
  ``rv`` column of the panel handed to ``fit`` (features.targets.forward_variance on a
  complete daily calendar: a gap or the end of the panel gives NaN, never a partial sum).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.targets import forward_sums

__all__ = ["INPUTS", "INPUT_COLUMNS", "REQUIRED", "VAR_FLOOR", "InputMatrix", "dvol_mask",
           "flag", "forward_targets", "input_columns",
           "log_variance", "valid_rows"]

VAR_FLOOR = 1e-10  # variances are floored before the log: a zero-range day is not -inf
REQUIRED = ("har_rv_1d", "har_rv_7d", "har_rv_30d", "gk_var", "ret_1d")  # no forecast without


def log_variance(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(values, dtype=float), VAR_FLOOR))


def flag(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A boolean column as a bool array; unknown (``<NA>``) counts as False."""
    return frame[column].eq(True).fillna(False).to_numpy(dtype=bool)


def dvol_mask(frame: pd.DataFrame) -> np.ndarray:
    """True where the row has a real DVOL value."""
    return flag(frame, "dvol_available") & np.isfinite(frame["dvol_var_1d"].to_numpy(dtype=float))


def _log_dvol(frame: pd.DataFrame) -> np.ndarray:
    return np.where(dvol_mask(frame), log_variance(frame["dvol_var_1d"]), np.nan)


INPUTS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "log_har_rv_1d": lambda f: log_variance(f["har_rv_1d"]),
    "log_har_rv_7d": lambda f: log_variance(f["har_rv_7d"]),
    "log_har_rv_30d": lambda f: log_variance(f["har_rv_30d"]),
    "log_gk_var": lambda f: log_variance(f["gk_var"]),
    "ret_1d": lambda f: f["ret_1d"].to_numpy(dtype=float),
    "abs_ret_1d": lambda f: np.abs(f["ret_1d"].to_numpy(dtype=float)),
    "log_dvol_var_1d": _log_dvol,  # NaN where unavailable; the mask below says so
    "dvol_available": lambda f: dvol_mask(f).astype(float),
    "rv_is_hourly": lambda f: flag(f, "rv_is_hourly").astype(float),
    "corr_spx_30d": lambda f: f["corr_spx_30d"].to_numpy(dtype=float),  # NaN when stale
}


# The panel columns each input reads (a served tree model's state lists them, so the serve
# builds only those: features.window.serve_columns; a test keeps this table and INPUTS in step)
INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "log_har_rv_1d": ("har_rv_1d",),
    "log_har_rv_7d": ("har_rv_7d",),
    "log_har_rv_30d": ("har_rv_30d",),
    "log_gk_var": ("gk_var",),
    "ret_1d": ("ret_1d",),
    "abs_ret_1d": ("ret_1d",),
    "log_dvol_var_1d": ("dvol_available", "dvol_var_1d"),
    "dvol_available": ("dvol_available", "dvol_var_1d"),
    "rv_is_hourly": ("rv_is_hourly",),
    "corr_spx_30d": ("corr_spx_30d",),
}


def input_columns(names: Sequence[str]) -> list[str]:
    """The panel columns the inputs ``names`` and :func:`valid_rows` read, sorted."""
    return sorted({*REQUIRED, *(c for n in names for c in INPUT_COLUMNS[n])})


def valid_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose required inputs are all finite (others get no forecast)."""
    return np.isfinite(frame[list(REQUIRED)].to_numpy(dtype=float)).all(axis=1)


def forward_targets(panel: pd.DataFrame, horizons: Sequence[int]) -> np.ndarray:
    """(N, H) forward variance :math:`V_{t,h}` per row of ``panel``; NaN where incomplete.

    :func:`features.targets.forward_variance` of each asset's ``rv`` on its complete daily
    calendar (first to last date), for every asset at once: the calendars left-aligned as the
    rows of one (assets, days) matrix, NaN where a day is missing or past an asset's last
    date, summed along the rows (:func:`features.targets.forward_sums`): the same numbers bit
    for bit, without the per-asset pandas calendars and reindexing (~0.5 s per horizon per
    1,000 assets, paid by every pooled refit).
    """
    out = np.full((len(panel), len(horizons)), np.nan)
    if not len(panel):
        return out
    codes, _ = pd.factorize(panel.index.get_level_values("asset"))
    day = panel.index.get_level_values("date").to_numpy(dtype="datetime64[D]").astype(np.int64)
    first = np.full(codes.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, codes, day)
    col = day - first[codes]  # the row's position on its asset's calendar
    x = np.full((len(first), int(col.max()) + 1), np.nan)
    x[codes, col] = panel["rv"].to_numpy(dtype=float)
    for j, h in enumerate(horizons):
        out[:, j] = forward_sums(x, int(h))[codes, col]
    return out


def panel_matrix(frame: pd.DataFrame, names: Sequence[str], assets: Sequence[str]) -> np.ndarray:
    """(N, F + A) float inputs :data:`INPUTS` ``names`` of ``frame``'s rows, then a one-hot of
    ``assets`` (an asset not among them: all zeros)."""
    columns = [INPUTS[n](frame) for n in names]
    onehot = np.zeros((len(frame), len(assets)))  # (N, A), set by code, not A passes
    codes = pd.Index(assets).get_indexer(frame.index.get_level_values("asset"))
    known = codes >= 0
    onehot[np.flatnonzero(known), codes[known]] = 1.0
    if not columns:
        return onehot
    return np.column_stack([*columns, onehot]).astype(np.float64)  # (N, F + A)


@dataclass(frozen=True)
class InputMatrix:
    """A fitted unscaled preprocessor restored from its state: :func:`panel_matrix` of the
    stored ``names`` and ``assets`` (nothing is learnt, so nothing else is stored)."""

    names: tuple[str, ...]
    assets: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in INPUTS]
        if unknown:
            raise ValueError(f"preprocessor state names input(s) {unknown} this code lacks; "
                             "refit")

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return panel_matrix(frame, self.names, self.assets)

    def state(self) -> dict[str, list[str]]:
        return {"names": list(self.names), "assets": list(self.assets)}

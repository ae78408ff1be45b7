r"""Model inputs and training targets shared by the machine-learning forecasters.

* :data:`INPUTS` — the one table of engineered inputs (name → function of panel rows). Each
  reads the row at ``t`` only, so inputs are as point-in-time as the panel. Variances enter
  in logs (floored at :data:`VAR_FLOOR`); DVOL is NaN where ``dvol_available`` is False — a
  missing value the model sees as missing, with the mask as its own input, never a pretend
  number.
* :func:`make_preprocessor` — a scikit-learn :class:`~sklearn.pipeline.Pipeline`
  ``PanelFeatures → [MaskedStandardScaler]``: trees take the raw inputs (they split on NaN
  natively and are blind to monotone rescaling), networks the standardized ones. Whatever is
  fitted is fitted on the training window only, and the fitted pipeline has a JSON state
  (:func:`preprocessor_state`), so no model here needs a pickle.
* :func:`forward_targets` — :math:`V_{t,h} = \sum_{i=1}^{h} RV_{t+i}` for every row, from the
  ``rv`` column of the panel handed to ``fit`` (features.targets.forward_variance on a
  complete daily calendar: a gap or the end of the panel gives NaN, never a partial sum).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from features.targets import forward_variance

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


def valid_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose required inputs are all finite (others get no forecast)."""
    return np.isfinite(frame[list(REQUIRED)].to_numpy(dtype=float)).all(axis=1)


def forward_targets(panel: pd.DataFrame, horizons: Sequence[int]) -> np.ndarray:
    """(N, H) forward variance :math:`V_{t,h}` per row of ``panel``; NaN where incomplete."""
    out = np.full((len(panel), len(horizons)), np.nan)
    for j, h in enumerate(horizons):
        parts = []
        for _, rows in panel["rv"].groupby(level="asset", sort=False):
            dates = rows.index.get_level_values("date")
            calendar = pd.date_range(dates.min(), dates.max(), freq="D")
            rv = pd.Series(rows.to_numpy(dtype=float), index=dates).reindex(calendar)
            fwd = forward_variance(rv, int(h)).reindex(dates)
            parts.append(pd.Series(fwd.to_numpy(), index=rows.index))
        out[:, j] = pd.concat(parts).reindex(panel.index).to_numpy(dtype=float)
    return out


class PanelFeatures(TransformerMixin, BaseEstimator):
    """Panel rows → (N, F) float inputs :data:`INPUTS` ``names`` + one-hot ``assets``.

    Stateless: the asset vocabulary is a constructor argument (the assets seen in fit), so an
    unknown asset is all zeros rather than an error.
    """

    def __init__(self, names: Sequence[str] = tuple(INPUTS), assets: Sequence[str] = ()) -> None:
        self.names = names
        self.assets = assets

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # nothing is learnt: usable as restored from a state
        return tags

    def fit(self, frame: pd.DataFrame, y: Any = None) -> PanelFeatures:
        unknown = [n for n in self.names if n not in INPUTS]
        if unknown:
            raise ValueError(f"PanelFeatures: unknown input(s) {unknown}; known: {list(INPUTS)}")
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        columns = [INPUTS[n](frame) for n in self.names]
        onehot = np.zeros((len(frame), len(self.assets)))  # (N, A), set by code, not A passes
        codes = pd.Index(self.assets).get_indexer(frame.index.get_level_values("asset"))
        known = codes >= 0
        onehot[np.flatnonzero(known), codes[known]] = 1.0
        if not columns:
            return onehot
        return np.column_stack([*columns, onehot]).astype(np.float64)  # (N, F + A)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array([*self.names, *(f"asset={a}" for a in self.assets)], dtype=object)


class MaskedStandardScaler(TransformerMixin, BaseEstimator):
    """Standardize with statistics of the finite training values; NaN becomes 0 (the mean).

    A column that is missing on some rows (DVOL) is standardized with the rows where it
    exists; the availability flag is an input of its own, so 0 is not a pretend value.
    """

    def fit(self, x: np.ndarray, y: Any = None) -> MaskedStandardScaler:
        finite = np.isfinite(x)
        count = np.maximum(finite.sum(axis=0), 1)
        safe = np.where(finite, x, 0.0)
        mean = safe.sum(axis=0) / count
        dev = np.where(finite, x - mean, 0.0)
        std = np.sqrt((dev**2).sum(axis=0) / count)
        self.mean_ = mean
        self.scale_ = np.where(std > 1e-8, std, 1.0)  # a constant column passes unscaled
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean_) / self.scale_  # (N, F)
        return np.where(np.isnan(z), 0.0, z)


def make_preprocessor(
    assets: Sequence[str], scale: bool, names: Sequence[str] = tuple(INPUTS)
) -> Pipeline:
    """``PanelFeatures`` (+ ``MaskedStandardScaler`` when ``scale``), unfitted."""
    steps: list[tuple[str, Any]] = [("features", PanelFeatures(tuple(names), tuple(assets)))]
    if scale:
        steps.append(("scale", MaskedStandardScaler()))
    return Pipeline(steps)


def preprocessor_state(pipe: Pipeline) -> dict[str, Any]:
    """JSON-able state of a fitted :func:`make_preprocessor` pipeline."""
    features: PanelFeatures = pipe.named_steps["features"]
    state: dict[str, Any] = {"names": list(features.names), "assets": list(features.assets)}
    if "scale" in pipe.named_steps:
        scaler: MaskedStandardScaler = pipe.named_steps["scale"]
        state["scale"] = {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}
    return state


def preprocessor_from_state(state: dict[str, Any]) -> Pipeline:
    unknown = [n for n in state["names"] if n not in INPUTS]
    if unknown:
        raise ValueError(f"preprocessor state names input(s) {unknown} this code lacks; refit")
    pipe = make_preprocessor(state["assets"], "scale" in state, state["names"])
    if "scale" in state:
        scaler: MaskedStandardScaler = pipe.named_steps["scale"]
        scaler.mean_ = np.asarray(state["scale"]["mean"], dtype=float)
        scaler.scale_ = np.asarray(state["scale"]["scale"], dtype=float)
    return pipe

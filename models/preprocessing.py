r"""Preprocessing of the machine-learning forecasters' inputs (:mod:`models.panel_inputs`:
the input table :data:`INPUTS` and :func:`forward_targets`, re-exported here).

* :func:`make_preprocessor` — a scikit-learn :class:`~sklearn.pipeline.Pipeline`
  ``PanelFeatures → [MaskedStandardScaler]``: trees take the raw inputs (they split on NaN
  natively and are blind to monotone rescaling), networks the standardized ones. Whatever is
  fitted is fitted on the training window only, and the fitted pipeline has a JSON state
  (:func:`preprocessor_state`), so no model here needs a pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from models.panel_inputs import (  # re-exported: the models import them from here
    INPUTS,
    REQUIRED,
    VAR_FLOOR,
    dvol_mask,
    flag,
    forward_targets,
    log_variance,
    panel_matrix,
    valid_rows,
)

__all__ = ["INPUTS", "REQUIRED", "VAR_FLOOR", "MaskedStandardScaler", "PanelFeatures",
           "dvol_mask", "flag", "forward_targets", "log_variance", "make_preprocessor",
           "preprocessor_from_state", "preprocessor_state", "valid_rows"]


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
        return panel_matrix(frame, self.names, self.assets)  # (N, F + A)

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

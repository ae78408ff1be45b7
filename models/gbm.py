r"""``gbm_sklearn``: gradient-boosted trees on log variance, pooled over assets, one per horizon.

scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingRegressor` with the **gamma**
loss: its raw score is the log of the forecast (log link), and its deviance is twice QLIKE,

.. math::
    D(y, \hat y) = 2\Big(\frac{y}{\hat y} - \log\frac{y}{\hat y} - 1\Big),
    \qquad \hat V_{t,h} = h \exp\big(F_h(x_t)\big)

so the trees fit log variance while minimising the very loss the models are ranked by, and
:math:`\exp F` estimates the conditional *mean* of the variance (no log-normal correction,
unlike a squared loss on :math:`\log y`). The target is the mean daily variance
:math:`V_{t,h}/h` (:func:`models.preprocessing.forward_targets`, built inside :meth:`fit`).
Inputs are :data:`models.preprocessing.INPUTS` (log HAR terms, log GK, return, its size, log
DVOL with NaN where unavailable plus the mask, the hourly-proxy flag, SPX correlation), and
with ``asset_onehot`` the asset one-hot (off by default: its cost grows with the square of the
asset count; see :class:`configs.forecasting.GbmConfig`); the trees route NaN natively, so
nothing is imputed.

Early stopping uses a purged time split — the last ``val_fraction`` of dates, training pairs
whose target window reaches into it dropped — then the model is refitted on every row with the
iteration count found (seeded, deterministic).

**State without pickle.** A fitted HGB has no JSON export and ``skops`` would put opaque bytes
in the state. The ensemble is a baseline plus a sum of small binary trees whose node arrays
(feature, threshold, missing-go-left, children, leaf value) are plain numbers, so they are
exported to JSON (:func:`export_ensemble`) and every forecast — also right after ``fit`` — is
computed by :class:`TreeEnsemble`, a 20-line numpy evaluator. A test checks it reproduces
``HistGradientBoostingRegressor.predict`` to float precision, so a change in scikit-learn's
internals (``_predictors``, ``_baseline_prediction``) fails a test, never a forecast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

from configs.schema import GbmConfig
from features.schema import target_columns
from models.base import forecast_table, requested_horizons, trained_horizons
from models.panel_inputs import (
    INPUTS,
    InputMatrix,
    forward_targets,
    input_columns,
    valid_rows,
)

if TYPE_CHECKING:  # scikit-learn is imported where a fit needs it: a served model restored
    # from its state predicts with TreeEnsemble and InputMatrix, numpy alone (importing
    # scikit-learn was 0.8 s of a 1.9 s serve of twelve assets)
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

STATE_FORMAT = 2  # 2: the assets seen in fit stored apart from the one-hot
NODE_FIELDS = ("feature_idx", "num_threshold", "missing_go_to_left", "left", "right",
               "is_leaf", "value")


@dataclass
class TreeEnsemble:
    """Raw score = baseline + Σ trees; each tree a dict of equal-length node arrays."""

    baseline: float
    trees: list[dict[str, np.ndarray]]

    def raw_predict(self, x: np.ndarray) -> np.ndarray:
        raw = np.full(len(x), self.baseline)  # (N,)
        rows = np.arange(len(x))
        for tree in self.trees:  # same order and float64 sums as scikit-learn's predictor
            node = np.zeros(len(x), dtype=np.intp)  # (N,) every row starts at the root
            while True:
                inner = ~tree["is_leaf"][node]
                if not inner.any():
                    break
                r, n = rows[inner], node[inner]
                value = x[r, tree["feature_idx"][n]]
                go_left = np.where(np.isnan(value), tree["missing_go_to_left"][n],
                                   value <= tree["num_threshold"][n])
                node[inner] = np.where(go_left, tree["left"][n], tree["right"][n])
            raw += tree["value"][node]
        return raw

    def to_json(self) -> dict[str, Any]:
        def column(tree: dict[str, np.ndarray], field: str) -> list[Any]:
            if field == "num_threshold":  # +inf marks a "missing vs. present" split: null
                return [float(v) if np.isfinite(v) else None for v in tree[field]]
            return tree[field].tolist()

        return {"baseline": self.baseline,
                "trees": [{f: column(t, f) for f in NODE_FIELDS} for t in self.trees]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeEnsemble:
        trees = []
        for t in data["trees"]:
            thresholds = [np.inf if v is None else v for v in t["num_threshold"]]
            trees.append({
                "feature_idx": np.asarray(t["feature_idx"], dtype=np.intp),
                "num_threshold": np.asarray(thresholds, dtype=np.float64),
                "missing_go_to_left": np.asarray(t["missing_go_to_left"], dtype=bool),
                "left": np.asarray(t["left"], dtype=np.intp),
                "right": np.asarray(t["right"], dtype=np.intp),
                "is_leaf": np.asarray(t["is_leaf"], dtype=bool),
                "value": np.asarray(t["value"], dtype=np.float64),
            })
        return cls(float(data["baseline"]), trees)


def export_ensemble(hgb: HistGradientBoostingRegressor) -> TreeEnsemble:
    """The fitted regressor's trees as a :class:`TreeEnsemble` (numeric splits only)."""
    trees = []
    for (predictor,) in hgb._predictors:  # one tree per iteration for a regressor
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ValueError("export_ensemble: categorical splits are not exported")
        trees.append({f: np.asarray(nodes[f]) for f in NODE_FIELDS})
    round_trip = TreeEnsemble.from_json(
        TreeEnsemble(float(np.ravel(hgb._baseline_prediction)[0]), trees).to_json())
    return round_trip


class GbmForecaster:
    """Pooled HistGradientBoosting forecaster; see the module docstring."""

    alias = "gbm_sklearn"

    def __init__(self, config: GbmConfig | None = None, horizons: Sequence[int] = (1, 7)) -> None:
        self.config = config or GbmConfig()
        self.horizons = trained_horizons("gbm_sklearn", horizons)
        self.preprocessor: Any = None
        self.assets: list[str] = []  # forecast: the assets seen in fit
        self.ensembles: dict[int, TreeEnsemble] = {}
        self.n_iter: dict[int, int] = {}
        self.rows_used = 0  # training rows of the last fit, after ``max_train_rows``

    def _regressor(self, max_iter: int, early_stopping: bool) -> HistGradientBoostingRegressor:
        from sklearn.ensemble import HistGradientBoostingRegressor

        c = self.config
        return HistGradientBoostingRegressor(
            loss="gamma", learning_rate=c.learning_rate, max_iter=max_iter,
            max_leaf_nodes=c.max_leaf_nodes, min_samples_leaf=c.min_samples_leaf,
            l2_regularization=c.l2_regularization, early_stopping=early_stopping,
            n_iter_no_change=c.n_iter_no_change, random_state=c.seed,
        )

    def fit(self, panel: pd.DataFrame) -> Self:
        from threadpoolctl import threadpool_limits

        from models.preprocessing import make_preprocessor

        leaked = target_columns(panel)
        if leaked:
            raise ValueError(f"gbm_sklearn.fit: panel holds target column(s) {leaked}; pass "
                             "features.schema.feature_view(panel)")
        panel = panel.sort_index()
        valid = valid_rows(panel)
        y = forward_targets(panel, self.horizons) / np.array(self.horizons)  # (N, H) per day
        # a peg's rows (config: min_train_vol_1d) would throw the pooled trees off
        calm = panel["har_rv_30d"].to_numpy(dtype=float) < self.config.min_train_vol_1d ** 2
        has_y = valid[:, None] & np.isfinite(y) & (y > 0) & ~calm[:, None]  # (N, H)
        assets = sorted(pd.unique(panel.index.get_level_values("asset")[has_y.any(axis=1)]))
        if not assets:
            raise ValueError("gbm_sklearn.fit: no row with inputs and a target; panel too short")
        has_y = self._subsample(has_y)  # every asset above still gets forecasts
        dates = panel.index.get_level_values("date").to_numpy()
        splits = [self._time_split(dates, has_y[:, j], h) for j, h in enumerate(self.horizons)]
        self.assets = assets
        onehot = assets if self.config.asset_onehot else []
        x = make_preprocessor(onehot, scale=False).fit_transform(panel)  # (N, F) NaN kept
        # An input seen on fewer than min_samples_leaf training rows (DVOL in the first fits:
        # it starts 2021-03-24) is left out of this fit: no leaf could use it, and HGB cannot
        # bin an empty column.
        in_train = np.logical_and.reduce([train for train, _ in splits])
        counts = np.isfinite(x[in_train]).sum(axis=0)[: len(INPUTS)]
        names = [n for n, c in zip(INPUTS, counts, strict=True)
                 if c >= self.config.min_samples_leaf]
        self.preprocessor = make_preprocessor(onehot, scale=False, names=names).fit(panel)
        x = self.preprocessor.transform(panel)  # (N, F)
        self.ensembles, self.n_iter = {}, {}
        for j, h in enumerate(self.horizons):
            train, val = splits[j]
            # One OpenMP thread: at ~20k rows the histograms are too small to split, and on a
            # 2-core box with a busy second core the thread barriers cost 40× (measured).
            with threadpool_limits(limits=1, user_api="openmp"):
                probe = self._regressor(self.config.max_iter, early_stopping=True)
                probe.fit(x[train], y[train, j], X_val=x[val], y_val=y[val, j])
                # the iteration the validation part scores best (validation_score_[k]: after
                # k iterations, higher is better); n_iter_ runs n_iter_no_change past it
                self.n_iter[h] = max(1, int(np.argmax(probe.validation_score_)))
                final = self._regressor(self.n_iter[h], early_stopping=False)
                final.fit(x[has_y[:, j]], y[has_y[:, j], j])
            self.ensembles[h] = export_ensemble(final)
        return self

    def _subsample(self, has_y: np.ndarray) -> np.ndarray:
        """At most ``max_train_rows`` rows with a target, drawn uniformly (seeded) before the
        split: a fit's cost grows with its rows, and past a few hundred thousand rows more of
        them barely move 15-leaf trees (configs/forecasting.py, GbmConfig)."""
        cap = self.config.max_train_rows
        usable = np.flatnonzero(has_y.any(axis=1))
        self.rows_used = min(len(usable), cap) if cap else len(usable)
        if not cap or len(usable) <= cap:
            return has_y
        chosen = np.zeros(len(has_y), bool)
        chosen[np.random.default_rng(self.config.seed).choice(usable, cap, replace=False)] = True
        return has_y & chosen[:, None]

    def _time_split(
        self, dates: np.ndarray, rows: np.ndarray, horizon: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Last ``val_fraction`` of target dates for validation; purge windows reaching in."""
        target_dates = np.unique(dates[rows])
        if len(target_dates) < 10:
            raise ValueError(f"gbm_sklearn.fit: {len(target_dates)} dates with inputs and "
                             f"{horizon}-day targets; need a longer panel")
        val_start = target_dates[-max(1, int(np.ceil(self.config.val_fraction
                                                     * len(target_dates))))]
        ends = dates + np.timedelta64(horizon, "D")
        return rows & (ends < val_start), rows & (dates >= val_start)

    def forecast(
        self,
        panel: pd.DataFrame,
        horizons: Sequence[int],
        cutoffs: pd.DatetimeIndex | None = None,
    ) -> pd.DataFrame:
        if self.preprocessor is None:
            raise RuntimeError("gbm_sklearn: call fit(panel) or from_state(state) first")
        horizons = requested_horizons("gbm_sklearn", horizons, self.horizons)
        keep = panel.index.get_level_values("asset").isin(self.assets)
        if cutoffs is not None:
            keep &= panel.index.get_level_values("date").isin(pd.DatetimeIndex(cutoffs))
        rows = panel[keep].sort_index()
        rows = rows[valid_rows(rows)]
        x = self.preprocessor.transform(rows)  # (N, F)
        variance = np.column_stack([h * np.exp(self.ensembles[h].raw_predict(x))
                                    for h in horizons])  # (N, H)
        return forecast_table(rows.index.get_level_values("asset"),
                              rows.index.get_level_values("date"), horizons, variance)

    def state(self) -> dict[str, Any]:
        if self.preprocessor is None:
            raise RuntimeError("gbm_sklearn: nothing to save before fit")
        prep = (self.preprocessor.state() if isinstance(self.preprocessor, InputMatrix)
                else _pipeline_state(self.preprocessor))
        return {
            "alias": self.alias,
            "kind": "gbm",
            "format": STATE_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "horizons": list(self.horizons),
            "assets": list(self.assets),
            "preprocessor": prep,
            "columns": input_columns(prep["names"]),  # what a serve builds for it
            "n_iter": {str(h): n for h, n in self.n_iter.items()},
            "ensembles": {str(h): e.to_json() for h, e in self.ensembles.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        if state.get("alias") != cls.alias or state.get("format") != STATE_FORMAT:
            raise ValueError(f"gbm_sklearn.from_state: expected alias {cls.alias!r} format "
                             f"{STATE_FORMAT}, got {state.get('alias')!r} {state.get('format')!r}")
        model = cls(GbmConfig(**state["config"]), state["horizons"])
        stored = state["preprocessor"]
        if "scale" in stored:  # trees take raw inputs: a scaled state is not this model's
            raise ValueError("gbm_sklearn.from_state: a scaled preprocessor; refit")
        model.preprocessor = InputMatrix(tuple(stored["names"]), tuple(stored["assets"]))
        model.assets = list(state["assets"])
        model.n_iter = {int(h): int(n) for h, n in state["n_iter"].items()}
        model.ensembles = {int(h): TreeEnsemble.from_json(e)
                           for h, e in state["ensembles"].items()}
        return model


def _pipeline_state(pipe: Pipeline) -> dict[str, Any]:
    from models.preprocessing import preprocessor_state

    return preprocessor_state(pipe)

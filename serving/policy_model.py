"""MLflow models-from-code definition of ``volmargin-policy``.

Logged with ``mlflow.pyfunc.log_model(python_model="serving/policy_model.py",
artifacts={"bundle": "policy_bundle.json"})``: MLflow stores this source file, not a pickled
object, so the model loads with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. The bundle is
plain JSON (forecaster parameters or weights as lists, policy config, FHS history; a
tail-driven policy's tail model state and stored tail forecasts, :mod:`serving.tail_source`).

``predict(model_input, params={"as_of": "YYYY-MM-DD", "previous": "<json records>"})`` takes
the feature panel flattened to columns (``asset``, ``date``, features...) and the previously
published rows (the guardrails' state), and returns one row of parameters per asset.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class VolmarginPolicy(PythonModel):
    def load_context(self, context: Any) -> None:
        from models.registry import forecaster_from_state
        from serving.tail_source import TailSource

        with open(context.artifacts["bundle"]) as fh:
            self.bundle: dict[str, Any] = json.load(fh)
        self.forecaster = forecaster_from_state(self.bundle["forecaster"])
        self.tail = TailSource.of(self.bundle)  # a tail-driven policy's tail model, or None

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from serving.apply import policy_frame

        features = model_input.copy()
        features["date"] = pd.to_datetime(features["date"])
        features = features.set_index(["asset", "date"]).sort_index()
        params = params or {}
        last = features.index.get_level_values("date").max()
        as_of = dt.date.fromisoformat(str(params.get("as_of") or last.date()))
        previous = pd.DataFrame(json.loads(params["previous"])) if params.get("previous") else None
        return policy_frame(self.forecaster, self.bundle, features, as_of, previous, self.tail)


mlflow.models.set_model(VolmarginPolicy())

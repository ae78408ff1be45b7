"""The policy in the MLflow model registry: log as models-from-code, register, move aliases.

A new version gets ``@challenger``; :func:`promote` moves ``@champion`` to it when the gate
passes. Every alias move is written as tags on the model version (who/when/why), so the
history survives later moves.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec

import serving.policy_model

CHALLENGER = "challenger"
CHAMPION = "champion"
_REQUIREMENTS = ("mlflow", "pandas", "numpy", "scipy", "arch", "torch", "lightning", "pydantic")


class ChampionMissingError(LookupError):
    """No ``@champion`` alias on the registered policy: nothing may be served."""


def _requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in _REQUIREMENTS]


def log_policy_model(bundle: dict[str, Any]) -> mlflow.models.model.ModelInfo:
    """Log the policy under the active run as a models-from-code pyfunc (no pickle)."""
    signature = ModelSignature(inputs=None, params=ParamSchema([ParamSpec("as_of", "string", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy_bundle.json"
        path.write_text(json.dumps(bundle))
        return mlflow.pyfunc.log_model(
            name="policy",
            python_model=str(Path(serving.policy_model.__file__)),
            artifacts={"bundle": str(path)},
            signature=signature,
            pip_requirements=_requirements(),
        )


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name``; returns the version string."""
    mv = mlflow.register_model(model_uri, name, tags=tags)
    return str(mv.version)


def set_alias(name: str, alias: str, version: str, reason: str) -> None:
    client = MlflowClient()
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, f"alias.{alias}.set_at", stamp)
    client.set_model_version_tag(name, version, f"alias.{alias}.reason", reason)


def champion_version(name: str) -> str | None:
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def promote(name: str, version: str, gate_passed: bool, reason: str) -> bool:
    """Move ``@champion`` to ``version`` if the gate passed; the decision is tagged either way."""
    MlflowClient().set_model_version_tag(name, version, "gate.passed", str(gate_passed).lower())
    MlflowClient().set_model_version_tag(name, version, "gate.reason", reason)
    if gate_passed:
        set_alias(name, CHAMPION, version, reason)
    return gate_passed


def champion_uri(name: str) -> tuple[str, Any]:
    """``models:/name@champion`` and its model version, or a clear error when there is none."""
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        raise ChampionMissingError(
            f"registered model {name!r} has no @{CHAMPION} alias in {mlflow.get_tracking_uri()}; "
            "run `volmargin run` (or `volmargin retrain`) first"
        ) from None
    return f"models:/{name}@{CHAMPION}", mv

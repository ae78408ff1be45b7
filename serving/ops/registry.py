"""The policy in the MLflow model registry: log as models-from-code, register, move aliases.

A new version gets ``@challenger``; :func:`promote` moves ``@champion`` to it when the gate
passes. Every alias move is appended to the registered model's tags as
``alias_history.<alias>.<UTC timestamp>`` = ``{"version": ..., "reason": ...}``: MLflow keeps
only the current alias, these tags keep the whole history, so "which version was champion on
date D" (:func:`version_at`) and a rollback (:func:`rollback`) are one call each.
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
    signature = ModelSignature(inputs=None, params=ParamSchema([
        ParamSpec("as_of", "string", ""), ParamSpec("previous", "string", "")]))
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


HISTORY_PREFIX = "alias_history."


def set_alias(name: str, alias: str, version: str, reason: str,
              at: dt.datetime | None = None) -> None:
    """Point ``alias`` at ``version`` and append the move to the alias history."""
    client = MlflowClient()
    # "Z", not "+00:00": MLflow tag keys may not contain "+"
    stamp = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    client.set_registered_model_alias(name, alias, version)
    client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{alias}.{stamp}",
                                    json.dumps({"version": str(version), "reason": reason}))
    client.set_model_version_tag(name, version, f"alias.{alias}.set_at", stamp)


def alias_history(name: str, alias: str = "champion") -> list[dict[str, str]]:
    """Every move of ``alias``, oldest first: ``{"at", "version", "reason"}``."""
    tags = MlflowClient().get_registered_model(name).tags
    prefix = f"{HISTORY_PREFIX}{alias}."
    moves = [{"at": key[len(prefix):], **json.loads(value)}
             for key, value in tags.items() if key.startswith(prefix)]
    return sorted(moves, key=lambda m: m["at"])


def version_at(name: str, when: dt.datetime, alias: str = "champion") -> str | None:
    """The version ``alias`` pointed to at ``when`` (UTC), or None before the first move."""
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    current = None
    for move in alias_history(name, alias):
        if dt.datetime.fromisoformat(move["at"]) <= when:
            current = move["version"]
    return current


def rollback(name: str, version: str, reason: str) -> None:
    """Point ``@champion`` back at an existing ``version`` (recorded like any move)."""
    MlflowClient().get_model_version(name, version)  # raises if it does not exist
    set_alias(name, CHAMPION, version, f"rollback: {reason}")


def champion_version(name: str) -> str | None:
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def version_tag(name: str, version: str, key: str) -> str | None:
    return MlflowClient().get_model_version(name, version).tags.get(key)


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

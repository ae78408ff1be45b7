"""The batch serving job: ``models:/volmargin-policy@champion`` + point-in-time features →
one published partition ``outputs/forecasts/asof=D/``.

Features are rebuilt from data truncated at the as-of date, so serving a past date sees exactly
what was known then (the model's parameters, however, are the champion's: serve a past date
with the version that was champion then, ``model_version=``, for a faithful replay).

One run at a time (``outputs/.serve.lock``, :mod:`serving.ops.lock`). The previously published
parameters (newest revision of the latest earlier day) are the policy's guardrail state. The
partition carries update records (:mod:`serving.records`) against the values in force: the
previous day's, or the superseded revision's when ``force`` writes a revision.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient

from configs.schema import Config
from features.loaders import load_market
from features.schema import feature_view
from features.store import load_or_build
from serving.layout import current_partition, current_partitions, sweep_staging
from serving.ops.lock import exclusive, lock_path
from serving.ops.registry import champion_uri
from serving.ops.tracking import log_context, setup
from serving.ops.version import code_version
from serving.publish import UPDATES_NAME, Published, publish_partition, read_partition
from serving.records import update_records

PREVIOUS = ("mmf", "imf", "lt", "ltv", "lb")
Progress = Callable[[str, int, int], None]


class ModelVersionMissingError(LookupError):
    """The requested version of the policy model is not registered: nothing may be served."""


@dataclass(frozen=True)
class ServeResult:
    """What one serve run published (or found already published).

    ``updates`` are the records in the partition; ``swept`` names the staging leftovers of
    crashed runs that were removed before publishing.
    """

    published: Published
    parameters: pd.DataFrame
    model_version: str
    updates: list[dict[str, Any]] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)

    @property
    def as_of(self) -> dt.date:
        return dt.date.fromisoformat(self.published.manifest["as_of"])

    @property
    def stale_assets(self) -> list[str]:
        return sorted(self.parameters.loc[self.parameters["flag_stale"], "asset"])

    @property
    def fallback_assets(self) -> list[str]:
        return sorted(self.parameters.loc[self.parameters["flag_fallback"], "asset"])


def _noop(step: str, done: int, total: int) -> None:
    return None


def forecasts_root(cfg: Config) -> Path:
    return Path(cfg.paths.outputs_dir) / "forecasts"


def resolve_model(name: str, version: str | None) -> tuple[str, Any]:
    """``(uri, model version)`` of ``version``, or of ``@champion`` when None.

    Raises
    ------
    serving.ops.registry.ChampionMissingError
        No version is aliased ``@champion``.
    ModelVersionMissingError
        ``version`` is not a registered version of ``name``.
    """
    if version is None:
        _, mv = champion_uri(name)
    else:
        try:
            mv = MlflowClient().get_model_version(name, str(version))
        except mlflow.exceptions.MlflowException:
            raise ModelVersionMissingError(
                f"registered model {name!r} has no version {version} in "
                f"{mlflow.get_tracking_uri()}; see `volmargin registry history` for the "
                "versions that were champion") from None
    # The concrete version, not the alias: serving v3 by number or as @champion is the same
    # result, and the manifest must say which version it was even after the alias moves.
    return f"models:/{name}/{mv.version}", mv


def previous_parameters(root: Path, as_of: dt.date) -> pd.DataFrame | None:
    """The newest revision of the latest partition strictly before ``as_of``, or None."""
    earlier = [path for day, (_, path) in current_partitions(root).items() if day < as_of]
    return read_partition(earlier[-1]) if earlier else None


def with_previous(params: pd.DataFrame, prev: pd.DataFrame | None) -> pd.DataFrame:
    out = params.copy()
    prev_by_asset = prev.set_index("asset") if prev is not None else None
    for col in PREVIOUS:
        if prev_by_asset is not None:
            out[f"prev_{col}"] = out["asset"].map(prev_by_asset[col])
        else:
            out[f"prev_{col}"] = math.nan
    out["change_mmf"] = out["mmf"] - out["prev_mmf"]
    return out


def serve(
    cfg: Config, as_of: dt.date | None = None, *, model_version: str | None = None,
    force: bool = False, progress: Progress = _noop,
) -> ServeResult:
    """Publish the policy's parameters as of ``as_of`` (default: last data date).

    Parameters
    ----------
    cfg : Config
        Resolved configuration (paths, data, features, registry).
    as_of : datetime.date, optional
        UTC day to publish; ``cfg.serving.as_of``, else the last date in the data.
    model_version : str, optional
        Registered version to serve instead of ``@champion`` (replays, rollbacks).
    force : bool
        Publish a new revision when the day is already published with other content.
    progress : callable
        ``progress(step, done, total)``, called as each step starts.

    Raises
    ------
    serving.ops.lock.LockHeldError
        Another serve run holds ``outputs/.serve.lock``.
    serving.ops.registry.ChampionMissingError, ModelVersionMissingError
        Nothing to serve; raised before any data is read.
    serving.publish.PartitionExistsError
        The day is published with other content and ``force`` is False.
    """
    root = forecasts_root(cfg)
    with exclusive(lock_path(cfg.paths.outputs_dir, "serve"), "serve"):
        swept = sweep_staging(root)  # under the lock, any staging entry is a dead run's
        setup(cfg)
        progress("resolve model", 0, 1)
        uri, mv = resolve_model(cfg.registry.model_name, model_version)
        as_of = as_of or cfg.serving.as_of
        progress("load data", 0, 1)
        market = load_market(cfg.paths.data_dir, cfg.data.assets, as_of)
        if as_of is None:
            as_of = max(frame.index.max() for frame in market.daily.values()).date()
        progress("features", 0, 1)
        panel, fingerprint, _ = load_or_build(
            market, cfg.features, Path(cfg.paths.outputs_dir) / "features", as_of)
        progress("load model", 0, 1)
        model = mlflow.pyfunc.load_model(uri)
        prev = previous_parameters(root, as_of)
        # json.dumps writes floats with repr (exact round trip); DataFrame.to_json keeps 10
        # decimals, so a value held by the deadband came back changed in the 11th digit.
        prev_json = json.dumps(prev.to_dict(orient="records"), default=str) if prev is not None \
            else ""
        progress("apply policy", 0, 1)
        flat = feature_view(panel).reset_index()
        params = model.predict(flat, params={"as_of": as_of.isoformat(), "previous": prev_json})
        params = _with_lineage(with_previous(params, prev), cfg, mv, fingerprint)
        current = current_partition(root, as_of)
        in_force = read_partition(current[1]) if current is not None else prev
        records = update_records(params, in_force, revision=current[0] + 1 if current else 1)
        progress("publish", 0, 1)
        with mlflow.start_run(run_name=f"serve-{as_of}"):
            log_context(cfg, "serve", {"as_of": as_of.isoformat(),
                                       "model_version": str(mv.version)})
            published = publish_partition(
                params, root, as_of,
                {"model_uri": uri, "model_name": cfg.registry.model_name,
                 "model_version": str(mv.version), "run_id": str(mv.run_id),
                 "forecaster": str(mv.tags.get("forecaster", "unknown")),
                 "policy_version": str(params["policy_version"].iloc[0]),
                 "feature_fingerprint": fingerprint, "confidence": cfg.policy.confidence,
                 "policy_measure": cfg.policy.measure},
                updates=records, code_version=code_version(), force=force,
            )
            if not published.created:
                records = _stored_records(published.path)
            mlflow.log_metrics({"assets": len(params), "created": int(published.created),
                                "revision": published.revision, "updates": len(records),
                                "fallbacks": int(params["flag_fallback"].sum()),
                                "stale": int(params["flag_stale"].sum())})
            mlflow.log_table(params.astype({"as_of": str}), "parameters.json")
    return ServeResult(published, params, str(mv.version), records, swept)


def _with_lineage(params: pd.DataFrame, cfg: Config, mv: Any, fingerprint: str) -> pd.DataFrame:
    params["model_name"] = str(mv.tags.get("forecaster", "unknown"))
    params["model_version"] = str(mv.version)
    params["run_id"] = str(mv.run_id)
    params["policy_version"] = f"{cfg.registry.model_name}/{mv.version}"
    params["feature_fingerprint"] = fingerprint
    return params


def _stored_records(path: Path) -> list[dict[str, Any]]:
    """The update records of an already published partition (none before updates.json)."""
    file = path / UPDATES_NAME
    return json.loads(file.read_text())["records"] if file.is_file() else []

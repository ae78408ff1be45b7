"""The batch serving job: ``models:/volmargin-policy@champion`` + point-in-time features →
one published partition ``outputs/forecasts/asof=D/``.

Features are rebuilt from data truncated at the as-of date, so serving a past date sees exactly
what was known then (the model's parameters, however, are the champion's: serve a past date
with the version that was champion then for a faithful replay).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from features.loaders import load_market
from features.schema import feature_view
from features.store import load_or_build
from pipelines.config import Config
from pipelines.registry import champion_uri
from pipelines.tracking import log_context, setup
from serving.publish import Published, publish_partition, read_partition

PREVIOUS = ("mmf", "imf", "lt", "ltv", "lb")


@dataclass(frozen=True)
class ServeResult:
    published: Published
    parameters: pd.DataFrame
    model_version: str


def forecasts_root(cfg: Config) -> Path:
    return Path(cfg.paths.outputs_dir) / "forecasts"


def previous_parameters(root: Path, as_of: dt.date) -> pd.DataFrame | None:
    """The latest complete partition strictly before ``as_of``, or None."""
    done = sorted(
        p for p in root.glob("asof=*")
        if (p / "_SUCCESS").is_file() and dt.date.fromisoformat(p.name[5:]) < as_of
    )
    return read_partition(done[-1]) if done else None


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


def serve(cfg: Config, as_of: dt.date | None = None) -> ServeResult:
    """Publish the champion policy's parameters as of ``as_of`` (default: last data date)."""
    setup(cfg)
    as_of = as_of or cfg.serving.as_of
    market = load_market(cfg.paths.data_dir, cfg.data.assets, as_of)
    if as_of is None:
        as_of = max(frame.index.max() for frame in market.daily.values()).date()
    panel, fingerprint, _ = load_or_build(
        market, cfg.features, Path(cfg.paths.outputs_dir) / "features", as_of)
    uri, mv = champion_uri(cfg.registry.model_name)
    model = mlflow.pyfunc.load_model(uri)
    flat = feature_view(panel).reset_index()
    prev = previous_parameters(forecasts_root(cfg), as_of)
    prev_json = prev.to_json(orient="records", date_format="iso") if prev is not None else ""
    params = model.predict(flat, params={"as_of": as_of.isoformat(), "previous": prev_json})
    params = with_previous(params, prev)
    params["model_name"] = str(mv.tags.get("forecaster", "unknown"))
    params["model_version"] = str(mv.version)
    params["run_id"] = str(mv.run_id)
    params["policy_version"] = f"{cfg.registry.model_name}/{mv.version}"
    params["feature_fingerprint"] = fingerprint
    with mlflow.start_run(run_name=f"serve-{as_of}"):
        log_context(cfg, "serve", {"as_of": as_of.isoformat(), "model_version": str(mv.version)})
        published = publish_partition(
            params, forecasts_root(cfg), as_of,
            {"model_uri": uri, "model_version": str(mv.version), "run_id": str(mv.run_id),
             "feature_fingerprint": fingerprint, "confidence": cfg.policy.confidence,
             "policy_measure": cfg.policy.measure},
        )
        mlflow.log_metrics({"assets": len(params),
                            "fallbacks": int(params["flag_fallback"].sum())})
        mlflow.log_table(params.astype({"as_of": str}), "parameters.json")
    return ServeResult(published, params, str(mv.version))

"""MLflow wiring: one SQLite backend and one artifact root per project, explicit everywhere.

The plain file store is deprecated in MLflow 3, so runs, metrics and the model registry live in
``sqlite:///<mlruns>/mlflow.db`` and artifacts under ``<mlruns>/artifacts``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import mlflow

from configs.schema import Config

# MLflow ≥ 3 opens an experiment on the GenAI "Overview" (traces, tokens) unless the experiment
# says what it is: this tag and value (read off the installed UI bundle) open it on the
# training runs table, where the backtest and per-forecaster runs live.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri(mlruns_dir: Path) -> str:
    """``sqlite:///<abs path>/mlflow.db``. Absolute on purpose: MLflow caches one store per
    URI string, so a relative URI would keep pointing at the first working directory's DB."""
    return f"sqlite:///{Path(mlruns_dir).resolve().as_posix()}/mlflow.db"


def artifact_root(mlruns_dir: Path) -> Path:
    return Path(mlruns_dir) / "artifacts"


def setup(cfg: Config) -> str:
    """Point MLflow at the project's store and make sure the experiment exists; returns its id."""
    mlruns = Path(cfg.paths.mlruns_dir)
    artifact_root(mlruns).mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(mlruns)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.registry.experiment)
    if exp is not None:
        exp_id = exp.experiment_id
    else:
        exp_id = mlflow.create_experiment(
            cfg.registry.experiment, artifact_location=artifact_root(mlruns).resolve().as_uri()
        )
    if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_context(cfg: Config, step: str, extra_tags: dict[str, Any] | None = None) -> None:
    """Tags and config every step run carries: step name, git commit, resolved config."""
    mlflow.set_tags({"volmargin.step": step, "mlflow.source.git.commit": git_commit(),
                     **(extra_tags or {})})
    mlflow.log_dict(cfg.resolved(), "config/resolved.json")

"""MLflow wiring: one SQLite backend and one artifact root per project, explicit everywhere.

The plain file store is deprecated in MLflow 3, so runs, metrics and the model registry live in
``sqlite:///<mlruns>/mlflow.db`` and artifacts under ``<mlruns>/artifacts``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import sqlite3
from pathlib import Path
from typing import Any

import mlflow

# The SQLite store every job opens. MLflow imports it (SQLAlchemy, alembic: ~1 s) on the first
# call that needs a store; imported here it loads with the process instead of inside the first
# timed step of a job, and a long-running process pays it once.
import mlflow.store.model_registry.sqlalchemy_store
import mlflow.store.tracking.sqlalchemy_store

from configs.schema import Config
from serving.ops.version import code_version

# MLflow ≥ 3 opens an experiment on the GenAI "Overview" (traces, tokens) unless the experiment
# says what it is: this tag and value (read off the installed UI bundle) open it on the
# training runs table, where the backtest and per-forecaster runs live.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def metric_key(name: str) -> str:
    """``name`` as an MLflow metric key: every character MLflow refuses (it admits letters,
    digits, ``_ - . /`` and spaces) becomes ``_``, and a key MLflow would read as another path
    (``a//b``, ``./x``) loses its slashes. Asset symbols come from file names and policy
    names carry ``@ = ,``: a key built from them raw made MLflow refuse the whole batch, and
    the step with it, for one asset named ``USD₮0``. A cleaned key ends with ``-`` and 8 hex
    digits of the name's sha256, so that two names cleaned alike (``USD₮0``, ``USD_0``) keep
    two keys; a key MLflow admits is kept as it is."""
    key = re.sub(r"[^\w\-. /]", "_", name)
    if key.replace("/", "") in ("", ".", "..") or key != key.strip("/") \
            or "//" in key or "/./" in f"/{key}/" or "/../" in f"/{key}/":
        key = key.replace("/", "_")
    if key in ("", ".", ".."):
        key = "_" * max(len(key), 1)
    if key != name:  # cleaned: a digest of the name keeps two names apart (USD₮0, USD_0)
        key += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return key


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
        relocate(mlruns, exp.artifact_location)
    else:
        exp_id = mlflow.create_experiment(
            cfg.registry.experiment, artifact_location=artifact_root(mlruns).resolve().as_uri()
        )
    if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=exp_id)
    alive = fail_dead_runs(exp_id)
    from serving.ops.registry import tag_orphan_versions

    tag_orphan_versions(cfg.registry.model_name, alive)
    return exp_id


# (table, column) of every absolute artifact location the SQLite store records
_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
              ("logged_models", "artifact_location"), ("model_versions", "storage_location"))


def relocate(mlruns_dir: Path, recorded: str) -> int:
    """Point the store's absolute artifact locations at this project's artifact root.

    MLflow records ``file:///<abs>/mlruns/artifacts/...``; a project moved or copied elsewhere
    would read (or write) the old directory, or fail once it is gone. When the experiment's
    location is another ``.../artifacts`` root, that prefix is rewritten to the current root in
    every table that records one (SQLite, one transaction). Returns the rows rewritten.
    """
    new = artifact_root(mlruns_dir).resolve().as_uri()
    old = recorded.rstrip("/")
    if old == new or not old.startswith("file://") or not old.endswith("/artifacts"):
        return 0
    rows = 0
    with contextlib.closing(sqlite3.connect(Path(mlruns_dir).resolve() / "mlflow.db",
                                            timeout=30)) as con, con:
        for table, col in _LOCATIONS:
            cur = con.execute(
                f"UPDATE {table} SET {col} = ? || substr({col}, ?) "  # names: _LOCATIONS only
                f"WHERE {col} = ? OR substr({col}, 1, ?) = ?",
                (new, len(old) + 1, old, len(old) + 1, old + "/"))
            rows += cur.rowcount
    return rows


PID_TAG, HOST_TAG, ENDED_TAG = "volmargin.pid", "volmargin.host", "volmargin.ended"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def fail_dead_runs(exp_id: str) -> set[str]:
    """Mark FAILED the runs left RUNNING by a process of this host that no longer exists
    (``kill -9``, power loss); returns the ids of the runs still RUNNING (alive or unknown).

    A run is judged by the pid and host :func:`log_context` tags it with; a run without them
    is left alone (its process cannot be checked).
    """
    client = mlflow.MlflowClient()
    host = socket.gethostname()
    alive: set[str] = set()
    for run in client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=5000):
        pid, where = run.data.tags.get(PID_TAG), run.data.tags.get(HOST_TAG)
        if pid is None or where != host or _alive(int(pid)):
            alive.add(run.info.run_id)
            continue
        client.set_tag(run.info.run_id, ENDED_TAG,
                       f"process {pid} on {host} ended without closing the run (killed?); "
                       "marked FAILED by the next start")
        client.set_terminated(run.info.run_id, "FAILED")
    return alive


@functools.lru_cache(maxsize=1)
def code_identity() -> tuple[str, str]:
    """``(git commit, code version)`` of the code this process runs, asked once per process
    of the package's own checkout (:func:`serving.ops.version.code_version`), not of the
    working directory: a job started elsewhere, or a checkout that moves on while a long job
    runs, must not label its runs with other code. ``unknown`` outside a checkout."""
    version = code_version()
    commit = version[len("git:"):].removesuffix("-dirty") if version.startswith("git:") \
        else "unknown"
    return commit, version


def git_commit() -> str:
    return code_identity()[0]


def log_context(cfg: Config, step: str, extra_tags: dict[str, Any] | None = None) -> None:
    """Tags and config every step run carries: step name, git commit and code version (with
    ``-dirty`` for an edited checkout), resolved config."""
    commit, version = code_identity()
    mlflow.set_tags({"volmargin.step": step, "mlflow.source.git.commit": commit,
                     "volmargin.code_version": version,
                     PID_TAG: os.getpid(), HOST_TAG: socket.gethostname(),
                     **(extra_tags or {})})
    mlflow.log_dict(cfg.resolved(), "config/resolved.json")

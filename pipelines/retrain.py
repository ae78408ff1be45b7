"""``volmargin retrain``: ingest → features → backtest → select → policy backtest → register
@challenger → gate → promote @champion, at most once per as-of and input state.

Point in time. Every step reads rows dated up to the as-of only (:mod:`serving.market`), so the
registered version is fitted and selected on what was known then; the marker records its
``fit_cutoff`` (never after D).

Idempotence. A completed retrain writes ``outputs/retrain/asof=D.json`` (the *marker*) with the
registered version, the gate decision and two fingerprints: the raw data directory's content
and the resolved config (paths and serving excluded: they do not change what is trained).
Rerunning the same as-of with both unchanged is a no-op that says so; new data (an ingest that
appended rows) or a new config retrains, and the marker keeps the earlier attempts in
``history``. A failed run writes no marker, so the next run retries.

Ingestion runs first unless ``--skip-ingest`` or ``VOLMARGIN_OFFLINE=1`` (machines without
network, CI). Only sources that can run are asked (FRED needs ``FRED_API_KEY``). A provider
outage or a refused row does not stop the retrain: training proceeds on the stored data,
the problems are returned (and logged by the CLI), and the data fingerprint records what was
used. An exception (data directory not writable, lock timeout) fails the step.

Every step failure is raised as :class:`RetrainError` naming the step ("retrain failed at
step backtest garch11_t: ..."); the CLI turns it into a non-zero exit.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from configs.schema import Config, IngestConfig
from pipelines.ingest import Endpoints, IngestReport, IngestSettings, ingest
from serving.ops.lock import training_lock
from serving.ops.version import code_version

logger = logging.getLogger(__name__)

OFFLINE_ENV = "VOLMARGIN_OFFLINE"
# Base URL overrides per provider, for a proxy, a mirror or a local fake server in tests.
ENDPOINT_ENV = {"binance": "VOLMARGIN_INGEST_BINANCE_URL",
                "deribit": "VOLMARGIN_INGEST_DERIBIT_URL",
                "fred": "VOLMARGIN_INGEST_FRED_URL"}
ALLOW_HTTP_LOOPBACK_ENV = "VOLMARGIN_INGEST_ALLOW_HTTP_LOOPBACK"  # "1": plain HTTP to loopback

Progress = Callable[[str, int, int], None]
T = TypeVar("T")


class RetrainError(RuntimeError):
    """A retrain step failed; ``step`` names it."""

    def __init__(self, step: str, error: BaseException) -> None:
        self.step = step
        super().__init__(f"retrain failed at step {step}: {type(error).__name__}: {error}")


@dataclass(frozen=True)
class RetrainResult:
    """Outcome of :func:`retrain`.

    Attributes
    ----------
    record : dict
        The marker's content: version, gate decision, fingerprints, timings.
    skipped : bool
        True when the as-of was already retrained on the same data, config and code.
    ingest : IngestReport or None
        None when ingestion was skipped; ``ingest_skipped`` then says why.
    """

    as_of: dt.date
    record: dict[str, Any]
    marker: Path
    skipped: bool
    ingest: IngestReport | None
    ingest_skipped: str | None


def _noop(step: str, done: int, total: int) -> None:
    return None


def marker_path(cfg: Config, as_of: dt.date) -> Path:
    return Path(cfg.paths.outputs_dir) / "retrain" / f"asof={as_of.isoformat()}.json"


def ingest_settings_from_env(environ: Mapping[str, str] | None = None,
                             ingest_cfg: IngestConfig | None = None) -> IngestSettings:
    """Ingest settings from the ``ingest`` config section (defaults when None), provider URLs
    overridden by ``VOLMARGIN_INGEST_*_URL``; plain HTTP only to a loopback host and only with
    ``VOLMARGIN_INGEST_ALLOW_HTTP_LOOPBACK=1`` (a local fake server in tests)."""
    env = os.environ if environ is None else environ
    urls = {name: env[var] for name, var in ENDPOINT_ENV.items() if env.get(var)}
    loopback = env.get(ALLOW_HTTP_LOOPBACK_ENV, "").strip() == "1"
    return IngestSettings.from_config(ingest_cfg or IngestConfig(),
                                      replace(Endpoints(), **urls), loopback)


def runnable_sources(settings: IngestSettings) -> list[str]:
    """Sources that can run here: FRED only with an API key (else it always reports an error)."""
    return ["binance", "deribit"] + (["fred"] if settings.fred_api_key() else [])


def data_fingerprint(data_dir: Path, as_of: dt.date | None = None) -> str:
    """sha256 over every data file's path and content (dot-files, e.g. locks, excluded).

    With ``as_of``, a CSV file (``.csv``, ``.csv.gz``) counts only its header and its lines up
    to the last one dated on or before it (the first ten characters, an ISO date, compared as
    text; a validated file is sorted), what a run at that as-of reads: rows the daily ingest
    appends later do not make the same as-of's retrain look new (it registered a duplicate
    version). Other files (Parquet included) count whole."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory {root} does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(f"{rel.as_posix()}:{_content_sha256(path, as_of)}\n".encode())
    return digest.hexdigest()


def _content_sha256(path: Path, as_of: dt.date | None) -> str:
    name = path.name.lower()
    raw = path.read_bytes()
    if as_of is None or not name.endswith((".csv", ".csv.gz")):
        return hashlib.sha256(raw).hexdigest()
    data = gzip.decompress(raw) if name.endswith(".gz") else raw
    return hashlib.sha256(data[:_end_of_day(data, as_of.isoformat().encode())]).hexdigest()


def _end_of_day(data: bytes, cut: bytes) -> int:
    """The offset just past the last line of ``data`` (a CSV whose lines after the header are
    sorted by their stamp) whose first ten bytes are ``<= cut``: found by bisection over the
    line starts, never splitting the file into lines (a per-line loop was ~1 µs a line, a
    minute a retrain at 1,000 assets). The header always counts."""
    first = data.find(b"\n") + 1
    if first == 0:
        return len(data)  # the header alone

    def line_start(at: int) -> int:  # the start of the line holding byte ``at``
        return data.rfind(b"\n", 0, at) + 1 if at > first else first

    lo, hi = first, len(data)  # the answer is a line start in [lo, hi]
    while lo < hi:
        mid = line_start((lo + hi) // 2)
        nxt = data.find(b"\n", mid)
        nxt = len(data) if nxt < 0 else nxt + 1
        if data[mid:mid + 10] <= cut:
            lo = nxt  # this line counts: the end is past it
        elif mid <= lo:
            break
        else:
            hi = mid
    return lo


def config_fingerprint(cfg: Config) -> str:
    """sha256 of the resolved config without ``paths``, ``serving`` and ``ingest`` (no effect on
    training; what ingestion appended is in the data fingerprint)."""
    resolved = {k: v for k, v in cfg.resolved().items()
                if k not in ("paths", "serving", "ingest")}
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def _step(name: str, action: Callable[[], T]) -> T:
    try:
        return action()
    except Exception as exc:  # any failure is reported with the step it happened in
        raise RetrainError(name, exc) from exc


class _StepTracker:
    """Forwards progress and remembers the last step the pipeline entered."""

    def __init__(self, progress: Progress) -> None:
        self.progress, self.step = progress, "setup"

    def __call__(self, step: str, done: int, total: int) -> None:
        self.step = step
        self.progress(step, done, total)


def retrain(
    cfg: Config, as_of: dt.date, *, skip_ingest: bool = False, force: bool = False,
    settings: IngestSettings | None = None, progress: Progress = _noop,
    environ: Mapping[str, str] | None = None,
) -> RetrainResult:
    """Retrain, register and gate the policy for ``as_of``, once per data, config and code.

    Parameters
    ----------
    cfg : Config
        Resolved configuration; data is read from ``cfg.paths.data_dir``.
    as_of : datetime.date
        Label of this retrain (the marker's key); ingestion appends rows through this day.
    skip_ingest : bool
        Train on the stored data without asking the providers.
    force : bool
        Retrain even when the marker says this as-of is done with the same inputs.
    settings : IngestSettings, optional
        Ingest settings; default from the environment (:func:`ingest_settings_from_env`).
    progress : callable
        ``progress(step, done, total)`` for every step, the pipeline's included.
    environ : mapping, optional
        Environment to read ``VOLMARGIN_OFFLINE`` and endpoint overrides from.

    Raises
    ------
    serving.ops.lock.LockHeldError
        Another retrain holds ``outputs/.retrain.lock``.
    RetrainError
        A step failed; its message names the step.
    """
    from pipelines.engine import make_engine
    from pipelines.run import run  # heavy (models, MLflow): only once the lock is held
    from serving.ops.registry import CHAMPION_MOVED, champion_version, version_tag

    env = os.environ if environ is None else environ
    started = dt.datetime.now(dt.UTC)
    with training_lock(cfg.paths.outputs_dir, "retrain"):
        report, skipped_why = None, None
        if skip_ingest:
            skipped_why = "--skip-ingest"
        elif env.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            skipped_why = f"{OFFLINE_ENV} is set"
        else:
            progress("ingest", 0, 1)
            chosen = settings or ingest_settings_from_env(env, cfg.ingest)
            until = as_of + dt.timedelta(days=1)  # exclusive end: rows through as_of
            report = _step("ingest", lambda: ingest(
                cfg.paths.data_dir, runnable_sources(chosen), until, settings=chosen))
        progress("fingerprint", 0, 1)
        data_fp = _step("fingerprint", lambda: data_fingerprint(cfg.paths.data_dir, as_of))
        config_fp = config_fingerprint(cfg)
        marker = marker_path(cfg, as_of)
        done = read_marker(marker)
        # the same data, config and code: a no-op (new code, e.g. a fix deployed since, retrains;
        # an edited checkout reads "-dirty" either way, so edits in place need --force)
        # ... unless that retrain's version was judged against a champion that another run
        # replaced meanwhile (the compare-and-set refused it): judged again
        if (done is not None and not force and done.get("data_fingerprint") == data_fp
                and done.get("config_sha256") == config_fp
                and done.get("code_version") == code_version()
                and not str(done.get("gate_reason", "")).startswith(CHAMPION_MOVED)):
            return RetrainResult(as_of, done, marker, True, report, skipped_why)
        tracker = _StepTracker(progress)
        try:
            # the engine `volmargin run` builds (backtest.engine: local processes, or Dask: a
            # LocalCluster or the cluster at backtest.scheduler), so that the scheduled
            # retrain fans out where the config says
            with make_engine(cfg.backtest.engine, cfg.backtest.n_jobs, cfg.backtest.scheduler,
                             cfg.backtest.dask_workers, say=logger.info) as engine:
                result = run(cfg, as_of, tracker, publish=False, mapper=engine.mapper,
                             engine=engine)
        except Exception as exc:
            raise RetrainError(tracker.step, exc) from exc
        record = {
            "as_of": as_of.isoformat(),
            "data_fingerprint": data_fp,
            "config_sha256": config_fp,
            "feature_fingerprint": result.fingerprint,
            "selected": result.selected,
            "registered_policy": result.registered_policy,
            "failures": result.failure_lines(),  # left out of selection, as `run` lists them
            "not_judged": result.not_judged_lines(),  # young assets' statistics, not failures
            "registered_version": result.model_version,
            "promoted": result.promoted,
            "gate_passed": result.gate_passed,
            "gate_reason": result.gate_reason,
            "champion_version": champion_version(cfg.registry.model_name),
            # last day the registered forecaster saw: never after the as-of (serving.market)
            "fit_cutoff": version_tag(cfg.registry.model_name, result.model_version,
                                      "fit_cutoff"),
            "code_version": code_version(),
            "started_at": started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ingest": _ingest_summary(report, skipped_why),
            "history": _history(done),
        }
        _step("record", lambda: _write_json(marker, record))
    return RetrainResult(as_of, record, marker, False, report, skipped_why)


def _ingest_summary(report: IngestReport | None, skipped: str | None) -> dict[str, Any]:
    if report is None:
        return {"skipped": skipped}
    return {"skipped": None, "ok": report.ok, "appended": report.appended,
            "files": len(report.files), "problems": report.problems()}


def _history(done: dict[str, Any] | None) -> list[dict[str, Any]]:
    if done is None:
        return []
    earlier = {k: v for k, v in done.items() if k != "history"}
    return [*done.get("history", []), earlier]


def _write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``path`` atomically: a reader sees the old marker or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

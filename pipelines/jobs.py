"""The scheduled jobs as the CLI runs them: call ``serve`` / ``retrain`` / ``ingest``, report
through a :class:`~pipelines.ops.logs.JobLog`, and return the process exit status.

Exit statuses (what a systemd unit or cron wrapper alerts on):

====  =======================================================================================
0     done, or nothing to do (already published / already retrained: the job says so)
1     failed: no champion, unknown model version, a stored model missing or changed since
      registration, a malformed data file (without ``--keep-going``), a different partition
      already published without ``--force``, a retrain step failed (named), ingest problems,
      the UI's port in use
2     bad arguments or configuration (unknown source, unparsable or future date, invalid
      config file or override, a serve-time override of a value the model fixes)
3     ``serve`` published, but some assets are stale and ``serving.on_stale`` is ``fail``
4     ``serve --keep-going`` published, but some data files failed to load (listed)
      ``run`` completed with failures: a forecaster failed for some model × asset ×
      horizon, a diagnostic was undefined or a file was skipped (listed; the rest published)
75    another run of the same job holds the lock (EX_TEMPFAIL: try again later)
====  =======================================================================================
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from configs.schema import Config
from pipelines.ops.logs import JobLog
from serving.ops.lock import EX_TEMPFAIL, LockHeldError, training_lock

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STALE = 3
EXIT_PARTIAL = 4


def parse_day(text: str | None, today: dt.date | None = None) -> dt.date | None:
    """``--as-of`` text: ``YYYY-MM-DD``, or ``yesterday`` (UTC), so a unit file can say "the
    day that just closed" without shell arithmetic (``today`` is kept as a word so that the
    as-of check refuses it by name: today has not closed). Raises ValueError naming it."""
    if text is None:
        return None
    today = today or dt.datetime.now(dt.UTC).date()
    words = {"today": today, "yesterday": today - dt.timedelta(days=1)}
    if text in words:
        return words[text]
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--as-of {text!r} is not a date YYYY-MM-DD (or yesterday)") \
            from None


def _pairs(values: dict[str, dict[str, Any]], shown: str, beside: str, label: str) -> str:
    """``key = <shown> (<label>: <beside>); ...`` of a serve's per-key value pairs."""
    return "; ".join(f"{k} = {v[shown]!r} ({label}: {v[beside]!r})" for k, v in values.items())


def fail_safe_line(exc: Any) -> str:
    """What ``serve`` and ``run`` say when no model could be served (a
    :class:`serving.serve.ModelUnavailableError`): why, and the fail-safe partition."""
    return (f"{exc.reason}; fail-safe: published revision {exc.published.revision} of "
            f"{exc.published.path} with every asset frozen on its parameters in force (LTV 0, "
            "LT and LB held)")


def serve_job(cfg: Config, log: JobLog, as_of: dt.date | None, model_version: str | None,
              force: bool, keep_going: bool = False) -> int:
    """``volmargin serve``: publish, then report what was published and any stale asset."""
    from features.validation import DataValidationError
    from serving.market import FutureAsOfError
    from serving.ops.registry import (
        ChampionMissingError,
        ModelArtifactMissingError,
        ModelIntegrityError,
    )
    from serving.publish import PartitionExistsError
    from serving.serve import (
        ModelUnavailableError,
        ModelVersionMissingError,
        ServeConfigError,
        serve,
    )

    step = ["setup"]
    try:
        with log.progress() as progress:
            def tracked(name: str, done: int, total: int) -> None:
                step[0] = name
                progress(name, done, total)

            result = serve(cfg, as_of, model_version=model_version, force=force,
                           progress=tracked, keep_going=keep_going)
    except LockHeldError as exc:
        log.error("lock", str(exc), lock=str(exc.path), holder_pid=exc.holder.get("pid"))
        return EX_TEMPFAIL
    except (FutureAsOfError, ServeConfigError) as exc:
        log.error(step[0], str(exc))
        return EXIT_USAGE
    except ModelUnavailableError as exc:  # the fail-safe published, the run still fails
        published = exc.published
        log.error(step[0], f"{fail_safe_line(exc)} → exit 1", path=str(published.path),
                  revision=published.revision, created=published.created)
        return EXIT_FAILED
    except (ChampionMissingError, ModelVersionMissingError, ModelArtifactMissingError,
            ModelIntegrityError) as exc:
        log.error(step[0], str(exc))
        return EXIT_FAILED
    except DataValidationError as exc:
        log.error("load data", f"{exc} (--keep-going publishes the other assets)")
        return EXIT_FAILED
    except PartitionExistsError as exc:
        log.error("publish", str(exc))
        return EXIT_FAILED
    except Exception as exc:  # a scheduler needs the failing step in the log, then the trace
        log.error(step[0], f"serve failed at step {step[0]}: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return EXIT_FAILED
    if result.swept:
        log.warning("publish", f"removed leftovers of crashed runs: {', '.join(result.swept)}")
    for line in result.warnings:
        log.warning("load data", line)
    if result.config_not_applied:
        log.warning("config", "config values not applied (the model uses those it was "
                    "registered with; retrain to apply): "
                    + _pairs(result.config_not_applied, "serve", "model", "model"),
                    config_not_applied=result.config_not_applied)
    if result.frozen_settings:
        log.info("config", "settings frozen by the policy protocol at registration (the "
                 "config file's values are where its choice starts): "
                 + _pairs(result.frozen_settings, "model", "config", "config file"),
                 frozen_settings=result.frozen_settings)
    published = result.published
    state = (f"published revision {published.revision}" if published.created
             else "already published (identical, no-op)")
    log.info("publish", f"{state}: {published.path} ({len(result.parameters)} assets, model "
             f"v{result.model_version}, {len(result.updates)} update records)",
             as_of=result.as_of.isoformat(), assets=len(result.parameters),
             fallbacks=len(result.fallback_assets), stale=len(result.stale_assets),
             version=result.model_version, revision=published.revision,
             created=published.created, updates=len(result.updates), path=str(published.path))
    for name, why in result.failures.items():  # named before any exit status is decided
        log.warning("load data", f"skipped {name}: {why}")
    if result.stale_assets:
        # Published first on purpose: a risk engine must receive the fail-safe parameters
        # (previous kept, or the conservative set); the exit status makes a person look.
        text = (f"stale data for {', '.join(result.stale_assets)}: published with fail-safe "
                "parameters (flag_stale; see each row's reason)")
        if cfg.serving.on_stale == "fail":
            log.error("stale", f"{text}; serving.on_stale=fail → exit {EXIT_STALE}",
                      stale_assets=result.stale_assets)
            return EXIT_STALE
        log.warning("stale", text, stale_assets=result.stale_assets)
    if result.failures:
        log.error("load data", f"{len(result.failures)} data file(s) failed to load: published "
                  f"the other assets → exit {EXIT_PARTIAL}", skipped_files=list(result.failures))
        return EXIT_PARTIAL
    return 0


def retrain_job(cfg: Config, log: JobLog, as_of: dt.date, skip_ingest: bool,
                force: bool) -> int:
    """``volmargin retrain``: retrain once per as-of; report ingest problems and the gate."""
    from pipelines.retrain import RetrainError, retrain
    from serving.market import FutureAsOfError, check_as_of

    try:
        check_as_of(as_of)
    except FutureAsOfError as exc:
        log.error("setup", str(exc))
        return EXIT_USAGE
    try:
        with log.progress() as progress:
            result = retrain(cfg, as_of, skip_ingest=skip_ingest, force=force,
                             progress=progress)
    except LockHeldError as exc:
        log.error("lock", str(exc), lock=str(exc.path), holder_pid=exc.holder.get("pid"))
        return EX_TEMPFAIL
    except RetrainError as exc:
        log.error(exc.step, str(exc), as_of=as_of.isoformat())
        return EXIT_FAILED
    if result.ingest is None:
        log.info("ingest", f"ingest skipped: {result.ingest_skipped}")
    else:
        for line in result.ingest.problems():
            log.warning("ingest", line)
        log.info("ingest", f"ingest appended {result.ingest.appended} rows "
                 f"({len(result.ingest.files)} files)", appended=result.ingest.appended)
    rec = result.record
    figures = {"as_of": as_of.isoformat(), "version": rec["registered_version"],
               "promoted": rec["promoted"], "champion": rec["champion_version"],
               "selected": rec["selected"], "data_fingerprint": rec["data_fingerprint"][:12],
               "marker": str(result.marker), "skipped": result.skipped}
    if result.skipped:
        log.info("retrain", f"already retrained for {as_of} on the same data, config and code "
                 f"(no-op): version {rec['registered_version']}, champion "
                 f"v{rec['champion_version']} ({result.marker})", **figures)
        return 0
    verdict = ("passed → @champion" if rec.get("gate_passed", rec["promoted"])
               else "refused, promoted as the first version → @champion" if rec["promoted"]
               else "refused, @champion unchanged")
    log.info("retrain", f"registered {cfg.registry.model_name} v{rec['registered_version']} "
             f"({rec['selected']}); gate {verdict}: {rec['gate_reason']}", **figures)
    for line in rec.get("not_judged", []):  # as `run` ends: young assets, not failures
        log.info("retrain", line)
    for line in rec.get("failures", []):  # as `run` ends: what was left out, and why
        log.warning("retrain", line)
    return EXIT_PARTIAL if rec.get("failures") else 0


def ingest_job(cfg: Config, log: JobLog, sources: list[str] | None, until: str | None) -> int:
    """``volmargin ingest``: append new provider rows; a table per file, problems named."""
    from pipelines.ingest import ingest
    from pipelines.retrain import ingest_settings_from_env, runnable_sources

    settings = ingest_settings_from_env(ingest_cfg=cfg.ingest)
    if sources is None:  # every source that can run here: FRED without its (optional) key
        sources = runnable_sources(settings)  # would fail every macro file, every day
        if "fred" not in sources:
            log.info("ingest", "fred skipped: FRED_API_KEY is not set (optional; the macro "
                     "files are not extended)")
    try:
        # no per-file progress hook in ingest(): a spinner says it is working (text mode only)
        with contextlib.nullcontext() if log.json_lines or log.quiet else log.console.status(
                f"ingesting into {cfg.paths.data_dir} ..."):
            report = ingest(cfg.paths.data_dir, sources, until, settings=settings)
    except ValueError as exc:  # unknown source, unparsable --until
        log.error("ingest", str(exc))
        return EXIT_USAGE
    except (OSError, TimeoutError) as exc:  # data directory not writable, lock timeout
        log.error("ingest", f"ingest failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    frame = report.to_frame()
    if log.json_lines:
        for row in frame.to_dict("records"):
            log.info("ingest", f"{row['file']}: {row['status']}", **row)
    elif not log.quiet:
        table = Table(title=f"ingest into {cfg.paths.data_dir} (until {report.until})")
        for col in frame.columns:
            table.add_column(col, justify="right" if frame[col].dtype.kind in "iu" else "left",
                             no_wrap=col == "file")  # a path cut in two is not searchable
        for row in frame.itertuples(index=False):
            table.add_row(*["" if value is None else str(value) for value in row])
        log.console.print(table)
    for line in report.problems():
        log.warning("ingest", line)
    figures = {"appended": report.appended, "files": len(report.files), "ok": report.ok}
    if not report.ok:
        log.error("ingest", f"ingest finished with {len(report.problems())} problem(s)",
                  **figures)
        return EXIT_FAILED
    log.info("ingest", f"ingest ok: {report.appended} rows appended", **figures)
    return 0


def run_job(cfg: Config, console: Console, as_of: dt.date | None, quiet: bool,
            keep_going: bool) -> int:
    """``volmargin run``: the whole pipeline with a progress bar per step, then the summary."""
    from models.backtest import NoForecastsError
    from pipelines.engine import make_engine
    from pipelines.ops.console import print_run
    from pipelines.run import exit_status, run
    from pipelines.selection.select import NothingToSelectError
    from serving.market import FutureAsOfError, check_as_of
    from serving.ops.registry import (
        ChampionMissingError,
        ModelArtifactMissingError,
        ModelIntegrityError,
    )
    from serving.publish import PartitionExistsError
    from serving.serve import ModelUnavailableError, ServeConfigError

    try:
        if as_of is not None:
            check_as_of(as_of)  # before the store is opened: nothing to clean up
    except FutureAsOfError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        return EXIT_USAGE
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=console,
            disable=quiet, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=max(total, 1))
            bar.update(tasks[step], completed=done if total > 1 else 1)

        try:
            # backtest.engine: the walk-forward's tasks run in process, or on Dask
            # (a LocalCluster, or the cluster at backtest.scheduler / --scheduler)
            # one training job at a time: a run writes outputs/backtest and registers a
            # version as a retrain does, so it takes the retrain's lock (serving.ops.lock)
            with training_lock(cfg.paths.outputs_dir, "run"), \
                    make_engine(cfg.backtest.engine, cfg.backtest.n_jobs,
                                cfg.backtest.scheduler, cfg.backtest.dask_workers,
                                say=console.print) as engine:
                result = run(cfg, as_of, progress, keep_going=keep_going,
                             mapper=engine.mapper, engine=engine)
        except LockHeldError as exc:  # a retrain, another run, or a serve publishing: do not
            # race it
            console.print(f"[red]{exc}[/red]")
            return EX_TEMPFAIL
        except (NoForecastsError, NothingToSelectError) as exc:  # said, not a traceback:
            # nothing to select
            console.print(str(exc), style="red", markup=False, highlight=False)
            return EXIT_FAILED
        except PartitionExistsError as exc:  # a rerun on changed code or data: said, kept
            console.print(f"{exc}\nThe run's backtest, selection and registered version are "
                          "in MLflow; the partition published before is left as it was.",
                          style="red", markup=False, highlight=False)
            return EXIT_FAILED
        # the serve step's own refusals, said as `volmargin serve` says them (the run's
        # backtest, selection and registration are in MLflow)
        except ModelUnavailableError as exc:  # the fail-safe published, the run still fails
            console.print(fail_safe_line(exc), style="red", markup=False, highlight=False)
            return EXIT_FAILED
        except ServeConfigError as exc:
            console.print(str(exc), style="red", markup=False, highlight=False)
            return EXIT_USAGE
        except (ChampionMissingError, ModelArtifactMissingError, ModelIntegrityError) as exc:
            # e.g. a first version its gate refused with registry.gate.promote_first off
            console.print(f"{exc}\nThe run's backtest, selection and registered version are "
                          "in MLflow; nothing was published.",
                          style="red", markup=False, highlight=False)
            return EXIT_FAILED
    print_run(console, cfg, result)
    code = exit_status(result, cfg.serving.on_stale)  # 4: completed with failures (listed)
    if code == EXIT_STALE:  # as `volmargin serve`: published first, then a person looks
        stale = ", ".join(result.served.stale_assets) if result.served else ""
        console.print(f"stale data for {stale}: published with fail-safe parameters "
                      f"(flag_stale); serving.on_stale=fail → exit {EXIT_STALE}",
                      style="red", markup=False, highlight=False)
    return code


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, not permitted), or None if it can."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as the server binds: a port left in TIME_WAIT by a stopped UI is free to reuse, one
        # with a listener is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def ui_job(cfg: Config, console: Console, port: int, workers: int) -> int:
    """``volmargin ui``: the MLflow UI on 127.0.0.1 with the project's store, supervised.

    Exit 1 at once when the port cannot be listened on (the server would log the error and
    still exit 0).
    """
    from serving.ops.tracking import artifact_root, setup, tracking_uri

    busy = port_in_use("127.0.0.1", port)
    if busy is not None:
        console.print(f"[red]cannot start the MLflow UI: 127.0.0.1:{port}: {busy}. Stop what "
                      "listens there, or choose another port with --port.[/red]")
        return EXIT_FAILED
    setup(cfg)  # a moved project's artifact locations are re-resolved before the UI reads them
    root = artifact_root(cfg.paths.mlruns_dir)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers),
           "--backend-store-uri", tracking_uri(cfg.paths.mlruns_dir),
           "--default-artifact-root", root.resolve().as_uri()]
    # One worker and no MLflow server jobs (GenAI judges, trace roll-ups: unused here): the
    # defaults, 4 workers + a job runner with 7 queue consumers, took 35 s to answer on 2 cores.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION":
           os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    # MLflow 3.17 picks GenAI or model-training views from a `workflowType` URL parameter (then
    # the browser's last choice); this link opens on the training runs table.
    console.print(f"MLflow UI on http://127.0.0.1:{port}/#/experiments?workflowType="
                  f"machine_learning (Ctrl-C to stop)")
    return supervise(cmd, console, env=env)


def supervise(cmd: list[str], console: Console, env: dict[str, str] | None = None,
              grace_s: float = 10.0) -> int:
    """Run a server until it exits or this process is told to stop; returns its status.

    The server gets its own process group, and SIGTERM/SIGINT/SIGHUP to this process stop that
    whole group (SIGTERM, then SIGKILL after ``grace_s``): ``mlflow ui`` starts its web server
    as a further child, which would otherwise be orphaned and keep the port.
    """
    server = subprocess.Popen(cmd, start_new_session=True, env=env)
    stopping: list[float] = []

    def stop(signum: int, frame: object) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    while True:
        try:
            code = server.wait(timeout=0.5)  # a timed wait, so a stop can escalate
            break
        except subprocess.TimeoutExpired:
            if stopping and time.monotonic() - stopping[0] > grace_s:
                console.print(f"server did not stop in {grace_s:.0f} s: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):  # children the server left behind
        os.killpg(server.pid, signal.SIGKILL)
    return 0 if stopping else code

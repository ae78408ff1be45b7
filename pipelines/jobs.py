"""The scheduled jobs as the CLI runs them: call ``serve`` / ``retrain`` / ``ingest``, report
through a :class:`~pipelines.ops.logs.JobLog`, and return the process exit status.

Exit statuses (what a systemd unit or cron wrapper alerts on):

====  =======================================================================================
0     done, or nothing to do (already published / already retrained: the job says so)
1     failed: no champion, unknown model version, a different partition already published
      without ``--force``, a retrain step failed (named), ingest problems
2     bad arguments (unknown source, unparsable date)
3     ``serve`` published, but some assets are stale and ``serving.on_stale`` is ``fail``
75    another run of the same job holds the lock (EX_TEMPFAIL: try again later)
====  =======================================================================================
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
import traceback

from rich.console import Console
from rich.table import Table

from configs.schema import Config
from pipelines.ops.logs import JobLog
from serving.ops.lock import EX_TEMPFAIL, LockHeldError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STALE = 3


def serve_job(cfg: Config, log: JobLog, as_of: dt.date | None, model_version: str | None,
              force: bool) -> int:
    """``volmargin serve``: publish, then report what was published and any stale asset."""
    from serving.ops.registry import ChampionMissingError
    from serving.publish import PartitionExistsError
    from serving.serve import ModelVersionMissingError, serve

    step = ["setup"]
    try:
        with log.progress() as progress:
            def tracked(name: str, done: int, total: int) -> None:
                step[0] = name
                progress(name, done, total)

            result = serve(cfg, as_of, model_version=model_version, force=force,
                           progress=tracked)
    except LockHeldError as exc:
        log.error("lock", str(exc), lock=str(exc.path), holder_pid=exc.holder.get("pid"))
        return EX_TEMPFAIL
    except (ChampionMissingError, ModelVersionMissingError) as exc:
        log.error("resolve model", str(exc))
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
    published = result.published
    state = (f"published revision {published.revision}" if published.created
             else "already published (identical, no-op)")
    log.info("publish", f"{state}: {published.path} ({len(result.parameters)} assets, model "
             f"v{result.model_version}, {len(result.updates)} update records)",
             as_of=result.as_of.isoformat(), assets=len(result.parameters),
             fallbacks=len(result.fallback_assets), stale=len(result.stale_assets),
             version=result.model_version, revision=published.revision,
             created=published.created, updates=len(result.updates), path=str(published.path))
    if result.stale_assets:
        # Published first on purpose: a risk engine must receive the conservative fallback
        # parameters; the exit status is what makes the scheduler alert a person.
        text = (f"stale data for {', '.join(result.stale_assets)}: published with conservative "
                "fallback parameters (flag_stale)")
        if cfg.serving.on_stale == "fail":
            log.error("stale", f"{text}; serving.on_stale=fail → exit {EXIT_STALE}",
                      stale_assets=result.stale_assets)
            return EXIT_STALE
        log.warning("stale", text, stale_assets=result.stale_assets)
    return 0


def retrain_job(cfg: Config, log: JobLog, as_of: dt.date, skip_ingest: bool,
                force: bool) -> int:
    """``volmargin retrain``: retrain once per as-of; report ingest problems and the gate."""
    from pipelines.retrain import RetrainError, retrain

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
        log.info("retrain", f"already retrained for {as_of} on the same data and config "
                 f"(no-op): version {rec['registered_version']}, champion "
                 f"v{rec['champion_version']} ({result.marker})", **figures)
        return 0
    verdict = "passed → @champion" if rec["promoted"] else "refused, @champion unchanged"
    log.info("retrain", f"registered {cfg.registry.model_name} v{rec['registered_version']} "
             f"({rec['selected']}); gate {verdict}: {rec['gate_reason']}", **figures)
    return 0


def ingest_job(cfg: Config, log: JobLog, sources: list[str] | None, until: str | None) -> int:
    """``volmargin ingest``: append new provider rows; a table per file, problems named."""
    from pipelines.ingest import ingest
    from pipelines.retrain import ingest_settings_from_env

    try:
        # no per-file progress hook in ingest(): a spinner says it is working (text mode only)
        with contextlib.nullcontext() if log.json_lines or log.quiet else log.console.status(
                f"ingesting into {cfg.paths.data_dir} ..."):
            report = ingest(cfg.paths.data_dir, sources, until,
                            settings=ingest_settings_from_env())
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

"""``volmargin`` command line. Thin: parse options, build the config, call a ``run``-style
function, print. No computation happens here."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from configs.schema import Config, ConfigError, load_config

if TYPE_CHECKING:
    from pipelines.ops.logs import JobLog

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Volatility-driven margin parameters for crypto collateral.")
# Wide enough for the parameter table when output is not a terminal (CI logs, pipes).
console = Console(width=max(shutil.get_terminal_size((120, 40)).columns, 120))

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Market data directory.")]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="Publish date YYYY-MM-DD.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def _config(config: Path | None, data_dir: Path | None, log: JobLog | None = None) -> Config:
    """The config, or exit 2 with the error (a JSON line under ``--log-json``)."""
    try:
        cfg = load_config(config)
        if data_dir is not None:
            cfg = cfg.with_overrides({"paths.data_dir": str(data_dir)})
    except ConfigError as exc:
        if log is not None:
            log.error("config", str(exc))
        else:
            console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    return cfg


@contextlib.contextmanager
def _data_errors_exit() -> Iterator[None]:
    """A malformed data file stops ``run`` and ``tail`` with its file, line and rule (exit
    1), as ``serve`` does, not with a traceback; so does a universe on which the walk-forward
    made no forecast at all (it says why)."""
    from features.validation import DataValidationError
    from models.backtest import NoForecastsError

    try:
        yield
    except DataValidationError as exc:
        console.print(f"{exc} (--keep-going skips only its asset and runs the rest)",
                      style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except NoForecastsError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None


def _day(text: str | None, log: JobLog | None = None) -> dt.date | None:
    from pipelines.jobs import parse_day

    try:
        return parse_day(text)
    except ValueError as exc:
        if log is not None:
            log.error("setup", str(exc))
        else:
            console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _quiet_libraries() -> None:
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


KeepGoingOpt = Annotated[bool, typer.Option(
    "--keep-going/--fail-fast", help="A malformed file fails only its asset (default: stop).")]


SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Run the fan-out on the Dask cluster at tcp://HOST:PORT "
    "(sets backtest.engine=dask); backtest.engine=dask without it starts a LocalCluster.")]


@app.command("tail")
def tail_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_of: AsOfOpt = None,
             keep_going: KeepGoingOpt = False) -> None:
    """Walk forward and score the tail models; tables under outputs/tail/ and in MLflow.

    The VaR and ES of the covered loss per tail model, scored by FZ0, Diebold-Mariano, the
    Model Confidence Set, coverage tests and ES backtests.
    """
    from pipelines.tail_step import tail_job
    from serving.market import FutureAsOfError, check_as_of

    _quiet_libraries()
    cfg, day = _config(config, data_dir), _day(as_of)
    try:
        if day is not None:
            check_as_of(day)  # a day not closed yet: exit 2, as `run` and `serve`
    except FutureAsOfError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    with _data_errors_exit():
        code = tail_job(cfg, day, keep_going, say=console.print)
    raise typer.Exit(code)


@app.command("run")
def run_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_of: AsOfOpt = None,
            quiet: QuietOpt = False, keep_going: KeepGoingOpt = False,
            scheduler: SchedulerOpt = None) -> None:
    """Features → backtest → policy backtest → select → register @champion → publish.

    Every step sees rows up to the as-of only (default: the last complete UTC day in the data).
    Exit 0 done, 1 failed, 2 bad arguments or config (a future --as-of), 4 completed with
    failures (a forecaster failed for some model × asset × horizon, a diagnostic was
    undefined, or a file was skipped with --keep-going: the rest was published; listed at the
    end), 75 locked.
    """
    from pipelines.jobs import run_job

    _quiet_libraries()
    cfg = _config(config, data_dir)
    if scheduler:
        cfg = cfg.with_overrides({"backtest.engine": "dask", "backtest.scheduler": scheduler})
    day = _day(as_of)
    with _data_errors_exit():
        code = run_job(cfg, console, day, quiet, keep_going)
    raise typer.Exit(code)


JobAsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="YYYY-MM-DD, or 'yesterday' / 'today' (UTC) for scheduled runs.")]
LogJsonOpt = Annotated[bool, typer.Option(
    "--log-json", help="One JSON object per line on stdout (also VOLMARGIN_LOG_JSON=1).")]


def _job_log(job: str, quiet: bool, log_json: bool) -> JobLog:
    from pipelines.ops.logs import JobLog, json_requested

    _quiet_libraries()
    return JobLog(job, console, json_lines=json_requested(log_json), quiet=quiet)


@app.command("serve")
def serve_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_of: JobAsOfOpt = None,
              model_version: Annotated[str | None, typer.Option(
                  "--model-version", help="Serve this registered version, not @champion.")] = None,
              force: Annotated[bool, typer.Option(
                  "--force", help="If the day is published with other content, publish a "
                  "new revision beside it (never overwrites).")] = False,
              quiet: QuietOpt = False, log_json: LogJsonOpt = False,
              keep_going: KeepGoingOpt = False) -> None:
    """Publish the @champion policy's parameters as of a date.

    The default date is the last complete UTC day in the data; a future date is refused.

    Exit 0 published or no-op, 1 failed, 2 bad arguments or config, 3 stale data with
    serving.on_stale=fail, 4 published but data files skipped (--keep-going), 75 locked.
    """
    from pipelines.jobs import serve_job

    log = _job_log("serve", quiet, log_json)
    cfg = _config(config, data_dir, log)
    raise typer.Exit(serve_job(cfg, log, _day(as_of, log), model_version, force, keep_going))


registry_app = typer.Typer(no_args_is_help=True, help="Registry governance: history, rollback.")
app.add_typer(registry_app, name="registry")


def _registry_setup(config: Path | None) -> Config:
    from serving.ops.tracking import setup

    _quiet_libraries()
    cfg = _config(config, None)
    setup(cfg)
    return cfg


@registry_app.command("history")
def registry_history(config: ConfigOpt = None, alias: str = "champion") -> None:
    """Every move of an alias (default @champion): when, which version, why."""
    from serving.ops.registry import alias_history

    cfg = _registry_setup(config)
    table = Table(title=f"{cfg.registry.model_name}@{alias} history")
    for col in ("set at (UTC)", "version", "reason"):
        table.add_column(col)
    for move in alias_history(cfg.registry.model_name, alias):
        table.add_row(move["at"], move["version"], move["reason"])
    console.print(table)


@registry_app.command("at")
def registry_at(when: Annotated[str, typer.Argument(help="UTC date or datetime (ISO 8601)")],
                config: ConfigOpt = None, alias: str = "champion") -> None:
    """Which version the alias pointed to at a date: 'what was in production on D'."""
    from serving.ops.registry import parse_when, version_at

    cfg = _registry_setup(config)
    version = version_at(cfg.registry.model_name, parse_when(when), alias)
    if version is None:
        console.print(f"no @{alias} at {when}")
        raise typer.Exit(1)
    console.print(f"{cfg.registry.model_name}@{alias} at {when}: version {version}")


@registry_app.command("rollback")
def registry_rollback(version: str, reason: Annotated[str, typer.Option(
        "--reason", help="Why (recorded in the history).")], config: ConfigOpt = None) -> None:
    """Point @champion back at an earlier version."""
    from serving.ops.registry import rollback

    cfg = _registry_setup(config)
    rollback(cfg.registry.model_name, version, reason)
    console.print(f"{cfg.registry.model_name}@champion → version {version}")


@app.command("retrain")
def retrain_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None,
                as_of: JobAsOfOpt = None,
                skip_ingest: Annotated[bool, typer.Option(
                    "--skip-ingest", help="Train on the stored data; ask no provider.")] = False,
                force: Annotated[bool, typer.Option(
                    "--force", help="Retrain even if this as-of is done on the same data "
                    "and config.")] = False,
                quiet: QuietOpt = False, log_json: LogJsonOpt = False) -> None:
    """Ingest, retrain, register @challenger, gate, promote: once per as-of and data state.

    The as-of defaults to yesterday (UTC).

    Exit 0 done or no-op, 1 a step failed, 4 done with what was left out listed, 75 locked.
    """
    from pipelines.jobs import retrain_job

    log = _job_log("retrain", quiet, log_json)
    cfg = _config(config, data_dir, log)
    day = _day(as_of or "yesterday", log)
    assert day is not None  # "yesterday" always parses
    raise typer.Exit(retrain_job(cfg, log, day, skip_ingest, force))


@app.command("ingest")
def ingest_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None,
               sources: Annotated[list[str] | None, typer.Option(
                   "--sources", help="binance, deribit, fred (repeat or comma-separate); "
                   "default all.")] = None,
               until: Annotated[str | None, typer.Option(
                   "--until", help="Exclusive end, UTC date or ISO datetime; default now.")] = None,
               quiet: QuietOpt = False, log_json: LogJsonOpt = False) -> None:
    """Append the provider rows that closed since each file's last row.

    Exit 1 on any rejection, download error or conflict; 2 on bad arguments.
    """
    from pipelines.jobs import ingest_job

    log = _job_log("ingest", quiet, log_json)
    cfg = _config(config, data_dir, log)
    names = [n.strip() for item in sources or [] for n in item.split(",") if n.strip()] or None
    raise typer.Exit(ingest_job(cfg, log, names, until))


@app.command("report")
def report_cmd(config: ConfigOpt = None) -> None:
    """Markdown tables of the last run (forecast comparison, policy backtest, stress)."""
    from pipelines.report_md import report

    cfg = _config(config, None)
    try:
        typer.echo(report(cfg.paths.outputs_dir))
    except FileNotFoundError as exc:
        console.print(f"[red]no results yet ({exc.filename}): run `volmargin run` first[/red]")
        raise typer.Exit(1) from None


@app.command("stress")
def stress_cmd(
    as_of: Annotated[str, typer.Option("--as-of", help="Published as-of to stress, YYYY-MM-DD.")],
    book: Annotated[Path | None, typer.Option("--book", help="Book CSV/Parquet (default: "
                                              "the seeded synthetic book).")] = None,
    scenarios: Annotated[Path | None, typer.Option("--scenarios", help="YAML of stress.* "
                                                   "keys overriding the config.")] = None,
    config: ConfigOpt = None, data_dir: DataDirOpt = None, quiet: QuietOpt = False,
) -> None:
    """Stress the published parameters of --as-of over a book; publish beside them."""
    from pipelines.stress.job import print_stress, run_stress

    _quiet_libraries()
    cfg = _config(config, data_dir)
    try:
        day = dt.date.fromisoformat(as_of)
    except ValueError:
        raise typer.BadParameter(f"{as_of!r} is not a date YYYY-MM-DD",
                                 param_hint="--as-of") from None
    try:
        result = run_stress(cfg, day, book, scenarios)
    except ConfigError as exc:  # a malformed --scenarios override: exit 2, as any override
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    except (ValueError, FileNotFoundError) as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if not quiet:
        print_stress(result, console)


@app.command("ui")
def ui_cmd(config: ConfigOpt = None, port: int = 5000, workers: int = 1) -> None:
    """Start the MLflow UI on 127.0.0.1 with the project's backend and artifact store.

    Exit 1 when the port is in use; otherwise the server's status when it stops.
    """
    from pipelines.jobs import ui_job

    cfg = _config(config, None)
    raise typer.Exit(ui_job(cfg, console, port, workers))


if __name__ == "__main__":
    app()

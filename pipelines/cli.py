"""``volmargin`` command line. Thin: parse options, build the config, call a ``run``-style
function, print. No computation happens here."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipelines.config import Config, ConfigError, load_config
from pipelines.tracking import artifact_root, tracking_uri

if TYPE_CHECKING:
    from pipelines.run import RunResult

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Volatility-driven margin parameters for crypto collateral.")
# Wide enough for the parameter table when output is not a terminal (CI logs, pipes).
console = Console(width=max(shutil.get_terminal_size((120, 40)).columns, 120))

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Market data directory.")]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="Publish date YYYY-MM-DD.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def _config(config: Path | None, data_dir: Path | None) -> Config:
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if data_dir is not None:
        cfg = cfg.with_overrides({"paths.data_dir": str(data_dir)})
    return cfg


def _as_of(text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        console.print(f"[red]--as-of {text!r} is not a date YYYY-MM-DD[/red]")
        raise typer.Exit(2) from None


def _quiet_libraries() -> None:
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


@app.command("run")
def run_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_of: AsOfOpt = None,
            quiet: QuietOpt = False) -> None:
    """Features → backtest → select → register @champion → publish parameters."""
    from pipelines.run import run

    _quiet_libraries()
    cfg = _config(config, data_dir)
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn(
            "{task.completed}/{task.total}"), TimeElapsedColumn(), console=console,
            disable=quiet, transient=False) as bar:
        tasks: dict[str, int] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=max(total, 1))
            bar.update(tasks[step], completed=done if total > 1 else 1)

        result = run(cfg, _as_of(as_of), progress)
    _print_summary(cfg, result)


def _print_summary(cfg: Config, result: RunResult) -> None:
    qt = Table(title=f"Out-of-sample QLIKE, mean over assets (lower is better; selection at "
               f"h={cfg.selection.horizon}d)")
    qt.add_column("model")
    for horizon in sorted(result.table["horizon_days"].unique()):
        qt.add_column(f"h={horizon}d", justify="right")
    means = result.table.groupby(["model", "horizon_days"])["qlike"].mean().unstack()
    for model in result.ranking.index:
        mark = " (selected)" if model == result.selected else ""
        qt.add_row(model + mark, *[f"{v:.4f}" for v in means.loc[model]])
    console.print(qt)
    params = result.served.parameters
    pt = Table(title=f"Parameters as of {params['as_of'].iloc[0]} "
               f"({cfg.registry.model_name} v{result.model_version}, @champion)")
    for col in ("asset", "σ 1d", "ES99 1d", "MMF", "IMF", "LT", "max LTV", "LB", "max lev",
                "flags"):
        pt.add_column(col, justify="left" if col in ("asset", "flags") else "right")
    for r in params.itertuples():
        flags = ",".join(f for f, on in (("fallback", r.flag_fallback), ("stale", r.flag_stale),
                                         ("clamped", r.flag_clamped)) if on)
        pt.add_row(r.asset, f"{r.sigma_1d:.2%}", f"{r.es_99:.2%}", f"{r.mmf:.2%}",
                   f"{r.imf:.2%}", f"{r.lt:.2%}", f"{r.ltv:.2%}", f"{r.lb:.4f}",
                   f"{r.max_leverage:.1f}x", flags)
    console.print(pt)
    console.print(f"Published: {result.served.published.path}")
    console.print(f"MLflow:    sqlite:///{Path(cfg.paths.mlruns_dir).as_posix()}/mlflow.db — "
                  "open with `volmargin ui` (http://127.0.0.1:5000)")


@app.command("serve")
def serve_cmd(config: ConfigOpt = None, data_dir: DataDirOpt = None, as_of: AsOfOpt = None,
              quiet: QuietOpt = False) -> None:
    """Publish the @champion policy's parameters as of a date."""
    from pipelines.registry import ChampionMissingError
    from serving.serve import serve

    _quiet_libraries()
    cfg = _config(config, data_dir)
    try:
        result = serve(cfg, _as_of(as_of))
    except ChampionMissingError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    state = "published" if result.published.created else "already published (identical, no-op)"
    if not quiet:
        console.print(f"{state}: {result.published.path} "
                      f"({len(result.parameters)} assets, model v{result.model_version})")


registry_app = typer.Typer(no_args_is_help=True, help="Registry governance: history, rollback.")
app.add_typer(registry_app, name="registry")


def _registry_setup(config: Path | None) -> Config:
    from pipelines.tracking import setup

    _quiet_libraries()
    cfg = _config(config, None)
    setup(cfg)
    return cfg


@registry_app.command("history")
def registry_history(config: ConfigOpt = None, alias: str = "champion") -> None:
    """Every move of an alias (default @champion): when, which version, why."""
    from pipelines.registry import alias_history

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
    from pipelines.registry import version_at

    cfg = _registry_setup(config)
    stamp = dt.datetime.fromisoformat(when)
    if len(when) == 10:  # a bare date means the end of that UTC day
        stamp = stamp + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    version = version_at(cfg.registry.model_name, stamp, alias)
    if version is None:
        console.print(f"no @{alias} at {when}")
        raise typer.Exit(1)
    console.print(f"{cfg.registry.model_name}@{alias} at {when}: version {version}")


@registry_app.command("rollback")
def registry_rollback(version: str, reason: Annotated[str, typer.Option(
        "--reason", help="Why (recorded in the history).")], config: ConfigOpt = None) -> None:
    """Point @champion back at an earlier version."""
    from pipelines.registry import rollback

    cfg = _registry_setup(config)
    rollback(cfg.registry.model_name, version, reason)
    console.print(f"{cfg.registry.model_name}@champion → version {version}")


@app.command("ui")
def ui_cmd(config: ConfigOpt = None, port: int = 5000) -> None:
    """Start the MLflow UI on 127.0.0.1 with the project's backend and artifact store."""
    cfg = _config(config, None)
    artifact_root(cfg.paths.mlruns_dir).mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", tracking_uri(cfg.paths.mlruns_dir),
           "--default-artifact-root", artifact_root(cfg.paths.mlruns_dir).resolve().as_uri()]
    console.print(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)")
    raise typer.Exit(subprocess.call(cmd))


if __name__ == "__main__":
    app()

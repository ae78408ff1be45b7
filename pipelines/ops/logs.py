"""How the scheduled jobs (``serve``, ``retrain``, ``ingest``) report: readable lines and rich
progress bars for a person at a terminal, one JSON object per line for a scheduler.

JSON lines are chosen with ``--log-json`` or ``VOLMARGIN_LOG_JSON=1`` (the units in
``deploy/`` set it) and go to stdout, where journald or cron's mail capture them. Each line::

    {"ts": "2025-07-01T00:15:03.120+00:00", "level": "info", "job": "serve",
     "step": "publish", "message": "published ...", "as_of": "2025-06-30", "assets": 12,
     "fallbacks": 1, "version": "3"}

``ts``, ``level``, ``job``, ``step`` and ``message`` are always present; the key figures of
the step follow as top-level keys, so ``jq 'select(.level=="error")'`` or a log pipeline can
alert on them without parsing text. Warnings and errors are printed even with ``--quiet``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

LOG_JSON_ENV = "VOLMARGIN_LOG_JSON"

ProgressFn = Callable[[str, int, int], None]


def json_requested(flag: bool, environ: dict[str, str] | None = None) -> bool:
    """``--log-json`` given, or ``VOLMARGIN_LOG_JSON`` set to a true value."""
    value = (os.environ if environ is None else environ).get(LOG_JSON_ENV, "")
    return flag or value.strip().lower() in {"1", "true", "yes", "on"}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ms), level, job, step, message, figures."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "job": getattr(record, "job", None),
            "step": getattr(record, "step", None),
            "message": record.getMessage(),
        }
        for key, value in getattr(record, "figures", {}).items():
            entry.setdefault(key, value)  # figures never overwrite the fixed keys
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _ConsoleHandler(logging.Handler):
    """Plain lines on the rich console; warnings yellow, errors red; info muted by quiet."""

    def __init__(self, console: Console, quiet: bool) -> None:
        super().__init__()
        self.console, self.quiet = console, quiet

    def emit(self, record: logging.LogRecord) -> None:
        if self.quiet and record.levelno < logging.WARNING:
            return
        style = "red" if record.levelno >= logging.ERROR else (
            "yellow" if record.levelno >= logging.WARNING else None)
        # markup off: messages carry paths and lists whose brackets are not rich markup
        self.console.print(record.getMessage(), style=style, markup=False, highlight=False,
                           soft_wrap=True)


class JobLog:
    """The reporting channel of one job run.

    Parameters
    ----------
    job : str
        ``serve``, ``retrain`` or ``ingest``; every JSON line carries it.
    console : Console
        Where human-readable lines and progress bars go.
    json_lines : bool
        One JSON object per line on stdout instead of text and progress bars.
    quiet : bool
        Text mode only: no progress bars and no info lines (warnings and errors still print).
    """

    def __init__(self, job: str, console: Console, *, json_lines: bool = False,
                 quiet: bool = False) -> None:
        self.job, self.console = job, console
        self.json_lines, self.quiet = json_lines, quiet
        self._logger = logging.getLogger(f"volmargin.job.{job}")
        self._logger.setLevel(logging.INFO)
        self._logger.propagate = False  # the root logger's handlers would print it twice
        for handler in list(self._logger.handlers):  # one JobLog per run, even in one process
            self._logger.removeHandler(handler)
        if json_lines:
            handler: logging.Handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(JsonLinesFormatter())
        else:
            handler = _ConsoleHandler(console, quiet)
        self._logger.addHandler(handler)

    def info(self, step: str, message: str, **figures: Any) -> None:
        self._log(logging.INFO, step, message, figures)

    def warning(self, step: str, message: str, **figures: Any) -> None:
        self._log(logging.WARNING, step, message, figures)

    def error(self, step: str, message: str, **figures: Any) -> None:
        self._log(logging.ERROR, step, message, figures)

    def _log(self, level: int, step: str, message: str, figures: dict[str, Any]) -> None:
        self._logger.log(level, message,
                         extra={"job": self.job, "step": step, "figures": figures})

    @contextlib.contextmanager
    def progress(self) -> Iterator[ProgressFn]:
        """A ``progress(step, done, total)`` callback: rich bars in text mode, one "started"
        JSON line per step in JSON mode (a scheduler wants where it stopped, not ticks)."""
        if self.json_lines:
            seen: set[str] = set()

            def announce(step: str, done: int, total: int) -> None:
                if step not in seen:
                    seen.add(step)
                    self.info(step, f"{step}: started", total=total)

            yield announce
            return
        if self.quiet:
            yield lambda step, done, total: None
            return
        with Progress(TextColumn("{task.description:<28}"), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                      console=self.console, transient=False) as bar:
            tasks: dict[str, Any] = {}

            def update(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=max(total, 1))
                bar.update(tasks[step], completed=done if total > 1 else 1)

            yield update

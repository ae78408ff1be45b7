"""One run at a time per job: a non-blocking file lock (``filelock``) under ``outputs/``.

``volmargin serve`` and ``volmargin retrain`` each take their own lock
(``outputs/.serve.lock``, ``outputs/.retrain.lock``): a timer firing while a manual run (or a
slow previous run) is still going must not publish or register twice. ``volmargin run`` and
``volmargin tail`` take the retrain's lock too (the training jobs: they write
``outputs/backtest`` / ``outputs/tail`` and register versions), and ``run``'s serve step then
the serve's. The two jobs do not
exclude each other: a weekly retrain may take many minutes and must not make the daily
publication fail; what they share is written atomically by its owners (the feature store),
and alias moves of the MLflow registry with their history entries are serialized by a short
blocking lock beside the store (:func:`serving.ops.registry.alias_lock`), a promotion being a
compare-and-set against the champion its gate judged.

The lock is :class:`filelock.FileLock`, which on POSIX is an ``flock`` on the lock file: the
kernel releases it when the holder dies, even on SIGKILL or power loss, so a crashed run never
blocks the next one and no stale-lock cleanup exists. Two options matter:

- ``preserve_lock_file=True``: the file is never deleted (deleting it would let two runs lock
  two different inodes), and filelock never falls back to a "soft" marker file, which a
  SIGKILLed holder would leave behind;
- ``on_acquired``: the winner writes its pid and start time into the locked file, for the
  message a second run prints. filelock opens an existing lock file without truncating it, so
  a loser never wipes the holder's record before reading it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock

EX_TEMPFAIL = 75  # sysexits.h: "try again later", what a scheduler should read from a clash


class LockHeldError(RuntimeError):
    """Another process holds the job's lock; nothing was done."""

    def __init__(self, path: Path, holder: dict[str, object]) -> None:
        self.path = path
        self.holder = holder
        pid = holder.get("pid", "unknown")
        since = f" since {holder['since']}" if holder.get("since") else ""
        super().__init__(
            f"another volmargin {holder.get('job', 'run')} holds the lock {path} "
            f"(pid {pid}{since}); nothing was done. Wait for it to finish, or check that "
            f"pid {pid} is really volmargin before stopping it.")


def training_lock(outputs_dir: Path, job: str) -> contextlib.AbstractContextManager[Path]:
    """The training jobs' one lock (``outputs/.retrain.lock``), held by ``job`` (``retrain``,
    ``run``, ``tail``): they write the backtest outputs and register versions."""
    return exclusive(lock_path(outputs_dir, "retrain"), job)


def lock_path(outputs_dir: Path, job: str) -> Path:
    """The lock file of ``job`` (``serve``, ``retrain``) under the outputs directory."""
    return Path(outputs_dir) / f".{job}.lock"


def _record_holder(job: str) -> Callable[[int], None]:
    """filelock ``on_acquired`` callback: the holder record, written through the locked fd."""

    def write(fd: int) -> None:
        record = json.dumps({
            "job": job, "pid": os.getpid(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "argv": sys.argv,
        }) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)

    return write


@contextlib.contextmanager
def exclusive(path: Path, job: str) -> Iterator[Path]:
    """Hold ``path`` exclusively for the ``with`` block, or raise :class:`LockHeldError` at once.

    Parameters
    ----------
    path : Path
        Lock file; created (with its directory) if missing, never deleted.
    job : str
        Name written for the message a competing run prints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, timeout=0, preserve_lock_file=True,
                             on_acquired=_record_holder(job))
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockHeldError(path, _holder(path)) from None
    try:
        yield path
    finally:
        lock.release()


@contextlib.contextmanager
def waiting(path: Path, job: str, timeout_s: float) -> Iterator[Path]:
    """Hold ``path`` for the ``with`` block, waiting up to ``timeout_s`` for another holder
    (:class:`filelock.Timeout` past it): for short critical sections that must not fail
    because another process is in one (the registry's alias moves), where :func:`exclusive`
    is for whole jobs that must not run twice."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(path, timeout=timeout_s, preserve_lock_file=True,
                           on_acquired=_record_holder(job)):
        yield path


def _holder(path: Path) -> dict[str, object]:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}  # the holder has opened the file but not written its pid yet

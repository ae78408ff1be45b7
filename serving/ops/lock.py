"""One run at a time per job: a non-blocking ``flock`` on a lock file under ``outputs/``.

``volmargin serve`` and ``volmargin retrain`` each take their own lock
(``outputs/.serve.lock``, ``outputs/.retrain.lock``): a timer firing while a manual run (or a
slow previous run) is still going must not publish or register twice. The two jobs do not
exclude each other: a weekly retrain may take many minutes and must not make the daily
publication fail; what they share (the feature store, the MLflow registry) is written
atomically by its owners.

Why ``flock`` and not a PID file: the kernel releases the lock when the holder dies, even on
SIGKILL or power loss, so a crashed run never blocks the next one and no stale-lock cleanup
exists. The lock file itself stays (deleting it would let two runs lock two different inodes);
it holds the holder's pid and start time for the message a second run prints. POSIX only,
like the systemd and cron units in ``deploy/``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

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


def lock_path(outputs_dir: Path, job: str) -> Path:
    """The lock file of ``job`` (``serve``, ``retrain``) under the outputs directory."""
    return Path(outputs_dir) / f".{job}.lock"


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
    # "a+": create without truncating, so a loser never wipes the holder's pid before reading it
    handle = open(path, "a+")  # noqa: SIM115 - must stay open as long as the lock is held
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LockHeldError(path, _holder(handle.read())) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({
            "job": job, "pid": os.getpid(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "argv": sys.argv,
        }) + "\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the descriptor releases the flock


def _holder(text: str) -> dict[str, object]:
    try:
        holder = json.loads(text)
        return holder if isinstance(holder, dict) else {}
    except ValueError:
        return {}  # the holder has opened the file but not written its pid yet

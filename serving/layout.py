"""Where published partitions live, how revisions are named, and the ``LATEST`` pointer.

::

    root/                                     e.g. outputs/forecasts
        asof=2025-06-29/                      revision 1 of each day: the original publication
        asof=2025-06-30/
        _revisions/asof=2025-06-30/rev=2/     later revisions (``volmargin serve --force``)
        LATEST                                JSON pointer to the newest day's newest revision
        .staging-*                            writes in flight (or left by a crash); never read

Every partition directory, original or revision, holds the same files (``parameters.parquet``,
``parameters.csv``, ``updates.json``, ``manifest.json``, ``_SUCCESS``), so
:func:`serving.publish.read_partition` reads either.

**Why revisions live under ``_revisions/``.** An ``asof=D`` directory is immutable, so a
revision cannot be added inside it (a recursive reader of ``asof=D`` would also get both).
A sibling such as ``asof=D.rev2`` would be picked up by readers that glob ``asof=*`` (an
unparsable date) or read the root as a Hive-partitioned dataset (duplicate rows). Paths
starting with ``_`` or ``.`` are skipped by pyarrow datasets and Spark, and match neither
``asof=*`` nor :func:`list_partitions`, so a reader of ``asof=D`` sees exactly what it saw
before the revision. Readers that want the newest revision of a day use
:func:`current_partition`; readers that want "what to apply now" follow ``LATEST``.

**Why ``LATEST`` is a small JSON file and not a symlink.** It is replaced with one
``os.replace`` of a fully written, fsynced temporary file (atomic on POSIX and on Windows),
works on filesystems and object-store syncs without symlinks, and carries the hash of the
``_SUCCESS`` it points at, so a reader can check that what it read is what ``LATEST``
vouched for. It only moves forward in (as_of, revision): back-filling an older day never
moves it back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

SUCCESS_NAME = "_SUCCESS"
LATEST_NAME = "LATEST"
REVISIONS_DIR = "_revisions"
STAGING_PREFIX = ".staging-"

_PARTITION_RE = re.compile(r"^asof=(\d{4}-\d{2}-\d{2})$")
_REVISION_RE = re.compile(r"^rev=([1-9]\d*)$")


def partition_dir(root: Path, as_of: dt.date, revision: int = 1) -> Path:
    """The directory of revision ``revision`` of the ``as_of`` partition under ``root``.

    Revision 1 is ``root/asof=D``; revision n > 1 is ``root/_revisions/asof=D/rev=n``.
    """
    if revision < 1:
        raise ValueError(f"revision must be >= 1, got {revision}")
    name = f"asof={as_of.isoformat()}"
    if revision == 1:
        return Path(root) / name
    return Path(root) / REVISIONS_DIR / name / f"rev={revision}"


def list_partitions(root: Path) -> dict[dt.date, Path]:
    """Return the published partitions (revision 1) under ``root`` by as-of day, oldest first.

    Only ``asof=YYYY-MM-DD`` directories holding ``_SUCCESS`` count: staging leftovers and
    half-copied directories are skipped. Integrity is checked later by
    :func:`serving.publish.read_partition`.
    """
    root = Path(root)
    found = {}
    for child in root.iterdir() if root.is_dir() else []:
        match = _PARTITION_RE.match(child.name)
        if match and (child / SUCCESS_NAME).is_file():
            found[dt.date.fromisoformat(match.group(1))] = child
    return dict(sorted(found.items()))


def list_revisions(root: Path, as_of: dt.date) -> dict[int, Path]:
    """Every complete revision of the ``as_of`` partition, oldest first (empty if none)."""
    first = partition_dir(root, as_of)
    if not (first / SUCCESS_NAME).is_file():
        return {}
    found = {1: first}
    later = Path(root) / REVISIONS_DIR / first.name
    for child in later.iterdir() if later.is_dir() else []:
        match = _REVISION_RE.match(child.name)
        if match and (child / SUCCESS_NAME).is_file():
            found[int(match.group(1))] = child
    return dict(sorted(found.items()))


def current_partition(root: Path, as_of: dt.date) -> tuple[int, Path] | None:
    """The newest complete revision of ``as_of`` as ``(revision, path)``, or None."""
    revisions = list_revisions(root, as_of)
    return max(revisions.items()) if revisions else None


def current_partitions(root: Path) -> dict[dt.date, tuple[int, Path]]:
    """The newest complete revision of every published day, oldest day first."""
    out = {}
    for day in list_partitions(root):
        newest = current_partition(root, day)
        if newest is not None:
            out[day] = newest
    return out


def relative(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators, as stored in manifests and LATEST."""
    return Path(path).relative_to(root).as_posix()


def read_latest(root: Path) -> dict[str, Any] | None:
    """The ``LATEST`` pointer of ``root`` (see :func:`latest_json_schema`), or None."""
    try:
        return json.loads((Path(root) / LATEST_NAME).read_text())
    except FileNotFoundError:
        return None


def advance_latest(root: Path, as_of: dt.date, revision: int, path: Path,
                   success_sha256: str) -> bool:
    """Point ``LATEST`` at ``path`` unless it already points at a newer (as_of, revision).

    Without a valid pointer (none, or its partition gone) it points at the newest published
    partition, this one or a newer one. Callers serialize through the serve lock; the replace
    itself is atomic either way. Returns True when the pointer was written.
    """
    root = Path(root)
    current = read_latest(root)
    if current is not None and (root / current["path"] / SUCCESS_NAME).is_file():
        if (current["as_of"], current["revision"]) > (as_of.isoformat(), revision):
            return False
        if current["path"] == relative(root, path) and current["success_sha256"] == success_sha256:
            return False
    else:  # no pointer, or one whose partition is gone: point at the newest published
        # partition, never back past it (a back-fill after the pointer was lost)
        newest = max(current_partitions(root).items(), default=None)
        if newest is not None and (newest[0], newest[1][0]) > (as_of, revision):
            as_of, (revision, path) = newest
            success_sha256 = (path / SUCCESS_NAME).read_text().strip()
    pointer = {"as_of": as_of.isoformat(), "revision": revision, "path": relative(root, path),
               "success_sha256": success_sha256,
               "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    tmp = root / f"{STAGING_PREFIX}{LATEST_NAME}-{secrets.token_hex(6)}"
    try:
        with open(tmp, "x") as handle:
            handle.write(json.dumps(pointer, indent=2, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, root / LATEST_NAME)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(root)
    return True


def sweep_staging(root: Path) -> list[str]:
    """Remove what crashed writers left under ``root`` (``.staging-*``); returns the names.

    Only safe while holding the serve lock: then no live writer owns a staging entry.
    """
    root = Path(root)
    removed = []
    for child in sorted(root.glob(f"{STAGING_PREFIX}*")) if root.is_dir() else []:
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child.name)
    return removed


# Temporary files our writers name ``.<final name>.tmp-<pid>`` (features/store.py, the retrain
# marker): removable once that pid is gone. Panels are ``panel-<16 hex>.parquet`` with a
# ``.json`` sidecar written right after; a panel alone for longer than ORPHAN_AGE_S is a crash's.
_TMP_RE = re.compile(r"^\..+\.tmp-(\d+)$")
_PANEL_RE = re.compile(r"^panel-[0-9a-f]{16}\.parquet$")
ORPHAN_AGE_S = 60.0


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (a pid too large to exist does not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


def step_outputs(directory: Path) -> Path:
    """``directory`` (a step's outputs: ``outputs/backtest``, ``outputs/tail``) made and
    emptied of its files: a step's outputs are its own; an earlier run's left beside them (a
    step that did not complete this time, a table this run has no rows for) would be read as
    this run's by ``volmargin report`` and the tail step (each is in its own MLflow run)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():
        if stale.is_file():
            stale.unlink()
    return directory


def sweep_outputs(outputs_dir: Path, now: float | None = None) -> list[str]:
    """Remove what killed runs left under ``outputs/features`` and ``outputs/retrain``.

    Only our own files, by name: ``.<name>.tmp-<pid>`` whose process is gone, and feature
    panels without their sidecar older than :data:`ORPHAN_AGE_S` (the panel is rebuilt on
    demand). Returns the paths removed, relative to ``outputs_dir``. Safe without a lock: a
    live writer's temporary file carries a live pid, and its sidecar follows the panel at once.
    """
    root = Path(outputs_dir)
    now = time.time() if now is None else now
    removed = []
    for sub in ("features", "retrain"):
        directory = root / sub
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            tmp = _TMP_RE.match(path.name)
            orphan = (sub == "features" and _PANEL_RE.match(path.name) is not None
                      and not path.with_suffix(".json").exists()
                      and now - path.stat().st_mtime > ORPHAN_AGE_S)
            if (tmp and not pid_alive(int(tmp.group(1)))) or orphan:
                path.unlink(missing_ok=True)
                removed.append(path.relative_to(root).as_posix())
    return removed


def fsync_dir(directory: Path) -> None:
    """fsync a directory so renames and new entries in it survive a power loss (POSIX)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest_json_schema() -> dict[str, Any]:
    """JSON Schema of the ``LATEST`` pointer file."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:volmargin:latest:v1",
        "title": "volmargin LATEST pointer",
        "description": "Names the newest published partition (newest as-of day, newest "
                       "revision). Replaced atomically; only moves forward.",
        "type": "object",
        "properties": {
            "as_of": {"type": "string", "format": "date",
                      "description": "As-of day of the partition pointed at."},
            "revision": {"type": "integer", "minimum": 1,
                         "description": "1 for asof=D, n for _revisions/asof=D/rev=n."},
            "path": {"type": "string", "description": "Partition directory relative to the "
                     "root holding LATEST, '/'-separated."},
            "success_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                               "description": "Content of the partition's _SUCCESS (sha256 "
                               "of its manifest.json) when LATEST was written."},
            "updated_at": {"type": "string", "format": "date-time",
                           "description": "When LATEST was written (UTC)."},
        },
        "required": ["as_of", "revision", "path", "success_sha256", "updated_at"],
        "additionalProperties": False,
    }

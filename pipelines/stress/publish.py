"""Write a stress result beside the published parameters, never inside them.

::

    outputs/forecasts/
        asof=2025-06-30/                      parameters (immutable, untouched)
        _stress/asof=2025-06-30/rev=1/        stress.parquet, stress_summary.json,
                                              manifest.json, _SUCCESS
        _stress/asof=2025-06-30/rev=2/        a later stress run with another book/scenarios

**Why a sibling ``_stress/`` tree.** A published ``asof=D`` directory is immutable and its
``_SUCCESS`` vouches for its manifest: adding files inside it (even a ``stress/`` sub-directory)
would change what a recursive reader of ``asof=D`` gets after publication. A stress run is
also not unique per day — a new book or scenario set is a new result — so it needs its own
revisions. The ``_`` prefix keeps it out of ``asof=*`` globs, :func:`serving.layout
.list_partitions` and pyarrow/Spark dataset discovery, exactly like ``_revisions/``. Each
stress revision has its own manifest (sha256, bytes and rows per file, and the parameters
partition it stressed with that partition's ``_SUCCESS`` hash) and ``_SUCCESS`` written last,
in a staging directory renamed into place (the same commit protocol as
:mod:`serving.publish`). Rerunning with identical results is a no-op.

**Staging left by a killed run.** The stress job takes no lock (two stress runs of one day
are serialized by the rename: the second one's ``rev=n`` exists and it fails), so a staging
directory cannot be swept as "any staging is dead" the way the serve does under its lock.
Its name carries the writer's pid (``.staging-rev=<n>-<pid>-<hex>``), and each publication
first removes the staging directories of its day whose writer is gone
(:func:`sweep_dead_staging`). **One host only**, as for the features' temporary files: a pid
is only meaningful on the host that wrote it, so stress runs of one ``outputs/`` shared by
several hosts (a network file system, containers with their own pid namespaces) could
remove each other's live staging; run the stress job of a shared ``outputs/`` from one host.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.stress.report import STRESS_SCHEMA_VERSION
from serving.layout import STAGING_PREFIX, SUCCESS_NAME, fsync_dir, pid_alive

logger = logging.getLogger(__name__)

STRESS_DIR = "_stress"
STRESS_PARQUET = "stress.parquet"
SUMMARY_NAME = "stress_summary.json"
MANIFEST_NAME = "manifest.json"


def stress_dir(root: Path, as_of: dt.date, revision: int) -> Path:
    return Path(root) / STRESS_DIR / f"asof={as_of.isoformat()}" / f"rev={revision}"


def list_stress(root: Path, as_of: dt.date) -> dict[int, Path]:
    """Complete stress revisions of ``as_of`` (holding ``_SUCCESS``), oldest first."""
    base = Path(root) / STRESS_DIR / f"asof={as_of.isoformat()}"
    found = {}
    for child in base.iterdir() if base.is_dir() else []:
        if child.name.startswith("rev=") and (child / SUCCESS_NAME).is_file():
            found[int(child.name[4:])] = child
    return dict(sorted(found.items()))


def publish_stress(table: pa.Table, summary: dict[str, Any], root: Path, as_of: dt.date,
                   code_version: str | None = None) -> tuple[Path, bool]:
    """Publish a stress result for ``as_of``; returns (directory, created).

    An identical newest revision (same rows, same summary) is a no-op; anything else becomes
    the next revision. Nothing is ever overwritten.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(
        {b"schema_version": STRESS_SCHEMA_VERSION.encode()}), sink)
    payloads = {STRESS_PARQUET: sink.getvalue().to_pybytes(), SUMMARY_NAME: _json(summary)}
    existing = list_stress(root, as_of)
    if existing:
        newest = max(existing)
        if _same(existing[newest], payloads):
            return existing[newest], False
    revision = max(existing, default=0) + 1
    final = stress_dir(root, as_of, revision)
    manifest = {"as_of": as_of.isoformat(), "revision": revision,
                "schema_version": STRESS_SCHEMA_VERSION, "code_version": code_version,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "parameters": summary.get("parameters"),
                "files": {STRESS_PARQUET: _entry(payloads[STRESS_PARQUET], table.num_rows),
                          SUMMARY_NAME: _entry(payloads[SUMMARY_NAME],
                                               len(summary.get("scenarios", [])))}}
    payloads[MANIFEST_NAME] = _json(manifest)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_staging(final.parent)
    staging = final.parent / (f"{STAGING_PREFIX}{final.name}-{os.getpid()}-"
                              f"{secrets.token_hex(8)}")
    os.mkdir(staging)
    try:
        for name, data in payloads.items():
            _write(staging / name, data)
        fsync_dir(staging)
        _write(staging / SUCCESS_NAME, (_sha(payloads[MANIFEST_NAME]) + "\n").encode())
        fsync_dir(staging)
        os.rename(staging, final)  # a concurrent writer's rev=n makes this raise: never replace
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(final.parent)
    return final, True


_STAGING_RE = re.compile(rf"^{re.escape(STAGING_PREFIX)}rev=\d+-(\d+)-[0-9a-f]+$")


def sweep_dead_staging(base: Path) -> list[str]:
    """Remove the staging directories under one day's ``_stress/asof=D`` whose writer (the
    pid in the name) is no longer running; returns their names. A live writer's staging, and
    anything not named by this module, is left alone."""
    removed = []
    for child in sorted(Path(base).iterdir()) if Path(base).is_dir() else []:
        match = _STAGING_RE.match(child.name)
        if match and child.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    if removed:
        logger.info("removed staging left by killed stress runs under %s: %s", base,
                    ", ".join(removed))
    return removed


def read_stress(path: Path) -> tuple[pa.Table, dict[str, Any], dict[str, Any]]:
    """(table, summary, manifest) of a stress revision after checking every sha256."""
    path = Path(path)
    manifest_bytes = (path / MANIFEST_NAME).read_bytes()
    if (path / SUCCESS_NAME).read_text().strip() != _sha(manifest_bytes):
        raise ValueError(f"{path / MANIFEST_NAME} does not match {path / SUCCESS_NAME}")
    manifest = json.loads(manifest_bytes)
    files = {name: (path / name).read_bytes() for name in manifest["files"]}
    for name, data in files.items():
        if _sha(data) != manifest["files"][name]["sha256"]:
            raise ValueError(f"{path / name} is corrupt: sha256 differs from {MANIFEST_NAME}")
    table = pq.read_table(pa.BufferReader(files[STRESS_PARQUET]))
    return table, json.loads(files[SUMMARY_NAME]), manifest


def _same(path: Path, payloads: dict[str, bytes]) -> bool:
    table, summary, _ = read_stress(path)
    new = pq.read_table(pa.BufferReader(payloads[STRESS_PARQUET]))
    return table.equals(new) and summary == json.loads(payloads[SUMMARY_NAME])


def _entry(data: bytes, rows: int) -> dict[str, Any]:
    return {"sha256": _sha(data), "bytes": len(data), "rows": rows}


def _json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(file: Path, data: bytes) -> None:
    with open(file, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())

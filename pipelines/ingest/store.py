"""Append-only writer for the raw market files: history is never rewritten.

One page of incoming rows is offered to one file at a time (:func:`append_page`):

1. the stored file is read and validated with the project's loaders (a corrupt store is
   reported, never extended);
2. the incoming rows are validated alone with :func:`features.validation.validate_frame`
   (a malformed payload, e.g. a non-positive price, rejects the whole page);
3. each incoming row is classified against the stored rows
   (:func:`classify`): identical to a stored row → skipped; same timestamp, other values →
   *conflict*, reported, stored value kept; absent but older than the last stored row →
   *gap-fill candidate*, refused (filling it would change what earlier runs saw, and
   features are point-in-time); newer than the last stored row → to append;
4. the stored tail (last row) + the rows to append are validated again as one frame, so the
   boundary (order, uniqueness, grid) is checked with the same rules;
5. the file is rewritten as *old bytes + new lines*: the decompressed text of the stored
   file is kept byte for byte, the new lines are added, the result is written to a temp file
   in the same directory, fsynced and moved over the old one with :func:`os.replace`
   (atomic on POSIX). A gzip file cannot be appended to safely in place. An append receipt
   (:mod:`features.append_receipts`) records that the new file only grew, so the candle
   cache reads only its new bytes.

Each page is committed on its own, so the file itself is the journal: an interrupted run
leaves the file at its last committed page, and the next run resumes from its last row.
A lock on the data directory (:func:`data_dir_lock`) keeps two concurrent ingests from
losing each other's pages.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import filelock
import numpy as np
import pandas as pd

from features import append_receipts
from features.candle_records import identity
from features.loaders import (
    SUFFIXES,
    TIMESTAMP_FORMAT,
    load_daily,
    load_dvol,
    load_hourly,
    load_macro,
)
from features.validation import DataValidationError, validate_frame
from pipelines.ingest.base import Target
from pipelines.ingest.plausibility import Held, PlausibilitySettings, screen
from pipelines.ingest.report import AppendResult, Conflict

__all__ = [
    "append_page",
    "classify",
    "column_mismatch",
    "data_dir_lock",
    "last_timestamp",
    "locate",
    "record_held",
]

LOADERS = {"daily": load_daily, "hourly": load_hourly, "dvol": load_dvol, "macro": load_macro}
LOCK_TIMEOUT_S = 600.0


def locate(data_dir: Path, target: Target) -> Path:
    """The stored file for ``target`` (any of the loader's suffixes), else a new ``.csv.gz``."""
    for suffix in SUFFIXES:
        path = data_dir / f"{target.relpath}{suffix}"
        if path.is_file():
            return path
    return data_dir / f"{target.relpath}.csv.gz"


def _read_stored(path: Path, kind: str) -> pd.DataFrame | None:
    """The stored file, validated, indexed by stamp; None if it does not exist."""
    if not path.is_file():
        return None
    return LOADERS[kind](path)


def last_timestamp(path: Path, kind: str) -> pd.Timestamp | None:
    """Last stored stamp (validated read), or None when the file does not exist."""
    stored = _read_stored(path, kind)
    if stored is None or stored.empty:
        return None
    return pd.Timestamp(stored.index[-1])


def format_rows(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Cells as written to the file: ISO 8601 UTC stamps, shortest round-trip floats."""
    out = pd.DataFrame({"timestamp": rows["timestamp"].dt.strftime(TIMESTAMP_FORMAT)})
    for name in columns:
        out[name] = [repr(float(x)) for x in rows[name]]
    return out.reset_index(drop=True)


def classify(
    stored: pd.DataFrame, incoming: pd.DataFrame, columns: list[str], rtol: float
) -> tuple[pd.DataFrame, AppendResult]:
    """Split incoming rows into new ones (returned) and skipped/refused ones (in the result).

    Parameters
    ----------
    stored : DataFrame
        Stored rows indexed by stamp (as the loaders return them), sorted.
    incoming : DataFrame
        Rows with a ``timestamp`` column, sorted and unique (validated).
    columns : list of str
        Columns compared (those of the file, ``timestamp`` excluded).
    rtol : float
        Relative tolerance: ``|incoming - stored| <= rtol * |stored|`` counts as identical.

    Returns
    -------
    (DataFrame, AppendResult)
        Rows newer than the last stored row, and the counts/lists for the others.
    """
    result = AppendResult()
    last = stored.index[-1] if len(stored) else None
    known = incoming["timestamp"].isin(stored.index)
    for _, row in incoming.loc[known].iterrows():
        stamp = row["timestamp"]
        before = len(result.conflicts)
        for name in columns:
            old, new = float(stored.at[stamp, name]), float(row[name])
            if not np.isclose(new, old, rtol=rtol, atol=0.0):
                text = stamp.strftime(TIMESTAMP_FORMAT)
                result.conflicts.append(Conflict(text, name, old, new))
        result.duplicates += int(len(result.conflicts) == before)
    if last is None:
        older = pd.Series(False, index=incoming.index)
    else:
        older = ~known & (incoming["timestamp"] < last)
    result.gap_candidates = list(incoming.loc[older, "timestamp"].dt.strftime(TIMESTAMP_FORMAT))
    return incoming.loc[~known & ~older].reset_index(drop=True), result


def _validation_failure(
    frame: pd.DataFrame, columns: list[str], label: str, target: Target
) -> str | None:
    """The project's validators (:mod:`features.validation`) on rows as they would be written;
    the reason for refusing the batch, or None. Line numbers count within ``frame``."""
    raw = format_rows(frame, columns)
    parsed = raw.copy()
    parsed["timestamp"] = frame["timestamp"].to_numpy()
    try:
        validate_frame(parsed, raw, Path(label), target.kind, target.prices_positive)
    except DataValidationError as err:
        return f"batch rejected, nothing written: {err}"
    return None


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Exclusive lock (:class:`filelock.FileLock`, an ``flock``) on ``data_dir/.ingest.lock``.

    Two concurrent runs would otherwise both read a file, both append, and the second rename
    would silently drop the first run's rows. The lock is a dot-file, which the loaders skip;
    the kernel releases it when the process exits, even on SIGKILL. ``preserve_lock_file``
    keeps the file (and rules out filelock's "soft" marker fallback, which a killed run would
    leave behind).

    Raises
    ------
    TimeoutError
        Another process held the lock for more than ``timeout_s`` seconds.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = data_dir / ".ingest.lock"
    lock = filelock.FileLock(lock_path, timeout=timeout_s, preserve_lock_file=True)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise TimeoutError(
            f"{lock_path} is held by another ingest for > {timeout_s:g} s; "
            "nothing was written. Retry when it has finished."
        ) from None
    try:
        yield lock_path
    finally:
        lock.release()


def record_held(data_dir: Path, file: str, until: str, held: list[Held]) -> Path:
    """Append one JSON line per held row to ``data_dir/.quarantine/held.jsonl``; its path.

    A log, never read back by the pipeline: the held rows stay out of the data files, and the
    dot-directory is skipped by the loaders and by the data fingerprint.
    """
    path = data_dir / ".quarantine" / "held.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for item in held:
            handle.write(json.dumps({
                "file": file, "timestamp": item.timestamp, "rule": item.rule,
                "value": None if np.isnan(item.value) else item.value,
                "limit": None if np.isnan(item.limit) else item.limit,
                "detail": item.detail, "row": item.row, "run_until": until,
            }) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _write_atomic(path: Path, text: bytes) -> None:
    """Write ``text`` (gzipped if ``path`` ends in .gz) to a temp file, fsync, rename over."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.name.endswith(".gz"):
                inner = path.name[: -len(".gz")]
                with gzip.GzipFile(inner, "wb", 9, handle, mtime=0) as zipped:
                    zipped.write(text)
            else:
                handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def _stored_text(path: Path, header: list[str]) -> tuple[bytes, int]:
    """The stored file's decompressed bytes (ending in a newline), or a header for a new file;
    and how many of those bytes the file held (0 for a new file)."""
    if not path.exists():
        return (",".join(header) + "\n").encode(), 0
    data = path.read_bytes()
    text = gzip.decompress(data) if path.name.endswith(".gz") else data
    return (text if text.endswith(b"\n") else text + b"\n"), len(text)


def _header(path: Path, target: Target) -> list[str]:
    if not path.exists():
        return ["timestamp", *target.columns]
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        return handle.readline().strip().split(",")


def column_mismatch(path: Path, target: Target) -> str | None:
    """Why ``target`` cannot feed the file at ``path`` (columns it cannot supply), or None."""
    header = _header(path, target)
    absent = [c for c in header[1:] if c not in target.columns]
    if header[0] == "timestamp" and not absent:
        return None
    return (f"{path.name} has columns {', '.join(header)} but {target.source} "
            f"{target.remote} provides only timestamp, {', '.join(target.columns)}; values are "
            "never invented, nothing requested or written. Point this series at a file with "
            "matching columns (e.g. a value-only file) or use a source with those columns.")


def append_page(
    path: Path,
    target: Target,
    rows: pd.DataFrame,
    rtol: float,
    plausibility: PlausibilitySettings | None = None,
    receipts: Path | None = None,
) -> AppendResult:
    """Offer ``rows`` to the file at ``path``; append the new ones atomically.

    ``receipts``: the data directory, whose append receipts
    (:mod:`features.append_receipts`) get one for this append, so that a cached load reads
    only the new bytes; None: no receipt (the cache proves the file by hash).
    The caller holds :func:`data_dir_lock`. Never raises for data problems: a refused batch
    comes back with ``rejected`` set and the file untouched; rows failing the plausibility
    screen (:func:`.plausibility.screen`, default settings when None) come back in ``held``
    and only the rows before the first of them are appended. Raises only on I/O failures
    (disk full, permissions).
    """
    if path.name.endswith(".parquet"):
        return AppendResult(rejected=f"{path.name}: appending to Parquet is not supported; "
                            "convert the file to .csv.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink()  # left by a run killed before its rename; we hold the lock
    try:
        stored = _read_stored(path, target.kind)
    except DataValidationError as err:
        return AppendResult(rejected=f"stored file is invalid, not extended: {err}")
    header = _header(path, target)
    columns = header[1:]
    mismatch = column_mismatch(path, target)
    if mismatch or not set(columns) <= set(rows.columns):
        return AppendResult(rejected=mismatch or f"page lacks columns of {path.name}")
    stored = stored if stored is not None else pd.DataFrame(columns=columns)
    last = stored.index[-1].strftime(TIMESTAMP_FORMAT) if len(stored) else None
    refused = _validation_failure(rows, columns, f"{path.name} (incoming page)", target)
    if refused:
        return AppendResult(rejected=refused, last_timestamp=last)
    new, result = classify(stored, rows, columns, rtol)
    result.last_timestamp = last
    new, result.held = screen(stored, new, target.kind, target.prices_positive,
                              plausibility or PlausibilitySettings(), TIMESTAMP_FORMAT)
    if new.empty:
        return result
    tail = stored.iloc[-1:].reset_index(names="timestamp")
    candidate = pd.concat([tail, new], ignore_index=True) if len(stored) else new
    label = f"{path.name} (last stored row + {len(new)} new rows)"
    refused = _validation_failure(candidate, columns, label, target)
    if refused:
        return AppendResult(rejected=refused, last_timestamp=last)
    lines = format_rows(new, columns).to_csv(index=False, header=False,
                                             lineterminator="\n").encode()
    before = identity(os.stat(path)) if path.exists() else None
    text, stored = _stored_text(path, header)
    if before is not None and identity(os.stat(path)) != before:
        before = None  # changed while it was read: no receipt (the cache proves it by hash)
    _write_atomic(path, text + lines)
    if receipts is not None and before is not None:  # the old content + these bytes
        append_receipts.record(receipts, [append_receipts.Receipt(
            Path(os.path.relpath(path, receipts)).as_posix(), tuple(before),
            tuple(identity(os.stat(path))), len(text) + len(lines) - stored)])
    result.appended = len(new)
    result.last_timestamp = new["timestamp"].iloc[-1].strftime(TIMESTAMP_FORMAT)
    return result

"""Atomically publish one as-of partition of risk parameters.

This is the batch job's I/O edge: it computes nothing. It validates a parameters frame
against :data:`PARAMETERS_SCHEMA` (:mod:`serving.schema`) and writes::

    root/asof=YYYY-MM-DD/        (a revision: root/_revisions/asof=YYYY-MM-DD/rev=n/)
        parameters.parquet   explicit Arrow schema, schema metadata ``schema_version``
        parameters.csv       same rows; ISO dates, floats as Python ``repr`` (round-trip exact)
        updates.json         update records (:mod:`serving.records`), when the caller gives them
        manifest.json        as_of, revision, schema_version, code_version, created_at,
                             caller metadata, sha256/bytes/rows per file, updates summary
        _SUCCESS             sha256 of manifest.json, written last
    root/LATEST              pointer to the newest partition, replaced atomically

Atomicity follows the Hadoop/Spark output-committer convention: everything is written and
fsynced in a staging directory ``root/.staging-asof=YYYY-MM-DD-<random>`` on the same
filesystem, ``_SUCCESS`` last, then the directory is renamed into place with one
``os.rename`` (atomic on POSIX) and the parent directory is fsynced; ``LATEST`` moves after
that. A reader therefore sees either no partition or a complete one, and ``LATEST`` never
names a partition that is not complete. A crash between the rename and the ``LATEST`` write
leaves ``LATEST`` one step behind; the next run of the same as-of repairs it.

Readers read only directories holding ``_SUCCESS`` (see :mod:`serving.layout`). Staging
directories left by a crashed run are never read as partitions; :func:`sweep_staging` removes
them and must only be called by a writer holding the serve lock.

A published partition is immutable: rerunning the same as-of with identical content is a
no-op, different content raises :class:`PartitionExistsError`, and ``force=True`` writes the
next *revision* beside it instead (layout and reasons in :mod:`serving.layout`).
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serving.layout import (
    STAGING_PREFIX,
    SUCCESS_NAME,
    advance_latest,
    current_partition,
    fsync_dir,
    list_partitions,
    partition_dir,
    relative,
    sweep_staging,
)
from serving.records import one_line_breaks, summary, updates_document
from serving.schema import PARAMETERS_SCHEMA, SCHEMA_VERSION
from serving.schema import upgrade as upgrade_rows

__all__ = ["CSV_NAME", "MANIFEST_NAME", "PARAMETERS_SCHEMA", "PARQUET_NAME", "SCHEMA_VERSION",
           "SUCCESS_NAME", "UPDATES_NAME", "PartitionExistsError", "Published",
           "cast_parameters", "list_partitions", "partition_dir", "publish_partition",
           "read_manifest", "read_partition", "sweep_staging"]

PARQUET_NAME = "parameters.parquet"
CSV_NAME = "parameters.csv"
UPDATES_NAME = "updates.json"
MANIFEST_NAME = "manifest.json"
# Fault injection for the crash test only: seconds to sleep once parameters.parquet is in the
# staging directory, so a test can SIGKILL a real `volmargin serve` mid-publication.
PAUSE_ENV = "VOLMARGIN_TEST_PAUSE_AFTER_PARQUET_S"


class PartitionExistsError(FileExistsError):
    """A different partition is already published for this as-of; partitions are immutable."""


@dataclass(frozen=True)
class Published:
    """Outcome of :func:`publish_partition`.

    Attributes
    ----------
    path : Path
        The partition directory, e.g. ``outputs/forecasts/asof=2025-06-30``.
    created : bool
        False when an identical partition already existed and nothing was written.
    manifest : dict
        The partition's manifest (the existing one when ``created`` is False).
    revision : int
        1 for the original publication, n for ``_revisions/asof=D/rev=n``.
    """

    path: Path
    created: bool
    manifest: dict
    revision: int = 1


def cast_parameters(parameters: pd.DataFrame) -> pa.Table:
    """Validate ``parameters`` and cast it to :data:`PARAMETERS_SCHEMA`, sorted by asset.

    Raises
    ------
    ValueError
        Missing or extra columns, a column that cannot be cast, a null or non-finite value in
        a non-nullable column, or a duplicate asset; the message names them.

    The free text of ``reason`` (which may quote an exception's message) has its line breaks
    written as ``\n``: a bare carriage return is not quoted by the CSV writer, and a CSV
    reader would split the row there, so the mirror would hold more rows than the Parquet.
    """
    expected = PARAMETERS_SCHEMA.names
    missing = [name for name in expected if name not in parameters.columns]
    extra = [str(name) for name in parameters.columns if name not in expected]
    if missing or extra:
        raise ValueError(f"parameters columns do not match PARAMETERS_SCHEMA v{SCHEMA_VERSION}: "
                         f"missing {missing}, extra {extra}")
    frame = parameters.reset_index(drop=True)
    text = frame["reason"]
    if text.astype(str).str.contains("\r", regex=False).any():
        frame = frame.assign(reason=text.map(
            lambda v: one_line_breaks(v) if isinstance(v, str) else v))
    arrays = [_cast_column(frame[field.name], field) for field in PARAMETERS_SCHEMA]
    for field, array in zip(PARAMETERS_SCHEMA, arrays, strict=True):
        _check_required(field, array, frame["asset"])
    table = pa.Table.from_arrays(arrays, schema=PARAMETERS_SCHEMA)
    counts = pc.value_counts(table["asset"]).to_pylist()
    duplicated = sorted(item["values"] for item in counts if item["counts"] > 1)
    if duplicated:
        raise ValueError(f"asset must be unique per partition; duplicated: {duplicated}")
    return table.sort_by("asset")


def publish_partition(
    parameters: pd.DataFrame, root: Path, as_of: datetime.date, metadata: dict, *,
    updates: list[dict[str, Any]] | None = None, code_version: str | None = None,
    force: bool = False,
) -> Published:
    """Atomically publish the ``as_of`` partition of risk parameters under ``root``.

    Parameters
    ----------
    parameters : pd.DataFrame
        One row per asset with exactly the columns of :data:`PARAMETERS_SCHEMA`; every
        ``as_of`` value must equal ``as_of``.
    root : Path
        Directory holding the partitions, e.g. ``outputs/forecasts``; created if missing.
    as_of : datetime.date
        The UTC day the parameters are for.
    metadata : dict
        JSON-serializable lineage (model uri, run id, config hash, ...), stored in the
        manifest under ``"metadata"`` and in the Parquet schema metadata under ``volmargin``.
        Part of the partition's identity: a rerun with other metadata is a different result.
    updates : list of dict, optional
        Update records (:func:`serving.records.update_records`), written as ``updates.json``
        and summarized in the manifest; nothing is written when None.
    code_version : str, optional
        Git commit or package version of the writer, recorded in the manifest. Not part of
        the identity: rerunning with identical rows from newer code is still a no-op.
    force : bool
        When a different partition is already published, write the next revision beside it
        instead of raising.

    Returns
    -------
    Published
        ``created`` is False when an identical partition (same rows and metadata as the
        newest revision) was already published; nothing is written then, except ``LATEST``
        when it lags behind (repair after a crash).

    Raises
    ------
    ValueError
        Invalid parameters (see :func:`cast_parameters`), metadata that is not JSON, or a
        partition directory that exists without ``_SUCCESS`` (it is never touched).
    PartitionExistsError
        A partition with different content is already published and ``force`` is False.
    """
    if isinstance(as_of, datetime.datetime) or not isinstance(as_of, datetime.date):
        raise TypeError(f"as_of must be a datetime.date, got {as_of!r}")
    table = cast_parameters(parameters)
    stray = sorted({d.isoformat() for d in table["as_of"].to_pylist()} - {as_of.isoformat()})
    if stray:
        raise ValueError(f"parameters hold as_of {stray} but the partition is {as_of}")
    metadata_json = _metadata_json(metadata)
    root = Path(root)
    current = current_partition(root, as_of)
    revision, supersedes = 1, None
    if current is not None:
        existing = _judge(root, *current, table, metadata_json, force)
        if existing is not None:
            return existing
        revision, supersedes = current[0] + 1, relative(root, current[1])
    final = partition_dir(root, as_of, revision)
    if final.exists():
        raise ValueError(f"{final} exists without {SUCCESS_NAME}: it was not written by "
                         "publish_partition (manual copy?). It is left untouched; inspect and "
                         "remove it by hand before publishing this as-of.")
    extras = {"revision": revision, "supersedes": supersedes, "code_version": code_version}
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"{STAGING_PREFIX}{final.name}-{secrets.token_hex(8)}"
    os.mkdir(staging)  # not mkdtemp: its 0700 mode would hide the partition from readers
    try:
        manifest = _stage(staging, table, as_of, metadata_json, extras, updates)
        _make_durable_dirs(root, final.parent)
        try:
            # rename(2) would replace an *empty* directory created since the check above;
            # `volmargin serve` holds the serve lock, so only a foreign writer could do that.
            os.rename(staging, final)
        except OSError:
            if not final.exists():
                raise
            # Lost a race with a concurrent publisher: judge its result, never force over it.
            shutil.rmtree(staging, ignore_errors=True)
            raced = current_partition(root, as_of) or (revision, final)
            return _judge(root, *raced, table, metadata_json, False)  # type: ignore[return-value]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our own staging only, never `final`
        raise
    fsync_dir(final.parent)
    advance_latest(root, as_of, revision, final, (final / SUCCESS_NAME).read_text().strip())
    return Published(path=final, created=True, manifest=manifest, revision=revision)


def _make_durable_dirs(root: Path, directory: Path) -> None:
    """``mkdir -p directory`` (inside ``root``), each directory created fsynced in its parent,
    so that a revision's ``_revisions/asof=D`` survives a power loss with the rename into it."""
    missing = []
    at = directory
    while not at.exists() and at != root:
        missing.append(at)
        at = at.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        fsync_dir(new.parent)


def read_partition(path: Path, upgrade: bool = False) -> pd.DataFrame:
    """Read a published partition (original or revision) after verifying its integrity.

    ``upgrade``: a partition of an older schema that :data:`serving.schema.UPGRADES` can
    carry forward is returned as rows of :data:`SCHEMA_VERSION` (``attrs["upgraded"]`` lists
    the steps); the batch job reads its previous state so after a release bumps the schema.

    Raises
    ------
    ValueError
        ``_SUCCESS`` is missing or does not match ``manifest.json``, a file listed in the
        manifest is missing or its sha256 differs (the message names the file), or the
        partition was written with another ``SCHEMA_VERSION`` (with ``upgrade``: one that
        cannot be upgraded).
    """
    table, manifest = _read_verified(Path(path))
    version = manifest.get("schema_version")
    if version == SCHEMA_VERSION:
        return table.to_pandas()
    if upgrade:
        try:
            frame, done = upgrade_rows(table.to_pandas(), str(version))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}; publish from scratch into a new outputs "
                             "directory, or serve it with a matching release") from None
        frame.attrs["upgraded"] = done
        return frame
    raise ValueError(f"{path} has schema_version {version!r}; this "
                     f"code reads {SCHEMA_VERSION!r}. Read it with a matching release.")


def read_manifest(path: Path) -> dict:
    """The manifest of a published partition, after verifying every file's sha256."""
    return _read_verified(Path(path))[1]


def _judge(root: Path, revision: int, path: Path, table: pa.Table, metadata_json: str,
           force: bool) -> Published | None:
    """An identical newest revision → the no-op result; different → raise, or None to
    write the next revision when ``force``."""
    existing, manifest = _read_verified(path)
    same = (manifest.get("schema_version") == SCHEMA_VERSION
            and manifest.get("metadata") == json.loads(metadata_json)
            and existing.equals(table))
    if same:
        as_of = datetime.date.fromisoformat(manifest["as_of"])
        advance_latest(root, as_of, revision, path, (path / SUCCESS_NAME).read_text().strip())
        return Published(path=path, created=False, manifest=manifest, revision=revision)
    if force:
        return None
    raise PartitionExistsError(f"{path} is already published with different content; "
                               "published partitions are immutable, never overwritten. "
                               f"Publish revision {revision + 1} beside it with "
                               "`volmargin serve --force`.")


def _cast_column(series: pd.Series, field: pa.Field) -> pa.Array:
    try:
        array = pa.array(series, from_pandas=True)  # from_pandas: NaN/None become null
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if not array.type.equals(field.type):
            array = array.cast(field.type)  # safe cast: truncation or overflow raises
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"column {field.name!r} cannot be cast to {field.type}: {exc}") from exc
    return array


def _check_required(field: pa.Field, array: pa.Array, assets: pd.Series) -> None:
    """Raise when a non-nullable column holds null (NaN arrives as null) or inf."""
    if field.nullable:
        return
    bad = pc.is_null(array)
    if pa.types.is_floating(field.type):
        bad = pc.or_(bad, pc.fill_null(pc.is_inf(array), False))
    rows = [i for i, flag in enumerate(bad.to_pylist()) if flag][:10]
    if rows:
        raise ValueError(f"column {field.name!r} must not be null, NaN or inf; bad rows {rows} "
                         f"(assets {assets.iloc[rows].tolist()})")


def _metadata_json(metadata: dict) -> str:
    try:
        return json.dumps(metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serializable (str keys, finite numbers, "
                         f"no dates or numpy scalars): {exc}") from exc


def _stage(staging: Path, table: pa.Table, as_of: datetime.date, metadata_json: str,
           extras: dict[str, Any], updates: list[dict[str, Any]] | None) -> dict:
    """Write every file durably into ``staging``, ``_SUCCESS`` last; return the manifest."""
    table = table.replace_schema_metadata(
        {b"schema_version": SCHEMA_VERSION.encode(), b"volmargin": metadata_json.encode()}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    payloads = {PARQUET_NAME: sink.getvalue().to_pybytes(), CSV_NAME: _csv_bytes(table)}
    rows = {PARQUET_NAME: table.num_rows, CSV_NAME: table.num_rows}
    if updates is not None:
        document = updates_document(as_of, extras["revision"], updates)
        payloads[UPDATES_NAME] = _json_bytes(document)
        rows[UPDATES_NAME] = len(updates)
    manifest = {
        "as_of": as_of.isoformat(),
        **extras,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metadata": json.loads(metadata_json),
        "files": {name: {"sha256": _sha256(data), "rows": rows[name], "bytes": len(data)}
                  for name, data in payloads.items()},
    }
    if updates is not None:
        manifest["updates"] = summary(updates)
    payloads[MANIFEST_NAME] = _json_bytes(manifest)
    for name, data in payloads.items():
        _write_durably(staging / name, data)
        if name == PARQUET_NAME and os.environ.get(PAUSE_ENV):
            time.sleep(float(os.environ[PAUSE_ENV]))
    fsync_dir(staging)  # directory entries durable before _SUCCESS vouches for them
    _write_durably(staging / SUCCESS_NAME, (_sha256(payloads[MANIFEST_NAME]) + "\n").encode())
    fsync_dir(staging)
    return manifest


def _json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def _csv_bytes(table: pa.Table) -> bytes:
    """Render ``table`` as CSV: ISO dates, ``repr`` floats (shortest exact), empty nulls."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([_csv_cell(value) for value in row.values()])
    return buffer.getvalue().encode()


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest string that parses back to the same double
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def _read_verified(path: Path) -> tuple[pa.Table, dict]:
    """Return the parquet table and manifest of ``path`` once every hash has been checked."""
    success = path / SUCCESS_NAME
    if not success.is_file():
        raise ValueError(f"{path} is not a published partition: {SUCCESS_NAME} is missing")
    try:
        manifest_bytes = (path / MANIFEST_NAME).read_bytes()
        if success.read_text().strip() != _sha256(manifest_bytes):
            raise ValueError(f"{path / MANIFEST_NAME} does not match the sha256 in {success}")
        manifest = json.loads(manifest_bytes)
        files = {name: (path / name).read_bytes() for name in manifest["files"]}
    except FileNotFoundError as exc:
        raise ValueError(f"{exc.filename} is missing from the partition {path}") from exc
    for name, data in files.items():
        if _sha256(data) != manifest["files"][name]["sha256"]:
            raise ValueError(f"{path / name} is corrupt: sha256 differs from {MANIFEST_NAME}")
    # Parse the bytes just verified, not the file again: it could change in between.
    return pq.read_table(pa.BufferReader(files[PARQUET_NAME])), manifest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_durably(file: Path, data: bytes) -> None:
    with open(file, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())

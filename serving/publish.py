"""Atomically publish one as-of partition of risk parameters.

This is the batch job's I/O edge: it computes nothing. It validates a parameters frame
against :data:`PARAMETERS_SCHEMA` and writes::

    root/asof=YYYY-MM-DD/
        parameters.parquet   explicit Arrow schema, schema metadata ``schema_version``
        parameters.csv       same rows; ISO dates, floats as Python ``repr`` (round-trip exact)
        manifest.json        as_of, schema_version, created_at, caller metadata, sha256 per file
        _SUCCESS             sha256 of manifest.json, written last

Atomicity follows the Hadoop/Spark output-committer convention: everything is written and
fsynced in a staging directory ``root/.staging-asof=YYYY-MM-DD-<random>`` on the same
filesystem, ``_SUCCESS`` last, then the directory is renamed into place with one
``os.rename`` (atomic on POSIX) and the parent directory is fsynced. A reader therefore sees
either no partition or a complete one.

Readers read only directories named ``asof=YYYY-MM-DD`` holding ``_SUCCESS`` (see
:func:`list_partitions`). Staging directories left by a crashed run are never read as
partitions and never deleted here (another run may be writing into its own).

A published partition is immutable: rerunning the same as-of with identical content is a
no-op, and different content raises :class:`PartitionExistsError`. Publishing a revision of
an already published day is deliberately out of scope for this module.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SCHEMA_VERSION = "2"  # bump on any breaking column change (2: liquidity, proxy, guardrail state)

PARQUET_NAME = "parameters.parquet"
CSV_NAME = "parameters.csv"
MANIFEST_NAME = "manifest.json"
SUCCESS_NAME = "_SUCCESS"

_PARTITION_RE = re.compile(r"^asof=(\d{4}-\d{2}-\d{2})$")
_FRACTION = "fraction of collateral value"


def _field(name: str, type_: pa.DataType, description: str, unit: str | None = None, *,
           nullable: bool = True) -> pa.Field:
    metadata = {"description": description} | ({"unit": unit} if unit else {})
    return pa.field(name, type_, nullable=nullable, metadata=metadata)


def _prev(name: str, unit: str) -> pa.Field:
    return _field(f"prev_{name}", pa.float64(), f"{name} in the previous published partition; "
                  "null when there is none.", unit)


# Non-nullable fields are what a risk engine acts on: a null margin must never be published.
# Diagnostics (sigma, VaR/ES) and lineage ids may be null, e.g. on a fallback without a model.
PARAMETERS_SCHEMA: pa.Schema = pa.schema([
    _field("as_of", pa.date32(), "UTC day whose end-of-day data produced these parameters; "
           "they apply until the next partition.", "date (UTC)", nullable=False),
    _field("asset", pa.string(), "Collateral asset symbol, e.g. BTC.", nullable=False),
    _field("horizon_days", pa.int32(), "Update interval covered.", "days", nullable=False),
    _field("sigma_1d", pa.float64(), "Forecast s.d. of the 1-day log return.", "decimal"),
    _field("variance_1d", pa.float64(), "Forecast variance of the 1-day log return.", "decimal^2"),
    _field("var_99", pa.float64(), "VaR of the covered loss (worst liquidation-delay loss in "
           "the interval) at the policy confidence (manifest: confidence).", _FRACTION),
    _field("es_99", pa.float64(), "Expected shortfall of the covered loss at the policy "
           "confidence.", _FRACTION),
    _field("liquidity_addon", pa.float64(), "Slippage of liquidating the reference size "
           "(square-root impact), included in mmf.", _FRACTION),
    _field("mmf", pa.float64(), "Maintenance margin fraction: equity below mmf x notional "
           "is liquidatable; equals the lending cushion 1 - lt x lb.", "fraction of notional",
           nullable=False),
    _field("imf", pa.float64(), "Initial margin fraction to open or increase a position, "
           "with anti-procyclicality (buffer, stressed weight, long-run floor).",
           "fraction of notional", nullable=False),
    _field("lt", pa.float64(), "Liquidation threshold (1 - mmf) / lb: debt above lt x "
           "collateral value is liquidatable.", _FRACTION, nullable=False),
    _field("ltv", pa.float64(), "Maximum loan-to-value at origination, (1 - imf) / lb.",
           _FRACTION, nullable=False),
    _field("lb", pa.float64(), "Liquidation bonus: collateral paid per unit of debt repaid, "
           "e.g. 1.05.", "multiplier", nullable=False),
    _field("max_leverage", pa.float64(), "Maximum perp leverage, 1 / imf.", "multiplier",
           nullable=False),
    _prev("mmf", "fraction of notional"),
    _prev("imf", "fraction of notional"),
    _prev("lt", _FRACTION),
    _prev("ltv", _FRACTION),
    _prev("lb", "multiplier"),
    _field("change_mmf", pa.float64(), "mmf - prev_mmf; null when there is no previous value.",
           "fraction of notional"),
    _field("flag_fallback", pa.bool_(), "Model output unusable; previous or conservative "
           "static parameters were published instead.", nullable=False),
    _field("flag_stale", pa.bool_(), "Input data older than allowed at the as-of.", nullable=False),
    _field("flag_clamped", pa.bool_(), "The risk-based mmf hit its floor or cap.",
           nullable=False),
    _field("flag_proxy", pa.bool_(), "The covered loss is measured by the daily-range proxy "
           "(no intraday data for this asset).", nullable=False),
    _field("flag_held", pa.bool_(), "A guardrail (deadband, loosening rate limit or delay) "
           "held or limited the change.", nullable=False),
    _field("last_loosened", pa.date32(), "Last update on which margins were loosened "
           "(guardrail state); null if never.", "date (UTC)"),
    _field("reason", pa.string(), "Empty, or why a fallback, clamp or hold happened.",
           nullable=False),
    _field("model_name", pa.string(), "Forecaster alias, e.g. garch11_t.", nullable=False),
    _field("model_version", pa.string(), "Registered version of the volmargin-policy model."),
    _field("run_id", pa.string(), "MLflow run id that produced the model."),
    _field("policy_version", pa.string(), "Margin policy config version.", nullable=False),
    _field("feature_fingerprint", pa.string(), "Fingerprint of the feature panel used."),
])


class PartitionExistsError(FileExistsError):
    """A different partition is already published for this as-of; partitions are immutable."""


@dataclass(frozen=True)
class Published:
    """Outcome of :func:`publish_partition`.

    Attributes
    ----------
    path : Path
        The final partition directory, e.g. ``outputs/forecasts/asof=2025-06-30``.
    created : bool
        False when an identical partition already existed and nothing was written.
    manifest : dict
        The partition's manifest (the existing one when ``created`` is False).
    """

    path: Path
    created: bool
    manifest: dict


def partition_dir(root: Path, as_of: datetime.date) -> Path:
    """Return the final directory of the ``as_of`` partition under ``root``."""
    return Path(root) / f"asof={as_of.isoformat()}"


def list_partitions(root: Path) -> dict[datetime.date, Path]:
    """Return the published partitions under ``root`` by as-of day, oldest first.

    Only ``asof=YYYY-MM-DD`` directories holding ``_SUCCESS`` count: staging leftovers and
    half-copied directories are skipped. Integrity is checked later by :func:`read_partition`.
    """
    root = Path(root)
    found = {}
    for child in root.iterdir() if root.is_dir() else []:
        match = _PARTITION_RE.match(child.name)
        if match and (child / SUCCESS_NAME).is_file():
            found[datetime.date.fromisoformat(match.group(1))] = child
    return dict(sorted(found.items()))


def cast_parameters(parameters: pd.DataFrame) -> pa.Table:
    """Validate ``parameters`` and cast it to :data:`PARAMETERS_SCHEMA`, sorted by asset.

    Raises
    ------
    ValueError
        Missing or extra columns, a column that cannot be cast, a null or non-finite value in
        a non-nullable column, or a duplicate asset; the message names them.
    """
    expected = PARAMETERS_SCHEMA.names
    missing = [name for name in expected if name not in parameters.columns]
    extra = [str(name) for name in parameters.columns if name not in expected]
    if missing or extra:
        raise ValueError(f"parameters columns do not match PARAMETERS_SCHEMA v{SCHEMA_VERSION}: "
                         f"missing {missing}, extra {extra}")
    frame = parameters.reset_index(drop=True)
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
    parameters: pd.DataFrame, root: Path, as_of: datetime.date, metadata: dict
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

    Returns
    -------
    Published
        ``created`` is False when an identical partition (same rows and metadata) was
        already published; nothing is written in that case.

    Raises
    ------
    ValueError
        Invalid parameters (see :func:`cast_parameters`), metadata that is not JSON, or a
        final directory that exists without ``_SUCCESS`` (it is never touched).
    PartitionExistsError
        A partition with different content is already published; it is immutable, and
        revising a published day is out of scope here.
    """
    if isinstance(as_of, datetime.datetime) or not isinstance(as_of, datetime.date):
        raise TypeError(f"as_of must be a datetime.date, got {as_of!r}")
    table = cast_parameters(parameters)
    stray = sorted({d.isoformat() for d in table["as_of"].to_pylist()} - {as_of.isoformat()})
    if stray:
        raise ValueError(f"parameters hold as_of {stray} but the partition is {as_of}")
    metadata_json = _metadata_json(metadata)
    root = Path(root)
    final = partition_dir(root, as_of)
    if final.exists():
        return _existing(final, table, metadata_json)

    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{final.name}-{secrets.token_hex(8)}"
    os.mkdir(staging)  # not mkdtemp: its 0700 mode would hide the partition from readers
    try:
        manifest = _stage(staging, table, as_of, metadata_json)
        try:
            # rename(2) would replace an *empty* directory created since the check above;
            # `volmargin serve` holds a lock per as-of, so only a foreign writer could do that.
            os.rename(staging, final)
        except OSError:
            if not final.exists():
                raise
            # Lost a race with a concurrent publisher of the same day: judge its result.
            shutil.rmtree(staging, ignore_errors=True)
            return _existing(final, table, metadata_json)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # our own staging only, never `final`
        raise
    _fsync_dir(root)
    return Published(path=final, created=True, manifest=manifest)


def read_partition(path: Path) -> pd.DataFrame:
    """Read a published partition after verifying its integrity.

    Raises
    ------
    ValueError
        ``_SUCCESS`` is missing or does not match ``manifest.json``, a file listed in the
        manifest is missing or its sha256 differs (the message names the file), or the
        partition was written with another ``SCHEMA_VERSION``.
    """
    table, manifest = _read_verified(Path(path))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {manifest.get('schema_version')!r}; this "
                         f"code reads {SCHEMA_VERSION!r}. Read it with a matching release.")
    return table.to_pandas()


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


def _stage(staging: Path, table: pa.Table, as_of: datetime.date, metadata_json: str) -> dict:
    """Write every file durably into ``staging``, ``_SUCCESS`` last; return the manifest."""
    table = table.replace_schema_metadata(
        {b"schema_version": SCHEMA_VERSION.encode(), b"volmargin": metadata_json.encode()}
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    payloads = {PARQUET_NAME: sink.getvalue().to_pybytes(), CSV_NAME: _csv_bytes(table)}
    manifest = {
        "as_of": as_of.isoformat(),
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metadata": json.loads(metadata_json),
        "files": {name: {"sha256": _sha256(data), "rows": table.num_rows, "bytes": len(data)}
                  for name, data in payloads.items()},
    }
    payloads[MANIFEST_NAME] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    for name, data in payloads.items():
        _write_durably(staging / name, data)
    _fsync_dir(staging)  # directory entries durable before _SUCCESS vouches for them
    _write_durably(staging / SUCCESS_NAME, (_sha256(payloads[MANIFEST_NAME]) + "\n").encode())
    _fsync_dir(staging)
    return manifest


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


def _existing(final: Path, table: pa.Table, metadata_json: str) -> Published:
    """Judge an already present ``final``: identical → no-op, anything else → raise."""
    if not (final / SUCCESS_NAME).is_file():
        raise ValueError(f"{final} exists without {SUCCESS_NAME}: it was not written by "
                         "publish_partition (manual copy?). It is left untouched; inspect and "
                         "remove it by hand before publishing this as-of.")
    existing, manifest = _read_verified(final)
    same = (manifest.get("schema_version") == SCHEMA_VERSION
            and manifest.get("metadata") == json.loads(metadata_json)
            and existing.equals(table))
    if not same:
        raise PartitionExistsError(f"{final} is already published with different content; "
                                   "published partitions are immutable, never overwritten.")
    return Published(path=final, created=False, manifest=manifest)


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


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so renames and new entries in it survive a power loss (POSIX)."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

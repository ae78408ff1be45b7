"""Safe access to raw market files: directory scan, size guard, reading.

Everything here turns a problem with *one file* into a :class:`DataValidationError` that names
that file and a rule, so that ``load_market(keep_going=True)`` can skip the file and go on
instead of crashing, and so that nothing under a data directory is ever ignored silently:

- ``broken_link``: a symlink whose target does not exist, or a symlink loop;
- ``not_a_file``: a directory (or socket, fifo...) named like a data file;
- ``duplicate_source``: two files for one series (``BTC.csv.gz`` and ``BTC.parquet``);
- ``file_too_large``: larger than ``data.max_file_mb`` on disk or once decompressed, refused
  *before* it is read (a runaway export or a sparse 5 GB file would otherwise exhaust memory);
- ``empty_file``: no data rows (zero bytes, or a header only);
- ``file_unreadable``: truncated gzip, bad encoding, not Parquet, I/O or memory error;
- ``csv_format``: a ragged CSV row (with its line);
- ``duplicate_columns``: a header naming a column twice (pandas would read the second as
  ``close.1`` and every reader would take the first without a word);
- ``unknown_format``: a file named like a data file that the loader would not read: a suffix
  of another case (``BTC.CSV.GZ``), another tabular format (``BTC.csv.bz2``, ``BTC.xlsx``), or a
  ``DVOL_`` prefix of another case. Skipping it would drop the series without a word (an
  asset's hourly file so named would move it onto the daily-range proxy).
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import os
import re
import stat
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.validation import DataValidationError

SUFFIXES = (".csv.gz", ".csv", ".parquet")
# Series names the outputs use for rows of their own: the total row of a stress scenario
# (pipelines.stress.report.TOTAL) and the pooled frontier (pipelines.policy_eval.frontier.
# POOLED); an asset of that name would be read as those rows (tests/test_loaders.py pins them).
RESERVED_NAMES = ("ALL", "pooled")
# Names of data in a form the loader does not read: an error (unknown_format), never skipped.
# Anything else without a data suffix (README.md, notes, editor swap files) is not data.
# Tabular formats only: a folder may hold notes or an archive beside the data (README.md,
# backup.tar.gz, meta.json) without stopping a strict run.
OTHER_DATA_SUFFIXES = (".csv.bz2", ".csv.xz", ".csv.zst", ".csv.zip", ".tsv", ".tsv.gz",
                       ".xlsx", ".xls", ".feather", ".arrow", ".pq", ".parquet.gz")
# The largest embedded file is 1.6 MB on disk and 4.5 MB decompressed (hourly BTC, 2017-2025);
# 100 MB leaves room for decades of hourly candles while bounding what one file can cost in
# memory (pandas needs a few times a CSV's size to parse it).
DEFAULT_MAX_FILE_MB = 100.0
# Errors that reading or parsing one file can raise and that say nothing about the others.
FILE_ERRORS = (MemoryError, OSError, EOFError, zlib.error, UnicodeError, ValueError,
               pa.ArrowException)


def stem(path: Path) -> str:
    """File name without any of :data:`SUFFIXES` (``BTC.csv.gz`` -> ``BTC``)."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _entry_error(path: Path) -> DataValidationError | None:
    """Why a directory entry named like a data file cannot be read as one (None if it can)."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except OSError as err:
        if path.is_symlink():
            target = os.readlink(path)
            why = ("is a symlink loop" if err.errno == errno.ELOOP
                   else f"is a dangling symlink (target {target} does not exist)")
            return DataValidationError(
                path, None, "broken_link",
                f"{path} file: rule broken_link failed: {why}. Restore the target or remove the "
                "link; nothing was loaded.")
        return DataValidationError(
            path, None, "file_unreadable",
            f"{path} file: rule file_unreadable failed: {type(err).__name__}: {err}. "
            "Nothing was loaded.")
    if not stat.S_ISREG(mode):
        return DataValidationError(
            path, None, "not_a_file",
            f"{path} file: rule not_a_file failed: named like a data file but is not a regular "
            "file (a directory?). Rename or remove it; nothing was loaded.")
    return None


def scan(
    directory: Path, prefix: str = ""
) -> tuple[dict[str, Path], dict[str, DataValidationError]]:
    """Data files in ``directory`` keyed by series name (``prefix`` removed), and errors by name.

    Hidden files and names without a data suffix (README.md, editor swap files) are not data
    and are ignored. Every other entry must be a readable regular file: a broken symlink or a
    directory named ``BTC.csv.gz`` is an error for that name, never a silent skip (which would
    drop the asset without a word). Two files for one name are refused rather than one being
    picked silently: they may disagree. A name with an error is left out of the files.
    """
    if not directory.is_dir():
        return {}, {}
    found: dict[str, Path] = {}
    errors: dict[str, DataValidationError] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.name.endswith(SUFFIXES):
            odd = _unknown_format(path, prefix)
            if odd is not None:
                key, error = odd
                if key in found:  # beside a readable file of the series: two sources
                    error = DataValidationError(
                        path, None, "duplicate_source",
                        f"{directory}: rule duplicate_source failed: {found.pop(key).name} "
                        f"and {path.name} hold the same series. Keep one of them; nothing "
                        "was loaded.")
                errors[key] = error
            continue
        name = stem(path)
        if not name.startswith(prefix):
            if name.upper().startswith(prefix.upper()):
                key = name[len(prefix):]
                errors[key] = _format_error(path, f"its prefix is not {prefix!r} exactly")
            continue
        key = name[len(prefix):]
        if key in found or key in errors:
            first = found.pop(key, None) or errors[key].path
            errors[key] = DataValidationError(
                path, None, "duplicate_source",
                f"{directory}: rule duplicate_source failed: {first.name} and {path.name} "
                "hold the same series. Keep one of them; nothing was loaded.")
            continue
        problem = _entry_error(path)
        if problem is not None:
            errors[key] = problem
        elif key in RESERVED_NAMES:
            errors[key] = DataValidationError(
                path, None, "reserved_name",
                f"{path}: rule reserved_name failed: {key!r} is a name the outputs use for "
                f"rows of their own ({', '.join(RESERVED_NAMES)}: a stress scenario's total, "
                "the pooled frontier); rename the file; nothing was loaded.")
        else:
            found[key] = path
    by_case: dict[str, list[str]] = {}
    for key in found:
        by_case.setdefault(key.casefold(), []).append(key)
    for keys in by_case.values():
        if len(keys) > 1:  # one file on a case-insensitive filesystem, two assets here
            names = " and ".join(found[k].name for k in keys)
            for key in keys:
                errors[key] = DataValidationError(
                    found.pop(key), None, "case_duplicate",
                    f"{directory}: rule case_duplicate failed: {names} name series that "
                    "differ only in case (two assets here, one file where case is not told "
                    "apart). Keep one of them; nothing was loaded.")
    return found, errors


def _format_error(path: Path, why: str) -> DataValidationError:
    return DataValidationError(
        path, None, "unknown_format",
        f"{path} file: rule unknown_format failed: named like a data file, but {why}; the "
        f"loader reads {', '.join(SUFFIXES)} (lower case). Rename or convert it, or move it "
        "out of the data folder; nothing was loaded.")


def _unknown_format(path: Path, prefix: str) -> tuple[str, DataValidationError] | None:
    """(series name, error) for a file without a data suffix that is data all the same (a
    suffix of another case or another format, :data:`OTHER_DATA_SUFFIXES`); None otherwise."""
    lower = path.name.lower()
    suffix = next((s for s in (*SUFFIXES, *OTHER_DATA_SUFFIXES) if lower.endswith(s)), None)
    if suffix is None:
        return None
    name = path.name[: -len(suffix)]
    if not name.upper().startswith(prefix.upper()):
        return None
    why = (f"its suffix {path.name[-len(suffix):]!r} is not lower case" if suffix in SUFFIXES
           else f"{suffix!r} is not a format the loader reads")
    return name[len(prefix):], _format_error(path, why)


def _too_large(path: Path, size: str, limit_mb: float) -> DataValidationError:
    return DataValidationError(
        path, None, "file_too_large",
        f"{path} file: rule file_too_large failed: {size} exceeds data.max_file_mb = "
        f"{limit_mb:g} MB (the largest real file is under 5 MB decompressed). Check the file "
        "(runaway export, sparse or corrupt file?) or raise data.max_file_mb; nothing was read.")


class _Capped(io.RawIOBase):
    """A readable stream that raises once more than ``limit`` bytes have come out of it.

    Guards against a small ``.csv.gz`` that decompresses to gigabytes (the on-disk size
    says nothing about that).
    """

    def __init__(self, inner: io.BufferedIOBase, limit: int) -> None:
        super().__init__()
        self._inner = inner
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = self._inner.readinto(buffer)
        self._left -= n
        if self._left < 0:
            raise _CapExceededError
        return n


class _CapExceededError(Exception):
    """Raised inside a read when the decompressed size passes the cap."""


def file_error(path: Path, err: BaseException) -> DataValidationError:
    """A low-level error while reading ``path`` (:data:`FILE_ERRORS`) as that file's error."""
    if isinstance(err, pd.errors.EmptyDataError):
        return DataValidationError(
            path, None, "empty_file",
            f"{path} file: rule empty_file failed: the file is empty (no header, no rows). "
            "Re-fetch the file; nothing was loaded.")
    if isinstance(err, pd.errors.ParserError):
        found = re.search(r"line (\d+)", str(err))
        line = int(found.group(1)) if found else None
        where = f"line {line}" if line else "file"
        return DataValidationError(
            path, line, "csv_format",
            f"{path} {where}: rule csv_format failed: {str(err).strip()}. Fix the source file; "
            "nothing was loaded.")
    return DataValidationError(
        path, None, "file_unreadable",
        f"{path} file: rule file_unreadable failed: {type(err).__name__}: "
        f"{str(err).strip() or 'no detail'} (truncated or corrupt?). Re-fetch or repair the "
        "file; nothing was loaded.")


def _check_header(path: Path) -> None:
    """Rule ``duplicate_columns`` on a CSV's header line (line 1)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        names = next(csv.reader([fh.readline()]), [])
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataValidationError(
                path, 1, "duplicate_columns",
                f"{path} line 1: rule duplicate_columns failed: the header names column "
                f"{name!r} twice ({', '.join(names)}); which one holds the data is unknown. "
                "Fix the header; nothing was loaded.")
        seen.add(name)


def read_table(path: Path, max_file_mb: float | None = DEFAULT_MAX_FILE_MB) -> pd.DataFrame:
    """The file as stored: CSV (optionally gzipped) or Parquet, no parsing beyond numbers.

    Parameters
    ----------
    path : Path
        A ``.csv``, ``.csv.gz`` or ``.parquet`` file.
    max_file_mb : float or None
        Refuse (rule ``file_too_large``) a file larger than this many MB (10^6 bytes) on disk
        or uncompressed (gzip: counted while decompressing; Parquet: row-group sizes in its
        metadata). None: no limit.

    Raises
    ------
    DataValidationError
        Rules ``file_too_large``, ``empty_file`` (no rows, or not even a header),
        ``file_unreadable``, ``csv_format``; see the module docstring.
    """
    limit = None if max_file_mb is None else int(max_file_mb * 1e6)
    try:
        size = os.stat(path).st_size
        if limit is not None and size > limit:
            raise _too_large(path, f"{size / 1e6:,.1f} MB on disk", max_file_mb or 0.0)
        if path.name.endswith(".parquet"):
            if limit is not None:  # Parquet is compressed too: its metadata tell the raw size
                meta = pq.ParquetFile(path).metadata
                raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
                if raw > limit:
                    raise _too_large(path, f"{raw / 1e6:,.1f} MB uncompressed", max_file_mb or 0.0)
            frame = pd.read_parquet(path).reset_index(drop=True)
        elif path.name.endswith(".gz") and limit is not None:
            with gzip.open(path, "rb") as raw, io.BufferedReader(_Capped(raw, limit)) as capped:
                # Blank lines are kept (as all-NaN rows) so that row i stays on line i + 2.
                frame = pd.read_csv(capped, dtype={"timestamp": str}, skip_blank_lines=False)
        else:
            frame = pd.read_csv(path, dtype={"timestamp": str}, skip_blank_lines=False)
    except DataValidationError:
        raise
    except _CapExceededError:
        raise _too_large(path, "its decompressed content", max_file_mb or 0.0) from None
    except FILE_ERRORS as err:
        raise file_error(path, err) from err
    if not path.name.endswith(".parquet"):
        _check_header(path)
    if frame.empty:
        raise DataValidationError(
            path, None, "empty_file",
            f"{path} file: rule empty_file failed: header ({', '.join(map(str, frame.columns))}) "
            "but no data rows. Re-fetch the file; nothing was loaded.")
    return frame
